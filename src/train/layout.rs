//! Typed layouts of the training graphs' inputs and outputs.
//!
//! Owns the map from "what a result means" (the loss, the gradient of
//! parameter `i`, the fixed point of state `k`, the probe of state `k`) to
//! its position among a graph's inputs or outputs. [`super::program`]
//! produces a layout together with each graph it builds; the trainer and
//! the commands read results and assemble inputs only through it, never by
//! position arithmetic of their own.
//!
//! Guarantees: reading a graph's outputs checks their count against the
//! layout once, so the accessors that follow cannot index out of range;
//! the inputs of the regularization graph are assembled at the positions
//! the builder recorded, whatever order it added them in.

use std::ops::Range;

use candle_core::{DType as CDType, Tensor};

use super::TrainError;

/// Where the results of a step or evaluation graph are among its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLayout {
    pub loss: usize,
    /// The model's first output.
    pub scores: usize,
    /// Every output of the model, in order (the first is `scores`).
    pub model_outputs: Range<usize>,
    /// One gradient per parameter, in parameter order; empty for an
    /// evaluation graph.
    pub grads: Range<usize>,
    /// The fixed point of each state of each top-level equilibrium, in the
    /// order of `deq::jacobian::top_level_equilibria`; empty for an
    /// evaluation graph.
    pub zstars: Range<usize>,
    /// How many outputs the graph has.
    pub outputs: usize,
}

/// One run's outputs, read through the layout of the graph that made them.
pub struct StepResults<'a> {
    outputs: &'a [Tensor],
    layout: &'a StepLayout,
}

/// The error for outputs that do not match their graph's layout (a bug in
/// the builder or a pass, never the user's).
fn mismatch(graph: &'static str, got: usize, want: usize) -> TrainError {
    TrainError::Layout {
        graph,
        got,
        want,
        what: "outputs",
    }
}

impl StepLayout {
    /// View `outputs` (of the graph this layout describes) by meaning.
    pub fn read<'a>(&'a self, outputs: &'a [Tensor]) -> Result<StepResults<'a>, TrainError> {
        if outputs.len() != self.outputs {
            return Err(mismatch("training step", outputs.len(), self.outputs));
        }
        Ok(StepResults {
            outputs,
            layout: self,
        })
    }
}

impl StepResults<'_> {
    pub fn loss(&self) -> &Tensor {
        &self.outputs[self.layout.loss]
    }

    /// The loss as a number.
    pub fn loss_value(&self) -> Result<f64, TrainError> {
        Ok(self.loss().to_dtype(CDType::F64)?.to_scalar::<f64>()?)
    }

    pub fn scores(&self) -> &Tensor {
        &self.outputs[self.layout.scores]
    }

    /// Every output of the model, in order.
    pub fn model_outputs(&self) -> &[Tensor] {
        &self.outputs[self.layout.model_outputs.clone()]
    }

    /// The gradient of every parameter, in parameter order.
    pub fn grads(&self) -> &[Tensor] {
        &self.outputs[self.layout.grads.clone()]
    }

    /// The fixed points, in the order of [`StepLayout::zstars`].
    pub fn zstars(&self) -> &[Tensor] {
        &self.outputs[self.layout.zstars.clone()]
    }
}

/// Where the inputs and results of the Jacobian-regularization graph are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JacobianLayout {
    /// The model's own inputs keep their positions `0..model_inputs`.
    pub model_inputs: usize,
    /// Input position of the fixed point of each regularized state, in the
    /// order of the step graph's fixed points ([`StepLayout::zstars`]).
    pub zstar_inputs: Vec<usize>,
    /// Input position of each state's probe, in the same order.
    pub probe_inputs: Vec<usize>,
    /// How many inputs the graph has.
    pub inputs: usize,
    /// Output position of the term.
    pub term: usize,
    /// Output position of the term's gradient for each parameter, `None`
    /// where the term does not depend on the parameter.
    pub grads: Vec<Option<usize>>,
    /// How many outputs the graph has.
    pub outputs: usize,
}

/// One run's outputs of the regularization graph, read by meaning.
pub struct JacobianResults<'a> {
    outputs: &'a [Tensor],
    layout: &'a JacobianLayout,
}

impl JacobianLayout {
    /// The regularization graph's inputs: the model's `model_inputs`, and
    /// for regularized state `k` its fixed point `zstars[k]` and probe
    /// `probes[k]`, each at the position the builder gave it.
    pub fn inputs(
        &self,
        model_inputs: &[Tensor],
        zstars: &[Tensor],
        probes: &[Tensor],
    ) -> Result<Vec<Tensor>, TrainError> {
        let count = |what, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(TrainError::Layout {
                    graph: "Jacobian regularization",
                    got,
                    want,
                    what,
                })
            }
        };
        count("model inputs", model_inputs.len(), self.model_inputs)?;
        count("fixed points", zstars.len(), self.zstar_inputs.len())?;
        count("probes", probes.len(), self.probe_inputs.len())?;
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs];
        let placed = (0..self.model_inputs)
            .zip(model_inputs)
            .chain(self.zstar_inputs.iter().copied().zip(zstars))
            .chain(self.probe_inputs.iter().copied().zip(probes));
        for (at, t) in placed {
            if let Some(slot) = slots.get_mut(at) {
                *slot = Some(t.clone());
            }
        }
        let filled: Vec<Tensor> = slots.into_iter().flatten().collect();
        count("inputs", filled.len(), self.inputs)?;
        Ok(filled)
    }

    /// View `outputs` (of the regularization graph) by meaning.
    pub fn read<'a>(&'a self, outputs: &'a [Tensor]) -> Result<JacobianResults<'a>, TrainError> {
        if outputs.len() != self.outputs {
            return Err(TrainError::Layout {
                graph: "Jacobian regularization",
                got: outputs.len(),
                want: self.outputs,
                what: "outputs",
            });
        }
        Ok(JacobianResults {
            outputs,
            layout: self,
        })
    }
}

impl JacobianResults<'_> {
    /// The term as a number.
    pub fn term(&self) -> Result<f64, TrainError> {
        Ok(self.outputs[self.layout.term]
            .to_dtype(CDType::F64)?
            .to_scalar::<f64>()?)
    }

    /// The term's gradient for parameter `i`, when it depends on it.
    pub fn grad(&self, i: usize) -> Option<&Tensor> {
        let at = (*self.layout.grads.get(i)?)?;
        self.outputs.get(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: f32) -> Tensor {
        Tensor::new(v, &Device::Cpu).expect("scalar")
    }

    fn values(ts: &[Tensor]) -> Vec<f32> {
        ts.iter()
            .map(|t| t.to_scalar::<f32>().expect("scalar"))
            .collect()
    }

    /// Two equilibria: the builder adds each one's fixed point then its
    /// probe, so their inputs interleave; the layout puts each at its place.
    #[test]
    fn jacobian_inputs_go_where_the_builder_put_them() {
        let layout = JacobianLayout {
            model_inputs: 1,
            zstar_inputs: vec![1, 3],
            probe_inputs: vec![2, 4],
            inputs: 5,
            term: 0,
            grads: vec![],
            outputs: 1,
        };
        let inputs = layout
            .inputs(&[t(0.0)], &[t(1.0), t(2.0)], &[t(-1.0), t(-2.0)])
            .expect("assembles");
        assert_eq!(values(&inputs), [0.0, 1.0, -1.0, 2.0, -2.0]);
    }

    #[test]
    fn a_missing_or_surplus_input_is_an_error() {
        let layout = JacobianLayout {
            model_inputs: 1,
            zstar_inputs: vec![1],
            probe_inputs: vec![2],
            inputs: 3,
            term: 0,
            grads: vec![],
            outputs: 1,
        };
        assert!(layout.inputs(&[t(0.0)], &[t(1.0)], &[]).is_err());
        let gap = JacobianLayout {
            inputs: 4,
            ..layout
        };
        assert!(gap.inputs(&[t(0.0)], &[t(1.0)], &[t(2.0)]).is_err());
    }

    #[test]
    fn step_results_are_read_by_meaning() {
        let layout = StepLayout {
            loss: 0,
            scores: 1,
            model_outputs: 1..2,
            grads: 2..4,
            zstars: 4..5,
            outputs: 5,
        };
        let outs: Vec<Tensor> = (0..5).map(|i| t(i as f32)).collect();
        let r = layout.read(&outs).expect("matches");
        assert_eq!(r.loss_value().expect("scalar"), 0.0);
        assert_eq!(values(r.grads()), [2.0, 3.0]);
        assert_eq!(values(r.zstars()), [4.0]);
        assert!(layout.read(&outs[..4]).is_err());
    }
}
