//! Loop-invariant hoisting out of equilibrium bodies.
//!
//! A solver evaluates an equilibrium's body once per iteration; every body
//! node that depends on no state (only on captures and constants) computes
//! the same value each time. This pass moves such nodes into the enclosing
//! graph, where they run once per solve, and feeds their values to the body
//! as new captures. It matters most for adjoint solves, whose bodies
//! recompute the forward body at the fixed point in every iteration.
//!
//! Guarantees: the graph computes the same values (the hoisted nodes are the
//! same ops on the same operands); sources (`State`, `Capture`) and constants
//! stay in the body; nested bodies are processed first; the equilibrium node
//! is rebuilt with the extra captures before its initial values, and every
//! use of the old node is redirected to the new one.

use std::collections::{HashMap, HashSet};

use crate::ir::{EqNode, Graph, IrError, NodeId, Op};

use super::Pass;

pub struct HoistInvariants;

impl Pass for HoistInvariants {
    fn name(&self) -> &'static str {
        "hoist"
    }

    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in g.topo_order() {
            let Op::Equilibrium(eq) = g.op(id) else {
                continue;
            };
            let mut eq: EqNode = (**eq).clone();
            let nested = self.run(&mut eq.body)?;
            if nested || !invariants(&eq.body).is_empty() {
                let new_id = hoist_one(g, id, eq)?;
                g.replace_uses(id, new_id);
                g.remove(id);
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// Nodes of `body` that no state reaches (sources and constants excluded).
fn invariants(body: &Graph) -> Vec<NodeId> {
    let mut variant: HashSet<NodeId> = HashSet::new();
    let order = body.topo_order();
    for id in &order {
        let dependent = matches!(body.op(*id), Op::State(_))
            || body.operands(*id).iter().any(|o| variant.contains(o));
        if dependent {
            variant.insert(*id);
        }
    }
    order
        .into_iter()
        .filter(|id| !variant.contains(id))
        .filter(|id| !body.operands(*id).is_empty())
        .collect()
}

/// Rebuild one equilibrium node with its invariant nodes hoisted; returns
/// the replacement node (the caller redirects uses).
fn hoist_one(g: &mut Graph, id: NodeId, mut eq: EqNode) -> Result<NodeId, IrError> {
    let hoist = invariants(&eq.body);
    let span = g.span(id);
    let operands = g.operands(id);
    let n_caps = eq.num_captures();
    let hoisted: HashSet<NodeId> = hoist.iter().copied().collect();
    // Copy the invariant nodes into the outer graph.
    let mut outer_of: HashMap<NodeId, NodeId> = HashMap::new();
    for b in &hoist {
        let mut ops = Vec::new();
        for o in eq.body.operands(*b) {
            let mapped = match eq.body.op(o) {
                Op::Capture(j) => operands
                    .get(*j)
                    .copied()
                    .ok_or_else(|| IrError::Invalid(format!("hoist: capture {j} out of range")))?,
                _ => match outer_of.get(&o) {
                    Some(n) => *n,
                    // A constant operand: copy it out as well.
                    None => g.add(
                        eq.body.op(o).clone(),
                        eq.body.ty(o).clone(),
                        &[],
                        eq.body.span(o),
                    ),
                },
            };
            ops.push(mapped);
        }
        let n = g.add(
            eq.body.op(*b).clone(),
            eq.body.ty(*b).clone(),
            &ops,
            eq.body.span(*b),
        );
        outer_of.insert(*b, n);
    }
    // Hoisted values the body still needs become new captures.
    let needed: Vec<NodeId> = hoist
        .iter()
        .copied()
        .filter(|b| {
            eq.body.users(*b).iter().any(|u| !hoisted.contains(u)) || eq.body.outputs().contains(b)
        })
        .collect();
    let mut new_operands: Vec<NodeId> = operands[..n_caps].to_vec();
    for b in &needed {
        let j = eq.capture_types.len();
        eq.capture_types.push(eq.body.ty(*b).clone());
        let cap = eq.body.add(
            Op::Capture(j),
            eq.body.ty(*b).clone(),
            &[],
            eq.body.span(*b),
        );
        eq.body.replace_uses(*b, cap);
        let outputs: Vec<NodeId> = eq
            .body
            .outputs()
            .iter()
            .map(|o| if o == b { cap } else { *o })
            .collect();
        eq.body.set_outputs(outputs);
        new_operands.push(outer_of[b]);
    }
    for b in hoist.iter().rev() {
        eq.body.remove(*b);
    }
    new_operands.extend(operands[n_caps..].iter().copied());
    Ok(g.add(
        Op::Equilibrium(Box::new(eq)),
        g.ty(id).clone(),
        &new_operands,
        span,
    ))
}
