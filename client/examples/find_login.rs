//! A new app finds the user's existing Jellyfin logins and reuses one.
//!
//! ```text
//! cargo run --example find_login -- [SERVER_URL]
//! ```
//!
//! Lists the user's Jellyfin logins (optionally only those of one server),
//! prints each one's server and user name, and for the first one prints what
//! an app needs to reuse it: the server's address, the token's length (never
//! the token) and the device id the token was issued to. Exits 3 when the
//! user has no such login.

use std::process::ExitCode;

use keyhaven::attributes::{DEVICE_ID, SERVER_NAME, SERVER_URL, USER_NAME};
use keyhaven::{Client, ListFilter};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(std::env::args().nth(1)).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("find_login: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(server_url: Option<String>) -> Result<ExitCode, keyhaven::Error> {
    let client = Client::connect().await?;
    let mut filter = ListFilter {
        provider: Some("jellyfin".into()),
        ..ListFilter::default()
    };
    if let Some(url) = server_url {
        filter.attributes.insert(SERVER_URL.into(), url);
    }
    let logins = client.list(&filter).await?;
    let Some(first) = logins.first() else {
        eprintln!("find_login: no Jellyfin login yet; log in and store it with its attributes");
        return Ok(ExitCode::from(3));
    };
    let attr = |m: &keyhaven::Metadata, name: &str| m.attributes.get(name).cloned();
    for m in &logins {
        println!(
            "{} as {}",
            attr(m, SERVER_NAME).unwrap_or_else(|| m.key.server_id().to_owned()),
            attr(m, USER_NAME).unwrap_or_else(|| m.key.user_id().to_owned()),
        );
    }
    // Reuse the first: its token, and the device id it was issued to (a new
    // login under that id would revoke the other app's session).
    let credential = client.retrieve(&first.key).await?;
    println!(
        "reusing {}: server {}, device id {}, a token of {} bytes",
        first.key,
        attr(first, SERVER_URL).unwrap_or_default(),
        attr(first, DEVICE_ID).unwrap_or_default(),
        credential.secret.len(),
    );
    Ok(ExitCode::SUCCESS)
}
