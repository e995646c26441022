//! Root and fixed-point solvers for equilibria `z* = f(z*)`, on candle tensors.
//!
//! Owns the pluggable solvers (`fixed_point`, `anderson`, `broyden`,
//! `unroll`), their shared bookkeeping (per-sample residuals, per-sample best
//! iterate, convergence, blow-up protection) and the statistics they report.
//!
//! # The problem
//! A solver receives a batched map `f` taking `z: [B, N]` (one flattened
//! state per sample; a multi-state equilibrium is flattened and concatenated
//! by the caller) and returning `f(z)` of the same shape, plus the start
//! `z0: [B, N]`. Samples never interact inside a solver: every update
//! (damping, Anderson mixing, Broyden's low-rank updates) is per sample.
//!
//! # Guarantees (every solver)
//! - `f` is evaluated at most `max_iter` times (`unroll(steps)`: exactly
//!   `steps` times unless protection stops it); `SolveStats::iterations`
//!   counts the evaluations.
//! - The residual of an iterate `z` is, per sample, `||f(z) - z||`
//!   ([`Stop::Abs`]) or `||f(z) - z|| / (||f(z)|| + 1e-9)` ([`Stop::Rel`]),
//!   Euclidean norms over the sample's N values, computed in f64 on the host.
//! - The solve ends as soon as every sample has met `tol` (or at
//!   `max_iter`). Samples that met it earlier keep being iterated with the
//!   batch, but each sample returns its lowest-residual iterate: the
//!   returned `z` is the per-sample best, not the last iterate. (`unroll` is
//!   the exception: it returns the last iterate `f^steps(z0)`, because it is
//!   an explicit weight-tied network.)
//! - Protection: if `f(z)` has a NaN or infinite value for any sample, or the
//!   absolute residual of a sample exceeds [`BLOWUP_FACTOR`] times its
//!   initial absolute residual (see [`BLOWUP_FACTOR`] for the floor), the
//!   solve stops, every sample returns its best iterate so far (`z0` if it
//!   had none) and `SolveStats::stopped_by_protection` says why. A returned
//!   `z` never holds a NaN or infinity when `z0` did not (a non-finite `z0`
//!   is an error).
//! - Works in any float dtype and on any candle `Device`: the vector math
//!   stays on the device; only per-sample scalars and Anderson's tiny
//!   `m x m` systems go to the host.
//!
//! # Defaults (applied by sema, see `sema::spec`)
//! `tol = 1e-4`, `max_iter = 40`, `stop = rel`; `fixed_point(damping = 1)`,
//! `anderson(m = 5, beta = 1, lam = 1e-4)`, `broyden(memory = 40)` (the
//! default `max_iter`: no limit in practice).

mod anderson;
mod broyden;
mod fixed_point;
mod host;
mod linalg;
mod stats;
mod track;

use candle_core::{DType, Tensor};

pub use crate::sema::spec::{SolverKind, SolverSpec, Stop};
pub use anderson::Anderson;
pub use broyden::Broyden;
pub use fixed_point::{FixedPoint, Unroll};
pub use linalg::{solve_lu, solve_spd};
pub use stats::{Protection, SolveStats};

/// A residual grows past `BLOWUP_FACTOR x` the sample's initial absolute
/// residual: the solve stops. The initial residual used is floored at
/// `1e-3 x` the largest initial residual of the batch, so that a sample
/// starting (almost) at its fixed point does not trip on rounding noise.
/// Blow-up is always judged on the absolute residual, whatever `stop` says
/// (a relative residual stays bounded on a divergent map like `3z + 1`).
pub const BLOWUP_FACTOR: f64 = 1e3;

/// The epsilon added to `||f(z)||` in a relative residual.
pub const REL_EPS: f64 = 1e-9;

/// What can go wrong in a solve (apart from errors of the map itself, which
/// are passed through unchanged).
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    #[error("the solver's start must be a [batch, n] tensor, found shape {0:?}")]
    BadStart(Vec<usize>),
    #[error("the solver's start must be a float tensor, found {0:?}")]
    BadDType(DType),
    #[error("the solver's start has a NaN or infinite value (sample {sample})")]
    NonFiniteStart { sample: usize },
    #[error("the map returned shape {got:?} for a state of shape {expected:?}")]
    MapShape {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("the map returned dtype {got:?} for a state of dtype {expected:?}")]
    MapDType { expected: DType, got: DType },
    #[error("invalid solver setting: {0}")]
    InvalidSetting(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = SolverError> = std::result::Result<T, E>;

/// The batched map being solved: `z: [B, N] -> f(z): [B, N]`. Its error type
/// is the caller's; it comes back unchanged from [`solve`].
pub type Map<'a, E> = dyn FnMut(&Tensor) -> Result<Tensor, E> + 'a;

/// The settings every solver shares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Control {
    pub tol: f64,
    pub max_iter: usize,
    pub stop: Stop,
}

impl Default for Control {
    /// The language's defaults: `tol = 1e-4`, `max_iter = 40`, `stop = rel`.
    fn default() -> Self {
        Control {
            tol: crate::sema::spec::DEFAULT_TOL,
            max_iter: crate::sema::spec::DEFAULT_MAX_ITER,
            stop: Stop::Rel,
        }
    }
}

impl Control {
    pub fn from_spec(spec: &SolverSpec) -> Control {
        Control {
            tol: spec.tol,
            max_iter: spec.max_iter,
            stop: spec.stop,
        }
    }
}

/// The result of a solve: the per-sample best iterate and how it went.
#[derive(Debug, Clone)]
pub struct Solution {
    pub z: Tensor,
    pub stats: SolveStats,
}

/// One solver. Implementations are plain settings structs; the map's error
/// type `E` only needs to absorb candle's and the solver's errors.
pub trait Solver {
    /// The name used in the language (`anderson`, ...).
    fn name(&self) -> &'static str;

    /// Solve `z = f(z)` from `z0: [B, N]`.
    fn solve<E>(&self, ctl: &Control, f: &mut Map<'_, E>, z0: &Tensor) -> Result<Solution, E>
    where
        E: From<SolverError> + From<candle_core::Error>;
}

/// Solve `z = f(z)` from `z0: [B, N]` with the solver and settings of `spec`.
pub fn solve<E>(spec: &SolverSpec, f: &mut Map<'_, E>, z0: &Tensor) -> Result<Solution, E>
where
    E: From<SolverError> + From<candle_core::Error>,
{
    use crate::profile::{scope, Category};
    let ctl = Control::from_spec(spec);
    // The solver's own work counts as bookkeeping; the map's graph work
    // (and the library calls inside it) in their own categories.
    let _solver = scope(Category::Solver);
    let mut timed = |z: &Tensor| {
        let _map = scope(Category::Other);
        f(z)
    };
    let f: &mut Map<'_, E> = &mut timed;
    match spec.kind {
        SolverKind::FixedPoint { damping } => FixedPoint { damping }.solve(&ctl, f, z0),
        SolverKind::Anderson { m, beta, lam } => Anderson { m, beta, lam }.solve(&ctl, f, z0),
        SolverKind::Broyden { memory } => Broyden { memory }.solve(&ctl, f, z0),
        SolverKind::Unroll { steps } => Unroll { steps }.solve(&ctl, f, z0),
    }
}

/// Check a setting, as an error rather than a panic.
fn check_setting(ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(SolverError::InvalidSetting(what()))
    }
}

fn check_control(ctl: &Control) -> Result<()> {
    check_setting(ctl.tol >= 0.0 && ctl.tol.is_finite(), || {
        format!("tol must be a finite number >= 0, found {}", ctl.tol)
    })
}
