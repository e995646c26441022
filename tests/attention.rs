//! Fused attention (`passes::attention`, `exec::attention`): the plan finds
//! scaled dot-product attention and its variants, and running it as one step
//! gives what the unfused steps give, forward and backward, in f64 (1e-9
//! relative) and f32 (1e-4), with causal masks that skip the masked half,
//! masks that cannot be skipped, and NaN scores.

mod common;

use candle_core::{DType as CDType, Device, Tensor};
use common::*;
use deqc::autodiff::backward_graph;
use deqc::exec::{ExecOptions, Executor};
use deqc::ir::Graph;
use deqc::passes::fuse::{plan, Step};

/// A model of one attention: queries and keys are projections of `x`
/// `[B, H, T, 20]` (the keys transposed in the model), values a projection
/// of `y` `[B, H, T, 19]`, so that the backward graph has gradients to take
/// through it (and through a `tanh`, whose gradient reads the forward
/// result); `body` maps the scores `s`.
fn attention_model(body: &str) -> String {
    sized_model(body, 20, 19)
}

/// [`attention_model`] with keys of `d` and values of `e` features.
fn sized_model(body: &str, d: usize, e: usize) -> String {
    format!(
        "use nn;\n\
         model A(x: [B, H, T, {d}], y: [B, H, T, {e}]) -> [B, H, T, {e}] {{\n\
         let lq = nn::Linear[{d}, {d}];\n\
         let lk = nn::Linear[{d}, {d}];\n\
         let lv = nn::Linear[{e}, {e}];\n\
         let s = lq(x) @ permute(lk(x), [0, 1, 3, 2]);\n\
         tanh(softmax({body}, axis = -1) @ lv(y))\n}}"
    )
}

const CAUSAL: &str = "where(causal_mask(T), s / sqrt(32.0), -1e9)";

fn executor(float: CDType, fuse: bool) -> Executor {
    Executor::new(Device::Cpu).with_options(ExecOptions {
        float,
        fuse,
        ..ExecOptions::default()
    })
}

fn cast(ts: &[Tensor], float: CDType) -> Vec<Tensor> {
    ts.iter()
        .map(|t| t.to_dtype(float).expect("cast"))
        .collect()
}

/// Run `g` fused and plain; every output must agree to `tol`.
fn fused_equals_plain(g: &Graph, dims: &[(&str, i64)], float: CDType, tol: f64, poison: bool) {
    let (params, mut inputs) = random_feeds(g, dims, 5);
    if poison {
        // A NaN input: the rows it reaches come out NaN throughout.
        let mut q = values(&inputs[0]);
        q[3 * 20 + 5] = f64::NAN;
        inputs[0] = Tensor::from_vec(q, inputs[0].dims(), &Device::Cpu).expect("q");
    }
    let (params, inputs) = (cast(&params, float), cast(&inputs, float));
    let plain = executor(float, false)
        .run(g, &params, &inputs)
        .expect("plain");
    let fused = executor(float, true)
        .run(g, &params, &inputs)
        .expect("fused");
    // The floor: a millionth (f64) or a hundredth (f32, where rounding
    // noise alone is about 1e-7 of the sums) of the largest output.
    let floor = if float == CDType::F64 { 1e-6 } else { 1e-2 }
        * plain
            .outputs
            .iter()
            .flat_map(values)
            .filter(|v| v.is_finite())
            .fold(1e-300f64, |m, v| m.max(v.abs()));
    for (k, (p, f)) in plain.outputs.iter().zip(&fused.outputs).enumerate() {
        let e = rel_error(p, f, floor);
        assert!(e <= tol, "output {k} ({float:?}) differs by {e:e}");
    }
}

/// The forward model and its backward graph (the weights kept for it).
fn both(src: &str) -> [Graph; 2] {
    let g = lower(src);
    let grad = backward_graph(&g, &deqc::deq::DeqVjp).expect("backward graph");
    [g, grad]
}

fn attentions(g: &Graph) -> usize {
    let p = plan(g);
    let steps = p
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Attention(_)))
        .count();
    assert_eq!(steps, p.attentions.len());
    steps
}

fn backwards(g: &Graph) -> usize {
    let p = plan(g);
    let steps = p
        .steps
        .iter()
        .filter(|s| matches!(s, Step::AttentionBackward(_)))
        .count();
    assert_eq!(steps, p.backwards.len());
    steps
}

const DIMS: [(&str, i64); 3] = [("B", 2), ("H", 3), ("T", 37)];

#[test]
fn causal_attention_is_found_and_keeps_its_weights_for_the_backward_pass() {
    let [g, grad] = both(&attention_model(CAUSAL));
    assert_eq!(attentions(&g), 1);
    assert_eq!(attentions(&grad), 1);
    assert!(!plan(&g).attentions[0].keeps_weights);
    assert!(plan(&grad).attentions[0].keeps_weights);
    assert_eq!(backwards(&g), 0);
    assert_eq!(backwards(&grad), 1);
    assert!(plan(&g).attentions[0].mask.is_some());
}

#[test]
fn causal_attention_fused_equals_plain() {
    for g in both(&attention_model(CAUSAL)) {
        fused_equals_plain(&g, &DIMS, CDType::F64, 1e-9, false);
        fused_equals_plain(&g, &DIMS, CDType::F32, 1e-4, false);
    }
    // Whole register blocks: operands read in place instead of copied.
    for g in both(&sized_model(CAUSAL, 32, 16)) {
        let dims = [("B", 2), ("H", 3), ("T", 24)];
        fused_equals_plain(&g, &dims, CDType::F64, 1e-9, false);
        fused_equals_plain(&g, &dims, CDType::F32, 1e-4, false);
    }
}

#[test]
fn unmasked_and_multiplied_scores_fused_equal_plain() {
    for body in ["s", "s * 0.25", "0.5 * s", "s / 3.0"] {
        let [g, grad] = both(&attention_model(body));
        assert_eq!(attentions(&g), 1, "{body}");
        assert_eq!(backwards(&grad), 1, "{body}");
        assert!(plan(&g).attentions[0].mask.is_none());
        for g in [g, grad] {
            fused_equals_plain(&g, &DIMS, CDType::F64, 1e-9, false);
            fused_equals_plain(&g, &DIMS, CDType::F32, 1e-4, false);
        }
    }
}

/// A fill near the scores weighs something: the masked part is computed,
/// not skipped.
#[test]
fn a_mild_mask_is_not_skipped() {
    let src = attention_model("where(causal_mask(T), s, 0.5)");
    let [_, grad] = both(&src);
    assert_eq!(backwards(&grad), 1);
    for g in both(&src) {
        assert_eq!(attentions(&g), 1);
        fused_equals_plain(&g, &DIMS, CDType::F64, 1e-9, false);
        fused_equals_plain(&g, &DIMS, CDType::F32, 1e-4, false);
    }
}

#[test]
fn nan_scores_stay_nan_in_the_same_places() {
    for g in both(&attention_model(CAUSAL)) {
        fused_equals_plain(&g, &DIMS, CDType::F64, 1e-9, true);
        fused_equals_plain(&g, &DIMS, CDType::F32, 1e-4, true);
    }
}

/// Finite differences agree with the gradients the fused steps derive
/// (the executor fuses by default), causal and not.
#[test]
fn gradients_through_the_fused_steps_match_finite_differences() {
    for body in [CAUSAL, "s * 0.25"] {
        let src = attention_model(body);
        let [_, grad] = both(&src);
        assert_eq!(backwards(&grad), 1);
        let report = gradcheck_dims(&src, &[("B", 2), ("H", 2), ("T", 5)]);
        assert!(!report.is_empty());
    }
}

/// Scores used elsewhere, or a mask that is no causal mask, are left to the
/// unfused steps.
#[test]
fn other_shapes_of_the_pattern_are_left_alone() {
    let used_twice =
        "model A(q: [B, H, T, D], k: [B, H, T, D], v: [B, H, T, E]) -> [B, H, T, E] {\n\
         let s = q @ permute(k, [0, 1, 3, 2]);\n\
         softmax(s, axis = -1) @ v + sum(s, axis = -1, keepdim = true)\n}";
    assert_eq!(attentions(&lower(&attention_model("s"))), 1);
    assert_eq!(attentions(&lower(used_twice)), 0);
    let other_mask = attention_model("where(s > 0.0, s, -1e9)");
    assert_eq!(attentions(&lower(&other_mask)), 0);
}

/// Time per run of a transformer-sized causal attention (not a test of
/// speed: `cargo test --release -- --ignored --nocapture attention_speed`).
#[test]
#[ignore]
fn attention_speed() {
    let raw = lower(
        "model A(q: [B, H, T, 32], k: [B, H, T, 32], v: [B, H, T, 32]) -> [B, H, T, 32] {\n\
         let s = q @ permute(k, [0, 1, 3, 2]);\n\
         softmax(where(causal_mask(T), s / sqrt(32.0), -1e9), axis = -1) @ v\n}",
    );
    let [_, grad] = both(&sized_model(CAUSAL, 32, 32));
    let dims = [("B", 16), ("H", 4), ("T", 64)];
    for g in [raw, grad] {
        let (params, inputs) = random_feeds(&g, &dims, 5);
        // Weights of a trained size (unit normal weights over 32 features
        // give scores far apart, and subnormal weights after the softmax).
        let params: Vec<Tensor> = params.iter().map(|p| (p * 0.18).expect("scale")).collect();
        let (params, inputs) = (cast(&params, CDType::F32), cast(&inputs, CDType::F32));
        let exec = executor(CDType::F32, true);
        exec.run(&g, &params, &inputs).expect("warm");
        let runs = 200;
        deqc::profile::set_op_timing(true);
        let t = std::time::Instant::now();
        for _ in 0..runs {
            exec.run(&g, &params, &inputs).expect("run");
        }
        println!(
            "{:.1} us a run",
            t.elapsed().as_secs_f64() * 1e6 / runs as f64
        );
        for (what, took, calls) in deqc::profile::take_op_times() {
            if what.contains("attention") || what.contains("64, 64") {
                println!(
                    "{:9.1} us a call  {what}",
                    took.as_secs_f64() * 1e6 / calls as f64
                );
            }
        }
        deqc::profile::set_op_timing(false);
    }
}
