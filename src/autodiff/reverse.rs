//! The reverse sweep: activity analysis, cotangent accumulation, and the
//! call of one VJP rule per active node, in reverse topological order.
//!
//! Guarantees: the forward part of the graph is left unchanged (nodes are
//! only appended); a node gets a cotangent only when it is active (depends
//! on a requested node through differentiable operands, and reaches a
//! seeded output); contributions from several uses are summed with `Add`
//! nodes; a requested node that no seed reaches gets `None` from [`vjp`]
//! (and zeros from [`grad`]).

use std::collections::{HashMap, HashSet};

use crate::ir::{Graph, NodeId, Op};

use super::builder::Builder;
use super::{vjp as rules, AdError, EquilibriumVjp};

/// Which nodes the sweep differentiates.
fn active_nodes(
    graph: &Graph,
    order: &[NodeId],
    seeds: &[NodeId],
    wrt: &[NodeId],
) -> HashSet<NodeId> {
    let wrt: HashSet<NodeId> = wrt.iter().copied().collect();
    let mut depends: HashSet<NodeId> = HashSet::new();
    for id in order {
        let op = graph.op(*id);
        let float = graph.ty(*id).dtype.is_float();
        let from_operand = graph
            .operands(*id)
            .iter()
            .enumerate()
            .any(|(slot, o)| op.is_differentiable_in(slot) && depends.contains(o));
        if wrt.contains(id) || (float && from_operand) {
            depends.insert(*id);
        }
    }
    let reaches = graph.ancestors(seeds);
    depends
        .into_iter()
        .filter(|n| reaches.contains(n))
        .collect()
}

fn sum_all(b: &mut Builder, parts: Vec<NodeId>) -> Result<Option<NodeId>, AdError> {
    let mut acc: Option<NodeId> = None;
    for p in parts {
        acc = Some(match acc {
            Some(a) => b.add(a, p)?,
            None => p,
        });
    }
    Ok(acc)
}

/// Append the backward pass for cotangents `seeds` (`(output, cotangent)`
/// pairs, the cotangent a node of the output's type) and return the
/// cotangent of each node of `wrt` (`None` where no gradient reaches it).
pub fn vjp(
    graph: &mut Graph,
    seeds: &[(NodeId, NodeId)],
    wrt: &[NodeId],
    eq_rule: &dyn EquilibriumVjp,
) -> Result<Vec<Option<NodeId>>, AdError> {
    for (out, seed) in seeds {
        let (to, ts) = (graph.ty(*out), graph.ty(*seed));
        if to != ts {
            return Err(AdError::SeedType {
                output: out.to_string(),
                seed: ts.to_string(),
                expected: to.to_string(),
            });
        }
    }
    let order = graph.topo_order();
    let seed_nodes: Vec<NodeId> = seeds.iter().map(|(o, _)| *o).collect();
    let active = active_nodes(graph, &order, &seed_nodes, wrt);
    // Cotangent contributions per (node, result index).
    let mut parts: HashMap<(NodeId, usize), Vec<NodeId>> = HashMap::new();
    for (out, seed) in seeds {
        parts.entry((*out, 0)).or_default().push(*seed);
    }
    let mut found: HashMap<NodeId, NodeId> = HashMap::new();
    let wanted: HashSet<NodeId> = wrt.iter().copied().collect();
    for id in order.iter().rev() {
        if !active.contains(id) {
            continue;
        }
        let span = graph.span(*id);
        let operands = graph.operands(*id);
        let op = graph.op(*id).clone();
        let needed: Vec<bool> = operands
            .iter()
            .enumerate()
            .map(|(slot, o)| op.is_differentiable_in(slot) && active.contains(o))
            .collect();
        let grads = if let Op::Equilibrium(eq) = &op {
            let mut b = Builder { g: graph, span };
            let mut cots = Vec::new();
            for i in 0..eq.num_states() {
                let p = parts.remove(&(*id, i)).unwrap_or_default();
                cots.push(sum_all(&mut b, p)?);
            }
            if cots.iter().all(Option::is_none) {
                continue;
            }
            eq_rule.vjp(graph, *id, &cots, &needed)?
        } else {
            let mut b = Builder { g: graph, span };
            let p = parts.remove(&(*id, 0)).unwrap_or_default();
            let Some(g) = sum_all(&mut b, p)? else {
                continue;
            };
            if wanted.contains(id) {
                found.insert(*id, g);
            }
            if let Op::Project(i) = op {
                if let Some(src) = operands.first() {
                    parts.entry((*src, i)).or_default().push(g);
                }
                continue;
            }
            if !needed.iter().any(|n| *n) {
                continue;
            }
            rules::vjp(&mut b, *id, g, &needed)?
        };
        for (k, d) in grads.into_iter().enumerate() {
            if let (Some(d), Some(o)) = (d, operands.get(k)) {
                if needed.get(k).copied().unwrap_or(false) {
                    parts.entry((*o, 0)).or_default().push(d);
                }
            }
        }
    }
    crate::ir::debug_verify(graph, "autodiff")?;
    Ok(wrt.iter().map(|w| found.get(w).copied()).collect())
}

/// Append the gradient of the scalar `output` with respect to each node of
/// `wrt` and return the gradient nodes (zeros where `output` does not
/// depend on the node). Equilibria are differentiated by their backward
/// mode ([`crate::deq::DeqVjp`]); [`grad_with`] takes another rule.
pub fn grad(graph: &mut Graph, output: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>, AdError> {
    grad_with(graph, output, wrt, &crate::deq::DeqVjp)
}

/// [`grad`] with an explicit equilibrium rule.
pub fn grad_with(
    graph: &mut Graph,
    output: NodeId,
    wrt: &[NodeId],
    eq_rule: &dyn EquilibriumVjp,
) -> Result<Vec<NodeId>, AdError> {
    let ty = graph.ty(output).clone();
    if ty.rank() != 0 || !ty.dtype.is_float() {
        return Err(AdError::NotScalar { ty: ty.to_string() });
    }
    let span = graph.span(output);
    let seed = graph.add(Op::Const(1.0), ty, &[], span);
    let grads = vjp(graph, &[(output, seed)], wrt, eq_rule)?;
    let mut out = Vec::with_capacity(wrt.len());
    for (w, g) in wrt.iter().zip(grads) {
        out.push(match g {
            Some(g) => g,
            None => {
                let ty = graph.ty(*w).clone();
                let mut b = Builder {
                    g: graph,
                    span: None,
                };
                b.zeros(&ty)
            }
        });
    }
    Ok(out)
}

/// Add one input per float output of `g`, named `{prefix}{k}` for output
/// `k` and of its type; returns the (output, new input) pairs.
pub(crate) fn input_per_float_output(g: &mut Graph, prefix: &str) -> Vec<(NodeId, NodeId)> {
    let mut pairs = Vec::new();
    for (k, out) in g.outputs().to_vec().into_iter().enumerate() {
        let ty = g.ty(out).clone();
        if !ty.dtype.is_float() {
            continue;
        }
        let idx = g.inputs.len();
        g.inputs.push(crate::ir::GraphInput {
            name: format!("{prefix}{k}"),
            ty: ty.clone(),
        });
        let input = g.add(Op::Input(idx), ty, &[], g.span(out));
        pairs.push((out, input));
    }
    pairs
}

/// The model's backward graph: a copy of `graph` with one cotangent input
/// (`d_<k>`) per float output, and as outputs the original outputs followed
/// by the gradient of every parameter (in parameter order; zeros for unused
/// parameters). This is what `deqc dump --emit=grad` and `deqc graph
/// --backward` show.
pub fn backward_graph(graph: &Graph, eq_rule: &dyn EquilibriumVjp) -> Result<Graph, AdError> {
    let mut g = graph.clone();
    let seeds = input_per_float_output(&mut g, "d_");
    let mut params: Vec<Option<NodeId>> = vec![None; g.params.len()];
    for id in g.node_ids() {
        if let Op::Param(i) = g.op(id) {
            if let Some(slot) = params.get_mut(*i) {
                *slot = Some(id);
            }
        }
    }
    let wrt: Vec<NodeId> = params.iter().flatten().copied().collect();
    let grads = vjp(&mut g, &seeds, &wrt, eq_rule)?;
    let mut by_param: HashMap<NodeId, Option<NodeId>> = HashMap::new();
    for (w, d) in wrt.iter().zip(grads) {
        by_param.insert(*w, d);
    }
    let mut outputs = graph.outputs().to_vec();
    for (i, p) in params.iter().enumerate() {
        let d = p.and_then(|p| by_param.get(&p).copied().flatten());
        let d = match d {
            Some(d) => d,
            None => {
                let ty = g.params[i].ty.clone();
                let mut b = Builder {
                    g: &mut g,
                    span: None,
                };
                b.zeros(&ty)
            }
        };
        outputs.push(d);
    }
    g.set_outputs(outputs);
    crate::ir::debug_verify(&g, "backward graph")?;
    Ok(g)
}
