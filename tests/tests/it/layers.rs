//! The daemon's layers depend one way, and no two of its modules import
//! each other (ARCHITECTURE.md, `daemon/src/lib.rs`). Read from the source:
//! every `crate::` path in a file is an edge from its module to the module
//! the path names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use keyhaven_tests::rust_files;

/// The layers, top first: a module may use modules of its own layer and of
/// the layers after it, never of one before it.
const LAYERS: [(&str, &[&str]); 6] = [
    ("server", &["server"]),
    ("rpc", &["rpc"]),
    ("net", &["net"]),
    ("keys", &["keys"]),
    ("store", &["store"]),
    ("shared", &["error", "fault", "fsutil", "identity"]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/src")
}

/// `net/platform/unix.rs` -> `net::platform::unix`; `store/mod.rs` ->
/// `store`; `lib.rs` -> `crate`. `main.rs` is another crate.
fn module_of(rel: &Path) -> Option<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("lib") if parts.len() == 1 => return Some("crate".into()),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts.join("::"))
}

/// The source without comments and string literals, so that prose and
/// messages that mention `crate::x` are not counted.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Every path a `use crate::...;` brings in, braces expanded, plus every
/// `crate::a::b` written inline.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = &rest[..at];
        let after = &rest[at + "crate::".len()..];
        rest = after;
        if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let in_use = before.trim_end().ends_with("use");
        let tree: String = if in_use {
            after[..after.find(';').unwrap_or(after.len())]
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect()
        } else {
            after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect()
        };
        expand("", &tree, &mut paths);
    }
    paths
}

fn expand(prefix: &str, tree: &str, out: &mut Vec<Vec<String>>) {
    match tree.find('{') {
        None => {
            let full = format!("{prefix}{tree}");
            let segs: Vec<String> = full
                .split("::")
                .take_while(|s| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_'))
                .map(str::to_owned)
                .collect();
            if !segs.is_empty() {
                out.push(segs);
            }
        }
        Some(open) => {
            let head = &tree[..open];
            let body = &tree[open + 1..];
            let mut depth = 0;
            let mut start = 0;
            let mut items = Vec::new();
            for (i, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&body[start..i]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&body[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            for item in items.into_iter().filter(|i| !i.is_empty() && *i != "self") {
                expand(&format!("{prefix}{head}"), item, out);
            }
        }
    }
}

/// Module -> the crate modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let files = rust_files(&root);
    let modules: BTreeMap<String, PathBuf> = files
        .into_iter()
        .filter_map(|f| Some((module_of(f.strip_prefix(&root).unwrap())?, f)))
        .collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let mut deps = BTreeSet::new();
        for segs in crate_paths(&code) {
            // The longest prefix that is a module of this crate.
            if let Some(target) = (1..=segs.len())
                .rev()
                .map(|n| segs[..n].join("::"))
                .find(|m| modules.contains_key(m))
                && &target != module
            {
                deps.insert(target);
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap();
    LAYERS
        .iter()
        .position(|(_, tops)| tops.contains(&top))
        .unwrap_or_else(|| {
            panic!("module {module} is in no layer: add it to LAYERS and ARCHITECTURE.md")
        })
}

#[test]
fn every_module_uses_only_its_own_layer_and_the_ones_below() {
    let graph = graph();
    assert!(graph.len() > 30, "too few modules found: {graph:?}");
    let mut wrong = Vec::new();
    for (module, deps) in &graph {
        if module == "crate" {
            continue;
        }
        for dep in deps {
            if layer_of(dep) < layer_of(module) {
                wrong.push(format!(
                    "{module} ({}) uses {dep} ({})",
                    LAYERS[layer_of(module)].0,
                    LAYERS[layer_of(dep)].0
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "upward dependencies:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_modules_import_each_other_even_through_others() {
    let graph = graph();
    // Depth-first search for a cycle, reporting its path.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for dep in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(dep, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("modules import each other: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_uses_in_all_their_forms() {
    let code = code_only(
        "use crate::store::{self, audit::{AuditLog, Record}, Put};\n\
         // use crate::server::prepare;\n\
         let m = \"crate::rpc::nothing\";\n\
         let x = crate::keys::vault::Vault::new();\n",
    );
    let paths: BTreeSet<String> = crate_paths(&code)
        .into_iter()
        .map(|s| s.join("::"))
        .collect();
    let want: BTreeSet<String> = [
        "store::audit::AuditLog",
        "store::audit::Record",
        "store::Put",
        "keys::vault::Vault::new",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(paths, want);
}
