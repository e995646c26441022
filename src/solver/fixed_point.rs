//! Plain iteration: damped fixed-point iteration and unrolling.
//!
//! Owns `fixed_point(damping)`, `z <- (1 - damping) z + damping f(z)` with
//! early stopping and per-sample best iterates, and `unroll(steps)`,
//! exactly `steps` iterations `z <- f(z)` returning the last iterate (an
//! explicit weight-tied network), with residuals still reported.

use candle_core::Tensor;

use super::track::{Step, Tracker};
use super::{check_setting, Control, Map, Solution, Solver, SolverError};

/// `fixed_point(damping)`: `z <- (1 - damping) z + damping f(z)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixedPoint {
    /// In `(0, 1]`; 1 is plain iteration.
    pub damping: f64,
}

impl Default for FixedPoint {
    fn default() -> Self {
        FixedPoint { damping: 1.0 }
    }
}

impl Solver for FixedPoint {
    fn name(&self) -> &'static str {
        "fixed_point"
    }

    fn solve<E>(&self, ctl: &Control, f: &mut Map<'_, E>, z0: &Tensor) -> Result<Solution, E>
    where
        E: From<SolverError> + From<candle_core::Error>,
    {
        let d = self.damping;
        check_setting(d > 0.0 && d <= 1.0, || {
            format!("fixed_point damping must be in (0, 1], found {d}")
        })?;
        let mut tr = Tracker::new(self.name(), ctl, z0)?;
        let mut z = z0.clone();
        while tr.has_budget(ctl.max_iter) {
            let (fz, step) = tr.eval(f, &z)?;
            if step != Step::Continue {
                break;
            }
            z = if d == 1.0 {
                fz
            } else {
                ((&z * (1.0 - d))? + (fz * d)?)?
            };
        }
        Ok(tr.finish_best())
    }
}

/// `unroll(steps)`: exactly `steps` iterations `z <- f(z)`, no early stop;
/// returns `f^steps(z0)`. `max_iter` and `tol` only label the stats (the
/// residual of each iterate is still measured and traced). Protection still
/// stops it, returning per-sample best iterates like every solver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unroll {
    pub steps: usize,
}

impl Solver for Unroll {
    fn name(&self) -> &'static str {
        "unroll"
    }

    fn solve<E>(&self, ctl: &Control, f: &mut Map<'_, E>, z0: &Tensor) -> Result<Solution, E>
    where
        E: From<SolverError> + From<candle_core::Error>,
    {
        let mut tr = Tracker::new(self.name(), ctl, z0)?;
        let mut z = z0.clone();
        while tr.has_budget(self.steps) {
            let (fz, step) = tr.eval(f, &z)?;
            if step == Step::Stopped {
                return Ok(tr.finish_best());
            }
            z = fz;
        }
        Ok(tr.finish_last(z))
    }
}
