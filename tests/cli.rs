//! The `deqc` binary: exit codes, summaries and diagnostics on stderr.

use std::process::Command;

mod common;
use common::cli::deqc;

#[test]
fn check_examples_succeeds_with_a_summary() {
    let (code, out, err) = deqc(&[
        "check",
        "examples/mnist_mlp.deq",
        "examples/mdeq_mnist.deq",
        "examples/char_lm.deq",
        "examples/mondeq.deq",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("examples/mnist_mlp.deq: ok"));
    assert!(out.contains("inject.w  [784, 256]"), "{out}");
    assert!(out.contains("total: 269,322 parameters"), "{out}");
    assert!(out.contains("solver   = anderson(m = 5"), "{out}");
}

#[test]
fn check_invalid_fails_with_diagnostic() {
    let (code, out, err) = deqc(&["check", "tests/ui/matmul_shape.deq"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains("deq::sema::matmul_shape"), "{err}");
    assert!(err.contains("inner dimensions 784 and 256 differ"), "{err}");
    assert!(err.contains("1 error"), "{err}");
}

#[test]
fn missing_file_is_a_usage_error() {
    let (code, _, err) = deqc(&["check", "no/such/file.deq"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read no/such/file.deq"), "{err}");
}

#[test]
fn dump_stages() {
    let (code, out, _) = deqc(&["dump", "--emit=ast", "examples/mondeq.deq"]);
    assert_eq!(code, 0);
    assert!(!out.is_empty());
    let (code, out, _) = deqc(&["dump", "--emit=hir", "examples/mondeq.deq"]);
    assert_eq!(code, 0);
    assert!(out.contains("equilibrium (z)"), "{out}");
    let (code, _, err) = deqc(&["dump", "--emit=hir", "tests/ui/unknown_name.deq"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown name `tahn`"), "{err}");
}

#[test]
fn gradcheck_and_backward_graph_of_an_equilibrium_model() {
    let (code, out, err) = deqc(&[
        "gradcheck",
        "examples/mnist_mlp.deq",
        "--samples",
        "4",
        "--stability",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("param cell.w"), "{out}");
    assert!(out.contains("spectral radius"), "{out}");
    let (code, out, _) = deqc(&["graph", "--backward", "examples/mnist_mlp.deq"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("digraph") && out.contains("adjoint"),
        "{out}"
    );
}

/// `--max-time` ends a long run between steps and still tests it once;
/// a malformed duration is a usage error naming the accepted forms.
#[test]
fn max_time_stops_a_run_and_tests_it() {
    let out = std::env::temp_dir().join(format!("deqc-cli-max-time-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dir = out.to_str().unwrap();
    // 100 epochs of 250 steps would take many minutes.
    let (code, stdout, err) = deqc(&[
        "run",
        "examples/mnist_mlp.deq",
        "--epochs",
        "100",
        "--batch-size",
        "32",
        "--max-time",
        "1s",
        "--out",
        dir,
    ]);
    assert_eq!(code, 0, "{err}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let train_steps = metrics
        .lines()
        .filter(|l| l.contains("\"split\":\"train\""))
        .count();
    let tests = metrics
        .lines()
        .filter(|l| l.contains("\"split\":\"test\""))
        .count();
    assert!(
        (1..250).contains(&train_steps),
        "{train_steps} steps\n{stdout}"
    );
    assert_eq!(tests, 1, "{metrics}");
    for bad in ["10", "0m", "1d", "m", "xs"] {
        let (code, _, err) = deqc(&["run", "examples/mnist_mlp.deq", "--max-time", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(err.contains("`10m`"), "{bad}: {err}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn run_then_eval_a_checkpoint() {
    let out = std::env::temp_dir().join(format!("deqc-cli-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dir = out.to_str().unwrap();
    let (code, stdout, err) = deqc(&[
        "run",
        "examples/mnist_mlp.deq",
        "--max-steps",
        "2",
        "--batch-size",
        "32",
        "--out",
        dir,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("DeqMlp: 2 steps"), "{stdout}");
    let (code, stdout, err) = deqc(&["eval", "examples/mnist_mlp.deq", "--weights", dir]);
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("accuracy") && stdout.contains("2000 samples"),
        "{stdout}"
    );
    // A checkpoint of another model is refused with the differences listed.
    let (code, _, err) = deqc(&["eval", "examples/mdeq_mnist.deq", "--weights", dir]);
    assert_ne!(code, 0);
    assert!(err.contains("stem.w") && err.contains("inject.w"), "{err}");
    // Usage errors.
    let (code, _, err) = deqc(&["run", "examples/mnist_mlp.deq", "--set", "epoch=2"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `epochs`"), "{err}");
    // Zero epochs or a zero batch is refused, as in a train block, never
    // silently changed.
    for args in [
        &["--batch-size", "0"][..],
        &["--epochs", "0"],
        &["--set", "batch_size=0"],
        &["--set", "epochs=0"],
    ] {
        let mut all = vec!["run", "examples/mnist_mlp.deq", "--max-steps", "1"];
        all.extend_from_slice(args);
        let (code, _, err) = deqc(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(">= 1"), "{args:?}: {err}");
    }
    let (code, _, err) = deqc(&[
        "run",
        "examples/mnist_mlp.deq",
        "--device",
        "cuda",
        "--max-steps",
        "1",
    ]);
    if cfg!(not(feature = "cuda")) {
        assert_eq!(code, 2);
        assert!(err.contains("--features cuda"), "{err}");
    }
}

/// Run deqc with its stdout closed before it writes anything, as
/// `deqc ... | head -0` would: (exit code, stderr).
fn deqc_with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("deqc starts");
    // Close the read end: every later write to stdout is a broken pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("deqc ends");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let dir = std::env::temp_dir().join(format!("deqc-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run_out = dir.join("run");
    let run_out = run_out.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["check", "examples/mnist_mlp.deq"],
        vec!["dump", "--emit=ast", "examples/mondeq.deq"],
        vec!["dump", "--emit=hir", "examples/mondeq.deq"],
        vec!["dump", "--emit=ir", "examples/mondeq.deq"],
        vec!["graph", "examples/mondeq.deq"],
        vec!["gradcheck", "tests/models/two_eq.deq", "--samples", "2"],
        vec![
            "run",
            "examples/mnist_mlp.deq",
            "--max-steps",
            "1",
            "--out",
            run_out,
        ],
    ];
    for args in commands {
        let (code, err) = deqc_with_closed_stdout(&args);
        assert!(
            !err.contains("Broken pipe") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert_eq!(code, Some(0), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Write `text` as `name` in a fresh temporary folder; returns its path.
fn temp_model(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("deqc-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.deq"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A map that contracts at its initializers (std 0.01) but is chaotic at
/// random parameters of std 1/sqrt(64) (gain about 5).
const GAIN_MODEL: &str = "model Gain(x: f64[B, 64]) -> f64[] {
    param w: f64[64, 64] = normal(std = 0.01);
    equilibrium z: f64[B, 64] = tanh(5.0 * (z @ w) + x)
        with solver = fixed_point(tol = 1e-10, max_iter = 100),
             backward = implicit(tol = 1e-10, max_iter = 100);
    sum(z * z)
}
train Gain {
    data = csv(\"unused.csv\", target = \"y\");
    loss = mse;
    seed = 3;
}
";

#[test]
fn gradcheck_checks_at_the_models_initial_parameters_by_default() {
    let path = temp_model("gain", GAIN_MODEL);
    let file = path.to_str().unwrap();
    let (code, out, err) = deqc(&["gradcheck", file, "--samples", "8"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("param w") && out.contains(" ok"), "{out}");
    assert!(!out.contains("did not converge"), "{out}");
}

#[test]
fn gradcheck_where_solves_do_not_converge_is_inconclusive_not_failed() {
    let path = temp_model("gain_random", GAIN_MODEL);
    let file = path.to_str().unwrap();
    let (code, out, err) = deqc(&["gradcheck", file, "--samples", "8", "--random-params"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("inconclusive (solves reached residual"),
        "{out}"
    );
    assert!(!out.contains("FAILED"), "{out}");
    assert!(out.contains("did not converge"), "{out}");
    assert!(err.contains("inconclusive"), "{err}");
}

#[test]
fn gradcheck_at_weights_with_an_unbatched_state() {
    // f(Z) = W @ Z + X over a fixed-shape [2, 3] state, at W from a
    // checkpoint: the spectral radius is W's, 0.7 (the state is one sample,
    // not a batch of two rows, which was reported as 2.5).
    let path = temp_model(
        "richardson",
        "model R(x: f64[2, 3]) -> f64[2, 3] {
    param w: f64[2, 2] = zeros;
    equilibrium z: f64[2, 3] = w @ z + x
        with solver = fixed_point(tol = 1e-12, max_iter = 500),
             backward = implicit(tol = 1e-12, max_iter = 500);
    z
}
",
    );
    let weights = path.with_file_name("model.safetensors");
    let w =
        candle_core::Tensor::new(&[[0.5f64, 2.0], [0.02, 0.5]], &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("w", w)]), &weights).unwrap();
    let (code, out, err) = deqc(&[
        "gradcheck",
        path.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--stability",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("param w"), "{out}");
    assert!(
        out.contains("spectral radius of J_f(z*) max 0.7000"),
        "{out}"
    );
    assert!(!out.contains("not contractive"), "{out}");
}

/// `--threads N` and `threads = N` size the CPU pool: the run header
/// reports the size observed after sizing it, which is not the default here
/// (3 threads on any machine means the setting took effect).
#[test]
fn threads_size_the_cpu_pool() {
    let out = std::env::temp_dir().join(format!("deqc-cli-threads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let dir = out.join("run");
    let dir = dir.to_str().unwrap();
    let header = |args: &[&str], file: &str| {
        let mut all = vec!["run", file, "--max-steps", "1", "--batch-size", "16"];
        all.extend_from_slice(&["--out", dir]);
        all.extend_from_slice(args);
        let (code, _, err) = deqc(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
        err.lines()
            .find(|l| l.starts_with("training "))
            .unwrap_or_else(|| panic!("no header in {err}"))
            .to_string()
    };
    let h = header(&["--threads", "1"], "examples/mnist_mlp.deq");
    assert!(h.ends_with("(batch 16, 1 thread)"), "{h}");
    let h = header(&["--threads", "3"], "examples/mnist_mlp.deq");
    assert!(h.ends_with("(batch 16, 3 threads)"), "{h}");
    // The train block's `threads`, and `--threads` over it.
    let text = std::fs::read_to_string("examples/mnist_mlp.deq").unwrap();
    let with_threads = text.replace("batch_size = 128;", "batch_size = 128;\n    threads = 3;");
    assert_ne!(text, with_threads);
    let file = out.join("threads.deq");
    std::fs::write(&file, with_threads).unwrap();
    let file = file.to_str().unwrap();
    let h = header(&[], file);
    assert!(h.ends_with("3 threads)"), "{h}");
    let h = header(&["--threads", "1"], file);
    assert!(h.ends_with("1 thread)"), "{h}");
    // Every command that computes takes it.
    let (code, _, err) = deqc(&["eval", file, "--weights", dir, "--threads", "1"]);
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) = deqc(&[
        "gradcheck",
        "examples/mondeq.deq",
        "--threads",
        "1",
        "--samples",
        "2",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    // Zero, too many, or not a number: a usage error that says why.
    for cmd in ["run", "eval", "grad", "gradcheck"] {
        for bad in ["0", "100000", "two"] {
            let (code, _, err) = deqc(&[cmd, "examples/mnist_mlp.deq", "--threads", bad]);
            assert_eq!(code, 2, "{cmd} --threads {bad}: {err}");
            assert!(
                err.contains("expected a number of threads from 1 to 1024"),
                "{cmd} --threads {bad}: {err}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
