//! The editor grammar (`editors/vscode/syntaxes/deq.tmLanguage.json`)
//! highlights exactly the compiler's keywords, built-ins, solvers and
//! backward modes, so the lists cannot drift apart.

use std::collections::BTreeSet;

use serde_json::Value;

const GRAMMAR: &str = include_str!("../editors/vscode/syntaxes/deq.tmLanguage.json");
const PEST: &str = include_str!("../grammar/deq.pest");

/// The words of a `\b(a|b|c)\b` pattern.
fn words(pattern: &str) -> BTreeSet<String> {
    let inner = pattern
        .split_once("\\b(")
        .and_then(|(_, rest)| rest.split_once(")\\b"))
        .map(|(inner, _)| inner)
        .unwrap_or_else(|| panic!("not a word-list pattern: {pattern}"));
    inner.split('|').map(String::from).collect()
}

/// Every `match` of the grammar whose scope name starts with `scope`.
fn words_of_scope(grammar: &Value, scope: &str) -> BTreeSet<String> {
    fn walk(v: &Value, scope: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                let named = map
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.starts_with(scope));
                if let (true, Some(Value::String(m))) = (named, map.get("match")) {
                    out.extend(words(m));
                }
                for child in map.values() {
                    walk(child, scope, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, scope, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(grammar, scope, &mut out);
    out
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The alternatives of the `keyword` rule of grammar/deq.pest.
fn pest_keywords() -> BTreeSet<String> {
    let rule = PEST
        .split_once("keyword = @{")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(body, _)| body)
        .expect("a keyword rule in deq.pest");
    rule.split('"')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

#[test]
fn keywords_match_the_parser_and_the_language_server() {
    let grammar: Value = serde_json::from_str(GRAMMAR).expect("valid JSON");
    let mut highlighted = words_of_scope(&grammar, "keyword.control");
    highlighted.extend(words_of_scope(&grammar, "keyword.declaration"));
    highlighted.extend(words_of_scope(&grammar, "constant.language.boolean"));
    let parser = pest_keywords();
    assert!(parser.len() >= 15, "{parser:?}");
    assert_eq!(highlighted, parser);
    assert_eq!(set(deqc::lsp::docs::KEYWORDS), parser);
}

#[test]
fn builtins_solvers_and_modes_match_the_checker() {
    let grammar: Value = serde_json::from_str(GRAMMAR).expect("valid JSON");
    assert_eq!(
        words_of_scope(&grammar, "support.function.builtin"),
        set(deqc::sema::builtins::BUILTINS)
    );
    assert_eq!(
        words_of_scope(&grammar, "support.constant.solver"),
        set(deqc::sema::options::SOLVERS)
    );
    assert_eq!(
        words_of_scope(&grammar, "support.constant.backward"),
        set(deqc::sema::options::BACKWARD_MODES)
    );
}

#[test]
fn the_extension_starts_deqc_lsp_for_deq_files() {
    let manifest: Value =
        serde_json::from_str(include_str!("../editors/vscode/package.json")).expect("valid JSON");
    let lang = &manifest["contributes"]["languages"][0];
    assert_eq!(lang["extensions"][0], ".deq");
    let config: Value = serde_json::from_str(include_str!(
        "../editors/vscode/language-configuration.json"
    ))
    .expect("valid JSON");
    assert_eq!(config["comments"]["lineComment"], "//");
    let client = include_str!("../editors/vscode/extension.js");
    assert!(client.contains("args: [\"lsp\"]"));
}
