//! UI tests: every `tests/ui/*.deq` is an invalid program. Each must fail to
//! check, its first error's label must sit on the line marked `//~` (in the
//! file the diagnostic points into), and the rendered diagnostics (no colour,
//! 80 columns) must match the insta snapshot.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use deqc::source::Span;

fn ui_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("tests/ui")
        .expect("tests/ui exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deq"))
        .collect();
    files.sort();
    files
}

/// 1-based number of the first line holding the `//~` marker.
fn marked_line(text: &str) -> Option<usize> {
    text.lines().position(|l| l.contains("//~")).map(|i| i + 1)
}

fn check_one(path: &Path) -> String {
    let compiled = deqc::compile_path(path).expect("readable test file");
    assert!(
        compiled.program.is_none() && compiled.diags.has_errors(),
        "{} should not check",
        path.display()
    );
    let first = compiled
        .diags
        .items
        .iter()
        .find(|d| d.is_error())
        .expect("an error");
    let offset = first
        .error
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset())
        .unwrap_or_else(|| panic!("{}: the first error has no label", path.display()));
    let file = compiled.sources.file(first.file);
    let (line, _) = compiled
        .sources
        .line_col(Span::new(first.file, offset, offset));
    assert_eq!(
        Some(line),
        marked_line(&file.text),
        "{}: first error `{}` is labelled on line {line} of {}",
        path.display(),
        first.error,
        file.name
    );
    compiled.render_plain(80)
}

#[test]
fn invalid_programs_fail_with_labelled_diagnostics() {
    let files = ui_files();
    assert!(
        files.len() >= 30,
        "expected at least 30 UI tests, found {}",
        files.len()
    );
    for path in files {
        let rendered = check_one(&path);
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(name, rendered);
    }
}

#[test]
fn every_error_in_a_file_is_reported() {
    let compiled = deqc::compile_path(Path::new("tests/ui/many_errors.deq")).unwrap();
    let codes: Vec<String> = compiled.diags.items.iter().map(|d| d.code()).collect();
    assert!(codes.len() >= 3, "expected several errors, got {codes:?}");
    assert!(
        codes.contains(&"deq::sema::unknown_name".to_string()),
        "{codes:?}"
    );
    assert!(
        codes.contains(&"deq::sema::signature_mismatch".to_string()),
        "{codes:?}"
    );
    assert!(
        codes.contains(&"deq::sema::argument_type".to_string()),
        "{codes:?}"
    );
}

/// Every `deq::parse::*` and `deq::sema::*` code written in the front end's
/// error enums (read from their source, so a new variant is seen without
/// being listed anywhere else).
fn front_end_codes() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    for file in ["src/syntax/error.rs", "src/sema/error.rs"] {
        let text = std::fs::read_to_string(file).expect("error enum source");
        for prefix in ["deq::parse::", "deq::sema::"] {
            for (at, _) in text.match_indices(prefix) {
                let name: String = text[at + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    codes.insert(format!("{prefix}{name}"));
                }
            }
        }
    }
    codes
}

/// Codes no UI case can show, each with the reason.
const NOT_IN_UI: &[(&str, &str)] = &[(
    "deq::parse::too_large",
    "needs a source over 4 GiB (spans are 32-bit), too large for a test file",
)];

#[test]
fn every_front_end_code_has_a_ui_case() {
    let codes = front_end_codes();
    assert!(codes.len() >= 30, "found only {codes:?}");
    let mut shown = BTreeSet::new();
    for path in ui_files() {
        let compiled = deqc::compile_path(&path).expect("readable test file");
        shown.extend(compiled.diags.items.iter().map(|d| d.code()));
    }
    let missing: Vec<&String> = codes
        .iter()
        .filter(|c| !shown.contains(*c) && !NOT_IN_UI.iter().any(|(n, _)| n == c))
        .collect();
    assert!(
        missing.is_empty(),
        "diagnostic codes without a tests/ui case: {missing:?}"
    );
    for (code, _) in NOT_IN_UI {
        assert!(
            codes.contains(*code),
            "{code} no longer exists: drop it from NOT_IN_UI"
        );
    }
}
