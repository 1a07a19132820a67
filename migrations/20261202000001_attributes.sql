-- Non-secret attributes of a credential (server_url, server_name, user_name,
-- device_id, ...), so another app can find and reuse a login. A protobuf
-- encoding of a string map (field 1, map<string, string>); NULL when the
-- credential has none. Stored unsealed, like Secret Service attributes:
-- they are what List filters on (SECURITY.md).
ALTER TABLE auth_tokens ADD COLUMN attributes BLOB;
