-- A random id for this store, so its data key can be named in the OS
-- keyring without colliding with another store of the same user.
CREATE TABLE store_info (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT;

INSERT INTO store_info (name, value) VALUES ('store_id', lower(hex(randomblob(8))));
