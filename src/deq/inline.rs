//! Copying an equilibrium body into another graph.
//!
//! Guarantees: [`inline_body`] adds one node per body node (in topological
//! order) with the same op, type and span, `State(i)` replaced by the i-th
//! given state node and `Capture(j)` by the j-th given capture node, and
//! returns the copies of the body's outputs. Nested equilibria are copied
//! whole (their own bodies stay nested). [`inline_graph`], which it uses,
//! copies any graph with the sources a caller chooses replaced (the loss
//! function's inputs, in `train::loss`).

use crate::autodiff::AdError;
use crate::ir::{Graph, NodeId, Op};

pub fn inline_body(
    outer: &mut Graph,
    body: &Graph,
    states: &[NodeId],
    captures: &[NodeId],
) -> Result<Vec<NodeId>, AdError> {
    inline_graph(outer, body, "a body", |op| {
        Ok(match op {
            Op::State(i) => Some(
                *states
                    .get(*i)
                    .ok_or_else(|| AdError::Internal(format!("inlining a body: no state {i}")))?,
            ),
            Op::Capture(j) => Some(
                *captures
                    .get(*j)
                    .ok_or_else(|| AdError::Internal(format!("inlining a body: no capture {j}")))?,
            ),
            _ => None,
        })
    })
}

/// Copy `inner` into `outer`, one node per node in topological order with
/// the same op, type and span, except that a node for which `replace` gives
/// a node of `outer` is that node; returns the copies of `inner`'s outputs.
/// `what` names the copied graph in the (internal) errors.
pub fn inline_graph(
    outer: &mut Graph,
    inner: &Graph,
    what: &str,
    replace: impl Fn(&Op) -> Result<Option<NodeId>, AdError>,
) -> Result<Vec<NodeId>, AdError> {
    let mut map: Vec<Option<NodeId>> = vec![None; inner.id_bound()];
    for id in inner.topo_order() {
        let op = inner.op(id);
        let mapped = match replace(op)? {
            Some(node) => node,
            None => {
                let operands = inner
                    .operands(id)
                    .iter()
                    .map(|o| map[o.index()])
                    .collect::<Option<Vec<NodeId>>>()
                    .ok_or_else(|| {
                        AdError::Internal(format!("inlining {what}: operand before its definition"))
                    })?;
                outer.add(op.clone(), inner.ty(id).clone(), &operands, inner.span(id))
            }
        };
        map[id.index()] = Some(mapped);
    }
    inner
        .outputs()
        .iter()
        .map(|o| {
            map[o.index()]
                .ok_or_else(|| AdError::Internal(format!("inlining {what}: output not computed")))
        })
        .collect()
}

/// A graph whose sources are `Capture(0..n)` nodes of the given types:
/// the form in which derived sub-computations are built before inlining.
pub fn capture_graph(name: &str, types: &[crate::types::Type]) -> (Graph, Vec<NodeId>) {
    let mut g = Graph::new(name);
    let caps = types
        .iter()
        .enumerate()
        .map(|(j, t)| g.add(Op::Capture(j), t.clone(), &[], None))
        .collect();
    (g, caps)
}

/// The source types of a derived computation over one equilibrium node:
/// one value per state (z* or a start), the node's captures, and one more
/// value per state (a cotangent, a probe, an adjoint iterate).
pub fn state_capture_state_types(node: &crate::ir::EqNode) -> Vec<crate::types::Type> {
    let mut types = node.state_types.clone();
    types.extend(node.capture_types.iter().cloned());
    types.extend(node.state_types.iter().cloned());
    types
}

/// A detached graph with sources `[z (k), c (n), w (k)]` (see
/// [`state_capture_state_types`]) and the body inlined at `z` and `c`;
/// returns the graph, its sources and the body's outputs.
pub fn body_at_sources(
    name: &str,
    node: &crate::ir::EqNode,
) -> Result<(Graph, Vec<NodeId>, Vec<NodeId>), AdError> {
    let (k, n) = (node.num_states(), node.num_captures());
    let (mut g, caps) = capture_graph(name, &state_capture_state_types(node));
    let f = inline_body(&mut g, &node.body, &caps[..k], &caps[k..k + n])?;
    Ok((g, caps, f))
}

/// The VJP seeds of [`body_at_sources`]' graph: each body output `f_i`
/// paired with its cotangent source `w_i`, the last `k` sources.
pub fn cotangent_seeds(f: &[NodeId], sources: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    let w = &sources[sources.len().saturating_sub(f.len())..];
    f.iter().copied().zip(w.iter().copied()).collect()
}
