//! Equilibrium semantics: the forward solve and every backward mode.
//!
//! Owns what an `equilibrium` means at run time and under differentiation:
//! - [`SolverRunner`] plugs the solvers of `crate::solver` into the executor:
//!   the body graph is evaluated inside the solver with no gradient
//!   bookkeeping, and only the solution leaves the node, so memory does not
//!   grow with the number of iterations; every solve's statistics are
//!   recorded with the `equilibrium`'s span;
//! - [`DeqVjp`] is the autodiff rule of equilibrium nodes, one lowering per
//!   backward mode: `implicit` becomes a second equilibrium node (the adjoint
//!   `g = J^T g + dL/dz*`, whose body is the VJP graph of the forward body)
//!   followed by one VJP into the captures; `phantom`, `jfb` and `unrolled`
//!   become unrolled chains of the body differentiated by ordinary reverse
//!   mode;
//! - [`jacobian`] builds the Jacobian regularization term (a gradient of a
//!   VJP) and estimates spectral radii.
//!
//! Guarantees: gradients are IR graphs like any other; the adjoint solve is
//! an equilibrium node marked [`SolveRole::Adjoint`](crate::ir::SolveRole),
//! so statistics tell forward from backward solves.

pub mod adjoint;
pub mod inline;
pub mod jacobian;
pub mod runner;

pub use adjoint::DeqVjp;
pub use runner::{SolveRecord, SolverRunner};
