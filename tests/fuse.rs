//! Fused execution equals plain execution (principle 8): for every example
//! and test model, the training step graph (loss, scores, every parameter
//! gradient, the fixed points) gives the same values with and without
//! fusion, at the same solver iteration counts; f64 to 1e-9 relative, f32
//! to 1e-4. Also: the fusion plan itself (groups, boundaries, cycles) and
//! that the gradient checks of `tests/gradcheck.rs` really run through
//! kernels.

mod common;
use common::cli::deqc;

use candle_core::{DType as CDType, Device};
use common::steps::{feeds, step_graphs};
use common::*;
use deqc::autodiff::backward_graph;
use deqc::deq::{DeqVjp, SolverRunner};
use deqc::exec::fused::BoundPlan;
use deqc::exec::schedule::schedule_for;
use deqc::exec::{DimEnv, ExecOptions, Executor};
use deqc::ir::{Graph, Op};
use deqc::passes::fuse::{plan, Step};
use deqc::passes::Pipeline;

fn executor(float: CDType, fuse: bool, runner: &SolverRunner) -> Executor {
    Executor::new(Device::Cpu)
        .with_runner(Box::new(runner.clone()))
        .with_options(ExecOptions {
            float,
            fuse,
            ..ExecOptions::default()
        })
}

fn iterations(runner: &SolverRunner) -> Vec<(bool, usize)> {
    runner
        .take_records()
        .iter()
        .map(|r| (r.backward, r.stats.iterations))
        .collect()
}

fn compare(float: CDType, tol: f64) {
    for (name, g, skipped) in step_graphs() {
        let (mut params, mut inputs) = feeds(&g, 3, 2);
        if float == CDType::F64 {
            params = params
                .iter()
                .map(|p| p.to_dtype(float).expect("cast"))
                .collect();
            inputs = inputs
                .iter()
                .map(|t| match t.dtype() {
                    CDType::I64 => t.clone(),
                    _ => t.to_dtype(float).expect("cast"),
                })
                .collect();
        }
        let (rp, rf) = (
            SolverRunner::new().with_lenient_adjoint(true),
            SolverRunner::new().with_lenient_adjoint(true),
        );
        let plain = executor(float, false, &rp)
            .run(&g, &params, &inputs)
            .expect("plain run");
        let fused_exec = executor(float, true, &rf);
        let fused = fused_exec.run(&g, &params, &inputs).expect("fused run");
        assert_eq!(plain.outputs.len(), fused.outputs.len());
        // The noise floor: 1e-6 of the largest magnitude of any output.
        let floor = 1e-6
            * plain
                .outputs
                .iter()
                .flat_map(values)
                .fold(0.0f64, |m, v| m.max(v.abs()));
        for (k, (p, f)) in plain.outputs.iter().zip(&fused.outputs).enumerate() {
            if skipped.contains(&k) {
                continue;
            }
            let e = rel_error(p, f, floor);
            assert!(e <= tol, "{name} ({float:?}): output {k} differs by {e:e}");
        }
        assert_eq!(
            iterations(&rp),
            iterations(&rf),
            "{name} ({float:?}): solver iteration counts differ"
        );
        // Kernels did run.
        let env = fused_exec.bind_inputs(&g, &inputs).expect("dims");
        assert!(
            BoundPlan::new(&g, &env, float).kernel_count() > 0,
            "{name}: no fused kernel"
        );
    }
}

#[test]
fn examples_fused_equal_plain_in_f64() {
    compare(CDType::F64, 1e-9);
}

#[test]
fn examples_fused_equal_plain_in_f32() {
    compare(CDType::F32, 1e-4);
}

/// The transformer example's training step graph and its dims for the
/// small feeds.
fn transformer_step() -> (Graph, DimEnv) {
    let (_, g, _) = step_graphs()
        .into_iter()
        .find(|(name, _, _)| name.ends_with("char_lm.deq:CharDeq"))
        .expect("the transformer example");
    let (_, inputs) = feeds(&g, 3, 2);
    let runner = SolverRunner::new();
    let env = executor(CDType::F32, true, &runner)
        .bind_inputs(&g, &inputs)
        .expect("dims");
    (g, env)
}

/// A broadcast made outside a group (LayerNorm's gradient spreads its
/// per-row sums over the row) is read from its source, not copied to full
/// size first; the examples above check the values. In the transformer's
/// step graph no kernel reads a broadcast view, and at least one reads the
/// source of one.
#[test]
fn kernels_read_broadcasts_from_their_sources() {
    let (g, env) = transformer_step();
    let bound = BoundPlan::new(&g, &env, CDType::F32);
    let reads = |n: deqc::ir::NodeId| {
        bound
            .groups
            .iter()
            .flatten()
            .any(|grp| grp.input_nodes.contains(&n))
    };
    let broadcasts: Vec<_> = g
        .node_ids()
        .into_iter()
        .filter(|n| matches!(g.op(*n), Op::BroadcastTo { .. }))
        .collect();
    assert!(
        !broadcasts.is_empty(),
        "expected broadcasts in the gradient"
    );
    assert!(
        !broadcasts.iter().any(|b| reads(*b)),
        "a kernel reads a broadcast view"
    );
    assert!(
        broadcasts.iter().any(|b| reads(g.operands(*b)[0])),
        "no kernel reads a broadcast's source"
    );
}

/// The transformer's attention output (permuted back into rows) and its
/// key gradient (through two permutations) are products stored in their
/// users' order, in the fused and the plain schedule alike; the examples'
/// fused and plain runs above check that the values are unchanged.
#[test]
fn permuted_products_are_stored_in_their_users_order() {
    let (g, env) = transformer_step();
    for fuse in [true, false] {
        let sched = schedule_for(&g, &env, CDType::F32, fuse).expect("schedule");
        assert!(sched.stored_order_count() >= 2, "fuse {fuse}: {sched:?}");
    }
}

#[test]
fn plans_group_elementwise_chains_and_stop_at_library_calls() {
    let g = lower(
        "use nn;\nmodel M(x: [B, 4]) { let ln = nn::LayerNorm[4]; let l = nn::Linear[4, 3]; log_softmax(l(gelu(ln(x))), axis = -1) }",
    );
    let p = plan(&g);
    assert!(p.groups.len() >= 2, "{:?}", p.groups);
    for grp in &p.groups {
        for (m, _) in &grp.members {
            assert!(
                !matches!(g.op(*m), Op::MatMul | Op::Reshape { .. } | Op::Input(_)),
                "a boundary op in a group"
            );
        }
    }
    // Every node runs exactly once: as a step or inside one group.
    let mut seen = std::collections::BTreeSet::new();
    for s in &p.steps {
        match s {
            Step::Node(n) => assert!(seen.insert(*n)),
            Step::Group(gi) => {
                for (m, _) in &p.groups[*gi].members {
                    assert!(seen.insert(*m));
                }
            }
            Step::Attention(ai) => {
                let a = &p.attentions[*ai];
                assert!(seen.insert(a.scores) && seen.insert(a.mixed));
                for (m, _) in &p.groups[a.group].members {
                    assert!(seen.insert(*m));
                }
            }
            Step::AttentionBackward(bi) => {
                for s in &p.backwards[*bi].unfused {
                    match s {
                        Step::Node(n) => assert!(seen.insert(*n)),
                        Step::Group(gi) => {
                            for (m, _) in &p.groups[*gi].members {
                                assert!(seen.insert(*m));
                            }
                        }
                        other => panic!("{other:?} inside a backward step"),
                    }
                }
            }
        }
    }
    assert_eq!(seen.len(), g.node_count());
}

#[test]
fn gradient_checks_run_through_kernels() {
    // The models of tests/gradcheck.rs (every fusible op, every stdlib
    // layer): their gradient graphs must contain kernels, or the gradient
    // checks there would not exercise fusion.
    for src in [
        "model M(x: [2, 3], y: [3], z: [2, 1]) { softplus(x * 3.0) + leaky_relu(x, slope = 0.1) * clamp(y, -0.5, 0.5) }",
        "model M(x: [2, 3], y: [3], z: [2, 1]) { where(x > y, sin(x), cos(z)) + (x * x + 0.5) ^ y }",
        "model M(x: [2, 3, 4]) { logsumexp(x, axis = -1) + mean(x, axis = -1) }",
        "model M(x: [2, 3, 4]) { softmax(x, axis = -1) * x }",
        "use nn;\nmodel M(x: [B, 3, 4]) { let ln = nn::LayerNorm[4]; ln(x) }",
        "use nn;\nmodel M(x: [B, T, 4]) { let a = nn::MultiHeadAttention[4, 2, causal = true]; a(x) }",
    ] {
        let g = lower(src);
        let mut b = backward_graph(&g, &DeqVjp).expect("backward");
        Pipeline::default().run(&mut b).expect("pipeline");
        assert!(!plan(&b).groups.is_empty(), "{src}: no groups");
        if src.contains("MultiHeadAttention") {
            // The fused attention steps, forward and backward, are checked.
            let p = plan(&b);
            assert_eq!((p.attentions.len(), p.backwards.len()), (1, 1), "{src}");
        }
        gradcheck_dims(src, &[("B", 2), ("T", 3)]);
    }
}

#[test]
fn dump_kernels_of_the_mlp_example() {
    let (code, out, err) = deqc(&["dump", "--emit=kernels", "examples/mnist_mlp.deq"]);
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!(out);
}

#[test]
fn no_fuse_gives_the_same_gradient_check() {
    let file = "tests/models/mdeq_small.deq";
    // At its initializers this small MDEQ's solves do not converge (the
    // check is inconclusive there), so both check at random parameters.
    let (code, fused, err) = deqc(&["gradcheck", "--random-params", file]);
    assert_eq!(code, 0, "{err}");
    let (code, plain, err) = deqc(&["gradcheck", "--random-params", "--no-fuse", file]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fused.lines().count(), plain.lines().count());
}

/// Three linear layers with fused bias + scale + tanh after the first two:
/// both kernels' outputs feed a matmul only, so they may live in a reused
/// buffer (the last bias add, a lone op, runs plain).
const TWO_LAYERS: &str = "use nn;\nmodel M(x: [B, 8]) { let a = nn::Linear[8, 8]; let b = nn::Linear[8, 8]; let c = nn::Linear[8, 8]; c(tanh(b(tanh(a(x) * 2.0))) + 1.0) }";

#[test]
fn schedule_reuses_kernel_buffers_across_runs_with_the_same_results() {
    let g = lower(TWO_LAYERS);
    for float in [CDType::F32, CDType::F64] {
        let runner = SolverRunner::new();
        let run = |fuse: bool, seed: u64| {
            let (params, inputs) = random_feeds(&g, &[("B", 5)], seed);
            executor(float, fuse, &runner)
                .run(&g, &params, &inputs)
                .expect("runs")
        };
        // Two kernels write outputs that only a matmul reads; their
        // lifetimes do not overlap, so they share one buffer.
        let env = {
            let mut e = DimEnv::new();
            e.bind("B", 5).expect("dims");
            e
        };
        let sched = schedule_for(&g, &env, float, true).expect("schedule");
        assert_eq!(sched.kernel_count(), 2, "{sched:?}");
        assert_eq!(sched.buffer_count(), 1, "{sched:?}");
        // Fresh feeds each run, so a stale or shared buffer would show.
        let first = run(true, 11);
        assert_eq!(first.stats.buffers_allocated, 1);
        assert_eq!(first.stats.buffers_reused, 1, "the second kernel reuses it");
        for seed in [12, 13] {
            let fused = run(true, seed);
            assert_eq!(fused.stats.buffers_allocated, 0, "allocated again");
            assert_eq!(fused.stats.buffers_reused, 2);
            let plain = run(false, seed);
            let e = rel_error(&plain.outputs[0], &fused.outputs[0], 0.0);
            let tol = if float == CDType::F64 { 1e-12 } else { 1e-5 };
            assert!(e <= tol, "{float:?}: fused differs from plain by {e:e}");
            let again = run(true, 11);
            assert_eq!(values(&again.outputs[0]), values(&first.outputs[0]));
        }
    }
}

#[test]
fn schedules_are_cached_by_stamp_and_dims() {
    let g = lower(TWO_LAYERS);
    let env = |b: i64| {
        let mut e = DimEnv::new();
        e.bind("B", b).expect("dims");
        e
    };
    let once = schedule_for(&g, &env(4), CDType::F32, true).expect("schedule");
    let again = schedule_for(&g, &env(4), CDType::F32, true).expect("schedule");
    assert!(std::sync::Arc::ptr_eq(&once, &again), "planned twice");
    // A clone has the same contents, so the same schedule.
    let copy = g.clone();
    let same = schedule_for(&copy, &env(4), CDType::F32, true).expect("schedule");
    assert!(std::sync::Arc::ptr_eq(&once, &same));
    // Other dims, type or path: another schedule.
    for other in [
        schedule_for(&g, &env(6), CDType::F32, true),
        schedule_for(&g, &env(4), CDType::F64, true),
        schedule_for(&g, &env(4), CDType::F32, false),
    ] {
        assert!(!std::sync::Arc::ptr_eq(&once, &other.expect("schedule")));
    }
    // A changed graph gets a new stamp and a new schedule: dropping the
    // output's `+ 1.0` consumer changes what the last kernel computes.
    let mut changed = g.clone();
    let out = changed.outputs()[0];
    let operand = changed.operands(out)[0];
    changed.set_outputs(vec![operand]);
    assert_ne!(changed.stamp(), g.stamp());
    let new = schedule_for(&changed, &env(4), CDType::F32, true).expect("schedule");
    assert!(!std::sync::Arc::ptr_eq(&once, &new));
}

/// A kernel that computes GELU and its derivative calls one transcendental,
/// the derivative's `sigmoid`, which GELU shares; the examples' fused and
/// plain runs above check the values.
#[test]
fn gelu_shares_its_derivatives_sigmoid() {
    use deqc::jit::strip::Func;
    let (g, env) = transformer_step();
    let bound = BoundPlan::new(&g, &env, CDType::F32);
    let gelu_groups: Vec<_> = bound
        .groups
        .iter()
        .flatten()
        .filter(|grp| {
            grp.output_levels()
                .iter()
                .any(|(n, _)| matches!(g.op(*n), Op::Gelu))
        })
        .collect();
    assert!(!gelu_groups.is_empty(), "no kernel computes GELU");
    for grp in gelu_groups {
        assert_eq!(grp.strips, vec![Func::Sigmoid], "{:?}", grp.strips);
    }
}
