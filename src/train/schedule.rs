//! Learning-rate schedules of the `train` block.
//!
//! Owns the value of the learning rate at each optimizer step. `step` is the
//! 0-based index of the optimizer step about to be taken (over the whole
//! run), `epoch` the 0-based epoch, `total_steps` the number of optimizer
//! steps of the whole run. Guarantees: a pure function of its arguments,
//! finite and never negative for finite non-negative inputs.
//! - `constant`: `lr`.
//! - `cosine(warmup = w)`: linear warmup `lr * (step + 1) / w` for
//!   `step < w` (reaching `lr` at step `w - 1`), then cosine decay
//!   `lr * (1 + cos(pi * p)) / 2` with `p = (step - w) / (total_steps - w)`
//!   clamped to `0..=1`: `lr` at step `w`, `0` at step `total_steps`.
//! - `step(every = k, gamma = g)`: `lr * g^(epoch / k)` (integer division;
//!   `k = 0` means never decay).

use crate::sema::spec::Schedule;

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

/// The learning rate of `schedule` with base `lr` at optimizer step `step`.
pub fn lr_at(schedule: &Schedule, lr: f64, step: usize, epoch: usize, total_steps: usize) -> f64 {
    match *schedule {
        Schedule::Constant => lr,
        Schedule::Cosine { warmup } => {
            if step < warmup {
                return lr * (step + 1) as f64 / warmup as f64;
            }
            let span = total_steps.saturating_sub(warmup);
            let p = if span == 0 {
                1.0
            } else {
                ((step - warmup) as f64 / span as f64).clamp(0.0, 1.0)
            };
            lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
        Schedule::Step { every, gamma } => match epoch.checked_div(every) {
            Some(k) => lr * gamma.powi(k.min(i32::MAX as usize) as i32),
            None => lr,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn constant_is_constant() {
        let s = LrSchedule::new(0.1, Schedule::Constant);
        assert_eq!(s.lr_at(0, 0, 100), 0.1);
        assert_eq!(s.lr_at(99, 7, 100), 0.1);
    }

    #[test]
    fn cosine_with_warmup() {
        let s = LrSchedule::new(1.0, Schedule::Cosine { warmup: 10 });
        let total = 110;
        assert!(close(s.lr_at(0, 0, total), 0.1));
        assert!(close(s.lr_at(4, 0, total), 0.5));
        assert!(close(s.lr_at(9, 0, total), 1.0));
        assert!(close(s.lr_at(10, 0, total), 1.0));
        assert!(close(s.lr_at(60, 0, total), 0.5));
        assert!(close(
            s.lr_at(35, 0, total),
            0.5 * (1.0 + (0.25 * std::f64::consts::PI).cos())
        ));
        assert!(close(s.lr_at(110, 0, total), 0.0));
        assert!(close(s.lr_at(500, 0, total), 0.0));
        // No warmup: starts at the base rate.
        let s = LrSchedule::new(2.0, Schedule::Cosine { warmup: 0 });
        assert!(close(s.lr_at(0, 0, 4), 2.0));
        assert!(close(s.lr_at(2, 0, 4), 1.0));
        // Warmup as long as the run: no panic, no NaN.
        let s = LrSchedule::new(1.0, Schedule::Cosine { warmup: 5 });
        assert!(close(s.lr_at(5, 0, 5), 0.0));
        assert!(close(s.lr_at(0, 0, 0), 0.2));
    }

    #[test]
    fn step_decay_by_epoch() {
        let s = LrSchedule::new(
            1.0,
            Schedule::Step {
                every: 2,
                gamma: 0.5,
            },
        );
        assert!(close(s.lr_at(1000, 0, 0), 1.0));
        assert!(close(s.lr_at(0, 1, 0), 1.0));
        assert!(close(s.lr_at(0, 2, 0), 0.5));
        assert!(close(s.lr_at(0, 5, 0), 0.25));
        let never = LrSchedule::new(
            1.0,
            Schedule::Step {
                every: 0,
                gamma: 0.5,
            },
        );
        assert!(close(never.lr_at(0, 9, 0), 1.0));
    }
}
