//! The failed-solve safeguard: which updates the trainer skips.
//!
//! Owns [`SolveGuard`]. An implicit (or phantom, or JFB) gradient assumes
//! the forward solve ended at a fixed point; an update computed where a
//! solve failed is not the gradient of anything, and one such update can
//! wreck a run. Guarantees:
//! - A step is judged by its *difficulty*: the worst per-sample residual of
//!   its forward solves, in units of each solve's `tol`. Adjoint solves and
//!   solves whose backward is `unrolled` (exact whether or not they
//!   converged) are not judged.
//! - A step fails when blow-up protection stopped one of its forward
//!   solves, or an adjoint solve diverged for every sample (the trainer's
//!   runner returns such a solve's best iterates instead of stopping the
//!   run; see `SolverRunner::with_lenient_adjoint`), or
//!   when its difficulty exceeds [`FAILED_SOLVE_FACTOR`] times the larger of
//!   1 (the tolerance itself) and the median difficulty of the last
//!   [`HISTORY`] steps. So a model that meets `tol` is held to `10 x tol`,
//!   while a model whose budget never reaches `tol` (an MDEQ with
//!   `max_iter = 12`) is held to ten times its usual residual: its updates
//!   are applied and only a solve far worse than usual is skipped.
//! - With no history yet (the first step of a run) only protection fails a
//!   step: there is nothing to call "usual".
//! - The history is part of the training state ([`SolveGuard::encode`]), so
//!   a resumed run skips exactly the steps the uninterrupted run skips.
//! - A guard that skips most updates freezes training. [`StallWatch`] keeps
//!   the last [`STALL_WINDOW`] steps; once [`STALL_SKIPS`] of them were
//!   skipped, the trainer warns, saying what to change (`max_iter`,
//!   `jacobian_reg`, weight normalization, a smaller learning rate), and
//!   stops skipping for the rest of the run. The window starts empty when a
//!   run starts or resumes.

use std::collections::VecDeque;

use crate::deq::SolveRecord;

use super::solve_report::SolveReport;

/// A step fails when its difficulty exceeds this many times the usual.
pub const FAILED_SOLVE_FACTOR: f64 = 10.0;

/// The number of recent steps whose median difficulty is "usual".
pub const HISTORY: usize = 50;

/// The recent difficulties and the rule above.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SolveGuard {
    recent: VecDeque<f64>,
}

/// What the guard decided for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub failed: bool,
    /// The step's worst forward residual over its `tol`, when it had a
    /// judged solve.
    pub difficulty: Option<f64>,
    /// The difficulty above which the step would fail.
    pub limit: f64,
}

impl SolveGuard {
    pub fn new() -> SolveGuard {
        SolveGuard::default()
    }

    /// Judge one step's solve records and remember its difficulty.
    pub fn judge(&mut self, records: &[SolveRecord]) -> Verdict {
        let judged: Vec<&SolveRecord> = records
            .iter()
            .filter(|r| !r.backward && r.gradient_assumes_fixed_point)
            .collect();
        let protected = judged
            .iter()
            .any(|r| r.stats.stopped_by_protection.is_some())
            || records
                .iter()
                .any(|r| r.backward && r.gradient_assumes_fixed_point && r.diverged);
        let difficulty = judged
            .iter()
            .map(|r| {
                let worst = r.stats.residual.iter().cloned().fold(0.0, |a: f64, b| {
                    if b.is_finite() {
                        a.max(b)
                    } else {
                        f64::INFINITY
                    }
                });
                worst / r.stats.tol.max(f64::MIN_POSITIVE)
            })
            .reduce(f64::max);
        let limit = match self.usual() {
            Some(usual) => FAILED_SOLVE_FACTOR * usual.max(1.0),
            None => f64::INFINITY,
        };
        // NaN (an unmeasured residual) fails too.
        let failed = protected || difficulty.is_some_and(|d| d.is_nan() || d > limit);
        if let Some(d) = difficulty.filter(|d| d.is_finite()) {
            self.recent.push_back(d);
            while self.recent.len() > HISTORY {
                self.recent.pop_front();
            }
        }
        Verdict {
            failed,
            difficulty,
            limit,
        }
    }

    /// The median recent difficulty, if any step has been judged.
    pub fn usual(&self) -> Option<f64> {
        if self.recent.is_empty() {
            return None;
        }
        let mut v: Vec<f64> = self.recent.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    /// The history as text, for the training state.
    pub fn encode(&self) -> String {
        let parts: Vec<String> = self.recent.iter().map(|d| d.to_string()).collect();
        parts.join(",")
    }

    /// The history back from [`SolveGuard::encode`]'s text.
    pub fn decode(text: &str) -> Result<SolveGuard, String> {
        let mut recent = VecDeque::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let d: f64 = part
                .parse()
                .map_err(|_| format!("expected a number in the solve history, found `{part}`"))?;
            recent.push_back(d);
        }
        Ok(SolveGuard { recent })
    }
}

/// The number of recent steps the stall rule looks at.
pub const STALL_WINDOW: usize = 20;

/// A run stalls when this many of the last [`STALL_WINDOW`] updates were
/// skipped (half of them).
pub const STALL_SKIPS: usize = 10;

/// Which of the recent steps were skipped, for the stall rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StallWatch {
    /// `(step, skipped)`, oldest first.
    recent: VecDeque<(u64, bool)>,
}

/// Training has stalled: most recent updates were skipped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stall {
    pub skipped: usize,
    pub window: usize,
    /// The first and last step of the window.
    pub steps: (u64, u64),
}

impl StallWatch {
    pub fn new() -> StallWatch {
        StallWatch::default()
    }

    /// Remember whether `step`'s update was skipped; `Some` once
    /// [`STALL_SKIPS`] of the last [`STALL_WINDOW`] steps were.
    pub fn record(&mut self, step: u64, skipped: bool) -> Option<Stall> {
        self.recent.push_back((step, skipped));
        while self.recent.len() > STALL_WINDOW {
            self.recent.pop_front();
        }
        let count = self.recent.iter().filter(|(_, s)| *s).count();
        let first = self.recent.front().map_or(step, |(s, _)| *s);
        (count >= STALL_SKIPS).then_some(Stall {
            skipped: count,
            window: self.recent.len(),
            steps: (first, step),
        })
    }
}

/// The warning of a run whose updates the guard mostly skipped, naming the
/// equilibria whose solves failed in the last step; from then on the run
/// applies every update (a guard that skips most updates freezes training).
pub fn stall_warning(stall: Stall, last_step: &SolveReport) -> String {
    let failing: Vec<String> = last_step
        .equilibria()
        .filter(|(_, s)| s.fwd.unconverged > 0 || s.fwd.protected > 0 || s.bwd.protected > 0)
        .map(|(id, s)| format!("`{}` at {}", id.states, s.place))
        .collect();
    let which = if failing.is_empty() {
        String::new()
    } else {
        format!(" (failing: {})", failing.join(", "))
    };
    format!(
        "training stalled: {} of the last {} updates (steps {} to {}) were skipped because their solves failed{which}, so the parameters had barely moved; from step {} on, updates are applied even where solves fail (as with --keep-failed-steps), and their gradients are approximate. Make the equilibrium easier to solve: raise the solver's `max_iter`, add `jacobian_reg = jacobian(weight = 1.0)` to the train block, normalize the weights of the layer inside the equilibrium, or lower the learning rate",
        stall.skipped, stall.window, stall.steps.0, stall.steps.1, stall.steps.1 + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::solver::{Protection, SolveStats, Stop};

    fn record(residuals: &[f64], tol: f64, backward: bool) -> SolveRecord {
        SolveRecord {
            span: None,
            backward,
            gradient_assumes_fixed_point: true,
            diverged: false,
            states: vec!["z".into()],
            nested: false,
            stats: SolveStats {
                solver: "anderson",
                stop: Stop::Rel,
                tol,
                iterations: 10,
                residual: residuals.to_vec(),
                abs_residual: residuals.to_vec(),
                sample_converged: residuals.iter().map(|r| *r <= tol).collect(),
                converged_at: vec![None; residuals.len()],
                converged: residuals.iter().all(|r| *r <= tol),
                best_iteration: vec![Some(10); residuals.len()],
                trace: Vec::new(),
                stopped_by_protection: None,
            },
        }
    }

    #[test]
    fn a_converging_model_is_held_to_ten_times_tol() {
        let mut g = SolveGuard::new();
        for _ in 0..20 {
            assert!(!g.judge(&[record(&[5e-5, 9e-5], 1e-4, false)]).failed);
        }
        let v = g.judge(&[record(&[5e-5, 8e-3], 1e-4, false)]);
        assert!(v.failed, "{v:?}");
        assert!((v.limit - 10.0).abs() < 1e-12);
        assert!(!g.judge(&[record(&[5e-5, 9e-4], 1e-4, false)]).failed);
    }

    #[test]
    fn a_budget_limited_model_is_held_to_its_usual_residual() {
        // An MDEQ whose 12 iterations never reach tol 1e-3: residuals about
        // 0.3 are usual and the updates apply; a 100x worse solve is skipped.
        let mut g = SolveGuard::new();
        let first = g.judge(&[record(&[0.3, 0.34], 1e-3, false)]);
        assert!(!first.failed && first.limit.is_infinite(), "{first:?}");
        for _ in 0..10 {
            assert!(!g.judge(&[record(&[0.25, 0.3], 1e-3, false)]).failed);
        }
        assert!(g.judge(&[record(&[0.25, 30.0], 1e-3, false)]).failed);
        assert!(!g.judge(&[record(&[0.2, 0.28], 1e-3, false)]).failed);
    }

    #[test]
    fn protection_fails_a_step_and_adjoint_or_unrolled_solves_are_not_judged() {
        let mut g = SolveGuard::new();
        let mut blown = record(&[0.1], 1e-4, false);
        blown.stats.stopped_by_protection = Some(Protection::NonFinite {
            iteration: 3,
            sample: 0,
        });
        assert!(g.judge(&[blown]).failed);
        for _ in 0..5 {
            g.judge(&[record(&[1e-5], 1e-4, false)]);
        }
        assert!(!g.judge(&[record(&[1.0], 1e-6, true)]).failed);
        let mut adjoint = record(&[1.0], 1e-6, true);
        adjoint.diverged = true;
        assert!(g.judge(&[adjoint]).failed);
        let mut unrolled = record(&[1.0], 1e-4, false);
        unrolled.gradient_assumes_fixed_point = false;
        assert!(!g.judge(&[unrolled]).failed);
        assert!(g.judge(&[record(&[f64::INFINITY], 1e-4, false)]).failed);
    }

    #[test]
    fn half_of_the_last_twenty_steps_skipped_is_a_stall() {
        let mut w = StallWatch::new();
        // One skip in two, for 18 steps: 9 skipped, not yet a stall.
        for step in 0..18 {
            assert_eq!(w.record(step, step % 2 == 1), None, "step {step}");
        }
        // Applied steps push old skips out of the window.
        for step in 18..40 {
            assert_eq!(w.record(step, false), None, "step {step}");
        }
        for step in 40..49 {
            assert_eq!(w.record(step, true), None, "step {step}");
        }
        let stall = w.record(49, true).expect("10 of the last 20 skipped");
        assert_eq!(
            stall,
            Stall {
                skipped: 10,
                window: 20,
                steps: (30, 49)
            }
        );
    }

    #[test]
    fn the_history_round_trips_through_text() {
        let mut g = SolveGuard::new();
        for d in [0.1, 1.0 / 3.0, 2.5e-7, 12.0] {
            g.judge(&[record(&[d * 1e-4], 1e-4, false)]);
        }
        let back = SolveGuard::decode(&g.encode()).unwrap();
        assert_eq!(back, g);
        assert_eq!(SolveGuard::decode("").unwrap(), SolveGuard::new());
        assert!(SolveGuard::decode("1.0,x").unwrap_err().contains("`x`"));
    }
}
