-- keyhaven store, version 1. Never edit this file once landed; add a new one.

-- One row per credential. The secret is only ever stored sealed with
-- AES-256-GCM: ciphertext (with tag) and its nonce, plus the id of the data
-- key that sealed it. Times are Unix milliseconds.
CREATE TABLE auth_tokens (
    id          INTEGER PRIMARY KEY,
    provider    TEXT    NOT NULL,
    server_id   TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    token_type  TEXT    NOT NULL,
    ciphertext  BLOB    NOT NULL,
    nonce       BLOB    NOT NULL,
    key_id      TEXT    NOT NULL,
    label       TEXT,
    revision    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    UNIQUE (provider, server_id, user_id, token_type)
) STRICT;

-- The data keys this store was sealed with: an id and a check value (a known
-- plaintext sealed with the key), so a wrong or missing key is detected at
-- start-up instead of row by row.
CREATE TABLE data_keys (
    key_id       TEXT    PRIMARY KEY,
    check_nonce  BLOB    NOT NULL,
    check_value  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT;

-- Store-wide counters. 'last_revision' makes revisions unique across the
-- store, so a deleted and re-created credential never reuses a revision.
CREATE TABLE store_meta (
    name   TEXT    PRIMARY KEY,
    value  INTEGER NOT NULL
) STRICT;

INSERT INTO store_meta (name, value) VALUES ('last_revision', 0);
