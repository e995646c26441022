//! Gradient checks in f64 of every op against central finite differences
//! (relative error <= 1e-6), including broadcasting variants, reductions
//! over each axis, convolution settings, pooling, slicing, embeddings.

mod common;

use common::*;
use deqc::exec::{ExecOptions, Executor};

/// One model per expression over `x: [2, 3]`, `y: [3]`, `z: [2, 1]`.
fn each(exprs: &[&str]) {
    for e in exprs {
        gradcheck(&format!(
            "model M(x: [2, 3], y: [3], z: [2, 1]) {{\n    {e}\n}}\n"
        ));
    }
}

#[test]
fn unary_elementwise() {
    each(&[
        "-x",
        "exp(x)",
        "log(x * x + 1.0)",
        "sqrt(x * x + 1.0)",
        "abs(x)",
        "tanh(x)",
        "sigmoid(x)",
        "relu(x)",
        "gelu(x)",
        "softplus(x * 3.0)",
        "sin(x)",
        "cos(x)",
        "leaky_relu(x, slope = 0.1)",
        "clamp(x, -0.5, 0.5)",
    ]);
}

#[test]
fn binary_with_broadcasting() {
    each(&[
        "x + y",
        "y - x",
        "x * z",
        "x / (z * z + 1.0)",
        "z / (x * x + 1.0)",
        "2.0 * x - 1.0",
        "maximum(x, y)",
        "minimum(z, x)",
        "(x * x + 0.5) ^ y",
        "(y * y + 0.5) ^ z",
        "x ^ 2",
        "x ^ 3",
        "where(x > 0.0, x * y, z)",
        "where(x > y, 1.0, x)",
        "x * (x >= z) + (x != y)",
    ]);
}

#[test]
fn maximum_ties_split_half_each() {
    // At a tie both operands get half the gradient, which is what a central
    // difference measures.
    let src = "model M(a: [4], b: [4]) { maximum(a, b) + minimum(a, b) * 2.0 }";
    let v = t(&[0.3, -1.0, 2.0, 0.0], &[4]);
    let report = gradcheck_with(src, &[], &[v.clone(), v], &Executor::cpu_f64(), 1e-6);
    // Every element tied: the projection r gives d/da = r * (0.5 + 1.0).
    for r in &report {
        for (d, n) in r.derived.iter().zip(&r.numeric) {
            assert!((d - n).abs() < 1e-8);
        }
    }
}

#[test]
fn reductions_over_each_axis() {
    for op in ["sum", "mean", "max", "min", "logsumexp"] {
        for axis in ["0", "1", "2", "-1", "(0, 2)", "(0, 1, 2)"] {
            for keep in ["true", "false"] {
                gradcheck(&format!(
                    "model M(x: [2, 3, 4]) {{ {op}(x, axis = {axis}, keepdim = {keep}) }}"
                ));
            }
        }
        gradcheck(&format!("model M(x: [2, 3, 4]) {{ {op}(x) }}"));
    }
}

#[test]
fn reduce_max_tie_of_two_matches_differences() {
    let src = "model M(x: [2, 3]) { max(x, axis = 1) }";
    let x = t(&[1.0, 0.5, 1.0, -2.0, 3.0, 3.0], &[2, 3]);
    gradcheck_with(src, &[], &[x], &Executor::cpu_f64(), 1e-6);
}

#[test]
fn softmax_and_log_softmax() {
    for f in ["softmax", "log_softmax"] {
        for axis in ["0", "1", "-1"] {
            gradcheck(&format!(
                "model M(x: [2, 3, 4]) {{ {f}(x, axis = {axis}) * x }}"
            ));
        }
    }
}

#[test]
fn matmul_variants() {
    for (a, b) in [
        ("[2, 3]", "[3, 4]"),
        ("[2, 2, 3]", "[3, 4]"),
        ("[2, 3, 2, 3]", "[3, 4]"),
        ("[2, 3]", "[2, 3, 4]"),
        ("[2, 1, 2, 3]", "[3, 3, 4]"),
        ("[3, 2, 3]", "[3, 3, 2]"),
    ] {
        gradcheck(&format!("model M(a: {a}, b: {b}) {{ a @ b }}"));
    }
}

#[test]
fn shape_ops() {
    let cases = [
        "reshape(x, [4, 6])",
        "reshape(x, [-1])",
        "permute(x, [2, 0, 1])",
        "transpose(x, 0, 2)",
        "flatten(x, start = 1)",
        "unsqueeze(x, 1)",
        "squeeze(unsqueeze(x, 0), 0)",
        "concat((x, x * 2.0), 1)",
        "concat((x, reshape(x, [2, 3, 4]) * x), 0)",
        "broadcast(y, [2, 3, 4])",
        "broadcast(reshape(x[0, :, 0], [3, 1]), [2, 3, 4])",
        "split(x, 2, [1, 3])[1]",
        "let (p, q) = split(x, 1, [2, 1]); p * 2.0 + q",
    ];
    for c in cases {
        gradcheck(&format!("model M(x: [2, 3, 4], y: [4]) {{ {c} }}"));
    }
}

#[test]
fn slicing_with_negative_bounds_and_steps() {
    let cases = [
        "x[:, 1:3]",
        "x[.., -1]",
        "x[0]",
        "x[-1, -3:-1, :]",
        "x[:, 0:3:2, 1:4:2]",
        "x[1, .., 0:2]",
        "x[:, 2] * x[:, 0]",
    ];
    for c in cases {
        gradcheck(&format!("model M(x: [2, 3, 4]) {{ {c} }}"));
    }
}

#[test]
fn conv1d_settings() {
    for (x, w, opts) in [
        ("[2, 2, 7]", "[3, 2, 3]", ""),
        ("[2, 2, 7]", "[3, 2, 3]", ", stride = 2"),
        ("[2, 2, 8]", "[3, 2, 3]", ", stride = 2, padding = 1"),
        ("[1, 2, 9]", "[2, 2, 2]", ", dilation = 2, padding = 2"),
        ("[2, 4, 6]", "[6, 2, 3]", ", groups = 2, padding = 1"),
        (
            "[2, 4, 10]",
            "[2, 2, 3]",
            ", groups = 2, stride = 3, dilation = 2",
        ),
    ] {
        gradcheck(&format!("model M(x: {x}, w: {w}) {{ conv1d(x, w{opts}) }}"));
    }
}

#[test]
fn conv2d_settings() {
    for (x, w, opts) in [
        ("[1, 2, 5, 5]", "[2, 2, 3, 3]", ""),
        ("[2, 1, 6, 5]", "[2, 1, 3, 3]", ", stride = 2, padding = 1"),
        (
            "[1, 2, 7, 6]",
            "[1, 2, 2, 2]",
            ", dilation = 2, padding = 1",
        ),
        (
            "[1, 4, 5, 5]",
            "[4, 2, 3, 3]",
            ", groups = 2, padding = 1, stride = 2",
        ),
    ] {
        gradcheck(&format!("model M(x: {x}, w: {w}) {{ conv2d(x, w{opts}) }}"));
    }
}

#[test]
fn pooling_and_upsampling() {
    for c in [
        "avg_pool2d(x, 2)",
        "avg_pool2d(x, 3, stride = 2)",
        "max_pool2d(x, 2)",
        "max_pool2d(x, 3, stride = 2)",
        "max_pool2d(x, 2, stride = 1)",
        "upsample_nearest2d(x, 2)",
    ] {
        gradcheck(&format!("model M(x: [2, 2, 5, 5]) {{ {c} }}"));
    }
}

#[test]
fn embedding_gradient_into_the_table() {
    let src = "model M(ids: i64[2, 3]) {
        param table: [5, 4] = normal(std = 1.0);
        embedding(ids, table)
    }";
    let g = lower(src);
    let (params, _) = random_feeds(&g, &[], 3);
    // Repeated ids accumulate.
    let ids =
        candle_core::Tensor::from_vec(vec![1i64, 4, 1, 0, 1, 4], (2, 3), &candle_core::Device::Cpu)
            .expect("ids");
    let report = gradcheck_with(src, &params, &[ids], &Executor::cpu_f64(), 1e-6);
    assert_eq!(report.len(), 1);
}

#[test]
fn cast_and_constructors() {
    each(&[
        "cast(x, \"f64\") * 2.0",
        "x * eye(3)[0:2, :]",
        "x + ones([2, 3]) * zeros([3])",
        "x * cast(arange(3), \"f32\")",
        "x[0] * causal_mask(3)",
    ]);
}

#[test]
fn dropout_in_training_mode() {
    let src = "model M(x: [3, 4]) { dropout(tanh(x), 0.5) }";
    let g = lower(src);
    let (params, inputs) = random_feeds(&g, &[], 5);
    let exec = Executor::cpu_f64().with_options(ExecOptions {
        float: candle_core::DType::F64,
        training: true,
        seed: 42,
        ..ExecOptions::default()
    });
    gradcheck_with(src, &params, &inputs, &exec, 1e-6);
}

#[test]
fn stdlib_layers() {
    gradcheck_dims(
        "use nn;\nmodel M(x: [B, 3, 4]) { let ln = nn::LayerNorm[4]; ln(x) }",
        &[("B", 2)],
    );
    gradcheck_dims(
        "use nn;\nmodel M(x: [B, 4, 3, 3]) { let n = nn::GroupNorm[2, 4]; n(x) }",
        &[("B", 2)],
    );
    gradcheck_dims(
        "use nn;\nmodel M(x: [B, 2, 5, 5]) { let c = nn::Conv2d[2, 3, 3, stride = 2, padding = 1]; relu(c(x)) }",
        &[("B", 1)],
    );
    gradcheck_dims(
        "use nn;\nmodel M(x: [B, T, 4]) { let a = nn::MultiHeadAttention[4, 2, causal = true]; a(x) }",
        &[("B", 1), ("T", 3)],
    );
    gradcheck_dims(
        "use nn;\nmodel M(x: [B, 4]) { let m = nn::Mlp[4, 5, 3]; log_softmax(m(x), axis = -1) }",
        &[("B", 2)],
    );
}

#[test]
fn remaining_stdlib_layers_and_a_chained_network() {
    gradcheck_dims(
        "use nn;\nmodel M(x: [B, 4]) { let l = nn::Linear[4, 3, bias = false]; l(x) + nn::Linear[4, 3](x) }",
        &[("B", 2)],
    );
    gradcheck_dims(
        "use nn;\nmodel M(ids: i64[B, T], x: [B, T, 3]) { let e = nn::Embedding[5, 3]; e(ids) * x }",
        &[("B", 2), ("T", 3)],
    );
    // conv -> group norm -> pooling -> layer norm -> softmax in one model.
    gradcheck_dims(
        "use nn;\nmodel M(x: [B, 2, 6, 6]) {\n    let c = nn::Conv2d[2, 4, 3, padding = 1];\n    let g = nn::GroupNorm[2, 4];\n    let l = nn::LayerNorm[4];\n    let h = avg_pool2d(relu(g(c(x))), 2);\n    let f = permute(reshape(h, [B, 4, 9]), [0, 2, 1]);\n    softmax(l(f), axis = -1)\n}",
        &[("B", 2)],
    );
}
