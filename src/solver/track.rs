//! The bookkeeping every solver shares.
//!
//! Owns the evaluation of the map (shape and dtype checks), per-sample
//! residuals, the per-sample best iterate, the residual trace, convergence
//! and blow-up protection. Guarantees: the best iterate of a sample only ever
//! takes an iterate whose `f(z)` was finite, so it never holds NaN/Inf when
//! `z0` did not; `z0` is checked finite on entry.

use candle_core::{DType, Device, Tensor};

use super::stats::{Protection, SolveStats};
use super::{Control, Map, Solution, SolverError, Stop, BLOWUP_FACTOR, REL_EPS};

/// What the solver should do after an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Continue,
    /// Every sample has met `tol` at some iteration.
    Converged,
    /// Protection fired.
    Stopped,
}

/// Per-sample residual measurements of one evaluation.
pub(crate) struct Measured {
    /// The residual in the solve's stop mode.
    pub res: Vec<f64>,
    /// `f(z)` of the sample was finite.
    pub finite: Vec<bool>,
}

pub(crate) struct Tracker {
    name: &'static str,
    ctl: Control,
    batch: usize,
    dtype: DType,
    device: Device,
    best_z: Tensor,
    best_res: Vec<f64>,
    best_abs: Vec<f64>,
    best_iter: Vec<Option<usize>>,
    /// Blow-up limits, set by the first evaluation.
    limits: Option<Vec<f64>>,
    trace: Vec<Vec<f64>>,
    last_abs: Vec<f64>,
    converged_at: Vec<Option<usize>>,
    protection: Option<Protection>,
}

impl Tracker {
    /// Check `z0` (`[B, N]`, float, finite) and start tracking.
    pub fn new(name: &'static str, ctl: &Control, z0: &Tensor) -> Result<Tracker, SolverError> {
        super::check_control(ctl)?;
        let batch = match z0.dims() {
            [b, _] => *b,
            other => return Err(SolverError::BadStart(other.to_vec())),
        };
        let dtype = z0.dtype();
        if !dtype.is_float() {
            return Err(SolverError::BadDType(dtype));
        }
        let nan_check = finite_probe(z0)?
            .sum_keepdim(1)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        if let Some(sample) = nan_check.iter().position(|v| *v != 0.0) {
            return Err(SolverError::NonFiniteStart { sample });
        }
        Ok(Tracker {
            name,
            ctl: *ctl,
            batch,
            dtype,
            device: z0.device().clone(),
            best_z: z0.clone(),
            best_res: vec![f64::INFINITY; batch],
            best_abs: vec![f64::INFINITY; batch],
            best_iter: vec![None; batch],
            limits: None,
            trace: Vec::new(),
            last_abs: vec![f64::NAN; batch],
            converged_at: vec![None; batch],
            protection: None,
        })
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Evaluations left before `max_iter` (or any other `budget`).
    pub fn has_budget(&self, budget: usize) -> bool {
        self.trace.len() < budget
    }

    /// Evaluate `f(z)`, check its shape, record the residuals of `z`.
    pub fn eval<E>(&mut self, f: &mut Map<'_, E>, z: &Tensor) -> Result<(Tensor, Step), E>
    where
        E: From<SolverError> + From<candle_core::Error>,
    {
        let fz = f(z)?;
        if fz.dims() != z.dims() {
            return Err(SolverError::MapShape {
                expected: z.dims().to_vec(),
                got: fz.dims().to_vec(),
            }
            .into());
        }
        if fz.dtype() != self.dtype {
            return Err(SolverError::MapDType {
                expected: self.dtype,
                got: fz.dtype(),
            }
            .into());
        }
        let step = self.observe(z, &fz)?;
        Ok((fz, step))
    }

    /// Per-sample residual measurements of `z` given `fz = f(z)`.
    pub fn measure(&self, z: &Tensor, fz: &Tensor) -> candle_core::Result<(Measured, Vec<f64>)> {
        // Per sample: squared distance, squared norm of f(z), 0 when finite.
        let parts: Vec<[f64; 3]> = match super::host::residual_sums(z, fz) {
            Some(rows) => rows,
            None => Tensor::cat(
                &[
                    (fz - z)?.sqr()?.sum_keepdim(1)?,
                    fz.sqr()?.sum_keepdim(1)?,
                    finite_probe(fz)?.sum_keepdim(1)?,
                ],
                1,
            )?
            .to_dtype(DType::F64)?
            .to_vec2::<f64>()?
            .iter()
            .map(|r| [r[0], r[1], r[2]])
            .collect(),
        };
        let mut res = Vec::with_capacity(self.batch);
        let mut abs = Vec::with_capacity(self.batch);
        let mut finite = Vec::with_capacity(self.batch);
        for row in &parts {
            let a = row[0].sqrt();
            let r = match self.ctl.stop {
                Stop::Abs => a,
                Stop::Rel => a / (row[1].sqrt() + REL_EPS),
            };
            abs.push(a);
            res.push(r);
            finite.push(row[2] == 0.0);
        }
        Ok((Measured { res, finite }, abs))
    }

    fn observe(&mut self, z: &Tensor, fz: &Tensor) -> candle_core::Result<Step> {
        let (m, abs) = self.measure(z, fz)?;
        let iteration = self.trace.len() + 1;

        // Best iterate per sample (finite evaluations only).
        let improved: Vec<bool> = (0..self.batch)
            .map(|b| m.finite[b] && m.res[b].is_finite() && m.res[b] < self.best_res[b])
            .collect();
        if improved.iter().all(|i| *i) {
            self.best_z = z.clone();
        } else if improved.iter().any(|i| *i) {
            self.best_z = select(&improved, z, &self.best_z)?;
        }
        for b in 0..self.batch {
            if improved[b] {
                self.best_res[b] = m.res[b];
                self.best_abs[b] = abs[b];
                self.best_iter[b] = Some(iteration);
            }
            if self.converged_at[b].is_none() && m.finite[b] && m.res[b] <= self.ctl.tol {
                self.converged_at[b] = Some(iteration);
            }
        }

        // Protection.
        if self.limits.is_none() {
            let top = abs
                .iter()
                .copied()
                .filter(|a| a.is_finite())
                .fold(0.0f64, f64::max);
            let floor = 1e-3 * top;
            self.limits = Some(abs.iter().map(|a| BLOWUP_FACTOR * a.max(floor)).collect());
        }
        if let Some(sample) = m.finite.iter().position(|ok| !ok) {
            self.protection = Some(Protection::NonFinite { iteration, sample });
        } else if let Some(limits) = &self.limits {
            if let Some(sample) = (0..self.batch).find(|&b| abs[b].is_nan() || abs[b] > limits[b]) {
                self.protection = Some(Protection::BlowUp {
                    iteration,
                    sample,
                    residual: abs[sample],
                    limit: limits[sample],
                });
            }
        }
        self.trace.push(m.res);
        self.last_abs = abs;
        if self.protection.is_some() {
            Ok(Step::Stopped)
        } else if self.converged_at.iter().all(|c| c.is_some()) {
            Ok(Step::Converged)
        } else {
            Ok(Step::Continue)
        }
    }

    /// The solution: per-sample best iterates.
    pub fn finish_best(self) -> Solution {
        let residual = (0..self.batch)
            .map(|b| unmeasured(self.best_res[b], self.trace.is_empty()))
            .collect();
        let abs = (0..self.batch)
            .map(|b| unmeasured(self.best_abs[b], self.trace.is_empty()))
            .collect();
        let z = self.best_z.clone();
        let best_iter = self.best_iter.clone();
        self.finish(z, residual, abs, best_iter)
    }

    /// The solution for `unroll`: the last iterate `last` unless protection
    /// fired (then the best, as for every solver).
    pub fn finish_last(self, last: Tensor) -> Solution {
        if self.protection.is_some() {
            return self.finish_best();
        }
        let (residual, abs) = match self.trace.last() {
            Some(row) => (row.clone(), self.last_abs.clone()),
            None => (vec![f64::NAN; self.batch], vec![f64::NAN; self.batch]),
        };
        let best_iter = vec![None; self.batch];
        self.finish(last, residual, abs, best_iter)
    }

    fn finish(
        self,
        z: Tensor,
        residual: Vec<f64>,
        abs_residual: Vec<f64>,
        best_iteration: Vec<Option<usize>>,
    ) -> Solution {
        let sample_converged: Vec<bool> = residual.iter().map(|r| *r <= self.ctl.tol).collect();
        let stats = SolveStats {
            solver: self.name,
            stop: self.ctl.stop,
            tol: self.ctl.tol,
            iterations: self.trace.len(),
            converged: sample_converged.iter().all(|c| *c),
            sample_converged,
            residual,
            abs_residual,
            trace: self.trace,
            converged_at: self.converged_at,
            best_iteration,
            stopped_by_protection: self.protection,
        };
        Solution { z, stats }
    }
}

fn unmeasured(x: f64, none: bool) -> f64 {
    if none {
        f64::NAN
    } else {
        x
    }
}

/// Per sample (rows of `[B, N]` tensors): `mask[b] ? a[b] : b[b]`.
pub(crate) fn select(mask: &[bool], a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let m: Vec<u8> = mask.iter().map(|x| u8::from(*x)).collect();
    let m = Tensor::from_vec(m, (mask.len(), 1), a.device())?.broadcast_as(a.shape())?;
    m.where_cond(a, b)
}

/// A `[B, 1]` column of per-sample scalars in `dtype` on `device`.
pub(crate) fn column(values: &[f64], dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values.to_vec(), (values.len(), 1), device)?.to_dtype(dtype)
}

/// `x - x`: 0 exactly where `x` is finite, NaN where it is NaN or infinite.
fn finite_probe(x: &Tensor) -> candle_core::Result<Tensor> {
    x.sub(x)
}
