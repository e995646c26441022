//! The `deqc` binary run as a user runs it.

use std::process::Command;

/// Run `deqc` with `args`: its exit code (-1 when a signal ended it),
/// stdout and stderr. Fails the test when the binary panicked: every wrong
/// use must end in a diagnostic, never a panic.
pub fn deqc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(args)
        .output()
        .expect("deqc runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "deqc {args:?} panicked:\n{err}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}
