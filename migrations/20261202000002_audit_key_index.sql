-- audit_log_key was never used: the audit query's key filter is written
-- `?1 IS NULL OR (provider = ?1 AND ...)`, which SQLite answers with a
-- scan of the table newest first, not with this index. It only cost
-- writes: every audit record inserted into it at a random place, so a
-- batch of records dirtied a page of it for almost every record, and the
-- audit batch of a busy second wrote megabytes to the WAL.
-- `admin_audit::an_audit_record_is_an_append_and_a_query_by_key_finds_only_its_own`
-- checks that only the time index is left and that a query by key still
-- finds its records.
DROP INDEX IF EXISTS audit_log_key;
