-- Successful reads are stored as groups: one row holds every successful
-- Retrieve one caller made in one audit batch (at most LINGER, 100 ms,
-- and up to the caller's next other record), as a JSON array in `reads`,
-- one element per credential read:
--
--   [first_at, last_at, reads, provider, server_id, user_id, token_type]
--
-- (times in Unix milliseconds; `reads` is how many Retrieves of that
-- credential the element stands for). A row of one record, as every row
-- before this migration, has `reads` NULL.
--
-- Why: a row per read of a distinct credential was most of what such a
-- read cost the daemon (twelve bound values, a B-tree insert and an index
-- entry each); a group costs one row per batch. Every read is still in
-- the log with its key, caller and time: `Audit.Query` and
-- `keyhaven audit` return one entry per element, as before, and
-- `json_each(reads)` reads them in the sqlite3 shell.
--
-- Entry ids: a group's elements are entries `id - entries + 1 ..= id`, in
-- the order of the array, so entry ids stay unique and in time order
-- across rows; the daemon gives each row its id when it writes it.
-- `last_at` is the time of a group's last read (NULL for a row of one
-- record): retention prunes a group only when its last read is older
-- than the retention age.
ALTER TABLE audit_log ADD COLUMN entries INTEGER NOT NULL DEFAULT 1;
ALTER TABLE audit_log ADD COLUMN last_at INTEGER;
ALTER TABLE audit_log ADD COLUMN reads TEXT;
