//! Training metrics: the `metrics.jsonl` log, running means, accuracy.
//!
//! Owns the record written per step and per evaluation to
//! `OUT/metrics.jsonl`: one JSON object a line with `epoch`, `step`, `split`
//! (`"train"`, `"valid"`, `"test"`), `loss`, `accuracy` and/or `perplexity`
//! (when known), `fwd_iters`, `fwd_residual`, `bwd_iters`, `bwd_residual`
//! (means per solve over the top-level equilibria), `seconds`, `lr` (when
//! known), any extra numeric fields, and `equilibria`: one object per
//! equilibrium, keyed `state@line` (see `super::solve_report` and the
//! README's metrics section). Guarantees: the file is opened for
//! appending (a resumed run continues it), and every line is flushed as it
//! is written; non-finite numbers are written as `null` (JSON has no NaN).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, D};
use serde_json::{Map, Value};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub epoch: u64,
    pub step: u64,
    pub split: String,
    pub loss: f64,
    pub accuracy: Option<f64>,
    pub perplexity: Option<f64>,
    /// Mean forward solver iterations per batch.
    pub fwd_iters: f64,
    /// Mean final forward residual per batch.
    pub fwd_residual: f64,
    /// Mean backward solver iterations per batch.
    pub bwd_iters: f64,
    /// Mean final backward (adjoint) residual per batch (worst sample).
    pub bwd_residual: f64,
    /// Wall-clock seconds of this epoch's pass over the split.
    pub seconds: f64,
    pub lr: Option<f64>,
    /// `"pretrain"` or `"deq"` on train records of a run with `pretrain`.
    pub phase: Option<&'static str>,
    /// Further named numbers, written after the fixed fields.
    pub extra: Vec<(String, f64)>,
    /// Per-equilibrium solver statistics, written last as `equilibria`
    /// when not empty.
    pub equilibria: Map<String, Value>,
}

impl Record {
    /// A record with the given identity and every number zero or absent.
    pub fn new(epoch: u64, step: u64, split: &str) -> Record {
        Record {
            epoch,
            step,
            split: split.to_string(),
            loss: 0.0,
            accuracy: None,
            perplexity: None,
            fwd_iters: 0.0,
            fwd_residual: 0.0,
            bwd_iters: 0.0,
            bwd_residual: 0.0,
            seconds: 0.0,
            lr: None,
            phase: None,
            extra: Vec::new(),
            equilibria: Map::new(),
        }
    }

    /// The record as a JSON object (fields in a fixed order).
    pub fn to_json(&self) -> Value {
        fn num(x: f64) -> Value {
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        let mut m = Map::new();
        m.insert("epoch".into(), self.epoch.into());
        m.insert("step".into(), self.step.into());
        m.insert("split".into(), self.split.clone().into());
        m.insert("loss".into(), num(self.loss));
        if let Some(a) = self.accuracy {
            m.insert("accuracy".into(), num(a));
        }
        if let Some(p) = self.perplexity {
            m.insert("perplexity".into(), num(p));
        }
        m.insert("fwd_iters".into(), num(self.fwd_iters));
        m.insert("fwd_residual".into(), num(self.fwd_residual));
        m.insert("bwd_iters".into(), num(self.bwd_iters));
        m.insert("bwd_residual".into(), num(self.bwd_residual));
        m.insert("seconds".into(), num(self.seconds));
        if let Some(lr) = self.lr {
            m.insert("lr".into(), num(lr));
        }
        if let Some(phase) = self.phase {
            m.insert("phase".into(), phase.into());
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), num(*v));
        }
        if !self.equilibria.is_empty() {
            m.insert("equilibria".into(), Value::Object(self.equilibria.clone()));
        }
        Value::Object(m)
    }
}

/// Appends records to a JSON-lines file, one flushed line each.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Open (creating) `path` for appending.
    pub fn open(path: impl AsRef<Path>) -> std::io::Result<MetricsWriter> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(MetricsWriter { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record as a line and flush it.
    pub fn write(&mut self, record: &Record) -> std::io::Result<()> {
        let mut line = record.to_json().to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()
    }
}

/// A running mean, weighted by counts (e.g. a batch's mean loss weighted by
/// its number of samples, so a last partial batch counts for what it holds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mean {
    sum: f64,
    weight: f64,
}

impl Mean {
    pub fn new() -> Mean {
        Mean::default()
    }

    /// Add `value` with weight `weight`.
    pub fn add(&mut self, value: f64, weight: f64) {
        self.sum += value * weight;
        self.weight += weight;
    }

    /// The mean so far, 0 when nothing was added.
    pub fn mean(&self) -> f64 {
        if self.weight > 0.0 {
            self.sum / self.weight
        } else {
            0.0
        }
    }

    pub fn weight(&self) -> f64 {
        self.weight
    }
}

/// Perplexity of a mean cross-entropy (in nats per token).
pub fn perplexity(mean_loss: f64) -> f64 {
    mean_loss.exp()
}

/// How many predictions are right: the argmax of `logits` over its last
/// dimension (`[B, C]` or `[B, T, V]`) against i64 `targets` (`[B]` or
/// `[B, T]`). Returns `(correct, total)`.
pub fn count_correct(logits: &Tensor, targets: &Tensor) -> candle_core::Result<(usize, usize)> {
    let lead = &logits.dims()[..logits.rank().saturating_sub(1)];
    if logits.rank() < 2 || lead != targets.dims() {
        return Err(candle_core::Error::Msg(format!(
            "accuracy: logits {:?} and targets {:?} do not fit ([B, C] with [B], or [B, T, V] with [B, T])",
            logits.dims(),
            targets.dims()
        )));
    }
    let pred = logits.argmax(D::Minus1)?.to_dtype(DType::I64)?;
    let correct = pred
        .eq(&targets.to_dtype(DType::I64)?)?
        .to_dtype(DType::F64)?
        .sum_all()?
        .to_scalar::<f64>()?;
    Ok((correct as usize, targets.elem_count()))
}

/// The fraction of right predictions (see [`count_correct`]); 0 when empty.
pub fn accuracy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<f64> {
    let (c, n) = count_correct(logits, targets)?;
    Ok(if n == 0 { 0.0 } else { c as f64 / n as f64 })
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn running_mean_weighs_by_count() {
        let mut m = Mean::new();
        assert_eq!(m.mean(), 0.0);
        m.add(1.0, 3.0);
        m.add(3.0, 1.0);
        assert!((m.mean() - 1.5).abs() < 1e-12);
        assert_eq!(m.weight(), 4.0);
        assert!((perplexity(0.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn accuracy_of_logits() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0.1f32, 0.9], [0.8, 0.2], [0.3, 0.7]], &dev).unwrap();
        let y = Tensor::new(&[1i64, 1, 1], &dev).unwrap();
        assert_eq!(count_correct(&logits, &y).unwrap(), (2, 3));
        let logits3 = logits.reshape((1, 3, 2)).unwrap();
        let y3 = y.reshape((1, 3)).unwrap();
        assert!((accuracy(&logits3, &y3).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!(accuracy(&logits, &y3).is_err());
    }

    #[test]
    fn writer_appends_flushed_lines() {
        let dir = std::env::temp_dir().join(format!("deqc-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut r = Record::new(0, 10, "train");
        r.loss = 0.5;
        r.accuracy = Some(0.75);
        r.fwd_iters = 12.0;
        r.fwd_residual = f64::NAN;
        r.extra.push(("jac".into(), 2.0));
        MetricsWriter::open(&path).unwrap().write(&r).unwrap();
        let mut t = Record::new(0, 10, "test");
        t.perplexity = Some(3.0);
        MetricsWriter::open(&path).unwrap().write(&t).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["split"], "train");
        assert_eq!(lines[0]["accuracy"], 0.75);
        assert_eq!(lines[0]["fwd_residual"], Value::Null);
        assert_eq!(lines[0]["jac"], 2.0);
        for key in [
            "epoch",
            "step",
            "loss",
            "fwd_iters",
            "bwd_iters",
            "bwd_residual",
            "seconds",
        ] {
            assert!(lines[1].get(key).is_some(), "{key}");
        }
        assert_eq!(lines[1]["perplexity"], 3.0);
        assert!(lines[1].get("accuracy").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
