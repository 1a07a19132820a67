-- The audit log: who did what to which credential, and every refusal.
-- Never holds a secret. Pruned by the daemon by age and by count.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,              -- Unix milliseconds
    uid         INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    executable  TEXT    NOT NULL DEFAULT '',
    app_id      TEXT    NOT NULL DEFAULT '',
    operation   TEXT    NOT NULL,              -- retrieve, store, delete, logout, list, watch, connect
    provider    TEXT,                          -- the key, when the operation has one
    server_id   TEXT,
    user_id     TEXT,
    token_type  TEXT,
    outcome     TEXT    NOT NULL,              -- OK or a gRPC code name
    detail      TEXT    NOT NULL DEFAULT ''
) STRICT;

CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_key ON audit_log (provider, server_id, user_id, token_type);
