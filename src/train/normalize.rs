//! The tensors that `weight_norm` and `spectral_norm` add beside a weight
//! (`src/sema/builtins/normalize.rs`): their initial values and the
//! per-step update of spectral normalization's state.
//!
//! Guarantees:
//! - a weight-norm gain `w_g` starts at the norms of `w`'s initial value
//!   per index of its axis, so the normalized weight starts equal to `w`;
//! - a power-iteration vector `w_u` starts as its seeded normal draw,
//!   normalized, then refined by [`INIT_ITERATIONS`] power iterations on
//!   `w`'s initial value (as PyTorch's `parametrizations.spectral_norm`
//!   does when it is registered), so the first steps already see a good
//!   estimate of `σ(w)`;
//! - during training each vector advances by exactly one power iteration
//!   per optimizer step ([`advance`]), computed from the parameters that
//!   step's forward and backward passes used: the step's graphs read `u`
//!   (every solver iteration of an equilibrium sees the same `σ`), and the
//!   new `u` replaces it together with the optimizer's update. Evaluation
//!   never advances it. The vector lives with the parameters, so
//!   checkpoints save it and `--resume` restores it bit for bit.

use candle_core::Tensor;

use super::TrainError;
use crate::ir::Graph;
use crate::sema::builtins::normalize::NORMALIZE_EPS;
use crate::sema::hir::ParamRole;

/// Power iterations run on the initial weight to start `u`.
pub const INIT_ITERATIONS: usize = 15;

/// Shape of `w` with every axis but `axis` set to 1.
fn kept_shape(w: &Tensor, axis: usize) -> Vec<usize> {
    w.dims()
        .iter()
        .enumerate()
        .map(|(d, n)| if d == axis { *n } else { 1 })
        .collect()
}

fn others(w: &Tensor, axis: usize) -> Vec<usize> {
    (0..w.rank()).filter(|d| *d != axis).collect()
}

/// `x / max(‖x‖, eps)` over all its elements.
fn normalized(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt()?.maximum(NORMALIZE_EPS)?;
    x.broadcast_div(&norm)
}

/// One power iteration of `w` seen as a matrix with rows along `axis`:
/// `u' = normalize(W normalize(Wᵀ u))`, shaped like `u`.
pub fn power_iteration(w: &Tensor, u: &Tensor, axis: usize) -> candle_core::Result<Tensor> {
    let ub = u.reshape(kept_shape(w, axis))?;
    let v = normalized(&w.broadcast_mul(&ub)?.sum_keepdim(axis)?)?;
    let s = w.broadcast_mul(&v)?.sum_keepdim(others(w, axis))?;
    normalized(&s)?.reshape(u.dims())
}

/// `σ` as the graph estimates it from `u`: `‖W normalize(Wᵀ u)‖`.
pub fn sigma_estimate(w: &Tensor, u: &Tensor, axis: usize) -> candle_core::Result<f64> {
    let ub = u.reshape(kept_shape(w, axis))?;
    let v = normalized(&w.broadcast_mul(&ub)?.sum_keepdim(axis)?)?;
    let s = w.broadcast_mul(&v)?.sum_keepdim(others(w, axis))?;
    s.sqr()?
        .sum_all()?
        .sqrt()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()
}

/// Replace the seeded values of derived tensors by their initial values
/// (see the module's guarantees). `params` is in `graph.params` order;
/// `keep[i]` leaves tensor `i` as it is (it was loaded from a checkpoint).
pub fn init_derived(
    graph: &Graph,
    params: &mut [(String, Tensor)],
    keep: &[bool],
) -> Result<(), TrainError> {
    for (i, p) in graph.params.iter().enumerate() {
        if keep.get(i).copied().unwrap_or(false) {
            continue;
        }
        let value = match p.role {
            ParamRole::Plain => continue,
            ParamRole::NormGain { weight, axis } => {
                let w = &params[weight].1;
                w.sqr()?
                    .sum_keepdim(others(w, axis))?
                    .sqrt()?
                    .reshape(params[i].1.dims())?
            }
            ParamRole::PowerVector { weight, axis } => {
                let w = &params[weight].1;
                let mut u = normalized(&params[i].1)?;
                for _ in 0..INIT_ITERATIONS {
                    u = power_iteration(w, &u, axis)?;
                }
                u
            }
        };
        params[i].1 = value;
    }
    Ok(())
}

/// The state after one training step on `params` (the values the step
/// ran with): `(index, new value)` for every power-iteration vector.
pub fn advance(
    graph: &Graph,
    params: &[(String, Tensor)],
) -> Result<Vec<(usize, Tensor)>, TrainError> {
    let mut out = Vec::new();
    for (i, p) in graph.params.iter().enumerate() {
        if let ParamRole::PowerVector { weight, axis } = p.role {
            out.push((i, power_iteration(&params[weight].1, &params[i].1, axis)?));
        }
    }
    Ok(out)
}

/// `true` for each non-trainable state tensor of `graph`.
pub fn state_mask(graph: &Graph) -> Vec<bool> {
    graph.params.iter().map(|p| p.role.is_state()).collect()
}

/// After `--init-from` loaded what `report` lists into `params`: gains and
/// vectors the checkpoint did not have are derived again from the loaded
/// weights (a weight-normalized model loaded from a plain one starts as
/// that plain model), and state tensors leave the report, which is about
/// trainable parameters.
pub fn after_init_from(
    graph: &Graph,
    params: &mut [(String, Tensor)],
    report: &mut super::transfer::InitReport,
) -> Result<(), TrainError> {
    let loaded: Vec<bool> = graph
        .params
        .iter()
        .map(|p| report.loaded.iter().any(|(m, _)| *m == p.path))
        .collect();
    init_derived(graph, params, &loaded)?;
    let is_state = |path: &str| {
        graph
            .params
            .iter()
            .any(|p| p.role.is_state() && p.path == path)
    };
    report.loaded.retain(|(m, _)| !is_state(m));
    report.initialized.retain(|m| !is_state(m));
    Ok(())
}
