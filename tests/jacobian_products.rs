//! `vjp(f, x, v)` and `jvp(f, x, u)` in the language, in f64: against the
//! full Jacobian built column by column from central differences of `f`,
//! inside an equilibrium body, and differentiated again (their gradients
//! against finite differences of the first-order result), and through a
//! function that holds an equilibrium (its implicit adjoint).

mod common;

use candle_core::{Device, Tensor};
use common::*;
use deqc::deq::SolverRunner;
use deqc::exec::Executor;
use deqc::ir::{lower::lower_model, Graph};

/// Lower the model called `name` of `src`.
fn lower_named(src: &str, name: &str) -> Graph {
    let c = deqc::compile_source("jac.deq", src);
    let p = match c.program {
        Some(p) => p,
        None => panic!("{}", deqc::compile_source("jac.deq", src).render_plain(100)),
    };
    let m = p.model(name).expect("model");
    lower_model(m).expect("lowers")
}

fn exec() -> Executor {
    Executor::cpu_f64().with_runner(Box::new(SolverRunner::new()))
}

fn run(g: &Graph, params: &[Tensor], inputs: &[Tensor]) -> Vec<f64> {
    values(&exec().run(g, params, inputs).expect("runs").outputs[0])
}

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| rand_distr::StandardNormal.sample(&mut rng))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// The Jacobian of `f` (flattened output by flattened input) at `x`, built
/// column by column from central differences.
fn jacobian_by_columns(f: impl Fn(&Tensor) -> Vec<f64>, x: &Tensor) -> Vec<Vec<f64>> {
    let base = values(x);
    let shape = x.dims().to_vec();
    let eps = 1e-6;
    let mut columns = Vec::new();
    for j in 0..base.len() {
        let mut plus = base.clone();
        plus[j] += eps;
        let mut minus = base.clone();
        minus[j] -= eps;
        let fp = f(&t(&plus, &shape));
        let fm = f(&t(&minus, &shape));
        columns.push(
            fp.iter()
                .zip(&fm)
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect(),
        );
    }
    columns
}

/// `max |a - b| / max |b|`.
fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f64::max)
}

/// A non-square cell `[*, 3] -> [*, 4]` with a nonlinearity that mixes
/// elementwise and matrix terms, and models that apply it, take its VJP and
/// its JVP.
const CELL: &str = r#"
layer Cell[i: int, o: int](x: f64[*, i]) -> f64[*, o] {
    param w: f64[i, o] = zeros;
    param b: f64[o] = zeros;
    let h = tanh(x @ w + b);
    h * h + sin(x @ w) * 0.5
}
model Apply(x: f64[B, 3]) -> f64[B, 4] {
    let cell = Cell[3, 4];
    cell(x)
}
model Vjp(x: f64[B, 3], v: f64[B, 4]) -> f64[B, 3] {
    let cell = Cell[3, 4];
    vjp(cell, x, v)
}
model Jvp(x: f64[B, 3], u: f64[B, 3]) -> f64[B, 4] {
    let cell = Cell[3, 4];
    jvp(cell, x, u)
}
"#;

fn cell_params() -> Vec<Tensor> {
    vec![randn(&[3, 4], 1), randn(&[4], 2)]
}

#[test]
fn vjp_and_jvp_match_the_jacobian_built_column_by_column() {
    let params = cell_params();
    let x = randn(&[2, 3], 3);
    let apply = lower_named(CELL, "Apply");
    let jac = jacobian_by_columns(|x| run(&apply, &params, std::slice::from_ref(x)), &x);
    let (n_in, n_out) = (jac.len(), jac[0].len());
    assert_eq!((n_in, n_out), (6, 8));

    let v = randn(&[2, 4], 4);
    let vv = values(&v);
    let expected_vjp: Vec<f64> = (0..n_in)
        .map(|j| (0..n_out).map(|i| vv[i] * jac[j][i]).sum())
        .collect();
    let got = run(&lower_named(CELL, "Vjp"), &params, &[x.clone(), v]);
    let e = rel_err(&got, &expected_vjp);
    assert!(e <= 1e-6, "vjp: error {e:e}\n{got:?}\n{expected_vjp:?}");

    let u = randn(&[2, 3], 5);
    let uu = values(&u);
    let expected_jvp: Vec<f64> = (0..n_out)
        .map(|i| (0..n_in).map(|j| jac[j][i] * uu[j]).sum())
        .collect();
    let got = run(&lower_named(CELL, "Jvp"), &params, &[x, u]);
    let e = rel_err(&got, &expected_jvp);
    assert!(e <= 1e-6, "jvp: error {e:e}\n{got:?}\n{expected_jvp:?}");
}

#[test]
fn vjp_of_a_fn_and_a_builtin_match_their_derivatives() {
    // d/dx sum(v * exp(x) * x) = v * exp(x) * (1 + x); d tanh = 1 - tanh^2.
    let src = r#"
fn f(x) = exp(x) * x;
model F(x: f64[5], v: f64[5]) -> f64[5] {
    vjp(f, x, v) + jvp(tanh, x, v)
}
"#;
    let g = lower_named(src, "F");
    let x = randn(&[5], 7);
    let v = randn(&[5], 8);
    let got = run(&g, &[], &[x.clone(), v.clone()]);
    let expected: Vec<f64> = values(&x)
        .iter()
        .zip(values(&v))
        .map(|(x, v)| v * x.exp() * (1.0 + x) + v * (1.0 - x.tanh().powi(2)))
        .collect();
    let e = rel_err(&got, &expected);
    assert!(e <= 1e-12, "error {e:e}");
}

#[test]
fn products_are_differentiated_again() {
    // The gradient of every parameter and input through a VJP and a JVP
    // (second order) against central differences of the first-order result.
    let src = r#"
layer Cell[i: int, o: int](x: f64[*, i]) -> f64[*, o] {
    param w: f64[i, o] = zeros;
    param b: f64[o] = zeros;
    let h = tanh(x @ w + b);
    h * h + sin(x @ w) * 0.5
}
model Second(x: f64[B, 3], v: f64[B, 4]) -> (f64[B, 3], f64[B, 4]) {
    let cell = Cell[3, 4];
    (vjp(cell, x, v), jvp(cell, x, vjp(cell, x, v)))
}
"#;
    gradcheck_dims(src, &[("B", 2)]);
}

/// An equilibrium whose body holds a VJP of the state: z = tanh(0.5 *
/// J_c(z)^T v + x) with c's Jacobian small enough to contract.
const IN_BODY: &str = r#"
layer Cell[d: int](x: f64[*, d]) -> f64[*, d] {
    param w: f64[d, d] = zeros;
    tanh(x @ w) * 0.5
}
model Deq(x: f64[B, 3], v: f64[B, 3]) -> f64[B, 3] {
    let cell = Cell[3];
    equilibrium z: f64[B, 3] = tanh(vjp(cell, z, v) * z + x)
        with solver = anderson(tol = 1e-13, max_iter = 300, stop = "abs"),
             backward = implicit(tol = 1e-13, max_iter = 300);
    z
}
model Map(z: f64[B, 3], x: f64[B, 3], v: f64[B, 3]) -> f64[B, 3] {
    let cell = Cell[3];
    tanh(vjp(cell, z, v) * z + x)
}
model Apply(z: f64[B, 3]) -> f64[B, 3] {
    let cell = Cell[3];
    cell(z)
}
"#;

#[test]
fn a_vjp_inside_an_equilibrium_body_is_solved_and_differentiated() {
    let params = vec![(randn(&[3, 3], 11) * 0.3).expect("scale")];
    let x = randn(&[2, 3], 12);
    let v = (randn(&[2, 3], 13) * 0.5).expect("scale");
    let zstar = run(
        &lower_named(IN_BODY, "Deq"),
        &params,
        &[x.clone(), v.clone()],
    );
    // z* is a fixed point of the map whose VJP comes from the Jacobian built
    // column by column at z*.
    let z = t(&zstar, &[2, 3]);
    let apply = lower_named(IN_BODY, "Apply");
    let jac = jacobian_by_columns(|z| run(&apply, &params, std::slice::from_ref(z)), &z);
    let vv = values(&v);
    let vjp: Vec<f64> = (0..6)
        .map(|j| (0..6).map(|i| vv[i] * jac[j][i]).sum())
        .collect();
    let xx = values(&x);
    let mapped: Vec<f64> = (0..6).map(|k| (vjp[k] * zstar[k] + xx[k]).tanh()).collect();
    let e = rel_err(&zstar, &mapped);
    assert!(e <= 1e-6, "z* is not a fixed point: {e:e}");
    // The map itself, evaluated by the compiled VJP, agrees.
    let direct = run(&lower_named(IN_BODY, "Map"), &params, &[z, x.clone(), v]);
    assert!(rel_err(&direct, &mapped) <= 1e-6);

    // Differentiated again through the implicit adjoint: gradcheck.
    let g = lower_named(IN_BODY, "Deq");
    let inputs = [x, randn(&[2, 3], 14)];
    let report = deqc::autodiff::check::check_graph(&g, &params, &inputs, &exec(), 1e-6, 3, None)
        .expect("gradcheck runs");
    for r in &report {
        assert!(r.max_rel_error <= 1e-6, "{}: {:e}", r.name, r.max_rel_error);
    }
}

/// A function that holds an equilibrium: its VJP goes through the implicit
/// adjoint (the reverse sweep's rule for equilibria).
const OF_A_DEQ: &str = r#"
layer Solve[d: int](x: f64[B, d]) -> f64[B, d] {
    param w: f64[d, d] = zeros;
    equilibrium z: f64[B, d] = tanh(z @ w + x)
        with solver = anderson(tol = 1e-13, max_iter = 300, stop = "abs"),
             backward = implicit(tol = 1e-13, max_iter = 300);
    z * z
}
model Apply(x: f64[B, 3]) -> f64[B, 3] {
    let s = Solve[3];
    s(x)
}
model Vjp(x: f64[B, 3], v: f64[B, 3]) -> f64[B, 3] {
    let s = Solve[3];
    vjp(s, x, v)
}
model Jvp(x: f64[B, 3], u: f64[B, 3]) -> f64[B, 3] {
    let s = Solve[3];
    jvp(s, x, u)
}
"#;

#[test]
fn products_of_a_function_holding_an_equilibrium_use_its_adjoint() {
    let params = vec![(randn(&[3, 3], 21) * 0.4).expect("scale")];
    let x = randn(&[2, 3], 22);
    let apply = lower_named(OF_A_DEQ, "Apply");
    let jac = jacobian_by_columns(|x| run(&apply, &params, std::slice::from_ref(x)), &x);
    let v = randn(&[2, 3], 23);
    let vv = values(&v);
    let expected_vjp: Vec<f64> = (0..6)
        .map(|j| (0..6).map(|i| vv[i] * jac[j][i]).sum())
        .collect();
    let got = run(
        &lower_named(OF_A_DEQ, "Vjp"),
        &params,
        &[x.clone(), v.clone()],
    );
    let e = rel_err(&got, &expected_vjp);
    assert!(e <= 1e-6, "vjp through an equilibrium: error {e:e}");
    let expected_jvp: Vec<f64> = (0..6)
        .map(|i| (0..6).map(|j| jac[j][i] * vv[j]).sum())
        .collect();
    let got = run(&lower_named(OF_A_DEQ, "Jvp"), &params, &[x, v]);
    let e = rel_err(&got, &expected_jvp);
    assert!(e <= 1e-6, "jvp through an equilibrium: error {e:e}");
}

#[test]
fn a_probe_in_an_equilibrium_body_is_the_same_in_the_adjoint() {
    // The implicit adjoint re-runs the body; were the probe drawn again
    // there, the gradient would not match finite differences.
    let src = r#"
model P(x: f64[B, 3]) -> f64[B, 3] {
    param w: f64[3, 3] = zeros;
    equilibrium z: f64[B, 3] = tanh(z @ w * cast(probe([B, 3], "rademacher"), "f64") + x)
        with solver = anderson(tol = 1e-13, max_iter = 300, stop = "abs"),
             backward = implicit(tol = 1e-13, max_iter = 300);
    z
}
"#;
    let g = lower_named(src, "P");
    let params = vec![(randn(&[3, 3], 31) * 0.4).expect("scale")];
    let report = deqc::autodiff::check::check_graph(
        &g,
        &params,
        &[randn(&[2, 3], 32)],
        &exec(),
        1e-6,
        3,
        None,
    )
    .expect("gradcheck runs");
    for r in &report {
        assert!(r.max_rel_error <= 1e-6, "{}: {:e}", r.name, r.max_rel_error);
    }
}
