//! Reverse-mode automatic differentiation as a graph-to-graph transform.
//!
//! Owns the derivation of gradients: [`grad`] and [`vjp`] append the
//! backward nodes to the graph itself (gradients are ordinary IR nodes) and
//! return the node holding the gradient of each requested node. Because
//! every rule ([`vjp`](mod@vjp)) is made of IR ops that have rules
//! themselves, the result can be differentiated again (Hessian-vector
//! products, the Jacobian regularizer).
//!
//! Guarantees: nothing is built for values that need no gradient (activity
//! analysis: a node is differentiated only when it depends on a requested
//! node *and* reaches a seeded output); gradients have exactly the type of
//! the node they belong to; the graph still verifies afterwards (checked in
//! debug and test builds). Equilibrium nodes are differentiated through the
//! [`EquilibriumVjp`] hook (the implicit adjoint lives there).

pub mod builder;
pub mod check;
pub mod reverse;
pub mod vjp;

use crate::ir::{Graph, IrError, NodeId};
use crate::source::Span;

pub use reverse::{backward_graph, grad, grad_with, vjp as vjp_nodes};

/// A failure of the autodiff transform.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum AdError {
    #[error("the differentiated output must be a scalar, got {ty}")]
    #[diagnostic(code(deq::autodiff::not_scalar))]
    NotScalar { ty: String },
    #[error("the seed of output {output} has type {seed}, the output {expected}")]
    #[diagnostic(code(deq::autodiff::seed_type))]
    SeedType {
        output: String,
        seed: String,
        expected: String,
    },
    #[error(
        "implicit backward not yet implemented: cannot differentiate through this equilibrium"
    )]
    #[diagnostic(code(deq::autodiff::implicit_unsupported))]
    ImplicitBackwardNotImplemented { span: Option<Span> },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ir(#[from] IrError),
    #[error("internal compiler error in autodiff: {0}")]
    #[diagnostic(code(deq::internal))]
    Internal(String),
}

/// The hook through which the reverse sweep differentiates an equilibrium
/// node. Given the cotangents of the node's results (one per state, `None`
/// where no gradient flows), append nodes computing the cotangent of each
/// operand (captures, then initial values) for which `needed` is true.
///
/// The implicit adjoint (`g = J^T g + dL/dz*`, then one VJP of the body with
/// respect to the captures), and the `phantom`, `jfb` and `unrolled` modes,
/// implement this trait.
pub trait EquilibriumVjp {
    fn vjp(
        &self,
        graph: &mut Graph,
        eq: NodeId,
        cotangents: &[Option<NodeId>],
        needed: &[bool],
    ) -> Result<Vec<Option<NodeId>>, AdError>;
}

/// The stand-in until the implicit adjoint lands: every equilibrium on a
/// gradient path is an error.
pub struct NoImplicitBackward;

impl EquilibriumVjp for NoImplicitBackward {
    fn vjp(
        &self,
        graph: &mut Graph,
        eq: NodeId,
        _cotangents: &[Option<NodeId>],
        _needed: &[bool],
    ) -> Result<Vec<Option<NodeId>>, AdError> {
        Err(AdError::ImplicitBackwardNotImplemented {
            span: graph.span(eq),
        })
    }
}
