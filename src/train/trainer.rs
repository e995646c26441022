//! The training loop of `deqc run`, and evaluation.
//!
//! Owns one run: data, parameters, optimizer, schedule, the compiled step
//! ([`super::program`]), solver statistics, metrics, progress and
//! checkpoints. Guarantees: a run is a pure function of the program, the
//! data and the seed (shuffles depend on `(seed, epoch)`, initial values on
//! `(seed, parameter path)`, probes and dropout on `(seed, step)`), so
//! `--resume` from any checkpoint continues exactly (the failed-solve
//! guard's history travels in the state); checkpoints are written
//! atomically after every epoch and, with `checkpoint_every`, within one,
//! both files stamped with the step; every step is appended to
//! `metrics.jsonl`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType as CDType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};

use super::checkpoint::{self, TrainState};
use super::data::{self, Dataset};
use super::guard::{SolveGuard, FAILED_SOLVE_FACTOR};
use super::metrics::{self, Mean, MetricsWriter, Record};
use super::optim::{clip_grad_norm, Optim};
use super::program::{eval_graph, jacobian_step, step_graph, JacobianStep, StepGraph};
use super::schedule::LrSchedule;
use super::TrainError;
use crate::deq::{SolveRecord, SolverRunner};
use crate::exec::{ExecOptions, Executor};
use crate::ir::{lower::lower_model, Graph};
use crate::sema::hir::Model;
use crate::sema::spec::{DataSpec, Loss, Optimizer, TrainConfig};
use crate::source::SourceMap;

/// Command-line choices that override or complement the `train` block.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub max_steps: Option<usize>,
    pub device: Option<Device>,
    pub out: Option<PathBuf>,
    pub resume: bool,
    /// Hide progress bars and per-epoch lines (tests).
    pub quiet: bool,
    /// Evaluate on at most this many test batches (quick checks).
    pub max_eval_batches: Option<usize>,
    /// Skip updates whose solves failed (see [`super::guard`]).
    pub skip_failed_solves: bool,
    /// Also checkpoint mid-epoch once this much time has passed since the
    /// last checkpoint, so a crash in a long epoch loses at most this much.
    pub checkpoint_every: Option<std::time::Duration>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub out: PathBuf,
    pub epochs: usize,
    pub steps: u64,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// `exp(test_loss)`, for text data.
    pub test_perplexity: Option<f64>,
    pub seconds: f64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
}

/// Write `model.safetensors`, then `train_state.safetensors`, each
/// atomically; both carry the step, so a resume can tell a torn pair.
fn save_checkpoint(
    out: &Path,
    model: &str,
    params: &[(String, Tensor)],
    state: &TrainState,
) -> Result<(), TrainError> {
    let meta = BTreeMap::from([
        ("model".to_string(), model.to_string()),
        ("epoch".to_string(), state.epoch.to_string()),
        ("step".to_string(), state.step.to_string()),
    ]);
    checkpoint::save_model(out, params, &meta)?;
    checkpoint::save_train_state(out, state)?;
    Ok(())
}

/// The training-state entry holding the failed-solve guard's history.
const GUARD_KEY: &str = "solve_guard_history";

/// The state after `step` steps, resuming at `(epoch, batches done in it)`.
fn train_state(
    step: u64,
    (epoch, batch): (usize, usize),
    seed: u64,
    optim: &Optim,
    guard: &SolveGuard,
) -> TrainState {
    TrainState {
        step,
        epoch: epoch as u64,
        batch: batch as u64,
        seed,
        optimizer: optim.state(),
        extra: BTreeMap::from([(GUARD_KEY.to_string(), guard.encode())]),
    }
}

/// Per-batch solver statistics, averaged.
#[derive(Default)]
struct SolveSummary {
    fwd_iters: Mean,
    fwd_residual: Mean,
    bwd_iters: Mean,
    bwd_residual: Mean,
    unconverged: Vec<(Option<crate::source::Span>, f64, f64)>,
    /// Solves that blow-up protection stopped (forward, backward).
    protected: (usize, usize),
}

impl SolveSummary {
    fn add(&mut self, records: &[SolveRecord]) {
        let (fwd, bwd): (Vec<&SolveRecord>, Vec<&SolveRecord>) =
            records.iter().partition(|r| !r.backward);
        if !fwd.is_empty() {
            let n = fwd.len() as f64;
            self.fwd_iters.add(
                fwd.iter().map(|r| r.stats.iterations as f64).sum::<f64>() / n,
                1.0,
            );
            self.fwd_residual.add(worst_residual_mean(&fwd), 1.0);
        }
        if !bwd.is_empty() {
            let n = bwd.len() as f64;
            self.bwd_iters.add(
                bwd.iter().map(|r| r.stats.iterations as f64).sum::<f64>() / n,
                1.0,
            );
            self.bwd_residual.add(worst_residual_mean(&bwd), 1.0);
        }
        for r in records
            .iter()
            .filter(|r| r.stats.stopped_by_protection.is_some())
        {
            if r.backward {
                self.protected.1 += 1;
            } else {
                self.protected.0 += 1;
            }
        }
        // `unroll` is an explicit network of fixed depth: its residual is
        // not a failure.
        let unconverged =
            |r: &&SolveRecord| !r.stats.converged && !r.backward && r.stats.solver != "unroll";
        for r in records.iter().filter(unconverged) {
            let worst = r.stats.residual.iter().cloned().fold(0.0, f64::max);
            self.unconverged.push((r.span, worst, r.stats.tol));
        }
    }
}

/// The mean over solves of each solve's worst per-sample residual.
fn worst_residual_mean(records: &[&SolveRecord]) -> f64 {
    let worst = |r: &&SolveRecord| r.stats.residual.iter().cloned().fold(0.0, f64::max);
    records.iter().map(worst).sum::<f64>() / records.len().max(1) as f64
}

fn mean_or_zero(m: &Mean) -> f64 {
    if m.weight() > 0.0 {
        m.mean()
    } else {
        0.0
    }
}

/// Everything compiled for one model.
pub struct Compiled {
    pub graph: Graph,
    pub step: StepGraph,
    pub eval: StepGraph,
    pub jacobian: Option<JacobianStep>,
    /// The model with each top-level equilibrium's fixed points and
    /// captures as outputs, for spectral-radius estimates in the logs.
    pub stability: Graph,
}

/// Spectral radius estimates (max over samples) of each top-level
/// equilibrium of `compiled` on one batch of inputs.
pub fn spectral_radii(
    exec: &Executor,
    compiled: &Compiled,
    params: &[Tensor],
    inputs: &[Tensor],
) -> Result<Vec<f64>, TrainError> {
    let values = exec.run(&compiled.stability, params, inputs)?.outputs;
    let mut out = Vec::new();
    let mut at = 0;
    for eq in crate::deq::jacobian::top_level_equilibria(&compiled.graph) {
        let crate::ir::Op::Equilibrium(node) = compiled.graph.op(eq) else {
            continue;
        };
        let (k, n) = (node.num_states(), node.num_captures());
        let zstar = &values[at..at + k];
        let caps = &values[at + k..at + k + n];
        at += k + n;
        let r = crate::deq::jacobian::spectral_radius(exec, node, zstar, caps, 20, 0)?;
        out.push(r.into_iter().fold(0.0, f64::max));
    }
    Ok(out)
}

fn stability_graph(graph: &Graph) -> Graph {
    let mut g = graph.clone();
    let mut outs = Vec::new();
    for eq in crate::deq::jacobian::top_level_equilibria(&g) {
        let crate::ir::Op::Equilibrium(node) = g.op(eq).clone() else {
            continue;
        };
        let span = g.span(eq);
        for (i, ty) in node.state_types.iter().enumerate() {
            outs.push(g.add(crate::ir::Op::Project(i), ty.clone(), &[eq], span));
        }
        outs.extend(g.operands(eq)[..node.num_captures()].iter().copied());
    }
    g.set_outputs(outs);
    g
}

pub fn compile(model: &Model, cfg: &TrainConfig) -> Result<Compiled, TrainError> {
    let graph = lower_model(model)?;
    let mut step = step_graph(&graph, cfg.loss)?;
    let mut eval = eval_graph(&graph, cfg.loss)?;
    let mut jacobian = match cfg.jacobian_reg {
        Some(_) => jacobian_step(&graph)?,
        None => None,
    };
    // Optimize what runs: folding, CSE, hoisting out of solver loops, DCE.
    let pipeline = crate::passes::Pipeline::default();
    pipeline.run(&mut step.graph)?;
    pipeline.run(&mut eval.graph)?;
    if let Some(j) = &mut jacobian {
        pipeline.run(&mut j.graph)?;
    }
    let stability = stability_graph(&graph);
    Ok(Compiled {
        graph,
        step,
        eval,
        jacobian,
        stability,
    })
}

fn base_lr(o: &Optimizer) -> f64 {
    match o {
        Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } | Optimizer::AdamW { lr, .. } => *lr,
    }
}

/// Initial parameters from the program's initializers, seeded.
pub fn init_params(
    graph: &Graph,
    seed: u64,
    device: &Device,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    graph
        .params
        .iter()
        .map(|p| {
            let shape: Vec<usize> =
                p.ty.shape
                    .iter()
                    .map(|d| d.as_const().unwrap_or(0).max(0) as usize)
                    .collect();
            let t = super::init::init_tensor(&p.init, &shape, seed, &p.path, device)?;
            let t = t.to_dtype(match p.ty.dtype {
                crate::sema::hir::DType::F64 => CDType::F64,
                _ => CDType::F32,
            })?;
            Ok((p.path.clone(), t))
        })
        .collect()
}

/// `(path, shape)` of every parameter.
pub fn param_shapes(graph: &Graph) -> Vec<(String, Vec<usize>)> {
    graph
        .params
        .iter()
        .map(|p| {
            (
                p.path.clone(),
                p.ty.shape
                    .iter()
                    .map(|d| d.as_const().unwrap_or(0).max(0) as usize)
                    .collect(),
            )
        })
        .collect()
}

/// A deterministic 64-bit mix of a seed and a counter.
pub(crate) fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn probe(
    ty_shape: &[usize],
    seed: u64,
    device: &Device,
    dtype: CDType,
) -> Result<Tensor, TrainError> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    let n: usize = ty_shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| Distribution::<f32>::sample(&normal, &mut rng))
        .collect();
    Ok(Tensor::from_vec(v, ty_shape, device)?.to_dtype(dtype)?)
}

/// Split a batch into the model's inputs and the target (the last field).
pub(crate) fn feeds(ds: &Dataset, batch: &data::Batch) -> Result<Vec<Tensor>, TrainError> {
    ds.fields()
        .iter()
        .map(|(name, _)| {
            batch
                .get(name)
                .cloned()
                .ok_or_else(|| TrainError::Usage(format!("the batch has no field `{name}`")))
        })
        .collect()
}

/// A regression target `[B]` for scores `[B, 1]` gets its trailing 1, so
/// a CSV column trains a single-output model.
pub(crate) fn fit_target(
    graph: &Graph,
    mut inputs: Vec<Tensor>,
) -> Result<Vec<Tensor>, TrainError> {
    if let (Some(want), Some(t)) = (graph.inputs.last(), inputs.last_mut()) {
        let last_is_one = want.ty.shape.last().and_then(|d| d.as_const()) == Some(1);
        if t.rank() + 1 == want.ty.rank() && last_is_one {
            *t = t.unsqueeze(t.rank())?;
        }
    }
    Ok(inputs)
}

fn is_classification(cfg: &TrainConfig) -> bool {
    cfg.loss == Loss::CrossEntropy
}

/// Evaluate on a split: mean loss and accuracy.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    exec: &Executor,
    eval: &StepGraph,
    params: &[Tensor],
    ds: &Dataset,
    batch_size: usize,
    device: &Device,
    classification: bool,
    max_batches: Option<usize>,
) -> Result<(f64, Option<f64>), TrainError> {
    let mut loss = Mean::new();
    let (mut correct, mut total) = (0usize, 0usize);
    let limit = max_batches.unwrap_or(usize::MAX);
    for batch in ds.batches(batch_size, device).take(limit) {
        let batch = batch?;
        let inputs = fit_target(&eval.graph, feeds(ds, &batch)?)?;
        let r = exec.run(&eval.graph, params, &inputs)?;
        let n = inputs[0].dims().first().copied().unwrap_or(1) as f64;
        loss.add(
            r.outputs[eval.loss]
                .to_dtype(CDType::F64)?
                .to_scalar::<f64>()?,
            n,
        );
        if classification {
            if let Some(target) = inputs.last() {
                let (c, t) = metrics::count_correct(&r.outputs[eval.scores], target)?;
                correct += c;
                total += t;
            }
        }
    }
    let acc = (classification && total > 0).then(|| correct as f64 / total as f64);
    Ok((loss.mean(), acc))
}

fn default_out(model: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{model}-{secs}"))
}

fn warn_unconverged(
    sources: &SourceMap,
    unconverged: &[(Option<crate::source::Span>, f64, f64)],
    solves: usize,
    quiet: bool,
) {
    if unconverged.is_empty() || quiet {
        return;
    }
    let (span, worst, tol) = unconverged
        .iter()
        .cloned()
        .fold((None, 0.0, 0.0), |acc, x| if x.1 > acc.1 { x } else { acc });
    let place = span
        .map(|s| {
            let (l, c) = sources.line_col(s);
            format!("{}:{l}:{c}", sources.file(s.file).name)
        })
        .unwrap_or_else(|| "an equilibrium".into());
    eprintln!(
        "warning: the equilibrium at {place} did not reach tol {tol:e} in {} of {solves} forward solves (worst residual {worst:.3e}); consider a larger max_iter or Jacobian regularization",
        unconverged.len()
    );
}

/// Train `model` as its `train` block says.
pub fn train(
    model: &Model,
    cfg: &TrainConfig,
    sources: &SourceMap,
    opts: &RunOptions,
) -> Result<Summary, TrainError> {
    let started = Instant::now();
    let device = opts.device.clone().unwrap_or(Device::Cpu);
    let compiled = compile(model, cfg)?;
    let splits = data::load(&cfg.data)?;
    let train_set = &splits.train;
    let test_set = splits.test.as_ref().or(splits.valid.as_ref());
    let out = opts.out.clone().unwrap_or_else(|| default_out(&model.name));
    std::fs::create_dir_all(&out)
        .map_err(|e| TrainError::Usage(format!("cannot create {}: {e}", out.display())))?;
    // An adjoint solve that diverges skips its update (see `guard`) rather
    // than ending the run.
    let runner = SolverRunner::new().with_lenient_adjoint(true);
    let exec = Executor::new(device.clone())
        .with_runner(Box::new(runner.clone()))
        .with_options(ExecOptions {
            float: CDType::F32,
            training: true,
            seed: cfg.seed,
        });
    let mut eval_exec = Executor::new(device.clone()).with_runner(Box::new(runner.clone()));
    eval_exec.options.seed = cfg.seed;

    let shapes = param_shapes(&compiled.graph);
    let mut optim = Optim::new(&cfg.optimizer);
    let mut guard = SolveGuard::new();
    let (mut params, start_epoch, mut skip_batches, mut step) = if opts.resume {
        let (p, meta) = checkpoint::load_tensors(&out.join("model.safetensors"), &shapes, &device)?;
        let state =
            checkpoint::load_train_state(&out, Some(&optim.state_shapes(&shapes)), &device)?;
        // The two files are written one after the other: a crash between
        // the writes leaves them from different steps.
        if let Some(model_step) = meta.get("step") {
            if *model_step != state.step.to_string() {
                return Err(TrainError::Usage(format!(
                    "{}: model.safetensors is from step {model_step} but train_state.safetensors from step {} (interrupted while checkpointing?); delete one run's files or start afresh",
                    out.display(),
                    state.step
                )));
            }
        }
        optim.load_state(state.optimizer.clone())?;
        if let Some(text) = state.extra.get(GUARD_KEY) {
            guard = SolveGuard::decode(text).map_err(|e| {
                TrainError::Usage(format!(
                    "{}: {e}",
                    out.join("train_state.safetensors").display()
                ))
            })?;
        }
        (p, state.epoch as usize, state.batch as usize, state.step)
    } else {
        (init_params(&compiled.graph, cfg.seed, &device)?, 0, 0, 0)
    };
    if let Some(v) = &splits.vocab {
        checkpoint::save_vocab(&out, v)?;
    }
    let mut writer = MetricsWriter::open(out.join("metrics.jsonl")).map_err(|e| {
        TrainError::Usage(format!("cannot write metrics in {}: {e}", out.display()))
    })?;
    let schedule = LrSchedule::new(base_lr(&cfg.optimizer), cfg.schedule.clone());
    let batches_per_epoch = train_set.num_batches(cfg.batch_size);
    let total_steps = batches_per_epoch * cfg.epochs;
    let classification = is_classification(cfg);
    let text = matches!(cfg.data, DataSpec::Text { .. });
    let mut summary = Summary {
        out: out.clone(),
        epochs: cfg.epochs,
        steps: step,
        test_loss: None,
        test_accuracy: None,
        test_perplexity: None,
        seconds: 0.0,
        first_loss: None,
        last_loss: None,
    };

    let mut stopped = false;
    let mut last_checkpoint = Instant::now();
    for epoch in start_epoch..cfg.epochs {
        let epoch_start = Instant::now();
        let bar = if opts.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(batches_per_epoch as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        let mut solves = SolveSummary::default();
        let mut skipped = 0usize;
        let mut loss_mean = Mean::new();
        let (mut correct, mut seen) = (0usize, 0usize);
        let mut samples = 0usize;
        let mut solve_count = 0usize;
        let done_before = std::mem::take(&mut skip_batches);
        bar.set_position(done_before as u64);
        let mut done = done_before;
        for batch in train_set
            .shuffled_batches(cfg.batch_size, cfg.seed, epoch as u64, &device)
            .skip(done_before)
        {
            if opts.max_steps.is_some_and(|m| step as usize >= m) {
                stopped = true;
                break;
            }
            let step_start = Instant::now();
            let batch = batch?;
            let inputs = fit_target(&compiled.step.graph, feeds(train_set, &batch)?)?;
            let mut exec_step = exec.options.clone();
            exec_step.seed = mix(cfg.seed, step);
            let step_exec = Executor::new(device.clone())
                .with_runner(Box::new(runner.clone()))
                .with_options(exec_step);
            let values: Vec<Tensor> = params.iter().map(|p| p.1.clone()).collect();
            let r = step_exec.run(&compiled.step.graph, &values, &inputs)?;
            let loss = r.outputs[compiled.step.loss]
                .to_dtype(CDType::F64)?
                .to_scalar::<f64>()?;
            let g0 = compiled.step.grads.unwrap_or(2);
            let mut grads: Vec<Tensor> = r.outputs[g0..g0 + params.len()].to_vec();
            let mut reg = None;
            if let (Some(jr), Some(jac)) = (&cfg.jacobian_reg, &compiled.jacobian) {
                let coin = (mix(cfg.seed ^ 0x4A52, step) >> 11) as f64 / (1u64 << 53) as f64;
                if coin < jr.freq {
                    let mut jin = inputs[..inputs.len() - 1].to_vec();
                    for z in &compiled.step.zstars {
                        jin.push(r.outputs[*z].clone());
                    }
                    for (k, z) in compiled.step.zstars.iter().enumerate() {
                        let zt = &r.outputs[*z];
                        jin.push(probe(
                            zt.dims(),
                            mix(cfg.seed ^ 0x5052, step * 64 + k as u64),
                            &device,
                            zt.dtype(),
                        )?);
                    }
                    let jr_run = step_exec.run(&jac.graph, &values, &jin)?;
                    let term = jr_run.outputs[0]
                        .to_dtype(CDType::F64)?
                        .to_scalar::<f64>()?;
                    for (i, pos) in jac.grads.iter().enumerate() {
                        if let Some(pos) = pos {
                            grads[i] = (&grads[i] + (&jr_run.outputs[*pos] * jr.weight)?)?;
                        }
                    }
                    reg = Some(term * jr.weight);
                }
            }
            let records = runner.take_records();
            solve_count += records.iter().filter(|r| !r.backward).count();
            solves.add(&records);
            // This step's own solver statistics, for its metrics record.
            let mut this_step = SolveSummary::default();
            this_step.add(&records);
            if let Some(c) = cfg.clip_grad {
                clip_grad_norm(&mut grads, c)?;
            }
            let lr = schedule.lr_at(step as usize, epoch, total_steps);
            // An implicit gradient taken where the forward solve failed (the
            // point is not a fixed point) is not the gradient of anything:
            // such an update is skipped, and counted.
            let verdict = guard.judge(&records);
            let failed_solve = opts.skip_failed_solves && verdict.failed;
            if failed_solve {
                skipped += 1;
            } else {
                optim.step(&mut params, &grads, lr)?;
            }
            let n = inputs[0].dims().first().copied().unwrap_or(1);
            samples += n;
            loss_mean.add(loss, n as f64);
            summary.first_loss.get_or_insert(loss);
            summary.last_loss = Some(loss);
            let mut rec = Record::new(epoch as u64, step, "train");
            rec.loss = loss;
            if classification {
                if let Some(target) = inputs.last() {
                    let (c, t) = metrics::count_correct(&r.outputs[compiled.step.scores], target)?;
                    correct += c;
                    seen += t;
                    rec.accuracy = Some(c as f64 / t.max(1) as f64);
                }
            }
            if text {
                rec.perplexity = Some(metrics::perplexity(loss));
            }
            rec.fwd_iters = mean_or_zero(&this_step.fwd_iters);
            rec.fwd_residual = mean_or_zero(&this_step.fwd_residual);
            rec.bwd_iters = mean_or_zero(&this_step.bwd_iters);
            rec.bwd_residual = mean_or_zero(&this_step.bwd_residual);
            rec.seconds = step_start.elapsed().as_secs_f64();
            rec.lr = Some(lr);
            if let Some(r) = reg {
                rec.extra.push(("jacobian_reg".into(), r));
            }
            if failed_solve {
                rec.extra.push(("skipped_update".into(), 1.0));
            }
            writer
                .write(&rec)
                .map_err(|e| TrainError::Usage(format!("cannot write metrics: {e}")))?;
            step += 1;
            done += 1;
            let due = opts
                .checkpoint_every
                .is_some_and(|every| last_checkpoint.elapsed() >= every);
            if due && done < batches_per_epoch {
                let state = train_state(step, (epoch, done), cfg.seed, &optim, &guard);
                save_checkpoint(&out, &model.name, &params, &state)?;
                last_checkpoint = Instant::now();
            }
            let rate = samples as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
            let acc = if seen > 0 {
                format!(" acc {:.1}%", 100.0 * correct as f64 / seen as f64)
            } else {
                String::new()
            };
            bar.set_message(format!(
                "loss {:.4}{acc} fwd {:.1} it ({:.1e}) bwd {:.1} it ({:.1e}) {:.0} samples/s",
                loss_mean.mean(),
                mean_or_zero(&solves.fwd_iters),
                mean_or_zero(&solves.fwd_residual),
                mean_or_zero(&solves.bwd_iters),
                mean_or_zero(&solves.bwd_residual),
                rate
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        warn_unconverged(sources, &solves.unconverged, solve_count, opts.quiet);
        if !opts.quiet && skipped > 0 {
            eprintln!(
                "warning: skipped {skipped} updates from failed solves (blow-up, a forward residual over {FAILED_SOLVE_FACTOR} x tol and the usual, or a diverged adjoint); --keep-failed-steps applies them"
            );
        }
        if !opts.quiet && solves.protected != (0, 0) {
            eprintln!(
                "warning: blow-up protection stopped {} forward and {} adjoint solves this epoch; their samples kept their best iterates",
                solves.protected.0, solves.protected.1
            );
        }
        let train_secs = epoch_start.elapsed().as_secs_f64();
        // Evaluate on the test split.
        let values: Vec<Tensor> = params.iter().map(|p| p.1.clone()).collect();
        let mut test_line = String::new();
        if let Some(test) = test_set {
            let t0 = Instant::now();
            let (tl, ta) = evaluate(
                &eval_exec,
                &compiled.eval,
                &values,
                test,
                cfg.batch_size,
                &device,
                classification,
                opts.max_eval_batches,
            )?;
            let records = runner.take_records();
            let mut ts = SolveSummary::default();
            ts.add(&records);
            let mut rec = Record::new(epoch as u64, step, "test");
            rec.loss = tl;
            rec.accuracy = ta;
            if text {
                rec.perplexity = Some(metrics::perplexity(tl));
            }
            rec.fwd_iters = mean_or_zero(&ts.fwd_iters);
            rec.fwd_residual = mean_or_zero(&ts.fwd_residual);
            rec.seconds = t0.elapsed().as_secs_f64();
            // Stability of the equilibria on the first test batch.
            let mut radius_note = String::new();
            if let Some(batch) = test.batches(cfg.batch_size, &device).next() {
                let inputs = feeds(test, &batch?)?;
                let model_inputs = &inputs[..inputs.len().saturating_sub(1)];
                let radii = spectral_radii(&eval_exec, &compiled, &values, model_inputs)?;
                runner.take_records();
                if let Some(r) = radii.iter().cloned().reduce(f64::max) {
                    rec.extra.push(("spectral_radius".into(), r));
                    radius_note = format!(", spectral radius {r:.3}");
                }
            }
            writer
                .write(&rec)
                .map_err(|e| TrainError::Usage(format!("cannot write metrics: {e}")))?;
            summary.test_loss = Some(tl);
            summary.test_accuracy = ta;
            summary.test_perplexity = text.then(|| metrics::perplexity(tl));
            test_line = format!(", test loss {tl:.4}");
            if let Some(p) = summary.test_perplexity {
                test_line.push_str(&format!(" perplexity {p:.2}"));
            }
            if let Some(a) = ta {
                test_line.push_str(&format!(" accuracy {:.2}%", 100.0 * a));
            }
            test_line.push_str(&radius_note);
        }
        // Checkpoint: model then state, each atomically. A run stopped by
        // --max-steps records where it stopped.
        let at = if stopped {
            (epoch, done)
        } else {
            (epoch + 1, 0)
        };
        let state = train_state(step, at, cfg.seed, &optim, &guard);
        save_checkpoint(&out, &model.name, &params, &state)?;
        last_checkpoint = Instant::now();
        if !opts.quiet {
            let mut acc = if text {
                format!(" perplexity {:.2}", metrics::perplexity(loss_mean.mean()))
            } else {
                String::new()
            };
            if seen > 0 {
                acc.push_str(&format!(
                    " accuracy {:.2}%",
                    100.0 * correct as f64 / seen as f64
                ));
            }
            eprintln!(
                "epoch {}/{}: train loss {:.4}{acc}{test_line}; fwd {:.1} it, bwd {:.1} it; {:.1} s",
                epoch + 1,
                cfg.epochs,
                loss_mean.mean(),
                mean_or_zero(&solves.fwd_iters),
                mean_or_zero(&solves.bwd_iters),
                train_secs
            );
        }
        if stopped {
            break;
        }
    }
    summary.steps = step;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Load a checkpoint's parameters for `graph`, from a folder or a
/// `model.safetensors` file.
pub fn load_weights(
    graph: &Graph,
    path: &Path,
    device: &Device,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    let shapes = param_shapes(graph);
    let file = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    let (tensors, _) = checkpoint::load_tensors(&file, &shapes, device)?;
    Ok(tensors)
}
