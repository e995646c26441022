//! The optimization passes preserve what graphs compute: optimized and
//! unoptimized graphs give the same outputs and the same gradients.

mod common;

use common::*;
use deqc::autodiff::{backward_graph, NoImplicitBackward};
use deqc::exec::Executor;
use deqc::ir::{verify, Op};
use deqc::passes::{cse::Cse, dce::Dce, fold::ConstantFold, Pass, Pipeline};
use rand::SeedableRng;

const MODELS: &[(&str, &[(&str, i64)])] = &[
    (
        "use nn;\nmodel M(x: [B, 4]) { let ln = nn::LayerNorm[4]; let l = nn::Linear[4, 3]; log_softmax(l(gelu(ln(x))), axis = -1) }",
        &[("B", 2)],
    ),
    (
        "use nn;\nmodel M(x: [B, 2, 6, 6]) { let c = nn::Conv2d[2, 4, 3, padding = 1]; let n = nn::GroupNorm[2, 4]; max_pool2d(relu(n(c(x))), 2) }",
        &[("B", 1)],
    ),
    (
        "use nn;\nmodel M(x: [B, T, 4]) { let a = nn::MultiHeadAttention[4, 2, causal = true]; a(x) * (2.0 * 0.5) + 0.0 * 3.0 }",
        &[("B", 1), ("T", 3)],
    ),
];

#[test]
fn optimized_graphs_compute_the_same_outputs_and_gradients() {
    for (src, dims) in MODELS {
        let g = lower(src);
        let bwd = backward_graph(&g, &NoImplicitBackward).expect("backward graph");
        let mut opt = bwd.clone();
        Pipeline::default().run(&mut opt).expect("pipeline");
        verify::verify(&opt).expect("verifies");
        assert!(
            opt.node_count() < bwd.node_count(),
            "{src}: nothing was optimized ({} nodes)",
            bwd.node_count()
        );
        let (params, mut inputs) = random_feeds(&g, dims, 9);
        // The cotangent inputs of the backward graph.
        let env = Executor::cpu_f64().bind_inputs(&g, &inputs).expect("dims");
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for inp in &bwd.inputs[g.inputs.len()..] {
            inputs.push(
                deqc::autodiff::check::random_tensor(&inp.ty, &env, &mut rng, 1.0, 1)
                    .expect("cotangent"),
            );
        }
        let exec = Executor::cpu_f64();
        let before = exec.run(&bwd, &params, &inputs).expect("runs").outputs;
        let after = exec.run(&opt, &params, &inputs).expect("runs").outputs;
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            assert_close(&values(b), &values(a), 1e-12);
        }
    }
}

#[test]
fn each_pass_alone_preserves_outputs() {
    let (src, dims) = MODELS[0];
    let g = lower(src);
    let bwd = backward_graph(&g, &NoImplicitBackward).expect("backward graph");
    let (params, mut inputs) = random_feeds(&g, dims, 2);
    let env = Executor::cpu_f64().bind_inputs(&g, &inputs).expect("dims");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for inp in &bwd.inputs[g.inputs.len()..] {
        inputs.push(
            deqc::autodiff::check::random_tensor(&inp.ty, &env, &mut rng, 1.0, 1)
                .expect("cotangent"),
        );
    }
    let exec = Executor::cpu_f64();
    let before = exec.run(&bwd, &params, &inputs).expect("runs").outputs;
    let passes: [&dyn Pass; 3] = [&ConstantFold, &Cse, &Dce];
    for p in passes {
        let mut opt = bwd.clone();
        p.run(&mut opt).expect("pass runs");
        verify::verify(&opt).expect("verifies");
        let after = exec.run(&opt, &params, &inputs).expect("runs").outputs;
        for (b, a) in before.iter().zip(&after) {
            assert_close(&values(b), &values(a), 1e-12);
        }
    }
}

#[test]
fn folding_cse_and_dce_do_their_jobs() {
    let mut g = lower("model M(x: [3]) { let unused = exp(x); tanh(x) * (2.0 * 0.5) + tanh(x) }");
    Pipeline::default().run(&mut g).expect("pipeline");
    let ops: Vec<&str> = g.node_ids().iter().map(|n| g.op(*n).name()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "tanh").count(), 1, "{ops:?}");
    assert!(!ops.contains(&"exp"), "{ops:?}");
    let consts: Vec<f64> = g
        .node_ids()
        .iter()
        .filter_map(|n| match g.op(*n) {
            Op::Const(v) => Some(*v),
            _ => None,
        })
        .collect();
    assert_eq!(consts, vec![1.0]);
}

#[test]
fn dropout_masks_are_never_merged() {
    let mut g = lower("model M(x: [3]) { dropout(x, 0.5) + dropout(x, 0.5) }");
    Pipeline::default().run(&mut g).expect("pipeline");
    let masks = g
        .node_ids()
        .iter()
        .filter(|n| matches!(g.op(**n), Op::DropoutMask { .. }))
        .count();
    assert_eq!(masks, 2);
}
