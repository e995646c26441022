//! A run folder as the report reads it: `metrics.jsonl` (one record per
//! step and per evaluation, see `train::metrics`) and `run.json` (the run's
//! facts, written by `deqc run` at its start and stamped after each epoch).
//!
//! Guarantees: a line of `metrics.jsonl` that is not a JSON object (e.g. a
//! last line cut short by a crash) is skipped and counted, not an error; a
//! missing `run.json` (a run from an older deqc) only leaves facts out;
//! records are sorted by step, and a step logged twice (a run resumed from
//! a mid-epoch checkpoint repeats the steps after it) keeps its last record.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::ReportError;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rec {
    pub epoch: u64,
    pub step: u64,
    pub loss: Option<f64>,
    pub accuracy: Option<f64>,
    pub perplexity: Option<f64>,
    pub fwd_iters: Option<f64>,
    pub fwd_residual: Option<f64>,
    pub bwd_iters: Option<f64>,
    pub bwd_residual: Option<f64>,
    pub lr: Option<f64>,
    /// Wall-clock seconds of the step (or of the evaluation).
    pub seconds: Option<f64>,
    pub spectral_radius: Option<f64>,
    /// The step's update was skipped because its solves failed.
    pub skipped: bool,
    /// Solves of this step where blow-up protection fired.
    pub protected: f64,
}

/// Solver tolerances of one equilibrium, from `run.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerance {
    pub place: String,
    pub forward: f64,
    pub backward: Option<f64>,
}

/// Everything the report shows about one run.
#[derive(Debug, Clone)]
pub struct Run {
    pub name: String,
    pub dir: PathBuf,
    pub train: Vec<Rec>,
    /// Evaluations, one per epoch (`test`, or `valid` when there is none).
    pub test: Vec<Rec>,
    /// `run.json`, when the run wrote one.
    pub facts: Option<Map<String, Value>>,
    /// Lines of `metrics.jsonl` that could not be read.
    pub bad_lines: usize,
}

impl Run {
    /// Read the run folder `dir`.
    pub fn load(dir: &Path) -> Result<Run, ReportError> {
        let metrics = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&metrics).map_err(|e| ReportError::Read {
            path: metrics.display().to_string(),
            reason: e.to_string(),
        })?;
        let (mut train, mut test, mut bad_lines) = (Vec::new(), Vec::new(), 0);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) else {
                bad_lines += 1;
                continue;
            };
            let rec = record(&m);
            match m.get("split").and_then(Value::as_str) {
                Some("train") => train.push(rec),
                Some("test") | Some("valid") => test.push(rec),
                _ => bad_lines += 1,
            }
        }
        let facts = match std::fs::read_to_string(dir.join("run.json")) {
            Ok(t) => match serde_json::from_str::<Value>(&t) {
                Ok(Value::Object(m)) => Some(m),
                _ => {
                    return Err(ReportError::Read {
                        path: dir.join("run.json").display().to_string(),
                        reason: "not a JSON object".into(),
                    })
                }
            },
            Err(_) => None,
        };
        let name = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
        Ok(Run {
            name,
            dir: dir.to_path_buf(),
            train: last_per_step(train),
            test: last_per_step(test),
            facts,
            bad_lines,
        })
    }

    /// A fact from `run.json`.
    pub fn fact(&self, key: &str) -> Option<&Value> {
        self.facts.as_ref().and_then(|f| f.get(key))
    }

    /// The tolerances of the run's equilibria (empty without `run.json`).
    pub fn tolerances(&self) -> Vec<Tolerance> {
        let Some(Value::Array(eqs)) = self.fact("equilibria") else {
            return Vec::new();
        };
        eqs.iter()
            .filter_map(|e| {
                Some(Tolerance {
                    place: e.get("place")?.as_str()?.to_string(),
                    forward: e.get("tol")?.as_f64()?,
                    backward: e.get("backward_tol").and_then(Value::as_f64),
                })
            })
            .collect()
    }
}

fn record(m: &Map<String, Value>) -> Rec {
    let num = |k: &str| m.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
    Rec {
        epoch: m.get("epoch").and_then(Value::as_u64).unwrap_or(0),
        step: m.get("step").and_then(Value::as_u64).unwrap_or(0),
        loss: num("loss"),
        accuracy: num("accuracy"),
        perplexity: num("perplexity"),
        fwd_iters: num("fwd_iters"),
        fwd_residual: num("fwd_residual"),
        bwd_iters: num("bwd_iters"),
        bwd_residual: num("bwd_residual"),
        lr: num("lr"),
        seconds: num("seconds"),
        spectral_radius: num("spectral_radius"),
        skipped: num("skipped_update").is_some_and(|x| x > 0.0),
        protected: protected_solves(m),
    }
}

/// Solves of the record stopped by blow-up protection: the sum of the
/// `fwd_protected` and `bwd_protected` counts of its `equilibria` entries
/// (or a flat `protected_solves`).
fn protected_solves(m: &Map<String, Value>) -> f64 {
    let flat = m
        .get("protected_solves")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let per_eq: f64 = match m.get("equilibria") {
        Some(Value::Object(eqs)) => eqs
            .values()
            .flat_map(|e| ["fwd_protected", "bwd_protected"].map(|k| e.get(k)))
            .filter_map(|v| v.and_then(Value::as_f64))
            .sum(),
        _ => 0.0,
    };
    flat + per_eq
}

/// Sorted by step; of records with the same (epoch, step), the last.
fn last_per_step(recs: Vec<Rec>) -> Vec<Rec> {
    let mut by_step: std::collections::BTreeMap<(u64, u64), Rec> = Default::default();
    for r in recs {
        by_step.insert((r.step, r.epoch), r);
    }
    by_step.into_values().collect()
}
