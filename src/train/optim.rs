//! Optimizers (SGD with momentum, Adam, AdamW) and gradient clipping.
//!
//! Owns the update rules and their state tensors. Parameters are named
//! tensors (`("inject.w", tensor)`); gradients come in the same order. The
//! update rules are exactly PyTorch's (`torch.optim.SGD` with dampening 0
//! and no Nesterov, `torch.optim.Adam` with L2 weight decay added to the
//! gradient, `torch.optim.AdamW` with decoupled weight decay), `eps = 1e-8`:
//! - SGD: `g = grad + wd * p; buf = momentum * buf + g; p -= lr * buf` (no
//!   buffer when `momentum = 0`: `p -= lr * g`).
//! - Adam: `g = grad + wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//!   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
//! - AdamW: `p *= 1 - lr * wd`, then Adam's update with the raw gradient.
//!
//! Guarantees: the state is created on the first step (zeros), is exposed as
//! named tensors `"{kind}/{param}"` (`momentum_buffer/`, `exp_avg/`,
//! `exp_avg_sq/`) plus the step count, and [`Optim::load_state`] restores it
//! exactly, so a resumed run takes the same steps as an uninterrupted one.
//! Mismatched parameter and gradient lists are errors, never panics.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};

use crate::sema::spec::Optimizer;

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("optimizer: {0}")]
    Mismatch(String),
    #[error("optimizer: {0}")]
    Candle(#[from] candle_core::Error),
}

type Result<T> = std::result::Result<T, OptimError>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimKind {
    Sgd {
        momentum: f64,
        weight_decay: f64,
    },
    Adam {
        betas: (f64, f64),
        weight_decay: f64,
        /// AdamW: weight decay applied to the parameters, not the gradient.
        decoupled: bool,
    },
}

/// The names of the state tensors kept per parameter by `kind`.
fn state_names(kind: &OptimKind) -> &'static [&'static str] {
    match kind {
        OptimKind::Sgd { momentum, .. } if *momentum == 0.0 => &[],
        OptimKind::Sgd { .. } => &["momentum_buffer"],
        OptimKind::Adam { .. } => &["exp_avg", "exp_avg_sq"],
    }
}

/// The state of an optimizer, to checkpoint and restore.
#[derive(Debug, Clone)]
pub struct OptimState {
    /// Optimizer steps taken.
    pub step: u64,
    /// `("{kind}/{param}", tensor)`, sorted by name.
    pub tensors: Vec<(String, Tensor)>,
}

/// An optimizer with its state.
#[derive(Debug, Clone)]
pub struct Optim {
    pub kind: OptimKind,
    /// The base learning rate (schedules scale it; [`Optim::step`] takes the
    /// rate of the step explicitly).
    pub lr: f64,
    pub eps: f64,
    step: u64,
    /// Per parameter name: its state tensors, in the order of `state_names`.
    state: BTreeMap<String, Vec<Tensor>>,
}

/// `torch.optim.SGD(lr, momentum, weight_decay)`.
pub fn sgd(lr: f64, momentum: f64, weight_decay: f64) -> Optim {
    Optim::with_kind(
        lr,
        OptimKind::Sgd {
            momentum,
            weight_decay,
        },
    )
}

/// `torch.optim.Adam(lr, betas, weight_decay)` (L2 added to the gradient).
pub fn adam(lr: f64, betas: (f64, f64), weight_decay: f64) -> Optim {
    Optim::with_kind(
        lr,
        OptimKind::Adam {
            betas,
            weight_decay,
            decoupled: false,
        },
    )
}

/// `torch.optim.AdamW(lr, betas, weight_decay)` (decoupled weight decay).
pub fn adamw(lr: f64, betas: (f64, f64), weight_decay: f64) -> Optim {
    Optim::with_kind(
        lr,
        OptimKind::Adam {
            betas,
            weight_decay,
            decoupled: true,
        },
    )
}

impl Optim {
    fn with_kind(lr: f64, kind: OptimKind) -> Optim {
        Optim {
            kind,
            lr,
            eps: 1e-8,
            step: 0,
            state: BTreeMap::new(),
        }
    }

    /// The optimizer of a `train` block.
    pub fn new(spec: &Optimizer) -> Optim {
        match *spec {
            Optimizer::Sgd {
                lr,
                momentum,
                weight_decay,
            } => sgd(lr, momentum, weight_decay),
            Optimizer::Adam {
                lr,
                betas,
                weight_decay,
            } => adam(lr, betas, weight_decay),
            Optimizer::AdamW {
                lr,
                betas,
                weight_decay,
            } => adamw(lr, betas, weight_decay),
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One step on `params` with `grads` (same order) at learning rate `lr`.
    pub fn step(
        &mut self,
        params: &mut [(String, Tensor)],
        grads: &[Tensor],
        lr: f64,
    ) -> Result<()> {
        if params.len() != grads.len() {
            return Err(OptimError::Mismatch(format!(
                "{} parameters but {} gradients",
                params.len(),
                grads.len()
            )));
        }
        for ((name, p), g) in params.iter().zip(grads) {
            if p.dims() != g.dims() {
                return Err(OptimError::Mismatch(format!(
                    "parameter `{name}` has shape {:?} but its gradient {:?}",
                    p.dims(),
                    g.dims()
                )));
            }
        }
        let t = self.step + 1;
        let names = state_names(&self.kind);
        for ((name, p), g) in params.iter_mut().zip(grads) {
            let g = g.to_dtype(p.dtype())?;
            let st = match self.state.get_mut(name.as_str()) {
                Some(st) => st,
                None => {
                    let zeros = (0..names.len())
                        .map(|_| p.zeros_like())
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    self.state.entry(name.clone()).or_insert(zeros)
                }
            };
            *p = match self.kind {
                OptimKind::Sgd {
                    momentum,
                    weight_decay,
                } => {
                    let mut g = g;
                    if weight_decay != 0.0 {
                        g = g.add(&p.affine(weight_decay, 0.0)?)?;
                    }
                    if let Some(buf) = st.first_mut() {
                        *buf = buf.affine(momentum, 0.0)?.add(&g)?;
                        g = buf.clone();
                    }
                    p.sub(&g.affine(lr, 0.0)?)?
                }
                OptimKind::Adam {
                    betas: (b1, b2),
                    weight_decay,
                    decoupled,
                } => {
                    let [m, v] = st.as_mut_slice() else {
                        return Err(OptimError::Mismatch(format!(
                            "state of `{name}` has {} tensors, expected 2",
                            st.len()
                        )));
                    };
                    let step = adam::AdamStep {
                        b1,
                        b2,
                        bc1: 1.0 - b1.powf(t as f64),
                        bc2: 1.0 - b2.powf(t as f64),
                        lr,
                        eps: self.eps,
                        weight_decay,
                        decoupled,
                    };
                    let (p2, m2, v2) = adam::update(p, &g, m, v, step)?;
                    (*m, *v) = (m2, v2);
                    p2
                }
            };
        }
        self.step = t;
        Ok(())
    }

    /// The state as named tensors `"{kind}/{param}"`, sorted, and the step.
    pub fn state(&self) -> OptimState {
        let names = state_names(&self.kind);
        let mut tensors: Vec<(String, Tensor)> = self
            .state
            .iter()
            .flat_map(|(param, ts)| {
                names
                    .iter()
                    .zip(ts)
                    .map(move |(kind, t)| (format!("{kind}/{param}"), t.clone()))
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        OptimState {
            step: self.step,
            tensors,
        }
    }

    /// The state keys and shapes that this optimizer has once it stepped on
    /// parameters of the given names and shapes (for checking a checkpoint).
    pub fn state_shapes(&self, params: &[(String, Vec<usize>)]) -> Vec<(String, Vec<usize>)> {
        let mut out: Vec<(String, Vec<usize>)> = state_names(&self.kind)
            .iter()
            .flat_map(|kind| {
                params
                    .iter()
                    .map(move |(p, shape)| (format!("{kind}/{p}"), shape.clone()))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Restore a state saved by [`Optim::state`]. Every tensor must be named
    /// `"{kind}/{param}"` with a kind of this optimizer, and each parameter
    /// must have all of its kinds.
    pub fn load_state(&mut self, state: OptimState) -> Result<()> {
        let names = state_names(&self.kind);
        let mut parts: BTreeMap<String, Vec<Option<Tensor>>> = BTreeMap::new();
        for (key, t) in state.tensors {
            let (kind, param) = key.split_once('/').ok_or_else(|| {
                OptimError::Mismatch(format!("state tensor `{key}` is not `kind/param`"))
            })?;
            let k = names.iter().position(|n| *n == kind).ok_or_else(|| {
                OptimError::Mismatch(format!(
                    "state tensor `{key}`: this optimizer keeps only {names:?}"
                ))
            })?;
            let slot = parts
                .entry(param.to_string())
                .or_insert_with(|| vec![None; names.len()]);
            slot[k] = Some(t);
        }
        let mut restored = BTreeMap::new();
        for (param, slots) in parts {
            let ts = slots
                .into_iter()
                .zip(names)
                .map(|(t, kind)| {
                    t.ok_or_else(|| {
                        OptimError::Mismatch(format!("missing state tensor `{kind}/{param}`"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            restored.insert(param, ts);
        }
        self.state = restored;
        self.step = state.step;
        Ok(())
    }
}

/// Scale `grads` so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` (factor `max_norm / (norm + 1e-6)` when
/// below 1). Returns the norm before clipping. A non-finite norm is returned
/// as is and leaves the gradients untouched.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads)?;
    if norm.is_finite() {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                *g = g.affine(coef, 0.0)?;
            }
        }
    }
    Ok(norm)
}

/// The global L2 norm of `grads` (accumulated in f64 across tensors).
pub fn grad_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sq = 0.0f64;
    for g in grads {
        sq += g
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(sq.sqrt())
}

/// The optimizer step on every parameter that is not frozen; frozen ones
/// keep their exact values (no weight decay, no optimizer state).
pub(crate) fn update(
    optim: &mut Optim,
    all: &mut [(String, Tensor)],
    frozen: &[bool],
    grads: &[Tensor],
    lr: f64,
) -> Result<()> {
    if !frozen.iter().any(|f| *f) {
        optim.step(all, grads, lr)?;
        return Ok(());
    }
    let moving: Vec<usize> = (0..all.len())
        .filter(|i| !frozen.get(*i).copied().unwrap_or(false))
        .collect();
    let mut params: Vec<(String, Tensor)> = moving.iter().map(|i| all[*i].clone()).collect();
    let grads: Vec<Tensor> = moving
        .iter()
        .filter_map(|i| grads.get(*i).cloned())
        .collect();
    optim.step(&mut params, &grads, lr)?;
    for (i, p) in moving.into_iter().zip(params) {
        all[i] = p;
    }
    Ok(())
}

mod adam;
#[cfg(test)]
mod tests;
