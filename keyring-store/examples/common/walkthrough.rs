//! What every example does, written only against `keyring_core::Entry`:
//! the code of an app that used keyring-rs 4 and switched its default
//! store to keyhaven with one line. Each example runs this from a
//! different kind of `main`.
//!
//! ```text
//! EXAMPLE                     walk through set/get/delete on a scratch entry
//! EXAMPLE set SERVICE USER    store the password read from stdin
//! EXAMPLE get SERVICE USER    print the password (exit 2: no such entry)
//! EXAMPLE delete SERVICE USER delete the entry (exit 2: no such entry)
//! ```

use std::io::Read;
use std::process::ExitCode;

use keyring_core::{Entry, Error};

/// Runs the command in the process's arguments and says how it went.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::NoEntry) => {
            eprintln!("no such entry");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[&str]) -> Result<(), Error> {
    match args {
        [] => walkthrough(),
        ["set", service, user] => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .map_err(|e| Error::PlatformFailure(Box::new(e)))?;
            Entry::new(service, user)?.set_password(&password)?;
            println!("set");
            Ok(())
        }
        ["get", service, user] => {
            // Asked for, like `keyhaven get` or `secret-tool lookup`: the
            // password goes to stdout and nowhere else (never a log or an
            // error).
            println!("{}", Entry::new(service, user)?.get_password()?);
            Ok(())
        }
        ["delete", service, user] => {
            Entry::new(service, user)?.delete_credential()?;
            println!("deleted");
            Ok(())
        }
        _ => Err(Error::Invalid(
            "arguments".into(),
            "expected nothing, or set|get|delete SERVICE USER".into(),
        )),
    }
}

fn walkthrough() -> Result<(), Error> {
    let entry = Entry::new("keyhaven-example", "demo-user")?;

    entry.set_password("correct horse battery staple")?;
    assert_eq!(entry.get_password()?, "correct horse battery staple");
    println!("set_password / get_password: ok");

    let not_utf8 = [0xff, 0xfe, 0x00, 0x80, b'k', b'h'];
    entry.set_secret(&not_utf8)?;
    assert_eq!(entry.get_secret()?, not_utf8);
    println!("set_secret / get_secret (not UTF-8): ok");
    match entry.get_password() {
        Err(Error::BadEncoding(bytes)) => assert!(bytes.is_empty(), "no secret in errors"),
        other => panic!("get_password of a non-UTF-8 secret: {other:?}"),
    }
    println!("get_password of it: BadEncoding");

    entry.delete_credential()?;
    println!("delete_credential: ok");
    match entry.get_password() {
        Err(Error::NoEntry) => println!("get_password after delete: NoEntry"),
        other => panic!("get_password after delete: {other:?}"),
    }
    match entry.delete_credential() {
        Err(Error::NoEntry) => println!("delete_credential again: NoEntry"),
        other => panic!("delete_credential again: {other:?}"),
    }
    Ok(())
}
