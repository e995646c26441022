//! Statistics of one solve: residuals, trace, convergence, protection.
//!
//! Owns [`SolveStats`] and [`Protection`] and their one-line `Display`
//! summaries. Guarantees: every per-sample vector has exactly one entry per
//! sample, and `trace` has exactly one row per evaluation of the map.

use std::fmt;

use super::Stop;

/// Why protection stopped a solve.
#[derive(Debug, Clone, PartialEq)]
pub enum Protection {
    /// `f(z)` had a NaN or infinite value for `sample` at evaluation
    /// `iteration` (1-based).
    NonFinite { iteration: usize, sample: usize },
    /// The absolute residual of `sample` at evaluation `iteration` passed
    /// `limit` ([`super::BLOWUP_FACTOR`] times its floored initial residual),
    /// or its norm overflowed.
    BlowUp {
        iteration: usize,
        sample: usize,
        residual: f64,
        limit: f64,
    },
}

impl Protection {
    pub fn iteration(&self) -> usize {
        match self {
            Protection::NonFinite { iteration, .. } | Protection::BlowUp { iteration, .. } => {
                *iteration
            }
        }
    }

    pub fn sample(&self) -> usize {
        match self {
            Protection::NonFinite { sample, .. } | Protection::BlowUp { sample, .. } => *sample,
        }
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::NonFinite { iteration, sample } => write!(
                f,
                "NaN/Inf in f(z) at iteration {iteration} (sample {sample})"
            ),
            Protection::BlowUp {
                iteration,
                sample,
                residual,
                limit,
            } => write!(
                f,
                "residual blew up at iteration {iteration} (sample {sample}: {residual:.3e} > {limit:.3e})"
            ),
        }
    }
}

/// How a solve went.
///
/// Residuals are in the solve's `stop` mode (absolute or relative) unless
/// named `abs_`. A residual is `NaN` when it was never measured (no
/// evaluation at all) and `inf` when every evaluation of that sample was
/// non-finite.
#[derive(Debug, Clone, PartialEq)]
pub struct SolveStats {
    /// The solver's name in the language.
    pub solver: &'static str,
    pub stop: Stop,
    pub tol: f64,
    /// Evaluations of the map.
    pub iterations: usize,
    /// Per sample: the residual of the returned iterate. For `unroll`, which
    /// returns `z_n = f(z_{n-1})` unmeasured, the residual of `z_{n-1}`
    /// (`||z_n - z_{n-1}||`, or its relative form).
    pub residual: Vec<f64>,
    /// Per sample: the absolute residual belonging to `residual`.
    pub abs_residual: Vec<f64>,
    /// `trace[k][b]`: the residual of sample `b`'s iterate evaluated at
    /// iteration `k + 1` (every iterate, not only the best).
    pub trace: Vec<Vec<f64>>,
    /// Every sample converged (`residual <= tol`).
    pub converged: bool,
    /// Per sample: `residual <= tol`.
    pub sample_converged: Vec<bool>,
    /// Per sample: the first iteration (1-based) whose residual met `tol`.
    pub converged_at: Vec<Option<usize>>,
    /// Per sample: the iteration (1-based) at which the returned iterate was
    /// evaluated; `None` when it is `z0` unmeasured (or, for `unroll`, the
    /// unmeasured last iterate).
    pub best_iteration: Vec<Option<usize>>,
    /// `Some` when protection stopped the solve early.
    pub stopped_by_protection: Option<Protection>,
}

impl SolveStats {
    pub fn batch(&self) -> usize {
        self.residual.len()
    }

    /// The largest per-sample residual (`NaN` if any is unmeasured).
    pub fn max_residual(&self) -> f64 {
        fold_max(&self.residual)
    }

    pub fn mean_residual(&self) -> f64 {
        mean(&self.residual)
    }

    /// Per iteration, the largest residual over the batch.
    pub fn max_trace(&self) -> Vec<f64> {
        self.trace.iter().map(|row| fold_max(row)).collect()
    }

    /// Per iteration, the mean residual over the batch.
    pub fn mean_trace(&self) -> Vec<f64> {
        self.trace.iter().map(|row| mean(row)).collect()
    }

    pub fn converged_count(&self) -> usize {
        self.sample_converged.iter().filter(|c| **c).count()
    }
}

fn fold_max(xs: &[f64]) -> f64 {
    xs.iter().fold(f64::NEG_INFINITY, |a, &x| {
        if x.is_nan() || a.is_nan() {
            f64::NAN
        } else {
            a.max(x)
        }
    })
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

impl fmt::Display for SolveStats {
    /// `anderson: 12 iterations, converged 3/3, residual max 3.1e-5 mean
    /// 1.2e-5 (rel, tol 1e-4)` plus `, stopped: ...` after protection.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let stop = match self.stop {
            Stop::Rel => "rel",
            Stop::Abs => "abs",
        };
        write!(
            f,
            "{}: {} iteration{}, converged {}/{}, residual max {:.3e} mean {:.3e} ({stop}, tol {:e})",
            self.solver,
            self.iterations,
            if self.iterations == 1 { "" } else { "s" },
            self.converged_count(),
            self.batch(),
            self.max_residual(),
            self.mean_residual(),
            self.tol,
        )?;
        if let Some(p) = &self.stopped_by_protection {
            write!(f, ", stopped: {p}")?;
        }
        Ok(())
    }
}
