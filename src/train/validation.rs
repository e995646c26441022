//! Evaluation during and after training: the validation split, the test
//! split once at the end, early stopping and `best.safetensors`.
//!
//! Owns the phases [`Trainer::validate`] (a `"valid"` record after each
//! epoch and, with `eval_every = N`, after every N-th step; with
//! `eval_samples = N` on the first N validation samples), [`Trainer::test`]
//! (the `"test"` record, once, when the run ends) and the early-stopping
//! rule ([`Validation::should_stop`]), and the validation split itself
//! ([`load_splits`]: `valid = f` holds out a seeded fraction of the train
//! split).
//!
//! Guarantees: nobody tunes on the test split: it is evaluated only where a
//! run ends (its last epoch, early stopping, or `--max-steps`); never two
//! records for the same split and step; `best.safetensors` holds the
//! parameters of the best validation figure so far (the early-stopping
//! metric, else the loss; ties keep the earlier one), written atomically
//! when it improves; the best figure and an early stop travel in the
//! training state, so `--resume` continues exactly.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

use super::checkpoint;
use super::data::{self, Dataset, Splits};
use super::evaluate::{evaluate_split, feeds, EvalSetup};
use super::metrics::{self, MetricsWriter, Record};
use super::solve_report::{mark_nested, SolveReport};
use super::trainer::{spectral_radii, Summary, Trainer};
use super::TrainError;
use crate::sema::spec::{EarlyStopping, StopMetric, TrainConfig};

/// The file of the best parameters in a run folder.
pub const BEST_FILE: &str = "best.safetensors";
/// Training-state entries: the best validation figure, and the epoch an
/// early stop ended the run after.
const BEST_KEY: &str = "validation_best";
const STOPPED_KEY: &str = "stopped_early";

/// The data of a run (and of `deqc eval`): the `data` setting's splits,
/// subset applied, `valid = f` held out of the train split, then
/// standardized with the remaining train samples' statistics.
pub fn load_splits(cfg: &TrainConfig) -> Result<Splits, TrainError> {
    Ok(data::load_held_out(
        &cfg.data,
        cfg.seed,
        cfg.workflow.valid,
    )?)
}

/// The best validation figure so far and where it was reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Best {
    /// The metric as reported (loss, accuracy or perplexity).
    pub value: f64,
    pub epoch: usize,
    pub step: u64,
}

/// What validation is set to do, and its state.
pub struct Validation {
    /// The validation samples evaluated (`eval_samples` applied).
    data: Option<Rc<Dataset>>,
    every: Option<usize>,
    stopping: Option<EarlyStopping>,
    metric: StopMetric,
    pub best: Option<Best>,
    /// The epoch after which early stopping ended the run.
    pub stopped_early: Option<usize>,
    /// The last validation: its step, epoch-line part and solves.
    last: Option<(u64, String, SolveReport)>,
}

impl Validation {
    /// Early stopping and `eval_every` without a validation split are an
    /// error (sema catches MNIST; CSV and text are known only here).
    pub fn new(cfg: &TrainConfig, splits: &Splits) -> Result<Validation, TrainError> {
        let w = &cfg.workflow;
        let data = splits.valid.as_ref().map(|v| match w.eval_samples {
            Some(n) if n < v.len() => Rc::new(v.take(&(0..n).collect::<Vec<_>>())),
            _ => Rc::new(v.clone()),
        });
        if data.is_none() {
            if w.early_stopping.is_some() {
                return Err(TrainError::NoValidationSplit {
                    key: "early_stopping",
                });
            }
            if w.eval_every.is_some() {
                return Err(TrainError::NoValidationSplit { key: "eval_every" });
            }
        }
        Ok(Validation {
            data,
            every: w.eval_every,
            stopping: w.early_stopping,
            metric: w.early_stopping.map_or(StopMetric::Loss, |e| e.metric),
            best: None,
            stopped_early: None,
            last: None,
        })
    }

    /// Is a validation due after `step` steps within an epoch?
    pub fn due(&self, step: u64) -> bool {
        self.data.is_some() && self.every.is_some_and(|n| step.is_multiple_of(n as u64))
    }

    /// Lower is better: the loss and perplexity as they are, accuracy negated.
    fn score(&self, value: f64) -> f64 {
        match self.metric {
            StopMetric::Accuracy => -value,
            StopMetric::Loss | StopMetric::Perplexity => value,
        }
    }

    /// Take `value` as the best when it beats the best so far.
    fn improve(&mut self, value: f64, epoch: usize, step: u64) -> bool {
        let better = value.is_finite()
            && self
                .best
                .is_none_or(|b| self.score(value) < self.score(b.value));
        if better {
            self.best = Some(Best { value, epoch, step });
        }
        better
    }

    /// Has the validation figure not improved for `patience` epochs by the
    /// end of epoch `epoch`?
    pub fn should_stop(&self, epoch: usize) -> bool {
        match (self.stopping, self.best) {
            (Some(s), Some(b)) => epoch >= b.epoch + s.epochs,
            _ => false,
        }
    }

    /// Stop the run after epoch `epoch`: the message for the log.
    pub fn stop(&mut self, epoch: usize) -> String {
        self.stopped_early = Some(epoch);
        let (patience, metric) = self
            .stopping
            .map_or((0, "loss"), |s| (s.epochs, s.metric.name()));
        match self.best {
            Some(b) => format!(
                "early stopping after epoch {}: the validation {metric} has not improved for {patience} epoch{} (best {:.4} at epoch {}, step {}; parameters in {BEST_FILE})",
                epoch + 1,
                if patience == 1 { "" } else { "s" },
                b.value,
                b.epoch + 1,
                b.step
            ),
            None => format!("early stopping after epoch {}", epoch + 1),
        }
    }

    /// Write the state into a checkpoint's entries.
    pub fn encode(&self, extra: &mut BTreeMap<String, String>) {
        if let Some(b) = self.best {
            extra.insert(
                BEST_KEY.into(),
                format!("{:?} {} {}", b.value, b.epoch, b.step),
            );
        }
        if let Some(e) = self.stopped_early {
            extra.insert(STOPPED_KEY.into(), e.to_string());
        }
    }

    /// Read the state back from a checkpoint's entries (`path`: for errors).
    pub fn decode(
        &mut self,
        extra: &BTreeMap<String, String>,
        path: &std::path::Path,
    ) -> Result<(), TrainError> {
        let bad = |key: &'static str, text: &str| TrainError::ValidationState {
            path: path.to_path_buf(),
            key,
            message: format!("`{text}`"),
        };
        if let Some(text) = extra.get(BEST_KEY) {
            let parts: Vec<&str> = text.split(' ').collect();
            let best = match parts.as_slice() {
                [v, e, s] => match (v.parse(), e.parse(), s.parse()) {
                    (Ok(value), Ok(epoch), Ok(step)) => Best { value, epoch, step },
                    _ => return Err(bad(BEST_KEY, text)),
                },
                _ => return Err(bad(BEST_KEY, text)),
            };
            self.best = Some(best);
        }
        if let Some(text) = extra.get(STOPPED_KEY) {
            self.stopped_early = Some(text.parse().map_err(|_| bad(STOPPED_KEY, text))?);
        }
        Ok(())
    }
}

/// One evaluation's figures.
struct Figures {
    loss: f64,
    accuracy: Option<f64>,
    perplexity: Option<f64>,
    /// Of a log-density output (`outputs = [.., log_density]`).
    bits_per_dim: Option<f64>,
    solves: SolveReport,
}

impl Figures {
    /// `, NAME loss L perplexity P accuracy A%` for an epoch line.
    fn line(&self, name: &str) -> String {
        format!(", {name} {}", self.text())
    }

    /// `loss L perplexity P accuracy A%`.
    fn text(&self) -> String {
        let mut line = format!("loss {:.4}", self.loss);
        if let Some(p) = self.perplexity {
            line.push_str(&format!(" perplexity {p:.2}"));
        }
        if let Some(a) = self.accuracy {
            line.push_str(&format!(" accuracy {:.2}%", 100.0 * a));
        }
        if let Some(b) = self.bits_per_dim {
            line.push_str(&format!(" bits/dim {b:.4}"));
        }
        line
    }
}

impl Trainer<'_> {
    /// Evaluate on `ds` after `step` steps (in epoch `epoch`): the figures
    /// and the `split` record (not yet written), with the spectral radii on
    /// the first batch.
    fn evaluate_split(
        &mut self,
        split: &str,
        ds: &Dataset,
        (epoch, step): (usize, u64),
    ) -> Result<(Figures, Record), TrainError> {
        let (cfg, sources) = (self.cfg, self.sources);
        let values = self.param_values();
        let t0 = Instant::now();
        let compiled = self.compiled_at(step);
        let setup = EvalSetup {
            batch_size: cfg.batch_size,
            device: &self.device,
            roles: self.roles.clone(),
            parts: self.parts,
            dequantize: self.dequantize.then_some(cfg.seed),
            max_batches: self.opts.max_eval_batches,
            keep_log_densities: false,
        };
        let measured = evaluate_split(&self.eval_exec, &compiled.eval, &values, ds, &setup)?;
        let (loss, accuracy) = (measured.loss, measured.figures.accuracy());
        let extra = measured.figures.extra(&self.scale);
        let bits_per_dim = extra
            .iter()
            .find(|(k, _)| k == "bits_per_dim")
            .map(|(_, v)| *v);
        let mut records = self.runner.take_records();
        mark_nested(&mut records, &self.top_level);
        let mut solves = SolveReport::new();
        solves.add(&records, sources);
        let perplexity = self.text.then(|| metrics::perplexity(loss));
        let mut rec = Record::new(epoch as u64, step, split);
        rec.loss = loss;
        rec.accuracy = accuracy;
        rec.perplexity = perplexity;
        rec.extra.extend(extra);
        rec.seconds = t0.elapsed().as_secs_f64();
        // Stability of the equilibria on the first batch.
        if let Some(batch) = ds.batches(cfg.batch_size, &self.device).next() {
            let inputs = feeds(ds, &batch?)?;
            let model_inputs = &inputs[..inputs.len().saturating_sub(1)];
            let radii = spectral_radii(&self.eval_exec, compiled, &values, model_inputs)?;
            self.runner.take_records();
            for ((states, span), r) in radii {
                solves.set_spectral_radius(&states, span, r, sources);
            }
            if let Some(r) = solves.spectral_radius() {
                rec.extra.push(("spectral_radius".into(), r));
            }
        }
        super::trainer::set_solve_fields(&mut rec, &solves);
        let figures = Figures {
            loss,
            accuracy,
            perplexity,
            bits_per_dim,
            solves,
        };
        Ok((figures, rec))
    }

    /// Validate after `step` steps in epoch `epoch` (once per step): write
    /// the `"valid"` record, and `best.safetensors` when the figure
    /// improved. Returns the epoch line's part and the solves, `None`
    /// without a validation split.
    pub fn validate(
        &mut self,
        writer: &mut MetricsWriter,
        epoch: usize,
        step: u64,
    ) -> Result<Option<(String, SolveReport)>, TrainError> {
        let Some(ds) = self.validation.data.clone() else {
            return Ok(None);
        };
        if let Some((at, line, solves)) = &self.validation.last {
            if *at == step {
                return Ok(Some((line.clone(), solves.clone())));
            }
        }
        let (figures, mut rec) = self.evaluate_split("valid", &ds, (epoch, step))?;
        let value = match self.validation.metric {
            StopMetric::Loss => Some(figures.loss),
            StopMetric::Accuracy => figures.accuracy,
            StopMetric::Perplexity => figures.perplexity,
        };
        let improved = value.is_some_and(|v| self.validation.improve(v, epoch, step));
        if improved {
            rec.extra.push(("best".into(), 1.0));
        }
        super::trainer::write(writer, &rec)?;
        if improved {
            let meta = BTreeMap::from([
                ("model".to_string(), self.model.name.clone()),
                ("epoch".to_string(), epoch.to_string()),
                ("step".to_string(), step.to_string()),
                (
                    "metric".to_string(),
                    self.validation.metric.name().to_string(),
                ),
                ("value".to_string(), format!("{:?}", value.unwrap_or(0.0))),
            ]);
            checkpoint::save_tensors(&self.out.join(BEST_FILE), &self.params, &meta)?;
        }
        let line = figures.line("valid");
        self.validation.last = Some((step, line.clone(), figures.solves.clone()));
        Ok(Some((line, figures.solves)))
    }

    /// Evaluate on the test split where the run ends (after `step` steps, in
    /// epoch `epoch`): the `"test"` record and the summary's test figures.
    /// Returns the log line, `None` without a test split.
    pub fn test(
        &mut self,
        writer: &mut MetricsWriter,
        summary: &mut Summary,
        epoch: usize,
        step: u64,
    ) -> Result<Option<String>, TrainError> {
        let splits = Rc::clone(&self.splits);
        let Some(test) = splits.test.as_ref() else {
            return Ok(None);
        };
        let (figures, rec) = self.evaluate_split("test", test, (epoch, step))?;
        super::trainer::write(writer, &rec)?;
        summary.test_loss = Some(figures.loss);
        summary.test_accuracy = figures.accuracy;
        summary.test_perplexity = figures.perplexity;
        summary.test_bits_per_dim = figures.bits_per_dim;
        if self.parts {
            let facts = super::density::test_facts(
                (epoch, step),
                figures.loss,
                figures.accuracy,
                &rec.extra,
            );
            crate::report::add_fact(&self.out, "test", facts);
        }
        Ok(Some(format!("after {step} steps: {}", figures.text())))
    }
}
