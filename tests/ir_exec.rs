//! Execution of every op against hand-computed values; the derived-gradient
//! ops through gradients with known values; errors instead of panics;
//! memory that does not grow with chain length.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use deqc::autodiff::{grad, AdError};
use deqc::exec::{ExecError, Executor};
use deqc::ir::{NodeId, Op};

/// Run the first model of `src` in f64 with float inputs `xs`.
fn run(src: &str, xs: &[(&[f64], &[usize])]) -> Vec<f64> {
    let g = lower(src);
    let inputs: Vec<Tensor> = xs.iter().map(|(v, s)| t(v, s)).collect();
    let (params, _) = random_feeds(&g, &[], 0);
    let out = Executor::cpu_f64().run(&g, &params, &inputs).expect("runs");
    values(&out.outputs[0])
}

fn x23() -> (&'static [f64], &'static [usize]) {
    (&[1.0, -2.0, 3.0, -4.0, 5.0, -6.0], &[2, 3])
}

fn check(expr: &str, expected: &[f64]) {
    let src = format!("model M(x: [2, 3]) {{ {expr} }}");
    let got = run(&src, &[x23()]);
    assert_close(&got, expected, 1e-12);
}

#[test]
fn elementwise_values() {
    check("-x", &[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]);
    check("abs(x)", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    check("relu(x)", &[1.0, 0.0, 3.0, 0.0, 5.0, 0.0]);
    check(
        "leaky_relu(x, slope = 0.1)",
        &[1.0, -0.2, 3.0, -0.4, 5.0, -0.6],
    );
    check("clamp(x, -2.0, 2.0)", &[1.0, -2.0, 2.0, -2.0, 2.0, -2.0]);
    check("x + 1.0", &[2.0, -1.0, 4.0, -3.0, 6.0, -5.0]);
    check("x * x - x", &[0.0, 6.0, 6.0, 20.0, 20.0, 42.0]);
    check("x / 2.0", &[0.5, -1.0, 1.5, -2.0, 2.5, -3.0]);
    check("x ^ 2", &[1.0, 4.0, 9.0, 16.0, 25.0, 36.0]);
    check("x ^ 3", &[1.0, -8.0, 27.0, -64.0, 125.0, -216.0]);
    check("maximum(x, 0.0 - x)", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    check("minimum(x, 2.0)", &[1.0, -2.0, 2.0, -4.0, 2.0, -6.0]);
    check("x > 0.0", &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    check("x <= 1.0", &[1.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    check(
        "(x == 3.0) + (x != 3.0) * 2.0",
        &[2.0, 2.0, 1.0, 2.0, 2.0, 2.0],
    );
    check("(x < -2.0) + (x >= 5.0)", &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    check("where(x > 0.0, x, 0.0)", &[1.0, 0.0, 3.0, 0.0, 5.0, 0.0]);
    check("dropout(x, 0.5)", &[1.0, -2.0, 3.0, -4.0, 5.0, -6.0]);
    let e = std::f64::consts::E;
    let f = |expr: &str, x: &[f64], want: &[f64]| {
        let src = format!("model M(x: [{}]) {{ {expr} }}", x.len());
        assert_close(&run(&src, &[(x, &[x.len()])]), want, 1e-12);
    };
    f("exp(x)", &[0.0, 1.0], &[1.0, e]);
    f("log(x)", &[1.0, e], &[0.0, 1.0]);
    f("sqrt(x)", &[4.0, 9.0], &[2.0, 3.0]);
    f("tanh(x)", &[0.0, 1.0], &[0.0, 1f64.tanh()]);
    f(
        "sigmoid(x)",
        &[0.0, 2.0],
        &[0.5, 1.0 / (1.0 + (-2f64).exp())],
    );
    f(
        "softplus(x)",
        &[0.0, 30.0, -30.0],
        &[
            2f64.ln(),
            30.0 + (-30f64).exp().ln_1p(),
            (-30f64).exp().ln_1p(),
        ],
    );
    f("sin(x) + cos(x)", &[0.5], &[0.5f64.sin() + 0.5f64.cos()]);
    // A tensor exponent: integer exponents keep the sign, fractional ones of
    // negative bases are NaN (as powf).
    let src = "model M(a: [3], b: [3]) { a ^ b }";
    let got = run(src, &[(&[-2.0, -2.0, 0.0], &[3]), (&[3.0, 2.0, 0.0], &[3])]);
    assert_close(&got, &[-8.0, 4.0, 1.0], 1e-12);
    let got = run(src, &[(&[-2.0, 4.0, 9.0], &[3]), (&[0.5, 0.5, -0.5], &[3])]);
    assert!(got[0].is_nan());
    assert_close(&got[1..], &[2.0, 1.0 / 3.0], 1e-12);
}

/// GELU (tanh form, as PyTorch's `approximate="tanh"`) against references
/// that share no code or literal with the kernels: the tanh form rewritten
/// as `x * sigmoid(2u)` with its constant from `PI`, and the exact erf form
/// (libm's `erf`), which the tanh form follows within 4.8e-4.
#[test]
fn gelu_matches_independent_references() {
    let xs: Vec<f64> = (-60..=60).map(|i| i as f64 * 0.125).collect();
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let tanh_form = |x: f64| x / (1.0 + (-2.0 * c * (x + 0.044715 * x.powi(3))).exp());
    let erf_form = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
    let src = "model M(x: [121]) { gelu(x) }";
    let got = run(src, &[(&xs, &[121])]);
    for ((x, g), want) in xs.iter().zip(&got).zip(xs.iter().map(|x| tanh_form(*x))) {
        assert!(
            (g - want).abs() <= 1e-12,
            "gelu({x}) = {g}, expected {want}"
        );
        let exact = erf_form(*x);
        assert!(
            (g - exact).abs() <= 4.8e-4,
            "gelu({x}) = {g}, erf form {exact}"
        );
    }
    // The f32 path (vectorized kernels on the CPU).
    let g = lower(src);
    let x32 = Tensor::from_vec(
        xs.iter().map(|x| *x as f32).collect::<Vec<f32>>(),
        &[121],
        &Device::Cpu,
    )
    .expect("tensor");
    let out = Executor::new(Device::Cpu)
        .run(&g, &[], &[x32])
        .expect("runs");
    let got32 = values(&out.outputs[0]);
    for (x, g) in xs.iter().zip(&got32) {
        let want = tanh_form(*x);
        assert!(
            (g - want).abs() <= 2e-6 * want.abs().max(1.0),
            "f32 gelu({x}) = {g}, expected {want}"
        );
    }
}

#[test]
fn broadcasting_values() {
    let src = "model M(x: [2, 3], y: [3], z: [2, 1]) { x * y + z }";
    let got = run(
        src,
        &[x23(), (&[1.0, 10.0, 100.0], &[3]), (&[0.5, -0.5], &[2, 1])],
    );
    assert_close(&got, &[1.5, -19.5, 300.5, -4.5, 49.5, -600.5], 1e-12);
}

#[test]
fn reduction_values() {
    check("sum(x, axis = 1)", &[2.0, -5.0]);
    check("sum(x, axis = 0, keepdim = true)", &[-3.0, 3.0, -3.0]);
    check("mean(x)", &[-0.5]);
    check("max(x, axis = 1)", &[3.0, 5.0]);
    check("min(x, axis = 0)", &[-4.0, -2.0, -6.0]);
    check("max(x)", &[5.0]);
    let l = (1f64.exp() + (-4f64).exp()).ln();
    check(
        "logsumexp(x, axis = 0)",
        &[
            l,
            (5f64.exp() + (-2f64).exp()).ln(),
            (3f64.exp() + (-6f64).exp()).ln(),
        ],
    );
    let src = "model M(x: [2]) { softmax(x, axis = 0) }";
    assert_close(
        &run(src, &[(&[0.0, 3f64.ln()], &[2])]),
        &[0.25, 0.75],
        1e-12,
    );
    let src = "model M(x: [2]) { log_softmax(x) }";
    assert_close(
        &run(src, &[(&[0.0, 3f64.ln()], &[2])]),
        &[0.25f64.ln(), 0.75f64.ln()],
        1e-12,
    );
}

#[test]
fn linear_algebra_and_shape_values() {
    let src = "model M(a: [2, 2], b: [2, 2]) { a @ b }";
    let got = run(
        src,
        &[
            (&[1.0, 2.0, 3.0, 4.0], &[2, 2]),
            (&[5.0, 6.0, 7.0, 8.0], &[2, 2]),
        ],
    );
    assert_close(&got, &[19.0, 22.0, 43.0, 50.0], 1e-12);
    check("transpose(x, 0, 1)", &[1.0, -4.0, -2.0, 5.0, 3.0, -6.0]);
    check("reshape(x, [3, 2])[2]", &[5.0, -6.0]);
    check("concat((x, x * 10.0), 0)[2:, 0]", &[10.0, -40.0]);
    check("concat((x[:, 0:1], x[:, 2:]), 1)", &[1.0, 3.0, -4.0, -6.0]);
    check("split(x, 1, [1, 2])[1]", &[-2.0, 3.0, 5.0, -6.0]);
    check("broadcast(x[0], [2, 3])", &[1.0, -2.0, 3.0, 1.0, -2.0, 3.0]);
    check("x[.., -1]", &[3.0, -6.0]);
    check("x[-1, 0:3:2]", &[-4.0, -6.0]);
    check("flatten(x, start = 0)[1:3]", &[-2.0, 3.0]);
}

#[test]
fn constructor_values() {
    check("eye(2)", &[1.0, 0.0, 0.0, 1.0]);
    check("ones([2]) + zeros([2])", &[1.0, 1.0]);
    check("cast(arange(3), \"f32\")", &[0.0, 1.0, 2.0]);
    check(
        "causal_mask(3)",
        &[1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0],
    );
    check(
        "cast(cast(x * 0.5, \"i64\"), \"f64\")",
        &[0.0, -1.0, 1.0, -2.0, 2.0, -3.0],
    );
}

#[test]
fn network_op_values() {
    let src = "model M(x: [1, 1, 4], w: [1, 1, 3]) { conv1d(x, w, padding = 1) }";
    let xs: [(&[f64], &[usize]); 2] = [
        (&[1.0, 2.0, 3.0, 4.0], &[1, 1, 4]),
        (&[1.0, 0.0, -1.0], &[1, 1, 3]),
    ];
    assert_close(&run(src, &xs), &[-2.0, -2.0, -2.0, 3.0], 1e-12);
    let src = "model M(x: [1, 1, 4], w: [1, 1, 3]) { conv1d(x, w, padding = 1, stride = 2) }";
    assert_close(&run(src, &xs), &[-2.0, -2.0], 1e-12);
    let nine: Vec<f64> = (1..=9).map(f64::from).collect();
    let src = "model M(x: [1, 1, 3, 3], w: [1, 1, 2, 2]) { conv2d(x, w) }";
    let got = run(src, &[(&nine, &[1, 1, 3, 3]), (&[1.0; 4], &[1, 1, 2, 2])]);
    assert_close(&got, &[12.0, 16.0, 24.0, 28.0], 1e-12);
    let sixteen: Vec<f64> = (0..16).map(f64::from).collect();
    let src = "model M(x: [1, 1, 4, 4]) { avg_pool2d(x, 2) }";
    assert_close(
        &run(src, &[(&sixteen, &[1, 1, 4, 4])]),
        &[2.5, 4.5, 10.5, 12.5],
        1e-12,
    );
    let src = "model M(x: [1, 1, 4, 4]) { max_pool2d(x, 3, stride = 1) }";
    assert_close(
        &run(src, &[(&sixteen, &[1, 1, 4, 4])]),
        &[10.0, 11.0, 14.0, 15.0],
        1e-12,
    );
    let src = "model M(x: [1, 1, 2, 2]) { upsample_nearest2d(x, 2)[0, 0, 1:3, :] }";
    let got = run(src, &[(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2])]);
    assert_close(&got, &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0], 1e-12);
    // Embedding: rows picked by id.
    let g = lower("model M(ids: i64[2]) { param table: [3, 2] = zeros; embedding(ids, table) }");
    let table = t(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], &[3, 2]);
    let ids = Tensor::from_vec(vec![2i64, 0], 2, &Device::Cpu).expect("ids");
    let out = Executor::cpu_f64().run(&g, &[table], &[ids]).expect("runs");
    assert_close(&values(&out.outputs[0]), &[4.0, 5.0, 0.0, 1.0], 0.0);
}

/// Gradients of `src`'s scalar output with respect to its float inputs.
fn grads(src: &str, xs: &[Tensor]) -> Vec<Vec<f64>> {
    let mut g = lower(src);
    let wrt: Vec<NodeId> = g
        .node_ids()
        .into_iter()
        .filter(|n| matches!(g.op(*n), Op::Input(_)) && g.ty(*n).dtype.is_float())
        .collect();
    let loss = g.outputs()[0];
    let gs = grad(&mut g, loss, &wrt).expect("grad");
    g.set_outputs(gs);
    let out = Executor::cpu_f64().run(&g, &[], xs).expect("runs");
    out.outputs.iter().map(values).collect()
}

#[test]
fn backward_op_values() {
    // MaxPool2dBackward: the gradient goes to each window's maximum.
    let x = t(
        &[
            1.0, 5.0, 2.0, 0.0, 3.0, 4.0, 9.0, 8.0, 0.0, 0.0, 7.0, 1.0, 6.0, 0.0, 1.0, 1.0,
        ],
        &[1, 1, 4, 4],
    );
    let g = grads("model M(x: [1, 1, 4, 4]) { sum(max_pool2d(x, 2)) }", &[x]);
    let want = [
        0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0,
    ];
    assert_close(&g[0], &want, 0.0);
    // AvgPool2dBackward with overlapping windows counts the windows.
    let x = t(&[0.0; 9], &[1, 1, 3, 3]);
    let g = grads(
        "model M(x: [1, 1, 3, 3]) { sum(avg_pool2d(x, 2, stride = 1)) * 4.0 }",
        &[x],
    );
    assert_close(&g[0], &[1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0], 1e-12);
    // SliceBackward: zeros outside the slice.
    let x = t(&[0.0; 6], &[2, 3]);
    let g = grads("model M(x: [2, 3]) { sum(x[:, 0:3:2] * 3.0) }", &[x]);
    assert_close(&g[0], &[3.0, 0.0, 3.0, 3.0, 0.0, 3.0], 0.0);
    // SumTo and Count: the mean of a broadcast sum.
    let g = grads(
        "model M(y: [3]) { mean(ones([4, 3]) * y) }",
        &[t(&[1.0, 2.0, 3.0], &[3])],
    );
    assert_close(&g[0], &[1.0 / 3.0; 3], 1e-12);
    // Conv gradients: d sum(conv1d(x, w)) / dw = window sums; / dx = coverage.
    let src = "model M(x: [1, 1, 4], w: [1, 1, 2]) { sum(conv1d(x, w)) }";
    let g = grads(
        src,
        &[
            t(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 4]),
            t(&[1.0, 10.0], &[1, 1, 2]),
        ],
    );
    assert_close(&g[0], &[1.0, 11.0, 11.0, 10.0], 1e-12);
    assert_close(&g[1], &[6.0, 9.0], 1e-12);
    // EmbeddingBackward: rows accumulate once per occurrence.
    let mut graph =
        lower("model M(ids: i64[3]) { param table: [3, 2] = zeros; sum(embedding(ids, table)) }");
    let p = graph
        .node_ids()
        .into_iter()
        .find(|n| matches!(graph.op(*n), Op::Param(_)))
        .expect("param");
    let loss = graph.outputs()[0];
    let gt = grad(&mut graph, loss, &[p]).expect("grad");
    graph.set_outputs(gt);
    let ids = Tensor::from_vec(vec![2i64, 0, 2], 3, &Device::Cpu).expect("ids");
    let out = Executor::cpu_f64()
        .run(&graph, &[t(&[0.0; 6], &[3, 2])], &[ids])
        .expect("runs");
    assert_close(
        &values(&out.outputs[0]),
        &[1.0, 1.0, 0.0, 0.0, 2.0, 2.0],
        0.0,
    );
}

fn chain_src(n: usize) -> String {
    let mut s = String::from("model Chain(x: [B, 256]) {\n    let h0 = x;\n");
    for i in 1..=n {
        s.push_str(&format!("    let h{i} = tanh(h{});\n", i - 1));
    }
    s.push_str(&format!("    h{n}\n}}\n"));
    s
}

#[test]
fn peak_memory_does_not_grow_with_chain_length() {
    let x = Tensor::ones((8, 256), DType::F32, &Device::Cpu).expect("x");
    let peak = |n: usize| {
        let g = lower(&chain_src(n));
        let r = Executor::new(Device::Cpu)
            .run(&g, &[], std::slice::from_ref(&x))
            .expect("runs");
        assert_eq!(r.stats.nodes_run, n + 1);
        r.stats.peak_live_bytes
    };
    let (short, long) = (peak(10), peak(100));
    assert_eq!(short, long);
    // The input, the current value and the next one.
    assert!(short <= 3 * 8 * 256 * 4, "peak {short}");
}

#[test]
fn f32_is_the_default() {
    let g = lower("model M(x: [2]) { x * 2.0 }");
    let x = Tensor::new(&[1f64, 2.0], &Device::Cpu).expect("x");
    let out = Executor::new(Device::Cpu).run(&g, &[], &[x]).expect("runs");
    assert_eq!(out.outputs[0].dtype(), DType::F32);
}

#[test]
fn errors_not_panics() {
    let g = lower("model M(x: [B, 3]) { x * 2.0 }");
    let exec = Executor::cpu_f64();
    let bad = Tensor::zeros((2, 4), DType::F64, &Device::Cpu).expect("x");
    assert!(matches!(
        exec.run(&g, &[], &[bad]),
        Err(ExecError::InputShape { .. })
    ));
    assert!(matches!(
        exec.run(&g, &[], &[]),
        Err(ExecError::ArgumentCount { .. })
    ));
    // Ids out of range of the table.
    let g = lower("model M(ids: i64[2]) { param table: [3, 2] = zeros; embedding(ids, table) }");
    let ids = Tensor::from_vec(vec![0i64, 3], 2, &Device::Cpu).expect("ids");
    let table = t(&[0.0; 6], &[3, 2]);
    let err = exec
        .run(&g, std::slice::from_ref(&table), &[ids])
        .expect_err("out of range");
    assert!(
        matches!(err, ExecError::Kernel { span: Some(_), .. }),
        "{err}"
    );
    let ids = Tensor::from_vec(vec![-1i64, 0], 2, &Device::Cpu).expect("ids");
    assert!(exec.run(&g, &[table], &[ids]).is_err());
}

#[test]
fn equilibria_solve_and_differentiate_by_default_and_refuse_when_told() {
    let src = "model M(x: [B, 3]) { equilibrium z: [B, 3] = tanh(z * 0.5 + x); sum(z) }";
    let mut g = lower(src);
    let x = Tensor::zeros((2, 3), DType::F64, &Device::Cpu).expect("x");
    // The default executor solves: z* = tanh(0.5 z*) has the fixed point 0.
    let out = Executor::cpu_f64()
        .run(&g, &[], std::slice::from_ref(&x))
        .expect("solves");
    assert!(out.outputs[0].to_scalar::<f64>().unwrap().abs() < 1e-6);
    // An executor built to refuse equilibria says so, at the source.
    let err = Executor::cpu_f64()
        .with_runner(Box::new(deqc::exec::NoSolver))
        .run(&g, &[], &[x])
        .expect_err("no solver");
    assert!(matches!(
        err,
        ExecError::EquilibriumUnsupported { span: Some(_) }
    ));
    let input = g
        .node_ids()
        .into_iter()
        .find(|n| matches!(g.op(*n), Op::Input(_)))
        .expect("x");
    let loss = g.outputs()[0];
    let mut h = g.clone();
    grad(&mut g, loss, &[input]).expect("the implicit rule by default");
    let err =
        deqc::autodiff::grad_with(&mut h, loss, &[input], &deqc::autodiff::NoImplicitBackward)
            .expect_err("refused");
    assert!(matches!(
        err,
        AdError::ImplicitBackwardNotImplemented { span: Some(_) }
    ));
}

#[test]
fn a_shape_error_at_run_time_is_in_deqcs_words_with_its_span() {
    // `T / 4` is not exact at T = 30: candle refuses the reshape, and the
    // error names the op, the shapes (declared and actual) and the source
    // line; candle's own message is only a detail.
    let src = "model M(x: [B, T, 16]) -> [B, T, 16] {\n    let h = reshape(x, [B, 4, T / 4, 16]);\n    reshape(h, [B, T, 16])\n}\n";
    let g = lower(src);
    let x = Tensor::zeros((2, 30, 16), DType::F64, &Device::Cpu).unwrap();
    let err = Executor::cpu_f64()
        .run(&g, &[], &[x])
        .expect_err("30 / 4 is not exact");
    let text = err.to_string();
    assert!(matches!(err, ExecError::KernelLibrary(_)), "{text}");
    assert!(
        text.starts_with("`reshape` of [2, 30, 16] cannot give the declared shape [B, 4, (T / 4), 16] (here [2, 4, 7, 16]); a division"),
        "{text}"
    );
    assert!(text.contains("(kernel library: "), "{text}");
    let span = err.span().expect("a span");
    assert_eq!(
        &src[span.start as usize..span.end as usize],
        "reshape(x, [B, 4, T / 4, 16])"
    );
}

#[test]
fn probes_have_their_distribution_and_depend_on_the_seed_only() {
    let src = "model M(x: [2]) { concat((probe([4000]), probe([4000], \"rademacher\")), 0) }";
    let g = lower(src);
    let draw = |seed: u64| {
        let mut ex = Executor::cpu_f64();
        ex.options.seed = seed;
        values(&ex.run(&g, &[], &[t(&[0.0, 0.0], &[2])]).unwrap().outputs[0])
    };
    let a = draw(7);
    let (gauss, signs) = a.split_at(4000);
    let mean = gauss.iter().sum::<f64>() / 4000.0;
    let var = gauss.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4000.0;
    // Standard errors: 1/sqrt(4000) = 0.016 for the mean, ~0.022 for the variance.
    assert!(
        mean.abs() < 0.08 && (var - 1.0).abs() < 0.12,
        "{mean} {var}"
    );
    assert!(signs.iter().all(|s| *s == 1.0 || *s == -1.0));
    let plus = signs.iter().filter(|s| **s > 0.0).count();
    assert!((1800..2200).contains(&plus), "{plus} of 4000 are +1");
    assert_eq!(a, draw(7), "the same seed draws the same probes");
    assert_ne!(a, draw(8), "another seed (step) draws others");
}

/// A division by a per-row square root (LayerNorm's) runs in fused kernels
/// as one reciprocal per row and a product per element: the same values as
/// the plain path to rounding, and the same zeros, infinities and NaN
/// (rows of zeros give 0/0, a huge row an infinite norm, a NaN row NaN).
#[test]
fn division_by_a_row_norm_keeps_its_special_values() {
    use deqc::exec::ExecOptions;
    let src = "model M(x: [4, 3]) { x / sqrt(sum(x * x, axis = 1, keepdim = true)) }";
    let g = lower(src);
    let x = [
        1.0,
        -2.0,
        2.0, // norm 3
        0.0,
        0.0,
        0.0, // 0 / 0
        1e300,
        1.0,
        -1.0, // the square overflows: x / inf
        f64::NAN,
        1.0,
        2.0,
    ];
    for dtype in [DType::F64, DType::F32] {
        let input = t(&x, &[4, 3]);
        let on = |fuse: bool| {
            let options = ExecOptions {
                fuse,
                float: dtype,
                ..Default::default()
            };
            let exec = Executor::new(Device::Cpu).with_options(options);
            let out = exec
                .run(&g, &[], std::slice::from_ref(&input))
                .expect("runs");
            values(&out.outputs[0])
        };
        let (fused, plain) = (on(true), on(false));
        for (i, (a, b)) in fused.iter().zip(&plain).enumerate() {
            let same = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-6 * b.abs().max(1.0);
            assert!(same, "{dtype:?} element {i}: fused {a}, plain {b}");
        }
        assert!(
            (plain[0] - 1.0 / 3.0).abs() < 1e-6 && plain[3].is_nan(),
            "{plain:?}"
        );
    }
}
