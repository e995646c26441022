//! Batches into graph inputs, and evaluation on a data split.
//!
//! Owns the mapping from a data set's fields to a training graph's inputs
//! (the model's inputs in order, then the target) and the mean loss and
//! figures of a model on a split (accuracy, loss parts, bits per
//! dimension, and the log-density of each sample for `deqc eval --ood`).
//! Guarantees: a batch without a field the
//! graph needs is an error naming the field, never a panic; evaluation
//! weighs each batch by its number of samples.

use candle_core::{Device, Tensor};

use super::data::{self, Dataset};
use super::density::{self, Figures};
use super::metrics::Mean;
use super::program::StepGraph;
use super::TrainError;
use crate::exec::Executor;
use crate::ir::Graph;
use crate::sema::spec::OutputRole;

/// Split a batch into the model's inputs and the target (the last field).
pub(crate) fn feeds(ds: &Dataset, batch: &data::Batch) -> Result<Vec<Tensor>, TrainError> {
    ds.fields()
        .iter()
        .map(|(name, _)| {
            batch
                .get(name)
                .cloned()
                .ok_or_else(|| TrainError::MissingBatchField { name: name.clone() })
        })
        .collect()
}

/// A regression target `[B]` for scores `[B, 1]` gets its trailing 1, so
/// a CSV column trains a single-output model.
pub(crate) fn fit_target(
    graph: &Graph,
    mut inputs: Vec<Tensor>,
) -> Result<Vec<Tensor>, TrainError> {
    if let (Some(want), Some(t)) = (graph.inputs.last(), inputs.last_mut()) {
        let last_is_one = want.ty.shape.last().and_then(|d| d.as_const()) == Some(1);
        if t.rank() + 1 == want.ty.rank() && last_is_one {
            *t = t.unsqueeze(t.rank())?;
        }
    }
    Ok(inputs)
}

/// How a split is evaluated.
pub struct EvalSetup<'a> {
    pub batch_size: usize,
    pub device: &'a Device,
    /// The role of each model output (see `TrainConfig::roles`).
    pub roles: Vec<OutputRole>,
    /// Also measure the cross-entropy of the scores (a loss part).
    pub parts: bool,
    /// Dequantize `x` with the evaluation noise of this seed
    /// ([`density::eval_key`]).
    pub dequantize: Option<u64>,
    pub max_batches: Option<usize>,
    /// Keep the log-density of every sample (for `deqc eval --ood`).
    pub keep_log_densities: bool,
}

/// What an evaluation measured.
#[derive(Debug, Clone, Default)]
pub struct EvalFigures {
    /// Mean loss per sample.
    pub loss: f64,
    pub figures: Figures,
    pub samples: usize,
    /// `log p(x)` of each sample, in order, when asked for.
    pub log_densities: Vec<f64>,
}

/// Dequantize the first input (the pixels) of a batch whose first sample
/// is sample `first` of its split.
pub(crate) fn dequantize_eval(
    inputs: &mut [Tensor],
    seed: u64,
    first: usize,
) -> Result<(), TrainError> {
    if let Some(x) = inputs.first_mut() {
        *x = density::dequantize(x, |r| density::eval_key(seed, first + r))?;
    }
    Ok(())
}

/// Evaluate on a split: mean loss, and the figures of the outputs' roles.
pub fn evaluate_split(
    exec: &Executor,
    eval: &StepGraph,
    params: &[Tensor],
    ds: &Dataset,
    setup: &EvalSetup,
) -> Result<EvalFigures, TrainError> {
    let mut loss = Mean::new();
    let mut out = EvalFigures::default();
    let limit = setup.max_batches.unwrap_or(usize::MAX);
    let density_at = setup
        .roles
        .iter()
        .position(|r| *r == OutputRole::LogDensity);
    for batch in ds.batches(setup.batch_size, setup.device).take(limit) {
        let batch = batch?;
        let mut inputs = fit_target(&eval.graph, feeds(ds, &batch)?)?;
        if let Some(seed) = setup.dequantize {
            dequantize_eval(&mut inputs, seed, out.samples)?;
        }
        let r = exec.run(&eval.graph, params, &inputs)?;
        let results = eval.layout.read(&r.outputs)?;
        let n = inputs[0].dims().first().copied().unwrap_or(1);
        loss.add(results.loss_value()?, n as f64);
        if let Some(target) = inputs.last() {
            let outputs = results.model_outputs();
            out.figures
                .add(outputs, &setup.roles, target, setup.parts)?;
            if let (true, Some(i)) = (setup.keep_log_densities, density_at) {
                if let Some(lp) = outputs.get(i) {
                    out.log_densities.extend(density::log_densities(lp)?);
                }
            }
        }
        out.samples += n;
    }
    out.loss = loss.mean();
    Ok(out)
}

/// Evaluate on a split: mean loss and accuracy (of the first output).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    exec: &Executor,
    eval: &StepGraph,
    params: &[Tensor],
    ds: &Dataset,
    batch_size: usize,
    device: &Device,
    classification: bool,
    max_batches: Option<usize>,
) -> Result<(f64, Option<f64>), TrainError> {
    let role = if classification {
        OutputRole::Scores
    } else {
        OutputRole::Other
    };
    let setup = EvalSetup {
        batch_size,
        device,
        roles: vec![role],
        parts: false,
        dequantize: None,
        max_batches,
        keep_log_densities: false,
    };
    let r = evaluate_split(exec, eval, params, ds, &setup)?;
    Ok((r.loss, r.figures.accuracy()))
}
