//! Dead-code elimination: remove nodes no output depends on.
//!
//! Guarantees: outputs and everything they read are kept; inside bodies the
//! body outputs are the roots (unused captures may be removed; the
//! enclosing node's operands are unchanged).

use crate::ir::{Graph, IrError};

use super::{fn_pass, for_each_body};

fn_pass!(Dce, "dce", dce);

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
