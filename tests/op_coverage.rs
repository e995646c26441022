//! Every `Op` variant is exercised by a gradient check.
//!
//! `VARIANTS` below is one exhaustive `match` over `Op` (no wildcard), so a
//! new variant does not compile here until it is named; the test then fails
//! until some gradient check below contains it. Forward ops appear in the
//! checked models; the ops that only gradients create (`SumTo`, `Count`,
//! conv and pooling backward ops, ...) appear in gradient graphs, which are
//! checked in turn (second order, third for `MaxPool2dSelect`).

mod common;

use std::collections::BTreeSet;

use common::*;
use deqc::autodiff::check::check_graph;
use deqc::autodiff::grad_with;
use deqc::deq::DeqVjp;
use deqc::exec::{ExecOptions, Executor};
use deqc::ir::{Graph, NodeId, Op, ReduceOp};

/// Defines `VARIANTS` (every name) and `variant` (an op's name) from one
/// exhaustive list.
macro_rules! variants {
    ($($pat:pat => $name:literal),* $(,)?) => {
        const VARIANTS: &[&str] = &[$($name),*];
        fn variant(op: &Op) -> &'static str {
            match op {
                $($pat => $name),*
            }
        }
    };
}

variants! {
    Op::Input(_) => "Input",
    Op::Param(_) => "Param",
    Op::Const(_) => "Const",
    Op::State(_) => "State",
    Op::Capture(_) => "Capture",
    Op::Neg => "Neg",
    Op::Exp => "Exp",
    Op::Log => "Log",
    Op::Sqrt => "Sqrt",
    Op::Abs => "Abs",
    Op::Tanh => "Tanh",
    Op::Sigmoid => "Sigmoid",
    Op::Relu => "Relu",
    Op::Gelu => "Gelu",
    Op::Softplus => "Softplus",
    Op::Sin => "Sin",
    Op::Cos => "Cos",
    Op::LeakyRelu { .. } => "LeakyRelu",
    Op::Clamp { .. } => "Clamp",
    Op::Add => "Add",
    Op::Sub => "Sub",
    Op::Mul => "Mul",
    Op::Div => "Div",
    Op::Pow => "Pow",
    Op::Maximum => "Maximum",
    Op::Minimum => "Minimum",
    Op::Compare(_) => "Compare",
    Op::Where => "Where",
    Op::Reduce { .. } => "Reduce",
    Op::Softmax { .. } => "Softmax",
    Op::LogSoftmax { .. } => "LogSoftmax",
    Op::MatMul => "MatMul",
    Op::Reshape { .. } => "Reshape",
    Op::Permute { .. } => "Permute",
    Op::Concat { .. } => "Concat",
    Op::BroadcastTo { .. } => "BroadcastTo",
    Op::Slice { .. } => "Slice",
    Op::Eye { .. } => "Eye",
    Op::Fill { .. } => "Fill",
    Op::Arange { .. } => "Arange",
    Op::CausalMask { .. } => "CausalMask",
    Op::Conv(_) => "Conv",
    Op::AvgPool2d { .. } => "AvgPool2d",
    Op::MaxPool2d { .. } => "MaxPool2d",
    Op::UpsampleNearest2d { .. } => "UpsampleNearest2d",
    Op::Embedding => "Embedding",
    Op::DropoutMask { .. } => "DropoutMask",
    Op::Probe { .. } => "Probe",
    Op::Cast { .. } => "Cast",
    Op::Equilibrium(_) => "Equilibrium",
    Op::Project(_) => "Project",
    Op::SumTo { .. } => "SumTo",
    Op::Count { .. } => "Count",
    Op::SliceBackward { .. } => "SliceBackward",
    Op::ConvInputGrad { .. } => "ConvInputGrad",
    Op::ConvWeightGrad { .. } => "ConvWeightGrad",
    Op::AvgPool2dBackward { .. } => "AvgPool2dBackward",
    Op::MaxPool2dBackward { .. } => "MaxPool2dBackward",
    Op::MaxPool2dSelect { .. } => "MaxPool2dSelect",
    Op::EmbeddingBackward { .. } => "EmbeddingBackward",
}

/// The variants in `g`, equilibrium bodies included.
fn record(g: &Graph, seen: &mut BTreeSet<&'static str>) {
    for id in g.node_ids() {
        let op = g.op(id);
        seen.insert(variant(op));
        if let Op::Equilibrium(eq) = op {
            record(&eq.body, seen);
        }
    }
}

fn training_exec() -> Executor {
    Executor::cpu_f64().with_options(ExecOptions {
        float: candle_core::DType::F64,
        training: true,
        seed: 42,
        ..ExecOptions::default()
    })
}

/// Gradient-check `g` against central differences and record its ops.
fn check(g: &Graph, tol: f64, what: &str, seen: &mut BTreeSet<&'static str>) {
    let (params, inputs) = random_feeds(g, &[], 11);
    let report =
        check_graph(g, &params, &inputs, &training_exec(), 1e-5, 7, None).expect("gradcheck runs");
    assert!(!report.is_empty(), "{what}: nothing was differentiated");
    for r in &report {
        assert!(
            r.max_rel_error <= tol,
            "{what}\n{}: error {:e}\n derived {:?}\n numeric {:?}",
            r.name,
            r.max_rel_error,
            r.derived,
            r.numeric
        );
    }
    record(g, seen);
}

/// The graph of the gradients of `g`'s first output (summed squares when it
/// is not a scalar) with respect to every parameter and float input.
fn gradient_graph(g: &Graph) -> Graph {
    let mut d = g.clone();
    let mut loss = d.outputs()[0];
    let rank = d.ty(loss).rank();
    if rank > 0 {
        let sq = d.add_inferred(Op::Mul, &[loss, loss], None).expect("mul");
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            axes: (0..rank).collect(),
            keepdim: false,
        };
        loss = d.add_inferred(op, &[sq], None).expect("sum");
    }
    let wrt: Vec<NodeId> = d
        .node_ids()
        .into_iter()
        .filter(|id| match d.op(*id) {
            Op::Param(_) => true,
            Op::Input(_) => d.ty(*id).dtype.is_float(),
            _ => false,
        })
        .collect();
    let grads = grad_with(&mut d, loss, &wrt, &DeqVjp).expect("gradient graph");
    d.set_outputs(grads);
    d
}

/// First-order checks: each model differentiated once.
const MODELS: &[&str] = &[
    "model M(x: [2, 3], z: [2, 1]) {
        -x + exp(x) * log(x * x + 1.0) + sqrt(x * x + 1.0) - abs(x) / (z * z + 1.0)
    }",
    "model M(x: [2, 3]) {
        tanh(x) + sigmoid(x) * relu(x) + gelu(x) + softplus(x) + sin(x) * cos(x)
            + leaky_relu(x, slope = 0.1) + clamp(x, -0.5, 0.5)
    }",
    "model M(x: [2, 3], y: [3]) {
        maximum(x, y) + minimum(x, 0.3) + (x * x + 0.5) ^ y + where(x > y, x, y * 2.0)
    }",
    "model M(x: [2, 3, 4]) {
        sum(x, axis = 1) + mean(softmax(x, axis = -1), axis = 1) * max(log_softmax(x, axis = 0), axis = 1)
    }",
    "model M(a: [2, 3], b: [3, 4]) {
        let c = a @ b;
        concat((reshape(c, [4, 2]), permute(reshape(c, [2, 2, 2]), [1, 0, 2])[0]), 0)
            + broadcast(c[0, 0:2], [6, 2])
    }",
    "model M(x: [2, 3]) {
        x * eye(3)[0:2, :] + ones([2, 3]) * cast(arange(3), \"f32\") + x[0, 0:3] * causal_mask(3)[1]
    }",
    "model M(x: [1, 2, 6, 6], w: [2, 2, 3, 3]) {
        let h = conv2d(x, w, padding = 1);
        upsample_nearest2d(avg_pool2d(h, 2) + max_pool2d(h, 2), 2)
    }",
    "model M(ids: i64[2, 3]) {
        param table: [5, 4] = normal(std = 1.0);
        dropout(tanh(embedding(ids, table)), 0.5)
    }",
    "model M(x: [2, 3]) {
        x * probe([2, 3]) + tanh(x) * probe([3], \"rademacher\")
    }",
    "model M(x: [2, 3]) {
        param w: [3, 3] = normal(std = 0.2);
        equilibrium z: [2, 3] = tanh((z @ w) * 0.3 + x)
            with solver = anderson(tol = 1e-13, max_iter = 300, stop = \"abs\"),
                 backward = implicit(tol = 1e-13, max_iter = 300);
        z
    }",
];

/// Scalar models whose gradient graphs hold the derived-gradient ops; the
/// number is how often the graph is differentiated before the check.
const GRADIENT_MODELS: &[(&str, usize)] = &[
    // SumTo (broadcast add), Count (mean), SliceBackward.
    (
        "model M(x: [2, 3], y: [3]) { mean(tanh(x + y) ^ 2) + sum(tanh(x[0:2, 1:3]) ^ 2) }",
        1,
    ),
    // ConvInputGrad, ConvWeightGrad, AvgPool2dBackward.
    (
        "model M(x: [1, 2, 5, 5], w: [2, 2, 3, 3]) { sum(tanh(avg_pool2d(conv2d(x, w, padding = 1), 2)) ^ 2) }",
        1,
    ),
    // EmbeddingBackward.
    (
        "model M(ids: i64[2, 3]) { param table: [5, 4] = normal(std = 1.0); sum(tanh(embedding(ids, table)) ^ 2) }",
        1,
    ),
    // MaxPool2dBackward, and its own VJP's MaxPool2dSelect one order up.
    (
        "model M(x: [1, 1, 4, 4]) { sum(tanh(max_pool2d(x * x, 2)) ^ 2) }",
        2,
    ),
];

#[test]
fn every_op_variant_is_gradient_checked() {
    let mut seen = BTreeSet::new();
    for src in MODELS {
        let tol = if src.contains("equilibrium") {
            1e-5
        } else {
            1e-6
        };
        check(&lower(src), tol, src, &mut seen);
    }
    for (src, order) in GRADIENT_MODELS {
        let mut g = lower(src);
        for _ in 0..*order {
            g = gradient_graph(&g);
        }
        check(&g, 1e-5, src, &mut seen);
    }
    let missing: Vec<&str> = VARIANTS
        .iter()
        .copied()
        .filter(|v| !seen.contains(v))
        .collect();
    assert!(
        missing.is_empty(),
        "Op variants that no gradient check exercises: {missing:?}; add a case above"
    );
}
