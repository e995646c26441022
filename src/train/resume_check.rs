//! `--resume` with a program that differs from the run's: what changed.
//!
//! Owns comparing the program about to resume with the one the run folder's
//! `run.json` recorded (the model file's text and the train block as
//! checked, `--set` and command-line overrides included). Guarantees:
//! every difference is named (a train-block line as it was and as it is;
//! the model file by its first differing line); a folder without
//! `run.json` (an older run) or an unreadable one yields no change, never
//! an error: resuming stays possible, the warning is advice.

use std::path::Path;

use serde_json::Value;

use crate::sema::hir::Model;
use crate::sema::spec::TrainConfig;
use crate::source::SourceMap;

/// What differs between the run in `out` and the program resuming it.
pub fn program_changes(
    out: &Path,
    model: &Model,
    cfg: &TrainConfig,
    sources: &SourceMap,
) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(out.join("run.json")) else {
        return Vec::new();
    };
    let Ok(Value::Object(old)) = serde_json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    let mut changes = Vec::new();
    if let Some(old_block) = old.get("train_block").and_then(Value::as_str) {
        changes.extend(train_block_changes(old_block, &cfg.to_string()));
    }
    let file = sources.file(model.span.file);
    if let Some(old_source) = old.get("model_source").and_then(Value::as_str) {
        if let Some(change) = source_change(old_source, &file.text) {
            changes.push(format!("{}: {change}", file.name));
        }
    }
    changes
}

/// The train-block settings (one a line) that differ: `was` → `now`.
fn train_block_changes(old: &str, new: &str) -> Vec<String> {
    let key = |line: &str| line.trim().split(" = ").next().unwrap_or("").to_string();
    let settings = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .map(str::trim)
            .filter(|l| l.contains(" = "))
            .map(|l| (key(l), l.trim_end_matches(';').to_string()))
            .collect()
    };
    let (old, new) = (settings(old), settings(new));
    let mut out = Vec::new();
    for (k, line) in &old {
        match new.iter().find(|(n, _)| n == k) {
            Some((_, now)) if now != line => out.push(format!("train block: `{line}` → `{now}`")),
            None => out.push(format!("train block: `{line}` removed")),
            _ => {}
        }
    }
    for (k, line) in &new {
        if !old.iter().any(|(o, _)| o == k) {
            out.push(format!("train block: `{line}` added"));
        }
    }
    out
}

/// The first line where the model file's text differs, as a sentence.
fn source_change(old: &str, new: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let first = (0..a.len().max(b.len())).find(|i| a.get(*i) != b.get(*i))?;
    let show = |l: Option<&&str>| l.map_or("(none)".to_string(), |l| format!("`{}`", l.trim()));
    Some(format!(
        "line {} was {}, is {} ({} lines before, {} now)",
        first + 1,
        show(a.get(first)),
        show(b.get(first)),
        a.len(),
        b.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_changed_added_and_removed_settings() {
        let old = "train M {\n    epochs = 2;\n    seed = 0;\n    clip_grad = off;\n}";
        let new = "train M {\n    epochs = 3;\n    seed = 0;\n    valid = 0.1;\n}";
        let c = train_block_changes(old, new);
        assert_eq!(
            c,
            [
                "train block: `epochs = 2` → `epochs = 3`",
                "train block: `clip_grad = off` removed",
                "train block: `valid = 0.1` added",
            ]
        );
        assert!(train_block_changes(old, old).is_empty());
    }

    #[test]
    fn names_the_first_differing_source_line() {
        let c = source_change("a\nb\nc\n", "a\nB\nc\n").unwrap();
        assert_eq!(c, "line 2 was `b`, is `B` (3 lines before, 3 now)");
        assert_eq!(source_change("a\n", "a\n"), None);
        let c = source_change("a\n", "a\nb\n").unwrap();
        assert!(c.starts_with("line 2 was (none), is `b`"), "{c}");
    }
}
