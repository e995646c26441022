//! UI tests: every `tests/ui/*.deq` is an invalid program. Each must fail to
//! check, its first error's label must sit on the line marked `//~` (in the
//! file the diagnostic points into), and the rendered diagnostics (no colour,
//! 80 columns) must match the insta snapshot.

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
