//! What a checkpoint holds: the model file and the training state.
//!
//! Owns writing both files of a checkpoint and the training state's free
//! entries (the failed-solve guard's history, and through
//! [`Validation::encode`] the best validation figure and an early stop).
//! Guarantees: both files carry the step, and each is written atomically,
//! so a resume can tell a torn pair.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;

use super::checkpoint::{self, TrainState};
use super::guard::SolveGuard;
use super::optim::Optim;
use super::validation::Validation;
use super::TrainError;

/// Write `model.safetensors`, then `train_state.safetensors`, each
/// atomically; both carry the step, so a resume can tell a torn pair.
pub(super) fn save_checkpoint(
    out: &Path,
    model: &str,
    params: &[(String, Tensor)],
    state: &TrainState,
) -> Result<(), TrainError> {
    let meta = BTreeMap::from([
        ("model".to_string(), model.to_string()),
        ("epoch".to_string(), state.epoch.to_string()),
        ("step".to_string(), state.step.to_string()),
    ]);
    checkpoint::save_model(out, params, &meta)?;
    checkpoint::save_train_state(out, state)?;
    Ok(())
}

/// The training-state entry holding the failed-solve guard's history.
pub(super) const GUARD_KEY: &str = "solve_guard_history";

/// The state after `step` steps, resuming at `(epoch, batches done in it)`.
pub(super) fn train_state(
    step: u64,
    (epoch, batch): (usize, usize),
    seed: u64,
    optim: &Optim,
    (guard, validation): (&SolveGuard, &Validation),
) -> TrainState {
    let mut extra = BTreeMap::from([(GUARD_KEY.to_string(), guard.encode())]);
    validation.encode(&mut extra);
    TrainState {
        step,
        epoch: epoch as u64,
        batch: batch as u64,
        seed,
        optimizer: optim.state(),
        extra,
    }
}
