//! The published contract stays compatible: everything in
//! `proto/compat/keyhaven.v1.baseline.proto` must still be in the live
//! `proto/keyhaven/v1/keyhaven.proto`, unchanged. New messages, fields,
//! enum values, services and methods may be added; nothing in the baseline
//! may be removed, renumbered, retyped or renamed.
//!
//! Both files are parsed with protox and compared descriptor by descriptor:
//!
//! - every message (nested ones too) still exists;
//! - every field, found by number, keeps its name, type (and message or
//!   enum type name), label and proto3 `optional` presence;
//! - every enum value, found by number, keeps its name;
//! - every service and method still exists with the same request and
//!   response types and streaming.
//!
//! When the contract grows on purpose, the baseline is replaced by the new
//! published `.proto` (copy it over) in the same change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    ServiceDescriptorProto,
};

const PACKAGE: &str = "keyhaven.v1";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn baseline_path() -> PathBuf {
    repo_root().join("proto/compat/keyhaven.v1.baseline.proto")
}

fn live_path() -> PathBuf {
    repo_root().join("proto/keyhaven/v1/keyhaven.proto")
}

/// Parses the `.proto` file at `path` (imports resolved next to it, plus
/// protox's bundled google/protobuf files) and returns its descriptor.
fn parse(path: &Path) -> FileDescriptorProto {
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    let set = protox::compile([name], [dir])
        .unwrap_or_else(|e| panic!("cannot parse {}: {e:?}", path.display()));
    set.file
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("{} is not in its own descriptor set", path.display()))
}

/// Everything the baseline has that the live file lost or changed, one
/// message per problem, each naming the message, field, enum value, service
/// or method.
fn incompatibilities(baseline: &FileDescriptorProto, live: &FileDescriptorProto) -> Vec<String> {
    let mut problems = Vec::new();
    if baseline.package() != live.package() {
        problems.push(format!(
            "package {:?} became {:?}",
            baseline.package(),
            live.package()
        ));
        return problems;
    }
    let prefix = baseline.package().to_owned();

    let mut live_messages = BTreeMap::new();
    for m in &live.message_type {
        collect_messages(&prefix, m, &mut live_messages);
    }
    let mut base_messages = BTreeMap::new();
    for m in &baseline.message_type {
        collect_messages(&prefix, m, &mut base_messages);
    }
    let mut live_enums = BTreeMap::new();
    let mut base_enums = BTreeMap::new();
    for e in &live.enum_type {
        live_enums.insert(format!("{prefix}.{}", e.name()), e);
    }
    for e in &baseline.enum_type {
        base_enums.insert(format!("{prefix}.{}", e.name()), e);
    }
    for (name, m) in &live_messages {
        for e in &m.enum_type {
            live_enums.insert(format!("{name}.{}", e.name()), e);
        }
    }
    for (name, m) in &base_messages {
        for e in &m.enum_type {
            base_enums.insert(format!("{name}.{}", e.name()), e);
        }
    }

    for (name, base) in &base_messages {
        match live_messages.get(name) {
            None => problems.push(format!("message {name} was removed")),
            Some(live) => compare_fields(name, base, live, &mut problems),
        }
    }
    for (name, base) in &base_enums {
        match live_enums.get(name) {
            None => problems.push(format!("enum {name} was removed")),
            Some(live) => compare_enum(name, base, live, &mut problems),
        }
    }
    for base in &baseline.service {
        let name = format!("{prefix}.{}", base.name());
        match live.service.iter().find(|s| s.name() == base.name()) {
            None => problems.push(format!("service {name} was removed")),
            Some(live) => compare_service(&name, base, live, &mut problems),
        }
    }
    problems
}

fn collect_messages<'a>(
    scope: &str,
    message: &'a DescriptorProto,
    out: &mut BTreeMap<String, &'a DescriptorProto>,
) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        collect_messages(&name, nested, out);
    }
    out.insert(name, message);
}

fn describe(field: &FieldDescriptorProto) -> String {
    let label = match field.label() {
        Label::Repeated => "repeated ",
        Label::Required => "required ",
        Label::Optional if field.proto3_optional() => "optional ",
        Label::Optional => "",
    };
    let ty = match field.r#type() {
        Type::Message | Type::Enum | Type::Group => {
            field.type_name().trim_start_matches('.').to_owned()
        }
        other => other
            .as_str_name()
            .trim_start_matches("TYPE_")
            .to_lowercase(),
    };
    format!("{label}{ty} {} = {}", field.name(), field.number())
}

fn compare_fields(
    message: &str,
    base: &DescriptorProto,
    live: &DescriptorProto,
    problems: &mut Vec<String>,
) {
    for b in &base.field {
        let Some(l) = live.field.iter().find(|l| l.number() == b.number()) else {
            let moved = live
                .field
                .iter()
                .find(|l| l.name() == b.name())
                .map(|l| format!("; it is now `{}`", describe(l)))
                .unwrap_or_default();
            problems.push(format!(
                "message {message}: field `{}` was removed (number {} must stay{moved})",
                describe(b),
                b.number()
            ));
            continue;
        };
        if l.name() != b.name() {
            problems.push(format!(
                "message {message}: field number {} is reused with another name: `{}` became `{}`",
                b.number(),
                describe(b),
                describe(l)
            ));
            continue;
        }
        let same_type = l.r#type() == b.r#type() && l.type_name() == b.type_name();
        let same_label = l.label() == b.label() && l.proto3_optional() == b.proto3_optional();
        if !same_type || !same_label {
            problems.push(format!(
                "message {message}: field {} changed {}: `{}` became `{}`",
                b.name(),
                match (same_type, same_label) {
                    (false, false) => "type and label",
                    (false, true) => "type",
                    _ => "label",
                },
                describe(b),
                describe(l)
            ));
        }
    }
}

fn compare_enum(
    name: &str,
    base: &EnumDescriptorProto,
    live: &EnumDescriptorProto,
    problems: &mut Vec<String>,
) {
    for b in &base.value {
        match live.value.iter().find(|l| l.number() == b.number()) {
            None => problems.push(format!(
                "enum {name}: value {} = {} was removed",
                b.name(),
                b.number()
            )),
            Some(l) if l.name() != b.name() => problems.push(format!(
                "enum {name}: value number {} is reused with another name: {} became {}",
                b.number(),
                b.name(),
                l.name()
            )),
            Some(_) => {}
        }
    }
}

fn compare_service(
    name: &str,
    base: &ServiceDescriptorProto,
    live: &ServiceDescriptorProto,
    problems: &mut Vec<String>,
) {
    let signature = |m: &prost_types::MethodDescriptorProto| {
        format!(
            "rpc {}({}{}) returns ({}{})",
            m.name(),
            if m.client_streaming() { "stream " } else { "" },
            m.input_type().trim_start_matches('.'),
            if m.server_streaming() { "stream " } else { "" },
            m.output_type().trim_start_matches('.'),
        )
    };
    for b in &base.method {
        match live.method.iter().find(|l| l.name() == b.name()) {
            None => problems.push(format!(
                "service {name}: method `{}` was removed",
                signature(b)
            )),
            Some(l) if signature(l) != signature(b) => problems.push(format!(
                "service {name}: method {} changed: `{}` became `{}`",
                b.name(),
                signature(b),
                signature(l)
            )),
            Some(_) => {}
        }
    }
}

#[test]
fn the_live_proto_keeps_everything_in_the_published_baseline() {
    let baseline = parse(&baseline_path());
    let live = parse(&live_path());
    assert_eq!(baseline.package(), PACKAGE);
    let problems = incompatibilities(&baseline, &live);
    assert!(
        problems.is_empty(),
        "{} breaks the published contract {}:\n  - {}\n\
         Add new fields and methods instead of editing old ones; never reuse a number.",
        live_path().display(),
        baseline_path().display(),
        problems.join("\n  - ")
    );
}

/// Applies `edit` to a copy of the baseline in a temporary directory and
/// returns what the checker says about it.
fn check_edited(what: &str, edit: impl FnOnce(&str) -> String) -> Vec<String> {
    let text = std::fs::read_to_string(baseline_path()).unwrap();
    let edited = edit(&text);
    assert_ne!(
        edited, text,
        "the edit `{what}` did not change the baseline"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edited.proto");
    std::fs::write(&path, edited).unwrap();
    incompatibilities(&parse(&baseline_path()), &parse(&path))
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "the baseline has no `{from}`");
    text.replacen(from, to, 1)
}

#[test]
fn the_checker_finds_each_kind_of_break() {
    let baseline = parse(&baseline_path());
    assert_eq!(
        incompatibilities(&baseline, &baseline),
        Vec::<String>::new(),
        "the baseline is compatible with itself"
    );

    let cases: [(&str, &str, &str, &str); 7] = [
        (
            "renumbered field",
            "uint64 revision = 2;",
            "uint64 revision = 9;",
            "message keyhaven.v1.CredentialMetadata: field `uint64 revision = 2` was removed \
             (number 2 must stay; it is now `uint64 revision = 9`)",
        ),
        (
            "number reused with another name",
            "uint64 revision = 2;",
            "uint64 generation = 2;",
            "message keyhaven.v1.CredentialMetadata: field number 2 is reused with another name: \
             `uint64 revision = 2` became `uint64 generation = 2`",
        ),
        (
            "changed type",
            "uint64 credential_count = 7;",
            "uint32 credential_count = 7;",
            "message keyhaven.v1.StatusResponse: field credential_count changed type",
        ),
        (
            "optional dropped",
            "optional string label = 6;",
            "string label = 6;",
            "message keyhaven.v1.CredentialMetadata: field label changed label: \
             `optional string label = 6` became `string label = 6`",
        ),
        (
            "enum value renamed",
            "EVENT_KIND_LAGGED = 7;",
            "EVENT_KIND_BEHIND = 7;",
            "enum keyhaven.v1.EventKind: value number 7 is reused with another name",
        ),
        (
            "method removed",
            "rpc Logout(LogoutRequest) returns (LogoutResponse);",
            "",
            "service keyhaven.v1.Credentials: method `rpc Logout(keyhaven.v1.LogoutRequest) \
             returns (keyhaven.v1.LogoutResponse)` was removed",
        ),
        (
            "streaming changed",
            "rpc Watch(WatchRequest) returns (stream WatchEvent);",
            "rpc Watch(WatchRequest) returns (WatchEvent);",
            "service keyhaven.v1.Credentials: method Watch changed",
        ),
    ];
    for (what, from, to, want) in cases {
        let problems = check_edited(what, |text| replace_once(text, from, to));
        assert!(
            problems.iter().any(|p| p.starts_with(want)),
            "{what}: expected a problem starting with {want:?}, got {problems:#?}"
        );
    }

    let problems = check_edited("service removed", |text| {
        let start = text.find("service Audit {").unwrap();
        let end = start + text[start..].find('}').unwrap() + 1;
        format!("{}{}", &text[..start], &text[end..])
    });
    assert!(
        problems.contains(&"service keyhaven.v1.Audit was removed".to_owned()),
        "{problems:#?}"
    );
}

#[test]
fn additions_are_compatible() {
    let problems = check_edited("additions", |text| {
        let text = replace_once(
            text,
            "optional string label = 6;",
            "optional string label = 6;\n  string last_writer = 7;",
        );
        let text = replace_once(
            &text,
            "EVENT_KIND_LAGGED = 7;",
            "EVENT_KIND_LAGGED = 7;\n  EVENT_KIND_RENAMED = 8;",
        );
        let text = replace_once(
            &text,
            "rpc Status(StatusRequest) returns (StatusResponse);",
            "rpc Status(StatusRequest) returns (StatusResponse);\n  \
             rpc Ping(StatusRequest) returns (StatusResponse);",
        );
        format!("{text}\nmessage Extra {{ string note = 1; }}\n")
    });
    assert_eq!(problems, Vec::<String>::new());
}
