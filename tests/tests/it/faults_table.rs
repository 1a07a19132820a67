//! `docs/faults.md` names, for each bad input or fault, the test that tries
//! it, and SECURITY.md's "Tested claims" name the test of each claim. This
//! fails when a named test does not exist, so neither table can silently
//! drift from the suite.

use std::path::Path;

use keyhaven_tests::rust_files;

/// The end-to-end tests and the crates' unit tests, as one text.
fn sources() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        "tests/tests/it",
        "daemon/src",
        "proto/src",
        "client/src",
        "cli/src",
    ]
    .into_iter()
    .flat_map(|dir| rust_files(&root.join(dir)))
    .map(|f| std::fs::read_to_string(f).unwrap())
    .collect()
}

/// The test names in the last column of each row of the tables in `text`.
fn named_tests(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for row in text
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
    {
        let last = row.trim_end_matches('|').rsplit('|').next().unwrap();
        for name in last.split('`').skip(1).step_by(2) {
            if name != "test"
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                names.push(name.to_owned());
            }
        }
    }
    names
}

fn check(doc: &str, text: &str, at_least: usize) {
    let sources = sources();
    let names = named_tests(text);
    for name in &names {
        assert!(
            sources.contains(&format!("fn {name}(")),
            "{doc} names `{name}`, which is not a test"
        );
    }
    assert!(names.len() >= at_least, "{doc} names {} tests", names.len());
}

#[test]
fn every_test_named_in_the_faults_table_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = std::fs::read_to_string(root.join("../docs/faults.md")).unwrap();
    check("docs/faults.md", &table, 25);
}

#[test]
fn every_test_named_for_a_security_claim_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let security = std::fs::read_to_string(root.join("../SECURITY.md")).unwrap();
    let claims = security
        .split("## Tested claims")
        .nth(1)
        .expect("SECURITY.md has a Tested claims section");
    check("SECURITY.md", claims, 20);
}
