//! `deqc bench`: its report (steps, median, breakdown, allocations) and its
//! usage errors.

mod common;
use common::cli::deqc;

/// A DEQ-MLP step small enough for a debug build: 16 samples, 3 forward
/// and 2 adjoint iterations, each run to the end.
const SMALL_MLP: &[&str] = &[
    "--set",
    "batch_size=16",
    "--set",
    "solver.max_iter=3",
    "--set",
    "solver.tol=0",
    "--set",
    "backward.max_iter=2",
    "--set",
    "backward.tol=0",
];

/// The whitespace-separated fields of the report line of step `n`.
fn step_line(report: &str, n: usize) -> Vec<String> {
    report
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.first().map(String::as_str) == Some(&n.to_string()) && f.len() == 7)
        .unwrap_or_else(|| panic!("no line for step {n} in:\n{report}"))
}

#[test]
fn bench_reports_steps_median_breakdown_and_allocations() {
    let (code, out, err) = deqc(
        &[
            &[
                "bench",
                "examples/mnist_mlp.deq",
                "--steps",
                "3",
                "--threads",
                "1",
            ],
            SMALL_MLP,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("bench DeqMlp: batch 16, 1 threads, 3 steps"),
        "{out}"
    );
    // The overrides reach the solvers: tol 0 runs exactly max_iter.
    assert!(
        out.contains(
            "anderson(tol 0e0, max_iter 3), backward implicit anderson(tol 0e0, max_iter 2)"
        ),
        "{out}"
    );
    let mut allocations = Vec::new();
    for n in 1..=3 {
        let f = step_line(&out, n);
        assert_eq!((f[2].as_str(), f[3].as_str()), ("3.0", "2.0"), "{out}");
        // The binary counts allocations and heap bytes.
        let allocs: u64 = f[4].parse().unwrap_or_else(|_| panic!("{out}"));
        let heap: f64 = f[5].parse().unwrap_or_else(|_| panic!("{out}"));
        assert!(allocs > 0 && heap > 0.0, "{out}");
        allocations.push(allocs);
    }
    // The first step plans and compiles; after it, allocations are flat
    // (schedules and kernel buffers are reused, nothing grows per step).
    assert!(allocations[1] < allocations[0], "{out}");
    assert!(
        allocations[2].abs_diff(allocations[1]) <= allocations[1] / 100,
        "{out}"
    );
    assert!(out.contains("median step: "), "{out}");
    assert!(out.contains("(steps 2..3)"), "{out}");
    let breakdown = out
        .lines()
        .find(|l| l.starts_with("breakdown: "))
        .unwrap_or_else(|| panic!("{out}"));
    // Every step of this model multiplies matrices and runs a solver.
    let pcts: Vec<f64> = breakdown
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches([',', '%']).parse::<f64>().ok())
        .collect();
    assert_eq!(pcts.len(), 4, "{breakdown}");
    assert!(pcts[0] > 0.0 && pcts[2] > 0.0, "{breakdown}");
    // `tanh(cell(z) + u)` and the loss run as fused kernels, timed as such.
    if cfg!(feature = "jit") {
        assert!(pcts[1] > 0.0, "{breakdown}");
    }
    assert!(
        (pcts.iter().sum::<f64>() - 100.0).abs() < 0.5,
        "{breakdown}"
    );
    assert!(out.contains("allocations per step: "), "{out}");
}

/// `--ops N` lists at most N ops and kernels by time per step, longest
/// first; the DEQ-MLP's products are there with their shapes; `--ops 0` is
/// a usage error.
#[test]
fn bench_lists_the_slowest_ops() {
    let table = |ops: &str| -> Vec<String> {
        let (code, out, err) = deqc(
            &[
                &[
                    "bench",
                    "examples/mnist_mlp.deq",
                    "--steps",
                    "2",
                    "--threads",
                    "1",
                    "--ops",
                    ops,
                ],
                SMALL_MLP,
            ]
            .concat(),
        );
        assert_eq!(code, 0, "{err}");
        out.lines()
            .skip_while(|l| !l.starts_with("ops and kernels by time per step"))
            .skip(2)
            .map(str::to_string)
            .collect()
    };
    let all = table("100");
    assert!(all.len() > 3 && all.len() <= 100, "{all:#?}");
    let per_step: Vec<f64> = all
        .iter()
        .map(|l| {
            l.split_whitespace()
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("{l}"))
        })
        .collect();
    assert!(per_step.windows(2).all(|w| w[0] >= w[1]), "{all:#?}");
    assert!(
        all.iter()
            .any(|l| l.contains("matmul [16, 784], [784, 256]")),
        "{all:#?}"
    );
    if cfg!(feature = "jit") {
        assert!(all.iter().any(|l| l.contains("kernel (tanh)")), "{all:#?}");
    }
    // The adjoint body's `g @ w^T` reads the transposed weight laid out
    // once per solve, not through its strides on every iteration.
    let cell: Vec<&String> = all
        .iter()
        .filter(|l| l.contains("matmul [16, 256], [256, 256]"))
        .collect();
    assert!(!cell.is_empty(), "{all:#?}");
    assert!(cell.iter().all(|l| !l.contains("strided")), "{all:#?}");
    assert_eq!(table("2").len(), 2);
    let (code, _, err) = deqc(&["bench", "examples/mnist_mlp.deq", "--ops", "0"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn bench_phantom_steps_and_no_fuse() {
    let (code, out, err) = deqc(&[
        "bench",
        "examples/char_lm.deq",
        "--steps",
        "1",
        "--no-fuse",
        "--set",
        "batch_size=2",
        "--set",
        "solver.max_iter=2",
        "--set",
        "backward.steps=1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backward phantom 1 steps"), "{out}");
    assert!(
        out.contains("execution plain op-by-op (--no-fuse)"),
        "{out}"
    );
    assert!(out.contains("(step 1)"), "{out}");
    // Plain execution runs no fused kernel.
    let breakdown = out
        .lines()
        .find(|l| l.starts_with("breakdown: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(breakdown.contains("fused kernels 0.0%"), "{breakdown}");
}

#[test]
fn bench_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "solver.maxiter=3"],
            "did you mean `solver.max_iter`",
        ),
        (&["--set", "solver.tol=-1"], "expected a number >= 0"),
        (&["--set", "solver.max_iter=0"], "expected an integer >= 1"),
        (
            &["--set", "backward.steps=2"],
            "applies to a `phantom` backward",
        ),
        (&["--set", "jacobian_reg.freq=0.5"], "has no jacobian_reg"),
        (&["--set", "batch_size=0"], ">= 1"),
        (&["--set", "solver"], "expected KEY=VALUE"),
        (&["--steps", "0"], ">= 1"),
        (&["--threads", "0"], ">= 1"),
    ];
    for (args, message) in cases {
        let mut all = vec!["bench", "examples/mnist_mlp.deq"];
        all.extend_from_slice(args);
        let (code, _, err) = deqc(&all);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let (code, _, err) = deqc(&["bench", "examples/missing.deq"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read"), "{err}");

    let dir = std::env::temp_dir().join(format!("deqc-bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A model without a train block has no training step to time.
    let untrained = dir.join("untrained.deq");
    std::fs::write(
        &untrained,
        "model M(x: [B, 4]) -> [B, 4] {\n    equilibrium z: [B, 4] = tanh(z + x);\n    z\n}\n",
    )
    .expect("write");
    let (code, _, err) = deqc(&["bench", untrained.to_str().unwrap_or_default()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no `train` block"), "{err}");
    // A program that does not check.
    let broken = dir.join("broken.deq");
    std::fs::write(&broken, "model M(x: [B, 4]) -> [B, 4] { y }\n").expect("write");
    let (code, _, err) = deqc(&["bench", broken.to_str().unwrap_or_default()]);
    assert_eq!(code, 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
