//! Jacobian regularization and spectral-radius estimates.
//!
//! The regularizer of Bai, Koltun & Kolter (2021): for each top-level
//! equilibrium `z* = f(z*, c)`, `||eps^T J_f(z*)||^2 / numel(z*)` with one
//! Gaussian probe `eps` (Hutchinson's estimate of `||J_f||_F^2 / numel`),
//! z* held constant as in the paper's code. [`jacobian_graph`] builds it as
//! a graph whose z* and probes are inputs; its gradient with respect to the
//! parameters is then ordinary reverse mode over a VJP: a second derivative
//! built by the IR autodiff, not by hand.
//!
//! Guarantees: the term graph contains no equilibrium solve of the
//! regularized equilibria (their results are inputs), so it costs one body
//! evaluation and one VJP; [`spectral_radius`] estimates the largest
//! eigenvalue modulus of each sample's `J_f(z*)` by power iteration on
//! `J^T` through the same VJP graph.

use candle_core::Tensor;

use crate::autodiff::builder::Builder;
use crate::autodiff::{vjp_nodes, AdError};
use crate::exec::{ExecError, Executor};
use crate::ir::{EqNode, Graph, GraphInput, NodeId, Op, ReduceOp};
use crate::types::Type;

use super::inline::{body_at_sources, cotangent_seeds, inline_body, state_capture_state_types};
use super::DeqVjp;

/// The regularization term of a model, as a graph.
pub struct JacobianGraph {
    /// The model's graph with the term as its only output; its inputs are
    /// the model's, then for each regularized state its z*, then its probe.
    pub graph: Graph,
    pub term: NodeId,
    /// Per regularized equilibrium (in the model graph): the node, and the
    /// input indices of its z* values and probes.
    pub equilibria: Vec<(NodeId, Vec<usize>, Vec<usize>)>,
}

/// The equilibrium nodes at the top level of a graph, in order.
pub fn top_level_equilibria(g: &Graph) -> Vec<NodeId> {
    g.topo_order()
        .into_iter()
        .filter(|n| matches!(g.op(*n), Op::Equilibrium(_)))
        .collect()
}

fn add_input(g: &mut Graph, name: String, ty: &Type) -> (usize, NodeId) {
    g.inputs.push(GraphInput {
        name,
        ty: ty.clone(),
    });
    let i = g.inputs.len() - 1;
    (i, g.add(Op::Input(i), ty.clone(), &[], None))
}

/// `sum_i ||eps_i^T J_i||^2 / sum_i numel(z_i)` for one equilibrium, built
/// from capture sources `[z (k), c (n), eps (k)]`.
fn term_body(node: &EqNode) -> Result<Graph, AdError> {
    let k = node.num_states();
    let (mut sub, caps, f) = body_at_sources("jacobian_term", node)?;
    let seeds = cotangent_seeds(&f, &caps);
    let u = vjp_nodes(&mut sub, &seeds, &caps[..k], &DeqVjp)?;
    let mut b = Builder {
        g: &mut sub,
        span: None,
    };
    let dtype = node.state_types[0].dtype;
    let mut total = b.konst(0.0, dtype);
    let mut count = b.konst(0.0, dtype);
    for (ui, ty) in u.iter().zip(&node.state_types) {
        let c = b.count(ty.shape.clone(), dtype);
        count = b.add(count, c)?;
        let Some(ui) = ui else { continue };
        let sq = b.mul(*ui, *ui)?;
        let axes: Vec<usize> = (0..ty.rank()).collect();
        let s = b.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes,
                keepdim: false,
            },
            &[sq],
        )?;
        total = b.add(total, s)?;
    }
    let term = b.div(total, count)?;
    sub.set_outputs(vec![term]);
    Ok(sub)
}

/// Build the regularization graph of `model` (the sum over its top-level
/// equilibria). `None` when the model has no equilibrium.
pub fn jacobian_graph(model: &Graph) -> Result<Option<JacobianGraph>, AdError> {
    let eqs = top_level_equilibria(model);
    if eqs.is_empty() {
        return Ok(None);
    }
    let mut g = model.clone();
    let mut total: Option<NodeId> = None;
    let mut equilibria = Vec::new();
    for eq in eqs {
        let Op::Equilibrium(node) = g.op(eq).clone() else {
            continue;
        };
        let caps: Vec<NodeId> = g.operands(eq)[..node.num_captures()].to_vec();
        let mut z_inputs = Vec::new();
        let mut eps_inputs = Vec::new();
        let mut operands = Vec::new();
        for (name, ty) in node.state_names.iter().zip(&node.state_types) {
            let (i, z) = add_input(&mut g, format!("{name}*"), ty);
            z_inputs.push(i);
            operands.push(z);
        }
        operands.extend(caps);
        for (name, ty) in node.state_names.iter().zip(&node.state_types) {
            let (i, e) = add_input(&mut g, format!("probe:{name}"), ty);
            eps_inputs.push(i);
            operands.push(e);
        }
        let sub = term_body(&node)?;
        let term = inline_body(&mut g, &sub, &[], &operands)?[0];
        total = Some(match total {
            Some(t) => Builder {
                g: &mut g,
                span: None,
            }
            .add(t, term)?,
            None => term,
        });
        equilibria.push((eq, z_inputs, eps_inputs));
    }
    let Some(term) = total else { return Ok(None) };
    g.set_outputs(vec![term]);
    // Drop everything the term does not need (the solves above all).
    let keep = g.ancestors(&[term]);
    for id in g.node_ids() {
        if !keep.contains(&id) {
            g.remove(id);
        }
    }
    Ok(Some(JacobianGraph {
        graph: g,
        term,
        equilibria,
    }))
}

/// Estimate, per sample, the largest eigenvalue modulus of `J_f(z*)` by
/// `iters` steps of power iteration on `J^T` (same spectrum). `zstar` and
/// `captures` are the node's values; samples are as the solver sees them
/// (`Layout::of_node`: a state of fixed shape is one sample).
pub fn spectral_radius(
    exec: &Executor,
    node: &EqNode,
    zstar: &[Tensor],
    captures: &[Tensor],
    iters: usize,
    seed: u64,
) -> Result<Vec<f64>, ExecError> {
    let internal = |e: AdError| ExecError::Internal(format!("spectral radius: {e}"));
    let candle = |e: candle_core::Error| ExecError::Internal(format!("spectral radius: {e}"));
    let k = node.num_states();
    let types = state_capture_state_types(node);
    let (mut sub, caps, f) = body_at_sources("spectral_radius", node).map_err(internal)?;
    let seeds = cotangent_seeds(&f, &caps);
    let jt = vjp_nodes(&mut sub, &seeds, &caps[..k], &DeqVjp).map_err(internal)?;
    let mut outs = Vec::new();
    for (j, ty) in jt.iter().zip(&node.state_types) {
        outs.push(match j {
            Some(j) => *j,
            None => Builder {
                g: &mut sub,
                span: None,
            }
            .zeros(ty),
        });
    }
    sub.set_outputs(outs);
    let layout =
        super::runner::Layout::of_node(node, zstar.iter().map(|t| t.dims().to_vec()).collect());
    let z = layout.flatten(zstar).map_err(candle)?;
    let (batch, width) = z.dims2().map_err(candle)?;
    let mut rng_state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f64> = (0..batch * width)
        .map(|_| {
            // xorshift64*: a fixed, dependency-free start vector.
            rng_state ^= rng_state >> 12;
            rng_state ^= rng_state << 25;
            rng_state ^= rng_state >> 27;
            (rng_state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    let mut v = Tensor::from_vec(values, (batch, width), &exec.device)
        .and_then(|t| t.to_dtype(z.dtype()))
        .map_err(candle)?;
    let norms = |t: &Tensor| -> Result<Vec<f64>, ExecError> {
        t.to_dtype(candle_core::DType::F64)
            .and_then(|t| t.sqr())
            .and_then(|t| t.sum(1))
            .and_then(|t| t.sqrt())
            .and_then(|t| t.to_vec1::<f64>())
            .map_err(candle)
    };
    let mut radius = vec![0.0; batch];
    for _ in 0..iters.max(1) {
        let nv = norms(&v)?;
        let scale: Vec<f64> = nv
            .iter()
            .map(|x| if *x > 0.0 { 1.0 / x } else { 0.0 })
            .collect();
        let s = Tensor::from_vec(scale, (batch, 1), &exec.device)
            .and_then(|t| t.to_dtype(v.dtype()))
            .map_err(candle)?;
        v = v.broadcast_mul(&s).map_err(candle)?;
        let mut inputs: Vec<Tensor> = zstar.to_vec();
        inputs.extend(captures.iter().cloned());
        inputs.extend(layout.unflatten(&v).map_err(candle)?);
        let mut dims = crate::exec::DimEnv::new();
        for (t, ty) in inputs.iter().zip(&types) {
            dims.bind_type("equilibrium value", ty, t.dims())?;
        }
        let feeds = crate::exec::Feeds {
            captures: &inputs,
            ..Default::default()
        };
        let w = exec.run_with(&sub, &feeds, &dims)?.outputs;
        v = layout.flatten(&w).map_err(candle)?;
        radius = norms(&v)?;
    }
    Ok(radius)
}
