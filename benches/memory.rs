//! Training-step memory and time of a DEQ: the implicit backward pass
//! against backpropagation through the unrolled solver, at several depths.
//! Run with `cargo bench --bench memory` (release). Prints ratios measured
//! in one run, since absolute times on a shared machine are noisy.

use std::time::Instant;

use candle_core::{Device, Tensor};
use deqc::train::program::step_graph;

fn model(solver: &str, backward: &str) -> deqc::ir::Graph {
    let src = format!(
        "use nn;\nmodel M(x: [B, 784]) -> [B, 10] {{\n    let inject = nn::Linear[784, 256];\n    let cell = nn::Linear[256, 256];\n    let head = nn::Linear[256, 10];\n    let u = inject(x);\n    equilibrium z: [B, 256] = tanh(cell(z) + u) with solver = {solver}, backward = {backward};\n    head(z)\n}}\n"
    );
    let c = deqc::compile_source("bench.deq", &src);
    let p = c.program.expect("the benchmark model checks");
    deqc::ir::lower::lower_model(&p.models[0]).expect("lowers")
}

/// Peak live bytes and seconds of one forward + backward step.
fn step(solver: &str, backward: &str) -> (usize, f64) {
    let g = model(solver, backward);
    let mut step = step_graph(&g, &deqc::sema::spec::Loss::CROSS_ENTROPY).expect("step graph");
    deqc::passes::Pipeline::default()
        .run(&mut step.graph)
        .expect("passes");
    let params = deqc::train::trainer::init_params(&g, 0, &Device::Cpu).expect("init");
    let values: Vec<Tensor> = params.into_iter().map(|p| p.1).collect();
    let x = Tensor::rand(0f32, 1.0, (128, 784), &Device::Cpu).expect("x");
    let y = Tensor::zeros(128, candle_core::DType::I64, &Device::Cpu).expect("y");
    let exec = deqc::exec::Executor::new(Device::Cpu);
    let t = Instant::now();
    let r = exec.run(&step.graph, &values, &[x, y]).expect("runs");
    (r.stats.peak_live_bytes, t.elapsed().as_secs_f64())
}

fn main() {
    println!(
        "{:>6}  {:>14}  {:>14}  {:>7}  {:>10}  {:>10}",
        "iters", "implicit MB", "unrolled MB", "ratio", "impl s", "unroll s"
    );
    for n in [10, 20, 40, 80] {
        // tol 0 forces exactly n iterations in both, for a fair comparison.
        let (mi, ti) = step(
            &format!("fixed_point(tol = 1e-30, max_iter = {n})"),
            &format!("implicit(tol = 1e-30, max_iter = {n})"),
        );
        let (mu, tu) = step(&format!("unroll(steps = {n})"), "unrolled");
        let mb = |b: usize| b as f64 / 1e6;
        println!(
            "{n:>6}  {:>14.2}  {:>14.2}  {:>7.1}  {ti:>10.3}  {tu:>10.3}",
            mb(mi),
            mb(mu),
            mu as f64 / mi as f64
        );
    }
}
