//! The forward solve of equilibrium nodes inside the executor.
//!
//! Guarantees: states are flattened to one vector per sample (`[B, N]`, the
//! first dimension of every state being the batch when every state declares
//! the same symbolic first dimension; states of fixed shape, or without a
//! shared batch dimension, are solved as one sample) and unflattened afterwards;
//! the body runs inside the solver without gradient bookkeeping; every solve
//! is recorded ([`SolveRecord`]) with the `equilibrium`'s span; a solve in
//! which protection fired and no sample converged is an error naming the
//! source line, never a silent NaN.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::Tensor;

use crate::exec::{EqContext, EquilibriumRunner, ExecError};
use crate::ir::{EqInitKind, EqNode, SolveRole};
use crate::sema::spec::Backward;
use crate::solver::{self, SolveStats, SolverError};
use crate::source::Span;

/// One finished solve.
#[derive(Debug, Clone)]
pub struct SolveRecord {
    pub span: Option<Span>,
    /// An adjoint (backward) solve rather than a forward one.
    pub backward: bool,
    /// The gradient through this solve assumes its result is a fixed point
    /// (`implicit`, `phantom` or `jfb` backward). An `unrolled` backward
    /// differentiates the iterations themselves, so it is exact whether or
    /// not the solve converged.
    pub gradient_assumes_fixed_point: bool,
    /// Protection stopped the solve and no sample got closer to a fixed
    /// point than its start (absolute residuals).
    pub diverged: bool,
    /// The equilibrium's state names (an adjoint solve's are its forward
    /// equilibrium's), which with `span` identify it in reports.
    pub states: Vec<String>,
    /// Solved inside another equilibrium's body (once per evaluation of
    /// that body), not by the model's own graph.
    pub nested: bool,
    pub stats: SolveStats,
}

/// Runs equilibrium nodes with the solvers of `crate::solver`, keeping the
/// statistics of every solve until [`SolverRunner::take_records`].
#[derive(Clone, Default)]
pub struct SolverRunner {
    records: Arc<Mutex<Vec<SolveRecord>>>,
    /// An adjoint solve that diverges for every sample returns its best
    /// iterates (recorded as `diverged`) instead of failing the run: the
    /// trainer then skips that update rather than stopping.
    lenient_adjoint: bool,
    /// How many solves are under way (more than one: nested solves).
    depth: Arc<AtomicUsize>,
}

/// Counts one solve as under way until dropped.
struct DepthGuard(Arc<AtomicUsize>);

impl DepthGuard {
    /// Enter a solve; returns the guard and whether another solve was
    /// already under way (this one is nested).
    fn enter(depth: &Arc<AtomicUsize>) -> (DepthGuard, bool) {
        let before = depth.fetch_add(1, Ordering::SeqCst);
        (DepthGuard(depth.clone()), before > 0)
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SolverRunner {
    pub fn new() -> SolverRunner {
        SolverRunner::default()
    }

    /// A runner whose adjoint solves never fail the run by diverging; see
    /// [`SolveRecord::diverged`].
    pub fn with_lenient_adjoint(mut self, lenient: bool) -> SolverRunner {
        self.lenient_adjoint = lenient;
        self
    }

    /// The records of the solves since the last call.
    pub fn take_records(&self) -> Vec<SolveRecord> {
        match self.records.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    fn record(&self, r: SolveRecord) {
        match self.records.lock() {
            Ok(mut v) => v.push(r),
            Err(p) => p.into_inner().push(r),
        }
    }
}

/// Errors inside a solve: the body's, the solver's, candle's.
#[derive(Debug)]
enum SolveError {
    Exec(ExecError),
    Solver(SolverError),
    Candle(candle_core::Error),
}

impl From<ExecError> for SolveError {
    fn from(e: ExecError) -> Self {
        SolveError::Exec(e)
    }
}
impl From<SolverError> for SolveError {
    fn from(e: SolverError) -> Self {
        SolveError::Solver(e)
    }
}
impl From<candle_core::Error> for SolveError {
    fn from(e: candle_core::Error) -> Self {
        SolveError::Candle(e)
    }
}

fn to_exec(e: SolveError, span: Option<Span>) -> ExecError {
    match e {
        SolveError::Exec(e) => e,
        SolveError::Solver(e) => ExecError::Equilibrium {
            message: format!("solver failed: {e}"),
            span,
        },
        SolveError::Candle(e) => ExecError::Equilibrium {
            message: format!("solver failed: {e}"),
            span,
        },
    }
}

/// How the states of one node map to and from `[B, N]`.
pub struct Layout {
    batch: usize,
    shapes: Vec<Vec<usize>>,
    sizes: Vec<usize>,
}

impl Layout {
    /// The layout of `node`'s states at run-time `shapes`: batched over
    /// their first dimension only when every state *declares* the same
    /// symbolic first dimension (`[B, 256]`); a state of fixed shape
    /// (`[32, 32]`, a matrix found by Richardson iteration) is one sample,
    /// whatever its first size.
    pub fn of_node(node: &EqNode, shapes: Vec<Vec<usize>>) -> Layout {
        let first = node.state_types.first().and_then(|t| t.shape.first());
        let declared_batch = first.is_some_and(|d| {
            !d.is_const() && node.state_types.iter().all(|t| t.shape.first() == Some(d))
        });
        if declared_batch {
            Layout::of(shapes)
        } else {
            Layout::with_batch(shapes, 1)
        }
    }

    /// Batched over the first dimension when all `shapes` share it.
    pub fn of(shapes: Vec<Vec<usize>>) -> Layout {
        let first = shapes.first().and_then(|s| s.first()).copied();
        let batch = match first {
            Some(b) if b > 0 && shapes.iter().all(|s| s.first() == Some(&b)) => b,
            _ => 1,
        };
        Layout::with_batch(shapes, batch)
    }

    fn with_batch(shapes: Vec<Vec<usize>>, batch: usize) -> Layout {
        let sizes = shapes
            .iter()
            .map(|s| s.iter().product::<usize>() / batch)
            .collect();
        Layout {
            batch,
            shapes,
            sizes,
        }
    }

    pub fn flatten(&self, states: &[Tensor]) -> candle_core::Result<Tensor> {
        let parts = states
            .iter()
            .zip(&self.sizes)
            .map(|(t, n)| t.reshape((self.batch, *n)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if parts.len() == 1 {
            return Ok(parts[0].clone());
        }
        Tensor::cat(&parts, 1)
    }

    pub fn unflatten(&self, z: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.sizes.len());
        let mut offset = 0;
        for (n, shape) in self.sizes.iter().zip(&self.shapes) {
            out.push(z.narrow(1, offset, *n)?.reshape(shape.as_slice())?);
            offset += n;
        }
        Ok(out)
    }
}

/// The Euclidean norm of each row of a `[B, N]` tensor.
fn per_sample_norms(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(candle_core::DType::F64)?
        .sqr()?
        .sum(1)?
        .sqrt()?
        .to_vec1::<f64>()
}

/// `min .. max` of per-sample residuals, for messages.
fn summarize(r: &[f64]) -> String {
    let lo = r.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.3e} .. {hi:.3e} over {} samples", r.len())
}

impl EquilibriumRunner for SolverRunner {
    fn forward(
        &self,
        node: &EqNode,
        captures: &[Tensor],
        init: Option<&[Tensor]>,
        ctx: &EqContext,
    ) -> crate::exec::Result<Vec<Tensor>> {
        let span = ctx.span;
        let (_depth, nested) = DepthGuard::enter(&self.depth);
        let mut shapes = Vec::new();
        for ty in &node.state_types {
            shapes.push(ctx.dims.shape(&ty.shape, span)?);
        }
        let layout = Layout::of_node(node, shapes.clone());
        let kernel = |e: candle_core::Error| ExecError::Equilibrium {
            message: format!("equilibrium states: {e}"),
            span,
        };
        let z0 = match (node.init, init) {
            (EqInitKind::Values, Some(values)) => layout.flatten(values).map_err(kernel)?,
            _ => {
                let zeros = node
                    .state_types
                    .iter()
                    .zip(&shapes)
                    .map(|(ty, s)| {
                        Tensor::zeros(s.as_slice(), ctx.exec.dtype(ty.dtype), &ctx.exec.device)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()
                    .map_err(kernel)?;
                layout.flatten(&zeros).map_err(kernel)?
            }
        };
        let mut f = |z: &Tensor| -> Result<Tensor, SolveError> {
            let states = layout.unflatten(z)?;
            let next = ctx.eval_body(node, &states, captures)?;
            Ok(layout.flatten(&next)?)
        };
        let solution = solver::solve(&node.solver, &mut f, &z0).map_err(|e| to_exec(e, span))?;
        let backward = node.role == SolveRole::Adjoint;
        let stats = solution.stats.clone();
        // Protection stops the solve when any sample blows up; it diverged
        // only when no sample got closer to a fixed point than its start
        // (absolute residuals: a relative one can shrink while the iterates
        // explode).
        let mut diverged = false;
        if stats.stopped_by_protection.is_some() && !stats.sample_converged.iter().any(|c| *c) {
            let start = f(&z0)
                .and_then(|fz| Ok(per_sample_norms(&(fz - &z0)?)?))
                .map_err(|e| to_exec(e, span))?;
            diverged = stats
                .abs_residual
                .iter()
                .zip(&start)
                .all(|(r, r0)| !r.is_finite() || *r >= *r0);
        }
        self.record(SolveRecord {
            span,
            backward,
            gradient_assumes_fixed_point: !matches!(node.backward, Backward::Unrolled),
            diverged,
            states: node.state_names.clone(),
            nested,
            stats: stats.clone(),
        });
        if diverged && !(backward && self.lenient_adjoint) {
            let reason = stats
                .stopped_by_protection
                .as_ref()
                .map(|p| format!("{p:?}"))
                .unwrap_or_default();
            return Err(ExecError::Equilibrium {
                message: format!(
                    "the {} solve diverged for every sample ({reason}); final residuals {}",
                    if backward { "adjoint" } else { "equilibrium" },
                    summarize(&stats.residual)
                ),
                span,
            });
        }
        layout.unflatten(&solution.z).map_err(kernel)
    }
}
