//! `deqc bench FILE`: times training steps of a model at its declared
//! solver settings (or overridden ones), with a breakdown of where the time
//! goes and the heap traffic of every step.
//!
//! Owns the command's settings (`--set` keys for solvers on top of the
//! train block's), the timed loop and its report. Guarantees:
//! - a step is what `deqc run` does per batch: the training graph (forward,
//!   solves, gradients), the Jacobian regularizer when its coin says so,
//!   gradient clipping and the optimizer update, at the train block's base
//!   learning rate; batches are drawn (full ones only) before timing starts;
//! - the median leaves out the first step when there are two or more (it
//!   pays for first-touch page faults and warm caches), and every step is
//!   listed, so "allocations flat after the first step" can be read off;
//! - allocations and peak heap bytes come from the binary's counting
//!   allocator ([`crate::profile::CountingAlloc`]); without it they read
//!   "n/a", never a made-up number;
//! - usage errors (unknown key, bad value, a key that no equilibrium of the
//!   model takes) exit 2 before anything runs; a program that does not check
//!   exits 1.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use candle_core::{DType as CDType, Device, Tensor};

use crate::deq::{SolveRecord, SolverRunner};
use crate::exec::{ExecOptions, Executor};
use crate::profile::{self, Category};
use crate::sema::hir::{Block, Equilibrium, InstKind, Model};
use crate::sema::options::suggest;
use crate::sema::spec::{Backward, Optimizer, TrainConfig};
use crate::train::commands::{apply_set, checked_program, train_block, SET_KEYS};
use crate::train::evaluate::{feeds, fit_target};
use crate::train::optim::{clip_grad_norm, Optim};
use crate::train::trainer::{self, mix, probe};
use crate::train::{data, TrainError};

/// The settings of one `deqc bench`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub model: Option<String>,
    /// Timed training steps.
    pub steps: usize,
    /// Threads of candle's pool (and gemm's); default: candle's choice.
    pub threads: Option<usize>,
    /// Run the plain op-by-op path instead of fused kernels.
    pub no_fuse: bool,
    /// Evaluate equilibrium bodies on the whole batch at once
    /// ([`crate::exec::BatchSplit::Off`]).
    pub whole_batch: bool,
    /// `KEY=VALUE` overrides: [`BENCH_KEYS`] and the train keys of `deqc run`.
    pub sets: Vec<String>,
    /// List this many ops and kernels, those that took the most time.
    pub ops: Option<usize>,
}

/// The solver keys `--set` takes besides `deqc run`'s train keys. They apply
/// to every equilibrium of the model that has the setting.
pub const BENCH_KEYS: &[&str] = &[
    "solver.max_iter",
    "solver.tol",
    "backward.max_iter",
    "backward.tol",
    "backward.steps",
    "jacobian_reg.freq",
];

/// Every equilibrium of a block, nested ones too, mutably.
fn each_equilibrium(block: &mut Block, f: &mut dyn FnMut(&mut Equilibrium)) {
    for inst in &mut block.insts {
        if let InstKind::Equilibrium(eq) = &mut inst.kind {
            f(eq);
            each_equilibrium(&mut eq.body, f);
        }
    }
}

/// Apply one `--set key=value` to the model's equilibria or the train block.
pub fn apply_bench_set(
    model: &mut Model,
    cfg: &mut TrainConfig,
    assignment: &str,
) -> Result<(), String> {
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| format!("`--set {assignment}`: expected KEY=VALUE"))?;
    let (key, value) = (key.trim(), value.trim());
    if SET_KEYS.contains(&key) {
        return apply_set(cfg, assignment);
    }
    if !BENCH_KEYS.contains(&key) {
        let all: Vec<&str> = SET_KEYS.iter().chain(BENCH_KEYS).copied().collect();
        return Err(format!(
            "`--set {key}`: unknown key; {}",
            suggest(key, &all).unwrap_or_else(|| format!("the keys are {}", all.join(", ")))
        ));
    }
    let count = || match value.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`--set {key}`: expected an integer >= 1, found `{value}`"
        )),
    };
    let tol = || match value.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!(
            "`--set {key}`: expected a number >= 0, found `{value}`"
        )),
    };
    if key == "jacobian_reg.freq" {
        let freq = match value.parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => x,
            _ => {
                return Err(format!(
                    "`--set {key}`: expected a number in 0..1, found `{value}`"
                ))
            }
        };
        return match &mut cfg.jacobian_reg {
            Some(jr) => {
                jr.freq = freq;
                Ok(())
            }
            None => Err(format!(
                "`--set {key}`: the train block of `{}` has no jacobian_reg",
                model.name
            )),
        };
    }
    // Validate once, then apply to every equilibrium that has the setting.
    let (max_iter, tol_value) = match key {
        "solver.max_iter" | "backward.max_iter" | "backward.steps" => (Some(count()?), None),
        _ => (None, Some(tol()?)),
    };
    let mut seen = 0usize;
    let mut applied = 0usize;
    let mut backward_modes = Vec::new();
    each_equilibrium(&mut model.body, &mut |eq| {
        seen += 1;
        backward_modes.push(eq.backward.name());
        let hit = match (key, &mut eq.backward) {
            ("solver.max_iter", _) => {
                eq.solver.max_iter = max_iter.unwrap_or(eq.solver.max_iter);
                true
            }
            ("solver.tol", _) => {
                eq.solver.tol = tol_value.unwrap_or(eq.solver.tol);
                true
            }
            ("backward.max_iter", Backward::Implicit { solver }) => {
                solver.max_iter = max_iter.unwrap_or(solver.max_iter);
                true
            }
            ("backward.tol", Backward::Implicit { solver }) => {
                solver.tol = tol_value.unwrap_or(solver.tol);
                true
            }
            ("backward.steps", Backward::Phantom { steps, .. }) => {
                *steps = max_iter.unwrap_or(*steps);
                true
            }
            _ => false,
        };
        applied += usize::from(hit);
    });
    if seen == 0 {
        return Err(format!(
            "`--set {key}`: model `{}` has no equilibrium",
            model.name
        ));
    }
    if applied == 0 {
        let wants = if key == "backward.steps" {
            "phantom"
        } else {
            "implicit"
        };
        backward_modes.dedup();
        return Err(format!(
            "`--set {key}`: applies to a `{wants}` backward, and `{}` has {}",
            model.name,
            backward_modes.join(", ")
        ));
    }
    Ok(())
}

/// One timed step.
struct StepReport {
    seconds: f64,
    /// Seconds per [`Category`], in [`Category::ALL`] order.
    times: [Duration; 4],
    allocations: Option<u64>,
    peak_heap: Option<isize>,
    /// The executor's peak of live tensor bytes in the training graph.
    peak_tensors: usize,
    records: Vec<SolveRecord>,
    /// Per-op times (description, total, calls) when `--ops` is given.
    ops: Vec<(String, Duration, u64)>,
}

fn load(
    file: &Path,
    name: Option<&str>,
) -> Result<(Model, TrainConfig, crate::source::SourceMap), ExitCode> {
    let (program, sources) = checked_program(file)?;
    let Some(cfg) = train_block(&program, name) else {
        eprintln!(
            "error: {} has no `train` block{}: bench times training steps, so it needs one (LANGUAGE.md section 8)",
            file.display(),
            name.map(|m| format!(" for `{m}`")).unwrap_or_default()
        );
        return Err(ExitCode::from(2));
    };
    let Some(model) = program.model(&cfg.model).cloned() else {
        eprintln!("error: {} has no model `{}`", file.display(), cfg.model);
        return Err(ExitCode::from(2));
    };
    Ok((model, cfg, sources))
}

/// `deqc bench FILE [--steps N] [--threads N] [--no-fuse] [--set KEY=VALUE] [--ops N]`.
pub fn run(file: &Path, opts: &Options) -> ExitCode {
    if let Some(n) = opts.threads {
        // Read by candle (and so by gemm) and by rayon when its pool starts,
        // which has not happened yet in this process.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let (mut model, mut cfg, sources) = match load(file, opts.model.as_deref()) {
        Ok(x) => x,
        Err(code) => return code,
    };
    for s in &opts.sets {
        if let Err(e) = apply_bench_set(&mut model, &mut cfg, s) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let timed = crate::threads::on_pool(|| bench(&model, &cfg, opts));
    match timed {
        Ok(reports) => {
            print!("{}", render(&model, &cfg, opts, &reports));
            if let Some(n) = opts.ops {
                print!("{}", render_ops(&reports, n));
            }
            ExitCode::SUCCESS
        }
        Err(e) => crate::train::commands::report(e, &sources),
    }
}

fn base_lr(o: &Optimizer) -> f64 {
    match o {
        Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } | Optimizer::AdamW { lr, .. } => *lr,
    }
}

/// Full batches of the training split, enough for `steps` steps (epochs
/// repeat when the split is short).
fn draw_batches(
    ds: &data::Dataset,
    cfg: &TrainConfig,
    steps: usize,
    device: &Device,
) -> Result<Vec<Vec<Tensor>>, TrainError> {
    if ds.len() < cfg.batch_size {
        return Err(TrainError::Usage(format!(
            "the training split has {} samples, fewer than one batch of {}",
            ds.len(),
            cfg.batch_size
        )));
    }
    let mut out = Vec::with_capacity(steps);
    let mut epoch = 0u64;
    while out.len() < steps {
        for batch in ds.shuffled_batches(cfg.batch_size, cfg.seed, epoch, device) {
            let inputs = feeds(ds, &batch?)?;
            if inputs[0].dims().first() == Some(&cfg.batch_size) {
                out.push(inputs);
            }
            if out.len() == steps {
                break;
            }
        }
        epoch += 1;
    }
    Ok(out)
}

fn bench(model: &Model, cfg: &TrainConfig, opts: &Options) -> Result<Vec<StepReport>, TrainError> {
    let device = Device::Cpu;
    let compiled = trainer::compile(model, cfg)?;
    let splits = data::load(&cfg.data)?;
    let batches = draw_batches(&splits.train, cfg, opts.steps, &device)?;
    let mut params = trainer::init_params(&compiled.graph, cfg.seed, &device)?;
    let mut optim = Optim::new(&cfg.optimizer);
    let lr = base_lr(&cfg.optimizer);
    let runner = SolverRunner::new().with_lenient_adjoint(true);
    profile::set_timing(true);
    profile::set_op_timing(opts.ops.is_some());
    let mut reports = Vec::with_capacity(opts.steps);
    for (step, raw) in batches.into_iter().enumerate() {
        let step = step as u64;
        let inputs = fit_target(&compiled.step.graph, raw)?;
        profile::take_times();
        profile::take_op_times();
        runner.take_records();
        profile::reset_peak();
        let allocs_before = profile::alloc_snapshot().map(|s| s.allocations);
        let started = Instant::now();
        let exec = Executor::new(device.clone())
            .with_runner(Box::new(runner.clone()))
            .with_options(ExecOptions {
                float: CDType::F32,
                training: true,
                seed: mix(cfg.seed, step),
                fuse: !opts.no_fuse,
                batch_split: if opts.whole_batch {
                    crate::exec::BatchSplit::Off
                } else {
                    crate::exec::BatchSplit::Auto
                },
            });
        let values: Vec<Tensor> = params.iter().map(|p| p.1.clone()).collect();
        let r = exec.run(&compiled.step.graph, &values, &inputs)?;
        let results = compiled.step.layout.read(&r.outputs)?;
        let mut grads: Vec<Tensor> = results.grads().to_vec();
        if let (Some(jr), Some(jac)) = (&cfg.jacobian_reg, &compiled.jacobian) {
            // The same coin and probes as `deqc run` (`Trainer::regularize`).
            let coin = (mix(cfg.seed ^ 0x4A52, step) >> 11) as f64 / (1u64 << 53) as f64;
            if coin < jr.freq {
                let zstars = results.zstars();
                let probes = zstars
                    .iter()
                    .enumerate()
                    .map(|(k, z)| {
                        let seed = mix(cfg.seed ^ 0x5052, step * 64 + k as u64);
                        probe(z.dims(), seed, &device, z.dtype())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let jin = jac
                    .layout
                    .inputs(&inputs[..inputs.len() - 1], zstars, &probes)?;
                let jr_run = exec.run(&jac.graph, &values, &jin)?;
                let term = jac.layout.read(&jr_run.outputs)?;
                for (i, g) in grads.iter_mut().enumerate() {
                    if let Some(dg) = term.grad(i) {
                        *g = (&*g + (dg * jr.weight)?)?;
                    }
                }
            }
        }
        if let Some(c) = cfg.clip_grad {
            clip_grad_norm(&mut grads, c)?;
        }
        optim.step(&mut params, &grads, lr)?;
        let peak_tensors = r.stats.peak_live_bytes;
        drop(r);
        let seconds = started.elapsed().as_secs_f64();
        let after = profile::alloc_snapshot();
        reports.push(StepReport {
            seconds,
            times: profile::take_times(),
            allocations: after.zip(allocs_before).map(|(a, b)| a.allocations - b),
            peak_heap: after.map(|a| a.peak_bytes),
            peak_tensors,
            records: runner.take_records(),
            ops: profile::take_op_times(),
        });
    }
    profile::set_timing(false);
    profile::set_op_timing(false);
    Ok(reports)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => 0.5 * (xs[n / 2 - 1] + xs[n / 2]),
    }
}

fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1e6)
}

/// Mean iterations of the forward and the backward solves of a step.
fn iterations(records: &[SolveRecord], backward: bool) -> Option<f64> {
    let its: Vec<f64> = records
        .iter()
        .filter(|r| r.backward == backward)
        .map(|r| r.stats.iterations as f64)
        .collect();
    (!its.is_empty()).then(|| its.iter().sum::<f64>() / its.len() as f64)
}

/// The report: settings, one line per step, median and breakdown.
fn render(model: &Model, cfg: &TrainConfig, opts: &Options, reports: &[StepReport]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let path = match (opts.no_fuse, opts.whole_batch) {
        (true, _) => "plain op-by-op (--no-fuse)",
        (false, true) => "fused, bodies on the whole batch (--whole-batch)",
        (false, false) => "default",
    };
    let _ = writeln!(
        out,
        "bench {}: batch {}, {} threads, {} steps, execution {path}",
        model.name,
        cfg.batch_size,
        candle_core::utils::get_num_threads(),
        reports.len()
    );
    for (eq, _) in model.equilibria() {
        let backward = match &eq.backward {
            Backward::Implicit { solver } => format!(
                "implicit {}(tol {:e}, max_iter {})",
                solver.kind.name(),
                solver.tol,
                solver.max_iter
            ),
            Backward::Phantom { steps, .. } => format!("phantom {steps} steps"),
            other => other.name().to_string(),
        };
        let _ = writeln!(
            out,
            "equilibrium {}: {}(tol {:e}, max_iter {}), backward {backward}",
            eq.state_names.join(", "),
            eq.solver.kind.name(),
            eq.solver.tol,
            eq.solver.max_iter
        );
    }
    let _ = writeln!(
        out,
        "{:>5} {:>10} {:>8} {:>8} {:>12} {:>13} {:>14}",
        "step", "time ms", "fwd it", "bwd it", "allocations", "peak heap MB", "peak values MB"
    );
    let na = || "n/a".to_string();
    for (i, r) in reports.iter().enumerate() {
        let it = |b| iterations(&r.records, b).map_or("-".into(), |x| format!("{x:.1}"));
        let _ = writeln!(
            out,
            "{:>5} {:>10.2} {:>8} {:>8} {:>12} {:>13} {:>14}",
            i + 1,
            r.seconds * 1e3,
            it(false),
            it(true),
            r.allocations.map_or_else(na, |a| a.to_string()),
            r.peak_heap.map_or_else(na, |b| mb(b as f64)),
            mb(r.peak_tensors as f64),
        );
    }
    // The first step pays for first touches; leave it out when there are more.
    let timed = if reports.len() >= 2 {
        &reports[1..]
    } else {
        reports
    };
    let which = if reports.len() >= 2 {
        format!("steps 2..{}", reports.len())
    } else {
        "step 1".to_string()
    };
    let med = median(timed.iter().map(|r| r.seconds).collect());
    let _ = writeln!(out, "median step: {:.2} ms ({which})", med * 1e3);
    let total: f64 = timed.iter().map(|r| r.seconds).sum();
    let cat = |c: Category| -> f64 {
        let k = Category::ALL.iter().position(|x| *x == c).unwrap_or(0);
        timed.iter().map(|r| r.times[k].as_secs_f64()).sum()
    };
    let (gemm, fused, solver) = (
        cat(Category::Gemm),
        cat(Category::Fused),
        cat(Category::Solver),
    );
    let rest = (total - gemm - fused - solver).max(0.0);
    let pct = |x: f64| 100.0 * x / total.max(1e-12);
    let _ = writeln!(
        out,
        "breakdown: gemm/conv {:.1}%, fused kernels {:.1}%, solver bookkeeping {:.1}%, everything else {:.1}%",
        pct(gemm),
        pct(fused),
        pct(solver),
        pct(rest)
    );
    let allocs: Vec<u64> = timed.iter().filter_map(|r| r.allocations).collect();
    match (allocs.iter().min(), allocs.iter().max()) {
        (Some(lo), Some(hi)) => {
            let _ = writeln!(out, "allocations per step: {lo} .. {hi} ({which})");
        }
        _ => {
            let _ = writeln!(
                out,
                "allocations per step: n/a (the counting allocator is not installed)"
            );
        }
    }
    out
}

/// The `n` ops and kernels that took the most time per step (over the
/// steps the median counts), from `--ops`.
fn render_ops(reports: &[StepReport], n: usize) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let timed = if reports.len() >= 2 {
        &reports[1..]
    } else {
        reports
    };
    let mut totals: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
    for r in timed {
        for (what, took, calls) in &r.ops {
            let e = totals.entry(what.as_str()).or_insert((0.0, 0));
            e.0 += took.as_secs_f64();
            e.1 += calls;
        }
    }
    let mut rows: Vec<_> = totals.into_iter().collect();
    rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0).then_with(|| a.0.cmp(b.0)));
    let steps = timed.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ops and kernels by time per step (wall time of each call, its parallel work included):"
    );
    let _ = writeln!(
        out,
        "{:>9} {:>10} {:>9}  op and operand shapes",
        "ms/step", "calls/step", "ms/call"
    );
    for (what, (seconds, calls)) in rows.into_iter().take(n) {
        let _ = writeln!(
            out,
            "{:>9.2} {:>10.1} {:>9.3}  {what}",
            seconds * 1e3 / steps,
            calls as f64 / steps,
            seconds * 1e3 / (calls.max(1) as f64),
        );
    }
    out
}
