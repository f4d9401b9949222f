use super::*;

fn one(text: &str) -> Node {
    let docs = parse_stream(text).expect("valid yaml");
    assert_eq!(docs.len(), 1);
    docs.into_iter()
        .next()
        .and_then(|d| d.root)
        .expect("a root")
}

#[test]
fn nodes_keep_line_and_column() {
    let root = one("a:\n  b: [1, x]\n  c: \"q\"\n");
    let a = root.get("a").unwrap();
    assert_eq!(a.pos, Pos { line: 2, col: 3 });
    let b = a.get("b").unwrap();
    assert_eq!(b.pos, Pos { line: 2, col: 6 });
    let Value::Seq(items) = &b.value else {
        panic!("a list")
    };
    assert_eq!(items[1].pos, Pos { line: 2, col: 10 });
    assert_eq!(a.get("c").unwrap().pos, Pos { line: 3, col: 6 });
}

#[test]
fn plain_scalars_resolve_by_the_core_schema() {
    let root = one(
        "n: ~\ne:\nt: true\ni: -42\nh: 0x1F\nf: 1.5e3\ns: v1\nq: \"8080\"\nbig: 18446744073709551615\nstr: !!str 12\nyes: yes\n",
    );
    let get = |k: &str| root.get(k).unwrap().resolve().unwrap();
    assert_eq!(get("n"), Scalar::Null);
    assert_eq!(get("e"), Scalar::Null);
    assert_eq!(get("t"), Scalar::Bool(true));
    assert_eq!(get("i"), Scalar::Int(-42));
    assert_eq!(get("h"), Scalar::Int(31));
    assert_eq!(get("f"), Scalar::Float(1500.0));
    assert_eq!(get("s"), Scalar::Str("v1"));
    assert_eq!(get("q"), Scalar::Str("8080"));
    assert_eq!(get("big"), Scalar::UInt(u64::MAX));
    assert_eq!(get("str"), Scalar::Str("12"));
    assert_eq!(get("yes"), Scalar::Str("yes"));
}

#[test]
fn duplicate_keys_are_refused_naming_both_lines() {
    let e = parse_stream("a: 1\nb: 2\na: 3\n").unwrap_err();
    assert_eq!(e.to_string(), "3:1: duplicate key `a` (first at line 1)");
    let many: String = (0..40).map(|i| format!("k{i}: {i}\n")).collect::<String>() + "k7: again\n";
    let e = parse_stream(&many).unwrap_err();
    assert_eq!(e.message, "duplicate key `k7` (first at line 8)");
}

#[test]
fn documents_json_and_empty_documents() {
    let docs = parse_stream("---\n# only a comment\n---\na: 1\n---\n{\"b\": [true]}\n").unwrap();
    assert_eq!(docs.len(), 3);
    assert!(docs[0].root.is_none());
    assert!(docs[2].root.as_ref().unwrap().get("b").is_some());
}

#[test]
fn aliases_expand_within_a_budget() {
    let root = one("base: &b {x: 1}\ncopy: *b\n");
    assert_eq!(
        root.get("copy").unwrap().get("x").unwrap().as_str(),
        Some("1")
    );
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, prev) in ["b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f", "g"])
    {
        laughs.push_str(&format!("{i}: &{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let e = parse_stream(&laughs).unwrap_err();
    assert!(e.message.contains("more than"), "{e}");
}

#[test]
fn deep_nesting_is_refused() {
    let deep = "[".repeat(MAX_DEPTH + 5) + &"]".repeat(MAX_DEPTH + 5);
    let e = parse_stream(&deep).unwrap_err();
    assert!(e.message.contains("nesting deeper"), "{e}");
}

#[test]
fn syntax_errors_name_their_line() {
    let e = parse_stream("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
    assert!(e.pos.line >= 2, "{e}");
    let e = parse_stream("kubectl apply -f - <<EOF\napiVersion: v1\n").unwrap_err();
    assert_eq!(e.pos.line, 2, "{e}");
}
