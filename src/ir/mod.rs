//! The graph IR: one [`Op`] enum, the [`Graph`] that holds nodes of it,
//! lowering from the checked HIR, the verifier, and printers (text and dot).
//!
//! Guarantees: every graph produced by [`lower::lower_model`] (and by every
//! transform in `autodiff` and `passes`) passes [`verify::verify`]; in debug
//! and test builds the transforms run the verifier themselves.

pub mod graph;
pub mod lower;
pub mod op;
pub mod op_groups;
pub mod print;
pub mod shape;
pub mod verify;

pub use graph::{Graph, GraphInput, GraphParam, Node, NodeId, Stamp};
pub use op::{
    Arity, Cmp, ConvAttrs, EqInitKind, EqNode, GradFlow, Op, OpClass, OpInfo, ProbeKind, ReduceOp,
    SolveRole,
};

/// A broken IR invariant. Always a compiler bug (lowering a checked program
/// never fails), reported as an internal error rather than a panic.
#[derive(Debug, Clone, thiserror::Error, miette::Diagnostic)]
pub enum IrError {
    #[error("internal compiler error: invalid IR: {0}")]
    #[diagnostic(code(deq::ir::invalid))]
    Invalid(String),
}

/// Run the verifier in debug and test builds (a no-op in release builds).
pub fn debug_verify(g: &Graph, stage: &str) -> Result<(), IrError> {
    if cfg!(debug_assertions) {
        verify::verify(g).map_err(|e| IrError::Invalid(format!("after {stage}: {e}")))
    } else {
        Ok(())
    }
}
