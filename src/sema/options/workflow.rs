//! The `train` keys of validation, evaluation cost, early stopping,
//! pretraining and the evaluation solver: `valid`, `eval_every`,
//! `eval_samples`, `early_stopping`, `pretrain`, `eval_solver`.
//!
//! Guarantees: each value is of the right kind and range (else an error at
//! its span); after the whole block is read, [`OptionChecker::check_workflow`]
//! rejects combinations that cannot work: a metric the loss or data cannot
//! give, `valid` on text data (which has its own `*.valid.txt`), and early
//! stopping or `eval_every` on MNIST without `valid` (nothing to validate on).

use super::{opt, req, CVal, Kind, OptionChecker, Spanned};
use crate::sema::error::SemaError;
use crate::sema::spec::*;
use crate::source::Span;

/// The keys this file owns (`TRAIN_KEYS` ends with them).
pub const WORKFLOW_KEYS: &[&str] = &[
    "valid",
    "eval_every",
    "eval_samples",
    "early_stopping",
    "pretrain",
    "eval_solver",
];

/// The metrics `early_stopping` can follow.
const METRICS: &[&str] = &["loss", "accuracy", "perplexity"];

/// Where each workflow key was written, for the checks across keys.
#[derive(Default)]
pub struct WorkflowSpans {
    spans: Vec<(&'static str, Span)>,
}

impl WorkflowSpans {
    fn get(&self, key: &str) -> Option<Span> {
        self.spans.iter().find(|(k, _)| *k == key).map(|(_, s)| *s)
    }
}

impl OptionChecker<'_> {
    /// Read one workflow key into `w`; `None` after an error.
    pub fn workflow_key(
        &mut self,
        key: &'static str,
        v: &Spanned,
        w: &mut Workflow,
        spans: &mut WorkflowSpans,
    ) -> Option<()> {
        spans.spans.push((key, v.span));
        match key {
            "valid" => w.valid = Some(self.holdout(v)?),
            "eval_every" => w.eval_every = Some(self.positive_count(key, v)?),
            "eval_samples" => w.eval_samples = Some(self.positive_count(key, v)?),
            "early_stopping" => w.early_stopping = Some(self.early_stopping(v)?),
            "pretrain" => w.pretrain = Some(self.pretrain(v)?),
            _ => w.eval_solver = Some(self.solver(v)?),
        }
        Some(())
    }

    fn positive_count(&mut self, key: &str, v: &Spanned) -> Option<usize> {
        match v.value {
            CVal::Int(n) if self.kind_ok("train", key, Kind::Int(1), v) => Some(n as usize),
            _ => {
                self.kind_ok("train", key, Kind::Int(1), v);
                None
            }
        }
    }

    /// `valid = f`, `f` strictly between 0 and 1.
    fn holdout(&mut self, v: &Spanned) -> Option<f64> {
        match super::as_float(&v.value) {
            Some(f) if f > 0.0 && f < 1.0 => Some(f),
            _ => {
                self.errors.push(SemaError::ArgumentType {
                    callee: "train".into(),
                    name: "valid".into(),
                    expected: "a fraction of the train split strictly between 0 and 1, e.g. 0.1"
                        .into(),
                    found: v.value.describe(),
                    span: v.span.into(),
                    help: None,
                });
                None
            }
        }
    }

    /// `patience(epochs = 3, metric = "loss")`.
    fn early_stopping(&mut self, v: &Spanned) -> Option<EarlyStopping> {
        let args = self.call_of(v, "stopping rule", "patience")?;
        let schema = [
            opt("epochs", Kind::Int(1), CVal::Int(3)),
            opt("metric", Kind::Str(METRICS), CVal::Str("loss".into())),
        ];
        let b = self.bind("patience", &schema, args, v.span)?;
        let metric = match b.str("metric").as_str() {
            "accuracy" => StopMetric::Accuracy,
            "perplexity" => StopMetric::Perplexity,
            _ => StopMetric::Loss,
        };
        Some(EarlyStopping {
            epochs: b.uint("epochs"),
            metric,
        })
    }

    /// `unrolled(steps = N, depth = K)`.
    fn pretrain(&mut self, v: &Spanned) -> Option<Pretrain> {
        let args = self.call_of(v, "pretraining", "unrolled")?;
        let schema = [req("steps", Kind::Int(1)), req("depth", Kind::Int(1))];
        let b = self.bind("unrolled", &schema, args, v.span)?;
        Some(Pretrain {
            steps: b.uint("steps"),
            depth: b.uint("depth"),
        })
    }

    /// The checks across keys, once the whole block is read.
    pub fn check_workflow(&mut self, cfg: &TrainConfig, spans: &WorkflowSpans) -> bool {
        let w = &cfg.workflow;
        let text = matches!(cfg.data, DataSpec::Text { .. });
        let mnist = matches!(cfg.data, DataSpec::Mnist { .. });
        let mut ok = true;
        if let (Some(_), Some(span), true) = (w.valid, spans.get("valid"), text) {
            self.invalid(
                span,
                "`valid` holds out part of the train split, but text data has its own validation file".into(),
                "not for text data",
                "text(...) validates on the folder's `*.valid.txt`; remove `valid`",
            );
            ok = false;
        }
        if let (Some(e), Some(span)) = (w.early_stopping, spans.get("early_stopping")) {
            let problem = match e.metric {
                StopMetric::Accuracy if !cfg.loss.takes_class_ids() => {
                    Some("accuracy needs a loss on class ids (`cross_entropy`, `nll`)")
                }
                StopMetric::Perplexity if !text => Some("perplexity needs `text(...)` data"),
                _ => None,
            };
            if let Some(problem) = problem {
                self.invalid(
                    span,
                    format!("early stopping on {}: {problem}", e.metric.name()),
                    "metric not measured by this run",
                    "use `metric = \"loss\"`",
                );
                ok = false;
            }
        }
        for key in ["early_stopping", "eval_every"] {
            if let (true, None, Some(span)) = (mnist, w.valid, spans.get(key)) {
                self.invalid(
                    span,
                    format!("`{key}` needs a validation split, and mnist(...) has none"),
                    "nothing to validate on",
                    "hold one out with e.g. `valid = 0.1;`",
                );
                ok = false;
            }
        }
        ok
    }

    fn invalid(&mut self, span: Span, message: String, label: &str, help: &str) {
        self.errors.push(SemaError::InvalidValue {
            message,
            span: span.into(),
            label: label.into(),
            help: Some(help.into()),
        });
    }
}
