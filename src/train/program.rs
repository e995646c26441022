//! The compiled training step: model graph + loss + derived gradients.
//!
//! Owns the graphs that one training run executes: the step graph (inputs
//! then the target; outputs the loss, the model's outputs (the first is
//! the scores), the gradient of every
//! parameter, and the fixed point of each top-level equilibrium), the
//! evaluation graph (loss and the model's outputs only), and, when the `train` block asks
//! for it, the Jacobian-regularization graph with its own gradients. Each
//! comes with its typed layout ([`super::layout`]): callers find results
//! and place inputs through it, never by position.
//!
//! Guarantees: the loss is built from IR ops ([`super::loss`]), so its
//! gradient is derived like any other; every gradient is taken with the
//! equilibrium rule of `crate::deq`.

use crate::autodiff::builder::Builder;
use crate::autodiff::{grad_with, AdError};
use crate::deq::jacobian::{jacobian_graph, top_level_equilibria};
use crate::deq::DeqVjp;
use crate::ir::{Graph, NodeId, Op};
use crate::sema::spec::Loss;
use crate::types::dim::Dim;
use crate::types::Type;

use super::layout::{JacobianLayout, StepLayout};
use super::loss::append_loss;

/// A step or evaluation graph with the layout of its outputs.
pub struct StepGraph {
    pub graph: Graph,
    pub layout: StepLayout,
}

/// The regularization graph with the layout of its inputs and outputs.
pub struct JacobianStep {
    pub graph: Graph,
    pub layout: JacobianLayout,
}

pub use super::loss::target_type;

fn param_nodes(g: &Graph) -> Vec<Option<NodeId>> {
    let mut out = vec![None; g.params.len()];
    for n in g.node_ids() {
        if let Op::Param(i) = g.op(n) {
            if let Some(slot) = out.get_mut(*i) {
                *slot = Some(n);
            }
        }
    }
    out
}

/// The parameter nodes that get a gradient: frozen ones and non-trainable
/// state are left out, so that the reverse pass never builds their
/// adjoints (`frozen[i]` for parameter `i`; a short mask freezes nothing
/// beyond its end).
fn trainable_nodes(g: &Graph, frozen: &[bool]) -> Vec<Option<NodeId>> {
    let mut nodes = param_nodes(g);
    for (i, n) in nodes.iter_mut().enumerate() {
        let state = g.params.get(i).is_some_and(|p| p.role.is_state());
        if state || frozen.get(i).copied().unwrap_or(false) {
            *n = None;
        }
    }
    nodes
}

/// Gradients of `value` for every parameter (zeros where it does not
/// depend on one or where it is frozen).
fn param_grads(g: &mut Graph, value: NodeId, frozen: &[bool]) -> Result<Vec<NodeId>, AdError> {
    let nodes = trainable_nodes(g, frozen);
    let present: Vec<NodeId> = nodes.iter().flatten().copied().collect();
    let grads = grad_with(g, value, &present, &DeqVjp)?;
    let mut it = grads.into_iter();
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        out.push(match n {
            Some(_) => it
                .next()
                .ok_or_else(|| AdError::Internal("missing gradient".into()))?,
            None => {
                let ty = g.params[i].ty.clone();
                Builder { g, span: None }.zeros(&ty)
            }
        });
    }
    Ok(out)
}

/// The training step graph of a lowered model.
pub fn step_graph(model: &Graph, loss: &Loss) -> Result<StepGraph, AdError> {
    step_graph_frozen(model, loss, &[])
}

/// The training step graph with the parameters marked in `frozen` left out
/// of differentiation: their gradient outputs are constant zeros and no
/// node computes anything toward them.
pub fn step_graph_frozen(
    model: &Graph,
    loss: &Loss,
    frozen: &[bool],
) -> Result<StepGraph, AdError> {
    let mut g = model.clone();
    // Before differentiating: the adjoint solves are equilibria too.
    let zstar_nodes = zstar_nodes(&mut g);
    let model_outputs = g.outputs().to_vec();
    let (value, _) = append_loss(&mut g, loss)?;
    let grads = param_grads(&mut g, value, frozen)?;
    let mut outputs = vec![value];
    let model_at = 1..1 + model_outputs.len();
    outputs.extend(model_outputs);
    let grads_at = outputs.len()..outputs.len() + grads.len();
    outputs.extend(grads);
    let zstars = outputs.len()..outputs.len() + zstar_nodes.len();
    outputs.extend(zstar_nodes);
    let layout = StepLayout {
        loss: 0,
        scores: 1,
        model_outputs: model_at,
        grads: grads_at,
        zstars,
        outputs: outputs.len(),
    };
    g.set_outputs(outputs);
    Ok(StepGraph { graph: g, layout })
}

/// The evaluation graph: the loss, then every output of the model (the
/// first being the scores).
pub fn eval_graph(model: &Graph, loss: &Loss) -> Result<StepGraph, AdError> {
    let mut g = model.clone();
    let model_outputs = g.outputs().to_vec();
    let n = 1 + model_outputs.len();
    let (value, _) = append_loss(&mut g, loss)?;
    let mut outputs = vec![value];
    outputs.extend(model_outputs);
    g.set_outputs(outputs);
    let layout = StepLayout {
        loss: 0,
        scores: 1,
        model_outputs: 1..n,
        grads: n..n,
        zstars: n..n,
        outputs: n,
    };
    Ok(StepGraph { graph: g, layout })
}

/// The `Project` nodes of every top-level equilibrium, state by state.
fn zstar_nodes(g: &mut Graph) -> Vec<NodeId> {
    let mut out = Vec::new();
    for eq in top_level_equilibria(g) {
        let Op::Equilibrium(node) = g.op(eq).clone() else {
            continue;
        };
        let users = g.users(eq);
        for (i, ty) in node.state_types.iter().enumerate() {
            let existing = users
                .iter()
                .copied()
                .find(|u| matches!(g.op(*u), Op::Project(k) if *k == i));
            let span = g.span(eq);
            out.push(existing.unwrap_or_else(|| g.add(Op::Project(i), ty.clone(), &[eq], span)));
        }
    }
    out
}

/// The Jacobian regularization graph of a model with its parameter
/// gradients (`None` when the model has no equilibrium).
pub fn jacobian_step(model: &Graph) -> Result<Option<JacobianStep>, AdError> {
    jacobian_step_frozen(model, &[])
}

/// [`jacobian_step`] with the parameters marked in `frozen` left out of
/// differentiation (their gradients are absent from the layout).
pub fn jacobian_step_frozen(
    model: &Graph,
    frozen: &[bool],
) -> Result<Option<JacobianStep>, AdError> {
    let Some(jac) = jacobian_graph(model)? else {
        return Ok(None);
    };
    let mut g = jac.graph;
    let nodes = trainable_nodes(&g, frozen);
    let present: Vec<NodeId> = nodes.iter().flatten().copied().collect();
    let grads = grad_with(&mut g, jac.term, &present, &DeqVjp)?;
    let mut outputs = vec![jac.term];
    let mut it = grads.into_iter();
    let mut positions = Vec::new();
    for n in &nodes {
        positions.push(match n {
            Some(_) => {
                outputs.push(
                    it.next()
                        .ok_or_else(|| AdError::Internal("missing gradient".into()))?,
                );
                Some(outputs.len() - 1)
            }
            None => None,
        });
    }
    let layout = JacobianLayout {
        model_inputs: model.inputs.len(),
        zstar_inputs: jac.equilibria.iter().flat_map(|e| e.1.clone()).collect(),
        probe_inputs: jac.equilibria.iter().flat_map(|e| e.2.clone()).collect(),
        inputs: g.inputs.len(),
        term: 0,
        grads: positions,
        outputs: outputs.len(),
    };
    g.set_outputs(outputs);
    Ok(Some(JacobianStep { graph: g, layout }))
}

/// The symbolic dims a model's inputs leave open (for messages).
pub fn symbols(t: &Type) -> Vec<String> {
    t.shape.iter().flat_map(Dim::symbols).collect()
}
