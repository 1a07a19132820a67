//! `docs/faults.md` names, for each bad input or fault, the test that tries
//! it. This fails when a named test does not exist in `tests/it/`, so the
//! table cannot silently drift from the suite.

use std::path::Path;

#[test]
fn every_test_named_in_the_faults_table_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = std::fs::read_to_string(root.join("../docs/faults.md")).unwrap();
    let mut sources = String::new();
    for entry in std::fs::read_dir(root.join("tests/it")).unwrap() {
        sources.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let mut named = 0;
    for row in table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
    {
        let last = row.trim_end_matches('|').rsplit('|').next().unwrap();
        for name in last.split('`').skip(1).step_by(2) {
            if name == "test" {
                continue;
            }
            named += 1;
            assert!(
                sources.contains(&format!("fn {name}(")),
                "docs/faults.md names `{name}`, which is not a test in tests/tests"
            );
        }
    }
    assert!(named >= 25, "the table names {named} tests");
}
