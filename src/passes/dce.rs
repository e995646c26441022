//! Dead-code elimination: remove nodes no output depends on.
//!
//! Guarantees: outputs and everything they read are kept; inside bodies the
//! body outputs are the roots (unused captures may be removed; the
//! enclosing node's operands are unchanged).

use crate::ir::{Graph, IrError};

use super::{for_each_body, Pass};

pub struct Dce;

fn dce(g: &mut Graph) -> Result<bool, IrError> {
    let mut changed = for_each_body(g, &dce)?;
    let live = g.ancestors(g.outputs());
    for id in g.node_ids() {
        if !live.contains(&id) {
            g.remove(id);
            changed = true;
        }
    }
    Ok(changed)
}

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
        dce(g)
    }
}
