//! Common-subexpression elimination: merge nodes computing the same op with
//! the same attributes on the same operands.
//!
//! Guarantees: only deterministic ops are merged (never dropout masks, never
//! equilibria); attributes are compared through their exact printed form
//! (floats print round-trip), types must be equal; the first node in
//! topological order is kept and takes over every use.

use std::collections::HashMap;

use crate::ir::{Graph, IrError, NodeId, Op};

use super::{fn_pass, for_each_body};

fn_pass!(Cse, "cse", cse);

fn mergeable(op: &Op) -> bool {
    !matches!(
        op,
        Op::DropoutMask { .. } | Op::Probe { .. } | Op::Equilibrium(_)
    )
}

fn cse(g: &mut Graph) -> Result<bool, IrError> {
    let mut changed = for_each_body(g, &cse)?;
    let mut seen: HashMap<String, NodeId> = HashMap::new();
    for id in g.topo_order() {
        let node = g.node(id);
        if !mergeable(&node.op) {
            continue;
        }
        let operands: Vec<String> = g.operands(id).iter().map(|o| o.to_string()).collect();
        let key = format!(
            "{}[{}]({}): {:?}",
            node.op.name(),
            node.op.attrs(),
            operands.join(","),
            node.ty
        );
        match seen.get(&key) {
            Some(first) => {
                let first = *first;
                g.replace_uses(id, first);
                if g.span(first).is_none() {
                    let s = g.span(id);
                    g.set_span(first, s);
                }
                g.remove(id);
                changed = true;
            }
            None => {
                seen.insert(key, id);
            }
        }
    }
    Ok(changed)
}
