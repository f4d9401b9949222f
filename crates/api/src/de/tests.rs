use std::collections::BTreeMap;

use serde::Deserialize;

use super::*;
use crate::yaml::parse_stream;

#[derive(Debug, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Outer {
    prefix_rewrite: Option<String>,
    port: Option<u32>,
    enabled: Option<bool>,
    #[serde(default)]
    items: Vec<Inner>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    mode: Option<Mode>,
    any: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Inner {
    name: String,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Mode {
    Strict,
    Permissive,
}

fn read(text: &str) -> Result<Outer, Error> {
    let docs = parse_stream(text).expect("yaml");
    let root = docs[0].root.as_ref().expect("root");
    from_node(root, &Path::Root.field("spec"))
}

#[test]
fn camel_and_snake_case_spellings_both_read() {
    assert_eq!(
        read("prefixRewrite: /a").unwrap().prefix_rewrite.as_deref(),
        Some("/a")
    );
    assert_eq!(
        read("prefix_rewrite: /a")
            .unwrap()
            .prefix_rewrite
            .as_deref(),
        Some("/a")
    );
    // Free-form map keys are never renamed.
    let labels = read("labels: {app_name: x}").unwrap().labels;
    assert_eq!(labels.get("app_name").map(String::as_str), Some("x"));
}

#[test]
fn unknown_fields_name_their_path_and_suggest() {
    let e = read("items:\n- name: a\n- nmae: b\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "3:3: spec.items[1].nmae: unknown field `nmae` (did you mean `name`?)"
    );
    let e = read("zzz: 1").unwrap_err();
    assert!(
        e.message
            .starts_with("unknown field `zzz`, expected one of: prefixRewrite, port"),
        "{e}"
    );
}

#[test]
fn types_are_checked_with_positions() {
    let e = read("port: eighty").unwrap_err();
    assert_eq!(
        e.to_string(),
        "1:7: spec.port: expected an integer, found string `eighty`"
    );
    let e = read("port: 70000000000").unwrap_err();
    assert_eq!(e.message, "70000000000 is out of range for u32");
    let e = read("enabled: yes").unwrap_err();
    assert_eq!(e.message, "expected true or false, found string `yes`");
    let e = read("items:\n- name: 8080\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "2:9: spec.items[0].name: expected a string, found integer `8080` (quote it)"
    );
    let e = read("mode: STRICTT").unwrap_err();
    assert_eq!(
        e.to_string(),
        "1:7: spec.mode: unknown value `STRICTT`, expected one of: STRICT, PERMISSIVE"
    );
    let e = read("items: {name: a}").unwrap_err();
    assert_eq!(e.message, "expected a list, found a mapping");
}

#[test]
fn protobuf_json_leniencies() {
    let o = read("port: \"8080\"\nitems:\nlabels:\nmode: PERMISSIVE\nany: {a: [1, true, x, null]}")
        .unwrap();
    assert_eq!(o.port, Some(8080));
    assert!(o.items.is_empty() && o.labels.is_empty());
    assert_eq!(o.mode, Some(Mode::Permissive));
    assert_eq!(o.any, Some(serde_json::json!({"a": [1, true, "x", null]})));
}
