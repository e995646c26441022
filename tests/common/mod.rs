//! Shared helpers of the IR, executor and gradient tests.
#![allow(dead_code)]

pub mod cli;
pub mod mnist;
pub mod steps;

use candle_core::{Device, Tensor};
use deqc::autodiff::check::{check_graph, id_bounds, random_tensor, GradCheck};
use deqc::exec::{DimEnv, Executor};
use deqc::ir::{lower::lower_model, Graph};
use rand::SeedableRng;

/// An empty folder `deqc-<label>-<process id>` in the system's temporary
/// folder (emptied first if an earlier run left it).
pub fn fresh_dir(label: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("deqc-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run options that write to `out` and print nothing.
pub fn quiet_run(out: &std::path::Path) -> deqc::train::trainer::RunOptions {
    deqc::train::trainer::RunOptions {
        out: Some(out.to_path_buf()),
        quiet: true,
        ..Default::default()
    }
}

/// Every record of a run's `metrics.jsonl`, in order (none when the run
/// wrote no file).
pub fn records(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The loss of every train record of a run, in order.
pub fn train_losses(out: &std::path::Path) -> Vec<f64> {
    records(out)
        .iter()
        .filter(|v| v["split"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

/// Check a source text (named `name` in diagnostics): its program and
/// sources, or a panic showing the diagnostics.
pub fn checked(name: &str, src: &str) -> (deqc::sema::hir::Program, deqc::source::SourceMap) {
    let c = deqc::compile_source(name, src);
    let sources = c.sources.clone();
    match c.program {
        Some(p) => (p, sources),
        None => panic!("does not check:\n{}", c.render_plain(100)),
    }
}

/// Compile a source text and lower its first model.
pub fn lower(src: &str) -> Graph {
    let compiled = deqc::compile_source("test.deq", src);
    let program = match compiled.program {
        Some(p) => p,
        None => panic!(
            "does not check:\n{src}\n{}",
            deqc::compile_source("test.deq", src).render_plain(100)
        ),
    };
    lower_model(&program.models[0]).expect("lowering succeeds")
}

/// Random f64 parameters and inputs for a graph (normal values; i64 inputs
/// used as embedding ids stay in range), with the given symbolic dims.
pub fn random_feeds(g: &Graph, dims: &[(&str, i64)], seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut env = DimEnv::new();
    for (n, v) in dims {
        env.bind(n, *v).expect("dims");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let bounds = id_bounds(g);
    let params = g
        .params
        .iter()
        .map(|p| random_tensor(&p.ty, &env, &mut rng, 1.0, 1).expect("param"))
        .collect();
    let inputs = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let bound = bounds.get(&i).copied().unwrap_or(3);
            random_tensor(&inp.ty, &env, &mut rng, 1.0, bound).expect("input")
        })
        .collect();
    (params, inputs)
}

/// Gradient-check a model in f64; panics with the report when any tensor's
/// error is above `tol`.
pub fn gradcheck_with(
    src: &str,
    params: &[Tensor],
    inputs: &[Tensor],
    exec: &Executor,
    tol: f64,
) -> Vec<GradCheck> {
    let g = lower(src);
    let report = check_graph(&g, params, inputs, exec, 1e-5, 7, None).expect("gradcheck runs");
    for r in &report {
        assert!(
            r.max_rel_error <= tol,
            "{src}\n{}: error {:e}\n derived {:?}\n numeric {:?}",
            r.name,
            r.max_rel_error,
            r.derived,
            r.numeric
        );
    }
    report
}

pub fn gradcheck(src: &str) -> Vec<GradCheck> {
    gradcheck_dims(src, &[])
}

pub fn gradcheck_dims(src: &str, dims: &[(&str, i64)]) -> Vec<GradCheck> {
    let g = lower(src);
    let (params, inputs) = random_feeds(&g, dims, 11);
    gradcheck_with(src, &params, &inputs, &Executor::cpu_f64(), 1e-6)
}

/// Normal f64 values of the given std, drawn from `seed`: tests draw
/// from seeded generators so that a failure replays (candle's own `randn`
/// on the CPU cannot be seeded).
pub fn seeded_normal(shape: &[usize], std: f64, seed: u64) -> Tensor {
    use rand::Rng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| std * rng.sample::<f64, _>(rand_distr::StandardNormal))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// Uniform f64 values in `0..1`, drawn from `seed`.
pub fn seeded_uniform(shape: &[usize], seed: u64) -> Tensor {
    use rand::Rng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

pub fn t(values: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).expect("tensor")
}

pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

/// Largest |a - b| relative to the tensors' largest finite magnitude, or to
/// `floor` when that is smaller: an output that is zero analytically (the
/// key bias's gradient under softmax) holds only rounding noise, which
/// differs between summation orders. NaNs must sit in the same places.
pub fn rel_error(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    let (a, b) = (values(a), values(b));
    assert_eq!(a.len(), b.len());
    let scale = a
        .iter()
        .chain(&b)
        .filter(|v| v.is_finite())
        .fold(floor.max(1e-300), |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| {
            assert_eq!(x.is_nan(), y.is_nan(), "NaN in one run only");
            if x == y || x.is_nan() {
                0.0
            } else {
                (x - y).abs() / scale
            }
        })
        .fold(0.0, f64::max)
}

pub fn assert_close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
    }
}
