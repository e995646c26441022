//! The training loop of `deqc run`, as a [`Trainer`] with named phases.
//!
//! Owns one run: data, parameters, optimizer, schedule, the compiled step
//! ([`super::compiled`]), solver statistics, metrics, progress and
//! checkpoints. The phases: [`Trainer::resume_or_init`] (parameters and
//! state from a checkpoint or the initializers), [`Trainer::step`] (one
//! batch: loss, gradients, the Jacobian regularizer, clipping, the guard,
//! the update), [`Trainer::record`] (the step's metrics record and the
//! stall check), [`Trainer::checkpoint_if_due`], `validate` and `test`
//! (in [`super::validation`]: the validation split after each epoch and
//! every `eval_every` steps, the test split once at the end); [`train`] runs
//! them in order, on the unrolled pretraining graphs for the first
//! `pretrain` steps ([`super::pretrain`]).
//!
//! Guarantees: a run is a pure function of the program, the data and the
//! seed (shuffles depend on `(seed, epoch)`, initial values on
//! `(seed, parameter path)`, probes and dropout on `(seed, step)`), so
//! `--resume` from any checkpoint continues exactly (the failed-solve
//! guard's history, the best validation figure and an early stop travel in
//! the state); checkpoints are written
//! atomically after every epoch and, with `checkpoint_every`, within one,
//! both files stamped with the step; every step is appended to
//! `metrics.jsonl`. Graph results are read through their typed layouts
//! ([`super::layout`]).

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use candle_core::{DType as CDType, Device, Tensor};

use super::adversarial::{record_losses, Adversaries};
use super::checkpoint;
use super::data::{self, Splits};
use super::density::{self, BitsScale, Figures};
use super::epoch::Epoch;
use super::evaluate::{feeds, fit_target};
use super::guard::{stall_warning, SolveGuard, StallWatch};
use super::metrics::{self, MetricsWriter, Record};
use super::normalize;
use super::optim::{clip_grad_norm, update, Optim};
use super::pretrain::Phase;
use super::run_state::{save_checkpoint, train_state, GUARD_KEY};
use super::schedule::LrSchedule;
use super::solve_report::{mark_nested, EqName, SolveReport};
use super::validation::Validation;
use super::TrainError;
use crate::deq::{SolveRecord, SolverRunner};
use crate::exec::{ExecOptions, Executor};
use crate::ir::Graph;
use crate::sema::hir::Model;
use crate::sema::spec::{DataSpec, Optimizer, OutputRole, TrainConfig};
use crate::source::SourceMap;

pub use super::compiled::{
    compile, init_params, load_weights, param_shapes, spectral_radii, Compiled,
};
pub use super::evaluate::evaluate;
pub(crate) use super::rng::{mix, probe};
pub use super::validation::BEST_FILE;

/// Command-line choices that override or complement the `train` block.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub max_steps: Option<usize>,
    /// `--max-time`: stop once the training loop has run this long
    /// (checked between steps), then test, as `--max-steps` does.
    pub max_time: Option<std::time::Duration>,
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
    /// `--init-from`: start from another run's parameters (not with
    /// `resume`).
    pub init_from: Option<super::transfer::InitFrom>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub out: PathBuf,
    pub epochs: usize,
    /// Epochs this call ran (part of one counts), 0 when `--max-steps`
    /// was already reached.
    pub epochs_run: usize,
    pub steps: u64,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// `exp(test_loss)`, for text data.
    pub test_perplexity: Option<f64>,
    /// Bits per dimension of the log-density output on the test split.
    pub test_bits_per_dim: Option<f64>,
    pub seconds: f64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    /// Set when the guard skipped most recent updates and so stopped
    /// skipping for the rest of the run: the warning it printed.
    pub guard_disabled: Option<String>,
    /// Set when early stopping ended the run: the message it printed.
    pub stopped_early: Option<String>,
    /// `--resume` with a program that differs from the run's: what changed
    /// (also printed as a warning).
    pub program_changes: Vec<String>,
}

fn base_lr(o: &Optimizer) -> f64 {
    match o {
        Optimizer::Sgd { lr, .. } | Optimizer::Adam { lr, .. } | Optimizer::AdamW { lr, .. } => *lr,
    }
}

fn default_out(model: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{model}-{secs}"))
}

/// The state names and span of each top-level equilibrium of `graph`.
fn top_level_equilibria(graph: &Graph) -> Vec<EqName> {
    crate::deq::jacobian::top_level_equilibria(graph)
        .into_iter()
        .filter_map(|eq| {
            let crate::ir::Op::Equilibrium(node) = graph.op(eq) else {
                return None;
            };
            Some((node.state_names.clone(), graph.span(eq)))
        })
        .collect()
}

/// The solver fields of a metrics record: the aggregates and the
/// per-equilibrium object.
pub(super) fn set_solve_fields(rec: &mut Record, report: &SolveReport) {
    rec.fwd_iters = report.fwd_iters();
    rec.fwd_residual = report.fwd_residual();
    rec.bwd_iters = report.bwd_iters();
    rec.bwd_residual = report.bwd_residual();
    rec.equilibria = report.to_json();
}

/// Has the run taken the `--max-steps` steps it may take?
fn step_limit_reached(max_steps: Option<usize>, step: u64) -> bool {
    max_steps.is_some_and(|m| step >= m as u64)
}

/// Where a run stands: steps taken, and the epoch and batch it resumes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub step: u64,
    pub epoch: usize,
    /// Batches of `epoch` already done.
    pub batch: usize,
}

/// What one training step did, for its record and the epoch's figures.
pub struct StepOutcome {
    /// The loss trained on (the attacked batch's, with `adversarial`).
    pub loss: f64,
    /// With `adversarial`: the loss at the clean batch.
    pub clean_loss: Option<f64>,
    /// Samples in the batch.
    pub samples: usize,
    /// `(correct, judged)` predictions, for classification.
    pub correct: Option<(usize, usize)>,
    /// Accuracy, loss parts and log-density of the batch, by output role.
    pub figures: Figures,
    pub lr: f64,
    /// The weighted Jacobian term, on the steps that drew it.
    pub jacobian_reg: Option<f64>,
    /// The guard skipped this update.
    pub skipped_update: bool,
    /// This step's solves.
    pub records: Vec<SolveRecord>,
    pub started: Instant,
}

/// One run of `deqc run`: everything the phases share.
pub struct Trainer<'a> {
    pub(super) model: &'a Model,
    pub(super) cfg: &'a TrainConfig,
    pub(super) sources: &'a SourceMap,
    pub(super) opts: &'a RunOptions,
    pub(super) device: Device,
    pub(super) compiled: Compiled,
    pub(super) splits: Rc<Splits>,
    pub(super) out: PathBuf,
    /// Records every solve; an adjoint solve that diverges skips its
    /// update (see `guard`) rather than ending the run.
    pub(super) runner: SolverRunner,
    pub(super) train_options: ExecOptions,
    pub(super) eval_exec: Executor,
    pub(super) top_level: Vec<EqName>,
    pub(super) optim: Optim,
    pub(super) guard: SolveGuard,
    pub(super) stall_watch: StallWatch,
    /// The stall warning, once the guard stopped skipping (see `stalled`).
    pub(super) guard_disabled: Option<String>,
    pub(super) params: Vec<(String, Tensor)>,
    pub(super) schedule: LrSchedule,
    pub(super) batches_per_epoch: usize,
    pub(super) total_steps: usize,
    pub(super) text: bool,
    pub(super) last_checkpoint: Instant,
    /// The graphs of the pretraining phase (`pretrain = unrolled(..)`).
    pub(super) pretrain: Option<Compiled>,
    pub(super) validation: Validation,
    pub(super) program_changes: Vec<String>,
    /// `adversarial = ...`: the attacks each batch meets first (through
    /// the unrolled graph while pretraining).
    pub(super) adversaries: Adversaries,
    /// The role of each model output (`outputs = [...]`).
    pub(super) roles: Vec<OutputRole>,
    /// Report the loss parts (the train block names a log-density).
    pub(super) parts: bool,
    /// How bits per dimension are read from the log-density.
    pub(super) scale: BitsScale,
    /// Train batches are dequantized (`mnist(..., dequantize = true)`).
    pub(super) dequantize: bool,
}

impl<'a> Trainer<'a> {
    /// Compile the model, load the data and create the output folder.
    pub fn new(
        model: &'a Model,
        cfg: &'a TrainConfig,
        sources: &'a SourceMap,
        opts: &'a RunOptions,
    ) -> Result<Self, TrainError> {
        let device = opts.device.clone().unwrap_or(Device::Cpu);
        let compiled = compile(model, cfg)?;
        let pretrain = match cfg.workflow.pretrain {
            Some(p) => Some(super::compiled::compile_pretrain(model, cfg, p.depth)?),
            None => None,
        };
        let splits = Rc::new(super::validation::load_splits(cfg)?);
        let validation = Validation::new(cfg, &splits)?;
        let out = opts.out.clone().unwrap_or_else(|| default_out(&model.name));
        std::fs::create_dir_all(&out).map_err(|source| TrainError::Io {
            action: "create",
            path: out.clone(),
            source,
        })?;
        let program_changes = if opts.resume {
            super::resume_check::program_changes(&out, model, cfg, sources)
        } else {
            Vec::new()
        };
        if !program_changes.is_empty() {
            eprintln!(
                "warning: resuming {} with a changed program:\n  {}",
                out.display(),
                program_changes.join("\n  ")
            );
        }
        crate::report::start_run(&out, model, cfg, sources, &device, opts.resume);
        if let Some(st) = &splits.standardization {
            if !opts.quiet {
                eprintln!("data: x standardized with {st}");
            }
            let facts = serde_json::json!({"mean": st.mean, "std": st.std, "samples": st.samples});
            crate::report::add_fact(&out, "standardization", facts);
        }
        let runner = SolverRunner::new().with_lenient_adjoint(true);
        let train_options = ExecOptions {
            float: CDType::F32,
            training: true,
            seed: cfg.seed,
            ..ExecOptions::default()
        };
        let mut eval_exec = Executor::new(device.clone()).with_runner(Box::new(runner.clone()));
        eval_exec.options.seed = cfg.seed;
        let top_level = top_level_equilibria(&compiled.graph);
        let batches_per_epoch = splits.train.num_batches(cfg.batch_size);
        let unrolled = pretrain.as_ref().map(|p| &p.graph);
        let adversaries = Adversaries::of_run(cfg, &compiled.graph, unrolled, &splits, &device)?;
        let roles = cfg.roles(compiled.graph.outputs().len());
        let dims = splits
            .train
            .fields()
            .first()
            .map_or(1, |(_, a)| a.sample_size());
        let std = splits.standardization.as_ref().map(|s| s.std);
        let scale = BitsScale::for_data(&cfg.data, dims, std);
        if density::reports_parts(cfg) {
            crate::report::add_fact(&out, "density", density::scale_facts(&scale, &cfg.data));
        }
        Ok(Trainer {
            model,
            cfg,
            sources,
            opts,
            device,
            top_level,
            optim: Optim::new(&cfg.optimizer),
            guard: SolveGuard::new(),
            stall_watch: StallWatch::new(),
            guard_disabled: None,
            params: Vec::new(),
            schedule: LrSchedule::new(base_lr(&cfg.optimizer), cfg.schedule.clone()),
            batches_per_epoch,
            total_steps: batches_per_epoch * cfg.epochs,
            text: matches!(cfg.data, DataSpec::Text { .. }),
            parts: density::reports_parts(cfg),
            dequantize: density::dequantizes(&cfg.data),
            roles,
            scale,
            compiled,
            splits,
            out,
            runner,
            train_options,
            eval_exec,
            last_checkpoint: Instant::now(),
            adversaries,
            pretrain,
            validation,
            program_changes,
        })
    }

    /// The parameters, optimizer state and guard history of the run's last
    /// checkpoint with `--resume`, else the seeded initial values.
    pub fn resume_or_init(&mut self) -> Result<Position, TrainError> {
        if !self.opts.resume {
            self.params = init_params(&self.compiled.graph, self.cfg.seed, &self.device)?;
            if let Some(from) = &self.opts.init_from {
                let mut report = super::transfer::load_into(&mut self.params, from, &self.device)?;
                normalize::after_init_from(&self.compiled.graph, &mut self.params, &mut report)?;
                if !self.opts.quiet {
                    eprintln!("--init-from {}:\n{report}", from.path.display());
                }
            }
            return Ok(Position {
                step: 0,
                epoch: 0,
                batch: 0,
            });
        }
        let out = &self.out;
        let shapes = param_shapes(&self.compiled.graph);
        let (p, meta) =
            checkpoint::load_tensors(&out.join("model.safetensors"), &shapes, &self.device)?;
        // Frozen parameters never get optimizer state.
        let moving: Vec<(String, Vec<usize>)> = shapes
            .iter()
            .zip(self.compiled.frozen.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, frozen)| !**frozen)
            .map(|(s, _)| s.clone())
            .collect();
        let state = checkpoint::load_train_state(
            out,
            Some(&self.optim.state_shapes(&moving)),
            &self.device,
        )?;
        // The two files are written one after the other: a crash between
        // the writes leaves them from different steps.
        if let Some(model_step) = meta.get("step") {
            if *model_step != state.step.to_string() {
                return Err(TrainError::CheckpointSteps {
                    dir: out.clone(),
                    model_step: model_step.clone(),
                    state_step: state.step,
                });
            }
        }
        self.optim.load_state(state.optimizer.clone())?;
        if let Some(text) = state.extra.get(GUARD_KEY) {
            self.guard = SolveGuard::decode(text).map_err(|message| TrainError::GuardState {
                path: out.join("train_state.safetensors"),
                message,
            })?;
        }
        self.validation
            .decode(&state.extra, &out.join("train_state.safetensors"))?;
        self.params = p;
        Ok(Position {
            step: state.step,
            epoch: state.epoch as usize,
            batch: state.batch as usize,
        })
    }

    /// The graphs that step `step` (0-based), or an evaluation after
    /// `step` steps, runs: the unrolled ones while pretraining.
    pub(super) fn compiled_at(&self, step: u64) -> &Compiled {
        super::pretrain::in_phase(&self.compiled, &self.pretrain, self.cfg, step)
    }

    pub(super) fn param_values(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.1.clone()).collect()
    }

    /// One optimizer step on `batch`, the `step`-th of the run, in epoch
    /// `epoch`: loss and gradients, the Jacobian regularizer when this step
    /// draws it, clipping, the failed-solve guard, then the update.
    pub fn step(
        &mut self,
        batch: &data::Batch,
        epoch: usize,
        step: u64,
    ) -> Result<StepOutcome, TrainError> {
        let started = Instant::now();
        let cfg = self.cfg;
        let step_graph = &super::pretrain::in_phase(&self.compiled, &self.pretrain, cfg, step).step;
        let values = self.param_values();
        let mut inputs = fit_target(&step_graph.graph, feeds(&self.splits.train, batch)?)?;
        if self.dequantize {
            if let Some(x) = inputs.first_mut() {
                *x = density::dequantize(x, |r| density::train_key(cfg.seed, step, r))?;
            }
        }
        let phase = Phase::at(cfg.workflow.pretrain, step);
        let (inputs, clean_loss) = self.adversaries.attacked(phase, &values, inputs, step)?;
        let step_exec = Executor::new(self.device.clone())
            .with_runner(Box::new(self.runner.clone()))
            .with_options(ExecOptions {
                seed: mix(cfg.seed, step),
                ..self.train_options.clone()
            });
        let run = step_exec.run(&step_graph.graph, &values, &inputs)?;
        let results = step_graph.layout.read(&run.outputs)?;
        let loss = results.loss_value()?;
        let mut grads: Vec<Tensor> = results.grads().to_vec();
        let jacobian_reg =
            self.regularize(&step_exec, step, &inputs, &values, &results, &mut grads)?;
        let mut records = self.runner.take_records();
        mark_nested(&mut records, &self.top_level);
        if let Some(c) = cfg.clip_grad {
            clip_grad_norm(&mut grads, c)?;
        }
        let lr = self.schedule.lr_at(step as usize, epoch, self.total_steps);
        // An implicit gradient taken where the forward solve failed (the
        // point is not a fixed point) is not the gradient of anything: such
        // an update is skipped, and counted.
        let verdict = self.guard.judge(&records);
        let skipped_update =
            self.opts.skip_failed_solves && self.guard_disabled.is_none() && verdict.failed;
        // Spectral normalization's state advances from what this step ran with.
        let advanced = normalize::advance(&self.compiled.graph, &self.params)?;
        if !skipped_update {
            update(
                &mut self.optim,
                &mut self.params,
                &self.compiled.frozen,
                &grads,
                lr,
            )?;
        }
        for (i, u) in advanced {
            self.params[i].1 = u;
        }
        let mut figures = Figures::default();
        if let Some(target) = inputs.last() {
            figures.add(results.model_outputs(), &self.roles, target, self.parts)?;
        }
        let correct = (figures.judged > 0).then_some((figures.correct, figures.judged));
        Ok(StepOutcome {
            loss,
            clean_loss,
            samples: inputs[0].dims().first().copied().unwrap_or(1),
            correct,
            figures,
            lr,
            jacobian_reg,
            skipped_update,
            records,
            started,
        })
    }

    /// The Jacobian regularizer on the steps that draw it (probability
    /// `freq`): adds its weighted gradient to `grads`, returns its weighted
    /// value.
    fn regularize(
        &self,
        exec: &Executor,
        step: u64,
        inputs: &[Tensor],
        values: &[Tensor],
        results: &super::layout::StepResults,
        grads: &mut [Tensor],
    ) -> Result<Option<f64>, TrainError> {
        let (Some(jr), Some(jac)) = (&self.cfg.jacobian_reg, &self.compiled_at(step).jacobian)
        else {
            return Ok(None);
        };
        let seed = self.cfg.seed;
        let coin = (mix(seed ^ 0x4A52, step) >> 11) as f64 / (1u64 << 53) as f64;
        if coin >= jr.freq {
            return Ok(None);
        }
        let zstars = results.zstars();
        let probes = zstars
            .iter()
            .enumerate()
            .map(|(k, z)| {
                probe(
                    z.dims(),
                    mix(seed ^ 0x5052, step * 64 + k as u64),
                    &self.device,
                    z.dtype(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The model's inputs, without the target.
        let model_inputs = &inputs[..inputs.len() - 1];
        let jin = jac.layout.inputs(model_inputs, zstars, &probes)?;
        let run = exec.run(&jac.graph, values, &jin)?;
        let term = jac.layout.read(&run.outputs)?;
        for (i, g) in grads.iter_mut().enumerate() {
            if let Some(dg) = term.grad(i) {
                *g = (&*g + (dg * jr.weight)?)?;
            }
        }
        Ok(Some(term.term()? * jr.weight))
    }

    /// Append the step's record to the metrics log, add it to the epoch's
    /// figures, and end the run when the guard has skipped most recent
    /// updates.
    pub fn record(
        &mut self,
        writer: &mut MetricsWriter,
        epoch: &mut Epoch,
        step: u64,
        outcome: &StepOutcome,
    ) -> Result<(), TrainError> {
        epoch.solves.add(&outcome.records, self.sources);
        // This step's own solver statistics, for its metrics record.
        let mut this_step = SolveReport::new();
        this_step.add(&outcome.records, self.sources);
        if outcome.skipped_update {
            epoch.skipped += 1;
        }
        epoch.samples += outcome.samples;
        epoch.loss.add(outcome.loss, outcome.samples as f64);
        let mut rec = Record::new(epoch.index as u64, step, "train");
        rec.loss = outcome.loss;
        if let Some((c, t)) = outcome.correct {
            epoch.correct += c;
            epoch.seen += t;
            rec.accuracy = Some(c as f64 / t.max(1) as f64);
        }
        if self.text {
            rec.perplexity = Some(metrics::perplexity(outcome.loss));
        }
        rec.extra.extend(outcome.figures.extra(&self.scale));
        epoch
            .nll
            .add(outcome.figures.nll.mean(), outcome.figures.nll.weight());
        set_solve_fields(&mut rec, &this_step);
        rec.seconds = outcome.started.elapsed().as_secs_f64();
        rec.lr = Some(outcome.lr);
        record_losses(&mut rec, outcome.clean_loss, outcome.loss);
        if let Some(p) = self.cfg.workflow.pretrain {
            rec.phase = Some(Phase::at(Some(p), step).name());
        }
        if let Some(r) = outcome.jacobian_reg {
            rec.extra.push(("jacobian_reg".into(), r));
        }
        if outcome.skipped_update {
            rec.extra.push(("skipped_update".into(), 1.0));
        }
        let stall = self.stall_watch.record(step, outcome.skipped_update);
        if let (Some(stall), None) = (stall, &self.guard_disabled) {
            let warning = stall_warning(stall, &this_step);
            if !self.opts.quiet {
                eprintln!("warning: {warning}");
            }
            rec.extra.push(("guard_disabled".into(), 1.0));
            self.guard_disabled = Some(warning);
        }
        write(writer, &rec)
    }

    /// Checkpoint mid-epoch when `checkpoint_every` has passed since the
    /// last one (`at`: the position after the step just taken).
    pub fn checkpoint_if_due(&mut self, at: Position) -> Result<(), TrainError> {
        let due = self
            .opts
            .checkpoint_every
            .is_some_and(|every| self.last_checkpoint.elapsed() >= every);
        if due && at.batch < self.batches_per_epoch {
            self.checkpoint(at)?;
        }
        Ok(())
    }

    /// Write the model and the training state at `at`, each atomically.
    fn checkpoint(&mut self, at: Position) -> Result<(), TrainError> {
        let state = train_state(
            at.step,
            (at.epoch, at.batch),
            self.cfg.seed,
            &self.optim,
            (&self.guard, &self.validation),
        );
        save_checkpoint(&self.out, &self.model.name, &self.params, &state)?;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Train from `start` until the last epoch, early stopping or
    /// `--max-steps`, validating on the way; then evaluate the test split.
    pub fn run(mut self, start: Position, started: Instant) -> Result<Summary, TrainError> {
        let (cfg, opts) = (self.cfg, self.opts);
        if let Some(v) = &self.splits.vocab {
            checkpoint::save_vocab(&self.out, v)?;
        }
        let metrics_path = self.out.join("metrics.jsonl");
        let mut writer = MetricsWriter::open(&metrics_path).map_err(|source| TrainError::Io {
            action: "write metrics to",
            path: metrics_path.clone(),
            source,
        })?;
        let mut summary = Summary {
            out: self.out.clone(),
            epochs: cfg.epochs,
            epochs_run: 0,
            steps: start.step,
            test_loss: None,
            test_accuracy: None,
            test_perplexity: None,
            test_bits_per_dim: None,
            seconds: 0.0,
            first_loss: None,
            last_loss: None,
            guard_disabled: None,
            stopped_early: None,
            program_changes: std::mem::take(&mut self.program_changes),
        };
        let mut step = start.step;
        let mut last_epoch = start.epoch;
        let mut skip_batches = start.batch;
        self.last_checkpoint = Instant::now();
        let loop_started = Instant::now();
        let limit_reached = |step: u64| {
            step_limit_reached(opts.max_steps, step)
                || opts.max_time.is_some_and(|t| loop_started.elapsed() >= t)
        };
        for index in start.epoch..cfg.epochs {
            // `--max-steps` reached on an epoch boundary (or 0): no empty
            // epoch, and no second test record for the same step.
            if limit_reached(step) || self.validation.stopped_early.is_some() {
                break;
            }
            summary.epochs_run += 1;
            last_epoch = index;
            let done_before = std::mem::take(&mut skip_batches);
            let mut epoch = Epoch::start(
                index,
                cfg.epochs,
                self.batches_per_epoch,
                done_before,
                opts.quiet,
            );
            let mut stopped = false;
            // Shared, so that the batches can borrow the data while the
            // steps update the trainer.
            let splits = Rc::clone(&self.splits);
            let batches = splits
                .train
                .shuffled_batches(cfg.batch_size, cfg.seed, index as u64, &self.device)
                .skip(done_before);
            for batch in batches {
                if limit_reached(step) {
                    stopped = true;
                    break;
                }
                let outcome = self.step(&batch?, index, step)?;
                summary.first_loss.get_or_insert(outcome.loss);
                summary.last_loss = Some(outcome.loss);
                self.record(&mut writer, &mut epoch, step, &outcome)?;
                step += 1;
                epoch.done += 1;
                if self.validation.due(step) {
                    let valid = self.validate(&mut writer, index, step)?;
                    if let (Some((line, _)), false) = (valid, opts.quiet) {
                        eprintln!("step {step}{line}");
                    }
                }
                self.checkpoint_if_due(Position {
                    step,
                    epoch: index,
                    batch: epoch.done,
                })?;
                epoch.show_progress();
            }
            epoch.finish(opts.quiet);
            let train_secs = epoch.started.elapsed().as_secs_f64();
            // A run stopped by --max-steps (or --max-time) validates on its schedule only,
            // so that a resumed run writes what an uninterrupted one does.
            let valid = match stopped {
                true => None,
                false => self.validate(&mut writer, index, step)?,
            };
            let stop_early = (!stopped && self.validation.should_stop(index))
                .then(|| self.validation.stop(index));
            // A run stopped by --max-steps records where it stopped.
            let at = if stopped {
                Position {
                    step,
                    epoch: index,
                    batch: epoch.done,
                }
            } else {
                Position {
                    step,
                    epoch: index + 1,
                    batch: 0,
                }
            };
            self.checkpoint(at)?;
            crate::report::after_epoch(&self.out, started.elapsed());
            if !opts.quiet {
                let (test_line, test_solves) = match &valid {
                    Some((line, solves)) => (line.clone(), Some(solves)),
                    None => (String::new(), None),
                };
                let train_bits = if epoch.nll.weight() > 0.0 {
                    format!(" bits/dim {:.4}", self.scale.bits_per_dim(epoch.nll.mean()))
                } else {
                    String::new()
                };
                eprintln!(
                    "{}",
                    epoch.summary_line(
                        cfg.epochs,
                        self.text,
                        &format!("{train_bits}{test_line}"),
                        test_solves,
                        train_secs
                    )
                );
            }
            if let Some(message) = stop_early {
                if !opts.quiet {
                    eprintln!("{message}");
                }
                summary.stopped_early = Some(message);
                break;
            }
            if stopped {
                break;
            }
        }
        // The test split, once, where this run ends.
        if summary.epochs_run > 0 {
            if let Some(line) = self.test(&mut writer, &mut summary, last_epoch, step)? {
                crate::report::after_epoch(&self.out, started.elapsed());
                if !opts.quiet {
                    eprintln!("test {line}");
                }
            }
        }
        summary.steps = step;
        summary.seconds = started.elapsed().as_secs_f64();
        summary.guard_disabled = self.guard_disabled.clone();
        Ok(summary)
    }
}

/// Train `model` as its `train` block says.
pub fn train(
    model: &Model,
    cfg: &TrainConfig,
    sources: &SourceMap,
    opts: &RunOptions,
) -> Result<Summary, TrainError> {
    let started = Instant::now();
    let mut trainer = Trainer::new(model, cfg, sources, opts)?;
    let start = trainer.resume_or_init()?;
    trainer.run(start, started)
}

pub(super) fn write(writer: &mut MetricsWriter, rec: &Record) -> Result<(), TrainError> {
    writer.write(rec).map_err(|source| TrainError::Io {
        action: "write metrics to",
        path: writer.path().to_path_buf(),
        source,
    })
}
