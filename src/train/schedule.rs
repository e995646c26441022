//! Learning-rate schedules of the `train` block.
//!
//! Owns the value of the learning rate at each optimizer step. `step` is the
//! 0-based index of the optimizer step about to be taken (over the whole
//! run), `epoch` the 0-based epoch, `total_steps` the number of optimizer
//! steps of the whole run, `lr` the optimizer's rate. Guarantees: a pure
//! function of its arguments, finite and never negative for finite
//! non-negative inputs, never a division by zero.
//!
//! Warm-up (`warmup = w`, default 0): for `step < w` the rate is
//! `lr * (step + 1) / w` (reaching `lr` at step `w - 1`); the decay then
//! runs over the remaining steps, with progress
//! `p = (step - w) / (total_steps - w)` clamped to `0..=1`:
//! - `constant`: `lr`.
//! - `cosine`: `lr * (1 + cos(pi * p)) / 2` (`lr` at step `w`, `0` at
//!   step `total_steps`).
//! - `linear`: `lr * (1 - p)`.
//! - `step(every = k, gamma = g)`: `lr * g^(epoch / k)` (integer division).
//! - `exponential(gamma = g)`: `lr * g^epoch`.
//! - `onecycle(max_lr = m)`: its warm-up (default `floor(0.3 * total_steps)`)
//!   is its rising phase, from `lr` at step 0 to `m` at step `w - 1` along a
//!   cosine; then from `m` down to `lr / 1e4` at step `total_steps - 1`,
//!   along a cosine. With `lr = m / 25` and `w = 0.3 * total_steps` this is
//!   PyTorch's `OneCycleLR` with its defaults.

use crate::sema::spec::{Decay, Schedule};

/// `onecycle` ends at the optimizer's rate divided by this (PyTorch's
/// `final_div_factor`).
pub const ONECYCLE_FINAL_DIV: f64 = 1e4;

/// A schedule applied to a base learning rate.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    pub base_lr: f64,
    pub schedule: Schedule,
}

impl LrSchedule {
    pub fn new(base_lr: f64, schedule: Schedule) -> LrSchedule {
        LrSchedule { base_lr, schedule }
    }

    /// The learning rate of optimizer step `step` (see the module docs).
    pub fn lr_at(&self, step: usize, epoch: usize, total_steps: usize) -> f64 {
        lr_at(&self.schedule, self.base_lr, step, epoch, total_steps)
    }
}

/// `from` at `p = 0` to `to` at `p = 1` along half a cosine.
fn cosine_between(from: f64, to: f64, p: f64) -> f64 {
    to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
}

/// The learning rate of `schedule` with base `lr` at optimizer step `step`.
pub fn lr_at(schedule: &Schedule, lr: f64, step: usize, epoch: usize, total_steps: usize) -> f64 {
    if let Decay::OneCycle { max_lr } = schedule.decay {
        return onecycle(lr, max_lr, schedule.warmup, step, total_steps);
    }
    let warmup = schedule.warmup.unwrap_or(0);
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total_steps.saturating_sub(warmup);
    let p = if span == 0 {
        1.0
    } else {
        ((step - warmup) as f64 / span as f64).clamp(0.0, 1.0)
    };
    let powi = |gamma: f64, k: usize| gamma.powi(k.min(i32::MAX as usize) as i32);
    match schedule.decay {
        Decay::Constant => lr,
        Decay::Cosine => cosine_between(lr, 0.0, p),
        Decay::Linear => lr * (1.0 - p),
        Decay::Step { every, gamma } => match epoch.checked_div(every) {
            Some(k) => lr * powi(gamma, k),
            None => lr,
        },
        Decay::Exponential { gamma } => lr * powi(gamma, epoch),
        Decay::OneCycle { max_lr } => onecycle(lr, max_lr, schedule.warmup, step, total_steps),
    }
}

fn onecycle(lr: f64, max_lr: f64, warmup: Option<usize>, step: usize, total: usize) -> f64 {
    let rise = warmup.unwrap_or(total * 3 / 10);
    // The peak is reached at step `rise - 1` (at step 0 when `rise <= 1`).
    let peak = rise.saturating_sub(1);
    if step < peak {
        return cosine_between(lr, max_lr, step as f64 / peak as f64);
    }
    let fall = total.saturating_sub(1).saturating_sub(peak);
    let p = if fall == 0 {
        1.0
    } else {
        ((step - peak) as f64 / fall as f64).clamp(0.0, 1.0)
    };
    cosine_between(max_lr, lr / ONECYCLE_FINAL_DIV, p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    fn sched(decay: Decay, warmup: Option<usize>) -> Schedule {
        Schedule { decay, warmup }
    }

    /// Every step of a run of `total` steps, `per_epoch` steps an epoch,
    /// against `expected(step, epoch)`.
    fn agrees(
        s: &Schedule,
        lr: f64,
        total: usize,
        per_epoch: usize,
        expected: impl Fn(f64, f64) -> f64,
    ) {
        for step in 0..total + 3 {
            let epoch = step / per_epoch;
            let got = lr_at(s, lr, step, epoch, total);
            let want = expected(step as f64, epoch as f64);
            assert!(
                close(got, want),
                "{s} at step {step}: {got} != closed form {want}"
            );
            assert!(got.is_finite() && got >= 0.0);
        }
    }

    #[test]
    fn constant_with_and_without_warmup() {
        agrees(&Schedule::constant(), 0.1, 50, 10, |_, _| 0.1);
        let s = sched(Decay::Constant, Some(8));
        agrees(&s, 0.1, 50, 10, |t, _| {
            if t < 8.0 {
                0.1 * (t + 1.0) / 8.0
            } else {
                0.1
            }
        });
        assert!(close(lr_at(&s, 0.1, 0, 0, 50), 0.0125));
        assert!(close(lr_at(&s, 0.1, 7, 0, 50), 0.1));
    }

    #[test]
    fn cosine_with_warmup() {
        let s = sched(Decay::Cosine, Some(10));
        let total = 110;
        agrees(&s, 1.0, total, 20, |t, _| {
            if t < 10.0 {
                (t + 1.0) / 10.0
            } else {
                let p = ((t - 10.0) / 100.0).min(1.0);
                0.5 * (1.0 + (PI * p).cos())
            }
        });
        // Reference points.
        assert!(close(lr_at(&s, 1.0, 60, 0, total), 0.5));
        assert!(close(lr_at(&s, 1.0, 110, 0, total), 0.0));
        // No warmup: starts at the base rate.
        let s = sched(Decay::Cosine, None);
        assert!(close(lr_at(&s, 2.0, 0, 0, 4), 2.0));
        assert!(close(lr_at(&s, 2.0, 2, 0, 4), 1.0));
        // Warmup as long as the run: no panic, no NaN.
        let s = sched(Decay::Cosine, Some(5));
        assert!(close(lr_at(&s, 1.0, 5, 0, 5), 0.0));
        assert!(close(lr_at(&s, 1.0, 0, 0, 0), 0.2));
    }

    #[test]
    fn linear_decays_to_zero_after_warmup() {
        let s = sched(Decay::Linear, Some(4));
        agrees(&s, 0.3, 44, 11, |t, _| {
            if t < 4.0 {
                0.3 * (t + 1.0) / 4.0
            } else {
                0.3 * (1.0 - ((t - 4.0) / 40.0).min(1.0))
            }
        });
        assert!(close(lr_at(&s, 0.3, 24, 0, 44), 0.15));
        let s = sched(Decay::Linear, None);
        agrees(&s, 1.0, 10, 5, |t, _| 1.0 - (t / 10.0).min(1.0));
    }

    #[test]
    fn step_and_exponential_decay_by_epoch() {
        let s = sched(
            Decay::Step {
                every: 2,
                gamma: 0.5,
            },
            None,
        );
        agrees(&s, 1.0, 60, 10, |_, e| 0.5f64.powf((e / 2.0).floor()));
        assert!(close(lr_at(&s, 1.0, 0, 5, 0), 0.25));
        let never = sched(
            Decay::Step {
                every: 0,
                gamma: 0.5,
            },
            None,
        );
        assert!(close(lr_at(&never, 1.0, 0, 9, 0), 1.0));
        // Warm-up first, then the epoch's decayed rate.
        let s = sched(
            Decay::Step {
                every: 1,
                gamma: 0.5,
            },
            Some(15),
        );
        agrees(&s, 1.0, 40, 10, |t, e| {
            if t < 15.0 {
                (t + 1.0) / 15.0
            } else {
                0.5f64.powf(e)
            }
        });
        let s = sched(Decay::Exponential { gamma: 0.9 }, None);
        agrees(&s, 0.2, 50, 7, |_, e| 0.2 * 0.9f64.powf(e));
        let s = sched(Decay::Exponential { gamma: 0.9 }, Some(3));
        agrees(&s, 0.2, 50, 7, |t, e| {
            if t < 3.0 {
                0.2 * (t + 1.0) / 3.0
            } else {
                0.2 * 0.9f64.powf(e)
            }
        });
    }

    /// PyTorch's `OneCycleLR(max_lr, total_steps, pct_start = 0.3,
    /// anneal_strategy = "cos", div_factor = 25, final_div_factor = 1e4,
    /// three_phase = False)`, written out from its documented formula.
    fn torch_onecycle(max_lr: f64, total: f64, step: f64) -> f64 {
        let initial = max_lr / 25.0;
        let min = initial / 1e4;
        let end1 = 0.3 * total - 1.0;
        let end2 = total - 1.0;
        let anneal =
            |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * (1.0 + (PI * pct).cos());
        if step <= end1 {
            anneal(initial, max_lr, step / end1)
        } else {
            anneal(max_lr, min, (step - end1) / (end2 - end1))
        }
    }

    #[test]
    fn onecycle_is_pytorchs_one_cycle() {
        let max_lr = 0.01;
        let s = sched(Decay::OneCycle { max_lr }, None);
        let total = 100;
        for step in 0..total {
            let got = lr_at(&s, max_lr / 25.0, step, 0, total);
            let want = torch_onecycle(max_lr, total as f64, step as f64);
            assert!(close(got, want), "step {step}: {got} != {want}");
        }
        assert!(close(lr_at(&s, 4e-4, 0, 0, total), 4e-4));
        assert!(close(lr_at(&s, 4e-4, 29, 0, total), max_lr));
        assert!(close(lr_at(&s, 4e-4, 99, 0, total), 4e-8));
        // Past the end: stays at the final rate.
        assert!(close(lr_at(&s, 4e-4, 500, 0, total), 4e-8));
        // An explicit warm-up sets the rising phase.
        let s = sched(Decay::OneCycle { max_lr: 1.0 }, Some(11));
        assert!(close(lr_at(&s, 0.1, 5, 0, 31), 0.55));
        assert!(close(lr_at(&s, 0.1, 10, 0, 31), 1.0));
        assert!(close(lr_at(&s, 0.1, 20, 0, 31), 0.5 * (1.0 + 1e-5)));
        // Degenerate runs: no panic, no NaN.
        for (w, total) in [
            (Some(0), 0),
            (Some(1), 1),
            (None, 1),
            (None, 0),
            (Some(9), 3),
        ] {
            let s = sched(Decay::OneCycle { max_lr: 1.0 }, w);
            for step in 0..5 {
                let lr = lr_at(&s, 0.1, step, 0, total);
                assert!(lr.is_finite() && lr > 0.0, "{w:?} {total} {step}: {lr}");
            }
        }
    }
}
