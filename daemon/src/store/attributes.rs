//! How a credential's attributes are kept in the `attributes` column: a
//! protobuf message with one `map<string, string>` field, NULL when there
//! are none. The SQL function `keyhaven_attribute(attributes, name)` reads
//! one value back, so List filters on attributes inside its indexed,
//! paginated query instead of scanning the store.

use keyhaven_proto::Attributes;
use prost::Message;

/// The column's encoding.
#[derive(Clone, PartialEq, Message)]
struct Stored {
    #[prost(btree_map = "string, string", tag = "1")]
    entries: Attributes,
}

/// The column value for `attributes`.
pub fn encode(attributes: &Attributes) -> Option<Vec<u8>> {
    if attributes.is_empty() {
        return None;
    }
    Some(
        Stored {
            entries: attributes.clone(),
        }
        .encode_to_vec(),
    )
}

/// The attributes in a column value.
pub fn decode(column: Option<&[u8]>) -> Result<Attributes, String> {
    match column {
        None => Ok(Attributes::new()),
        Some(bytes) => Stored::decode(bytes)
            .map(|s| s.entries)
            .map_err(|e| format!("its attributes do not decode: {e}")),
    }
}

/// The name of the SQL function [`register`] adds.
pub const SQL_FUNCTION: &str = "keyhaven_attribute";

/// Adds `keyhaven_attribute(attributes, name)` to `conn`: the value of
/// `name`, or NULL when the credential has no such attribute (or its column
/// does not decode, which reading the row then reports).
pub fn register(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        SQL_FUNCTION,
        2,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        |ctx| {
            let column = ctx.get_raw(0).as_blob_or_null().unwrap_or(None);
            let name = ctx.get_raw(1).as_str().unwrap_or("");
            Ok(decode(column)
                .ok()
                .and_then(|mut attributes| attributes.remove(name)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_one_value_in_sql() {
        let attributes: Attributes = [("server_url", "https://h"), ("device_id", "")]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let column = encode(&attributes);
        assert_eq!(decode(column.as_deref()).unwrap(), attributes);
        assert_eq!(encode(&Attributes::new()), None);
        assert_eq!(decode(None).unwrap(), Attributes::new());
        assert!(decode(Some(b"\xff\xff")).is_err());

        let conn = rusqlite::Connection::open_in_memory().unwrap();
        register(&conn).unwrap();
        let get = |name: &str| -> Option<String> {
            conn.query_row(
                "SELECT keyhaven_attribute(?, ?)",
                rusqlite::params![column, name],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(get("server_url").as_deref(), Some("https://h"));
        assert_eq!(get("device_id").as_deref(), Some(""));
        assert_eq!(get("user_name"), None);
    }
}
