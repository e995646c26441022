//! Second order: Hessian-vector products, built by differentiating the
//! gradient graph again, against central differences of the gradient.

mod common;

use candle_core::Tensor;
use common::*;
use deqc::autodiff::check::rel_error;
use deqc::autodiff::grad;
use deqc::exec::Executor;
use deqc::ir::{GraphInput, NodeId, Op, ReduceOp};

/// Check `H v` for the scalar model in `src` with respect to the input or
/// parameter named `target`.
fn hvp_check(src: &str, target: &str, dims: &[(&str, i64)]) {
    let mut g = lower(src);
    let (params, mut inputs) = random_feeds(&g, dims, 21);
    let loss = g.outputs()[0];
    let x = g
        .node_ids()
        .into_iter()
        .find(|id| match g.op(*id) {
            Op::Input(i) => g.inputs[*i].name == target,
            Op::Param(i) => g.params[*i].path == target,
            _ => false,
        })
        .expect("target node");
    let is_param = matches!(g.op(x), Op::Param(_));
    let ty = g.ty(x).clone();
    let gx = grad(&mut g, loss, &[x]).expect("grad")[0];
    // v: a new input of x's type; s = sum(gx * v); Hv = d s / d x.
    let vi = g.inputs.len();
    g.inputs.push(GraphInput {
        name: "v".into(),
        ty: ty.clone(),
    });
    let v = g.add(Op::Input(vi), ty.clone(), &[], None);
    let prod = g.add_inferred(Op::Mul, &[gx, v], None).expect("mul");
    let s = g
        .add_inferred(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: (0..ty.rank()).collect(),
                keepdim: false,
            },
            &[prod],
            None,
        )
        .expect("sum");
    let hv: NodeId = grad(&mut g, s, &[x]).expect("second grad")[0];
    g.set_outputs(vec![gx, hv]);
    deqc::ir::verify::verify(&g).expect("verifies");

    let exec = Executor::cpu_f64();
    let base = if is_param {
        let i = match g.op(x) {
            Op::Param(i) => *i,
            _ => unreachable!(),
        };
        params[i].clone()
    } else {
        let i = match g.op(x) {
            Op::Input(i) => *i,
            _ => unreachable!(),
        };
        inputs[i].clone()
    };
    let dir = (base.randn_like(0.0, 1.0)).expect("direction");
    inputs.push(dir.clone());
    let run = |at: &Tensor| -> Vec<Tensor> {
        let mut ps = params.clone();
        let mut xs = inputs.clone();
        match g.op(x) {
            Op::Param(i) => ps[*i] = at.clone(),
            Op::Input(i) => xs[*i] = at.clone(),
            _ => unreachable!(),
        }
        exec.run(&g, &ps, &xs).expect("runs").outputs
    };
    let out = run(&base);
    let derived = values(&out[1]);
    let eps = 1e-5;
    let plus = run(&(&base + (&dir * eps).expect("scale")).expect("plus"));
    let minus = run(&(&base - (&dir * eps).expect("scale")).expect("minus"));
    let numeric: Vec<f64> = values(&plus[0])
        .iter()
        .zip(values(&minus[0]))
        .map(|(p, m)| (p - m) / (2.0 * eps))
        .collect();
    let err = rel_error(&derived, &numeric);
    assert!(
        err <= 1e-6,
        "{src} wrt {target}: error {err:e}\n derived {derived:?}\n numeric {numeric:?}"
    );
    assert!(
        numeric.iter().any(|v| v.abs() > 1e-3),
        "{src}: the Hessian-vector product is trivially zero"
    );
}

#[test]
fn hvp_elementwise() {
    for f in [
        "tanh(x)",
        "sigmoid(x)",
        "softplus(x)",
        "gelu(x)",
        "exp(x) * sin(x)",
        "x ^ 3",
    ] {
        hvp_check(
            &format!("model M(x: [2, 3], r: [2, 3]) {{ sum({f} * r) }}"),
            "x",
            &[],
        );
    }
}

#[test]
fn hvp_matmul() {
    let src = "model M(x: [2, 3], w: [3, 4], r: [2, 4]) { sum(tanh(x @ w) * r) }";
    hvp_check(src, "x", &[]);
    hvp_check(src, "w", &[]);
    let quad = "model M(x: [2, 3], w: [3, 4], r: [2, 4]) { let y = x @ w; sum(y * y * r) }";
    hvp_check(quad, "w", &[]);
}

#[test]
fn hvp_log_softmax() {
    hvp_check(
        "model M(x: [2, 5], r: [2, 5]) { sum(log_softmax(x, axis = -1) * r) }",
        "x",
        &[],
    );
    hvp_check(
        "model M(x: [3, 2], r: [2]) { sum(logsumexp(x, axis = 0) * r) }",
        "x",
        &[],
    );
}

#[test]
fn hvp_layer_norm() {
    let src = "use nn;\nmodel M(x: [B, 4], r: [B, 4]) { let ln = nn::LayerNorm[4]; sum(tanh(ln(x)) * r) }";
    hvp_check(src, "x", &[("B", 2)]);
    hvp_check(src, "ln.gamma", &[("B", 2)]);
}

#[test]
fn hvp_through_backward_ops() {
    // conv (input and weight gradients), pooling and slicing backward ops
    // are themselves differentiated here.
    hvp_check(
        "model M(x: [1, 2, 5, 5], w: [2, 2, 3, 3], r: [1, 2, 3, 3]) { sum(tanh(conv2d(x, w, stride = 2, padding = 1)) ^ 2 * r) }",
        "w",
        &[],
    );
    hvp_check(
        "model M(x: [1, 2, 5, 5], w: [2, 2, 3, 3], r: [1, 2, 3, 3]) { sum(tanh(conv2d(x, w, stride = 2, padding = 1)) ^ 2 * r) }",
        "x",
        &[],
    );
    hvp_check(
        "model M(x: [1, 1, 4, 4], r: [1, 1, 2, 2]) { sum(tanh(max_pool2d(x, 2) + avg_pool2d(x * x, 2)) * r) }",
        "x",
        &[],
    );
    hvp_check(
        "model M(x: [3, 4], r: [2, 2]) { sum(tanh(x[1:, 0:4:2]) * r) }",
        "x",
        &[],
    );
}
