//! Equilibrium bodies evaluated in parts of their batch, one per thread
//! (`exec::parts`), give the bits of the whole batch, on every example and
//! test model; the analysis that allows it (`passes::per_sample`) accepts
//! per-sample bodies and refuses bodies that mix samples.

mod common;

use candle_core::{DType as CDType, Device, Tensor};
use common::steps::{feeds, step_graphs};
use common::*;
use deqc::deq::SolverRunner;
use deqc::exec::parts::splits_on_this_thread;
use deqc::exec::{BatchSplit, ExecOptions, Executor};
use deqc::ir::{Graph, Op};
use deqc::passes::per_sample::per_sample;

/// The outputs of one run of `g`, and how many body evaluations ran in
/// parts meanwhile.
fn run(
    g: &Graph,
    params: &[Tensor],
    inputs: &[Tensor],
    float: CDType,
    split: BatchSplit,
) -> (Vec<Vec<u64>>, usize) {
    let exec = Executor::new(Device::Cpu)
        .with_runner(Box::new(SolverRunner::new().with_lenient_adjoint(true)))
        .with_options(ExecOptions {
            float,
            batch_split: split,
            ..ExecOptions::default()
        });
    let before = splits_on_this_thread();
    let out = exec.run(g, params, inputs).expect("runs");
    let bits = out
        .outputs
        .iter()
        .map(|t| {
            let v = t
                .to_dtype(CDType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .expect("values");
            v.iter().map(|x| x.to_bits()).collect()
        })
        .collect();
    (bits, splits_on_this_thread() - before)
}

fn in_float(ts: &[Tensor], float: CDType) -> Vec<Tensor> {
    ts.iter()
        .map(|t| match t.dtype() {
            CDType::I64 => t.clone(),
            _ => t.to_dtype(float).expect("cast"),
        })
        .collect()
}

/// Examples whose equilibrium bodies compute each sample on its own.
const EXPECTED: [&str; 5] = ["char_lm", "mdeq_mnist", "mnist_mlp", "trellis_lm", "mondeq"];

#[test]
fn parts_give_the_bits_of_the_whole_batch() {
    for float in [CDType::F32, CDType::F64] {
        let mut split_models = Vec::new();
        for (name, g, _) in step_graphs() {
            // Seven samples: parts of 3 and 4, or of 2, 2 and 3. Bodies with
            // products over the batch's rows need parts of more than 64
            // rows (one per sample in the MLPs): 131 samples then.
            for batch in [7, 131] {
                let (params, inputs) = feeds(&g, 11, batch);
                let (params, inputs) = (in_float(&params, float), in_float(&inputs, float));
                let (whole, none) = run(&g, &params, &inputs, float, BatchSplit::Off);
                assert_eq!(none, 0, "{name}: split although told not to");
                let mut splits = 0;
                for parts in [2, 3] {
                    let (split, n) = run(&g, &params, &inputs, float, BatchSplit::Parts(parts));
                    assert_eq!(
                        whole, split,
                        "{name} ({float:?}, {batch} samples, {parts} parts): \
                         outputs differ from the whole batch's"
                    );
                    splits += n;
                }
                if splits > 0 {
                    split_models.push(name.clone());
                    break;
                }
                // The larger batch only for the examples below whose bodies
                // were not split at 7 (the flow test models take 20 s there).
                if !has_per_sample_body(&g) || !EXPECTED.iter().any(|e| name.contains(e)) {
                    break;
                }
            }
        }
        // The bodies known to be per sample did run in parts.
        for expected in EXPECTED {
            assert!(
                split_models.iter().any(|m| m.contains(expected)),
                "{expected} was not evaluated in parts ({float:?}); split: {split_models:?}"
            );
        }
    }
}

/// Whether some equilibrium of `g` computes each sample along `B` alone.
fn has_per_sample_body(g: &Graph) -> bool {
    g.node_ids().into_iter().any(|id| match g.op(id) {
        Op::Equilibrium(eq) => per_sample(&eq.body, "B").is_ok() || has_per_sample_body(&eq.body),
        _ => false,
    })
}

/// The first equilibrium body of a source's first model.
fn body(src: &str) -> Graph {
    let g = lower(src);
    g.node_ids()
        .into_iter()
        .find_map(|id| match g.op(id) {
            Op::Equilibrium(eq) => Some(eq.body.clone()),
            _ => None,
        })
        .expect("an equilibrium")
}

fn model(equation: &str) -> String {
    format!(
        "use nn;\nmodel M(x: [B, 8]) -> [B, 8] {{\n    let cell = nn::Linear[8, 8];\n    \
         equilibrium z: [B, 8] = {equation}\n        \
         with solver = anderson(m = 3, tol = 1e-6, max_iter = 30);\n    z\n}}\n"
    )
}

#[test]
fn per_sample_bodies_are_recognized() {
    for equation in [
        "tanh(cell(z) + x)",
        "tanh(cell(z) + x) * softmax(z, axis = 1)",
        "tanh(cell(z) + x) - mean(z, axis = 1, keepdim = true)",
        "tanh(cell(z) + x) + 0.1 * reshape(z, [B, 2, 4])[:, 0:2, :][:, 0, :] @ ones([4, 8])",
    ] {
        let b = body(&model(equation));
        assert_eq!(per_sample(&b, "B"), Ok(()), "{equation}");
        // A symbol that is not the states' first dim is no batch of theirs.
        assert!(per_sample(&b, "T").is_err(), "{equation}");
    }
}

#[test]
fn bodies_that_mix_samples_are_refused_with_the_reason() {
    for (equation, why) in [
        (
            "tanh(cell(z) + x) - 0.1 * mean(z, axis = 0)",
            "computed from batched values",
        ),
        (
            "tanh(cell(z) + x) * softmax(z, axis = 0)",
            "softmax over the batch axis",
        ),
        (
            "tanh(cell(z) + x) + 0.01 * sum(z)",
            "computed from batched values",
        ),
        (
            "tanh(cell(z) + x) + 0.1 * z @ (transpose(z, 0, 1) @ z)",
            "batch",
        ),
        (
            "tanh(cell(z) + x) + 0.1 * concat((z[1:B, :], z[0:1, :]), axis = 0)",
            "batch",
        ),
    ] {
        let b = body(&model(equation));
        let err = per_sample(&b, "B").expect_err(equation);
        assert!(err.why.contains(why), "{equation}: {err:?}");
    }
}

#[test]
fn dump_says_which_bodies_run_in_parts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(["dump", "--emit=kernels", "examples/char_lm.deq"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("per sample along B: may run in parts of B, one per thread"),
        "{text}"
    );
}

/// The forward outputs of a source's first model at `batch` samples, whole
/// and in two parts, as bits; and whether the parts ran.
fn forward_whole_and_in_parts(src: &str, batch: i64) -> (Vec<Vec<u64>>, Vec<Vec<u64>>, usize) {
    let g = lower(src);
    let (params, inputs) = random_feeds(&g, &[("B", batch)], 5);
    let (params, inputs) = (
        in_float(&params, CDType::F32),
        in_float(&inputs, CDType::F32),
    );
    let (whole, _) = run(&g, &params, &inputs, CDType::F32, BatchSplit::Off);
    let (parts, splits) = run(&g, &params, &inputs, CDType::F32, BatchSplit::Parts(2));
    (whole, parts, splits)
}

#[test]
fn long_sums_over_the_batch_rows_run_whole() {
    // Rows of the second product are the samples and it sums 1024 terms:
    // at 300 samples the product is cut into pieces along its sum for a
    // part of 150 rows (`split_k`) and not for the whole batch, which adds
    // in gemm's own blocks; the two orders agree only where gemm's block
    // is the pieces' 512. Such bodies run whole; at 1023 terms, never cut,
    // they run in parts. Either way the bits are the whole batch's.
    for (terms, splits_expected) in [(1024, false), (1023, true)] {
        let src = format!(
            "use nn;\nmodel M(x: [B, 8]) -> [B, 8] {{\n    let a = nn::Linear[8, {terms}];\n    \
             let b = nn::Linear[{terms}, 8];\n    \
             equilibrium z: [B, 8] = tanh(0.1 * b(a(z)) + x)\n        \
             with solver = anderson(m = 3, tol = 1e-12, max_iter = 4);\n    z\n}}\n"
        );
        let (whole, parts, splits) = forward_whole_and_in_parts(&src, 300);
        assert_eq!(whole, parts, "{terms} terms");
        assert_eq!(
            splits > 0,
            splits_expected,
            "{terms} terms: {splits} splits"
        );
    }
}
