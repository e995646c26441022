//! Batches into graph inputs, and evaluation on a data split.
//!
//! Owns the mapping from a data set's fields to a training graph's inputs
//! (the model's inputs in order, then the target) and the mean loss and
//! accuracy of a model on a split. Guarantees: a batch without a field the
//! graph needs is an error naming the field, never a panic; evaluation
//! weighs each batch by its number of samples.

use candle_core::{Device, Tensor};

use super::data::{self, Dataset};
use super::metrics::{self, Mean};
use super::program::StepGraph;
use super::TrainError;
use crate::exec::Executor;
use crate::ir::Graph;

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

/// Evaluate on a split: mean loss and accuracy.
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
    let mut loss = Mean::new();
    let (mut correct, mut total) = (0usize, 0usize);
    let limit = max_batches.unwrap_or(usize::MAX);
    for batch in ds.batches(batch_size, device).take(limit) {
        let batch = batch?;
        let inputs = fit_target(&eval.graph, feeds(ds, &batch)?)?;
        let r = exec.run(&eval.graph, params, &inputs)?;
        let results = eval.layout.read(&r.outputs)?;
        let n = inputs[0].dims().first().copied().unwrap_or(1) as f64;
        loss.add(results.loss_value()?, n);
        if classification {
            if let Some(target) = inputs.last() {
                let (c, t) = metrics::count_correct(results.scores(), target)?;
                correct += c;
                total += t;
            }
        }
    }
    let acc = (classification && total > 0).then(|| correct as f64 / total as f64);
    Ok((loss.mean(), acc))
}
