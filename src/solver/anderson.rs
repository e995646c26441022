//! Anderson mixing (type II, per sample).
//!
//! Owns `anderson(m, beta, lam)`. With the last `n <= m` iterates `X_i` and
//! their images `F_i = f(X_i)` (residuals `G_i = F_i - X_i`), each sample
//! solves `min ||sum_i a_i G_i||^2 + reg ||a||^2` subject to `sum_i a_i = 1`
//! and moves to `beta sum_i a_i F_i + (1 - beta) sum_i a_i X_i`.
//!
//! - The `[B, n, n]` Gram matrices `G G^T` are formed on the device with one
//!   batched matmul; the tiny systems `(G G^T + reg I) w = 1`, `a = w /
//!   sum(w)`, are solved on the host in f64 (Cholesky, then Gaussian
//!   elimination with partial pivoting).
//! - `reg = lam * mean(diag(G G^T))`: `lam` is *relative* to the size of the
//!   residuals, so the regularization means the same thing at every scale.
//!   (An absolute `lam`, as in TorchDEQ, dominates once residuals drop
//!   below `sqrt(lam)` and silently turns Anderson into plain averaging of
//!   the history; with the relative form the default `lam = 1e-4` still
//!   reaches tight tolerances: on `tests/solvers.rs`'s tanh problem at tol
//!   1e-8, 30 iterations against 196 with an absolute `lam = 1e-4`, where
//!   plain iteration needs 120.)
//! - Safe fallback: a sample whose system cannot be solved (zero residuals,
//!   singular, non-finite) takes the damped fixed-point step from its latest
//!   iterate (`a = e_last`).
//! - History beyond `m` drops the oldest pair. Samples that already met
//!   `tol` keep being mixed with the batch; the tracker keeps their best.

use std::collections::VecDeque;

use candle_core::{DType, Tensor};

use super::linalg::{solve_lu, solve_spd};
use super::track::{Step, Tracker};
use super::{check_setting, Control, Map, Solution, Solver, SolverError};

/// `anderson(m, beta, lam)`; defaults `m = 5, beta = 1, lam = 1e-4`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anderson {
    /// History size, at least 1 (`m = 1` is damped fixed-point iteration).
    pub m: usize,
    /// Mixing: 1 takes the mixed images `sum a_i F_i` (usual choice).
    pub beta: f64,
    /// Relative Tikhonov regularization of the least-squares problem.
    pub lam: f64,
}

impl Default for Anderson {
    fn default() -> Self {
        Anderson {
            m: 5,
            beta: 1.0,
            lam: 1e-4,
        }
    }
}

impl Solver for Anderson {
    fn name(&self) -> &'static str {
        "anderson"
    }

    fn solve<E>(&self, ctl: &Control, f: &mut Map<'_, E>, z0: &Tensor) -> Result<Solution, E>
    where
        E: From<SolverError> + From<candle_core::Error>,
    {
        check_setting(self.m >= 1, || "anderson m must be at least 1".to_string())?;
        check_setting(self.beta > 0.0 && self.beta.is_finite(), || {
            format!("anderson beta must be > 0, found {}", self.beta)
        })?;
        check_setting(self.lam >= 0.0 && self.lam.is_finite(), || {
            format!("anderson lam must be >= 0, found {}", self.lam)
        })?;
        let mut tr = Tracker::new(self.name(), ctl, z0)?;
        let mut xs: VecDeque<Tensor> = VecDeque::with_capacity(self.m + 1);
        let mut fs: VecDeque<Tensor> = VecDeque::with_capacity(self.m + 1);
        let mut x = z0.clone();
        while tr.has_budget(ctl.max_iter) {
            let (fx, step) = tr.eval(f, &x)?;
            if step != Step::Continue {
                break;
            }
            xs.push_back(x);
            fs.push_back(fx);
            if xs.len() > self.m {
                xs.pop_front();
                fs.pop_front();
            }
            x = self.mix(&xs, &fs, &tr)?;
        }
        Ok(tr.finish_best())
    }
}

impl Anderson {
    /// The next iterate from the history (non-empty, oldest first).
    fn mix(
        &self,
        xs: &VecDeque<Tensor>,
        fs: &VecDeque<Tensor>,
        tr: &Tracker,
    ) -> candle_core::Result<Tensor> {
        let n = xs.len();
        let (x_last, f_last) = match (xs.back(), fs.back()) {
            (Some(x), Some(f)) => (x, f),
            _ => candle_core::bail!("anderson: empty history"),
        };
        if n == 1 {
            return self.blend(f_last.clone(), x_last);
        }
        let xs: Vec<Tensor> = xs.iter().cloned().collect();
        let fs: Vec<Tensor> = fs.iter().cloned().collect();
        let xm = Tensor::stack(&xs, 1)?; // [B, n, N]
        let fm = Tensor::stack(&fs, 1)?;
        let g = (&fm - &xm)?;
        let gram = g
            .matmul(&g.t()?.contiguous()?)?
            .to_dtype(DType::F64)?
            .to_vec3::<f64>()?;
        let mut alpha = Vec::with_capacity(tr.batch() * n);
        for sample in &gram {
            alpha.extend(self.weights(sample, n));
        }
        let alpha =
            Tensor::from_vec(alpha, (tr.batch(), 1, n), tr.device())?.to_dtype(tr.dtype())?;
        let fmix = alpha.matmul(&fm)?.squeeze(1)?;
        if self.beta == 1.0 {
            return Ok(fmix);
        }
        let xmix = alpha.matmul(&xm)?.squeeze(1)?;
        self.blend(fmix, &xmix)
    }

    /// `beta * f + (1 - beta) * x`.
    fn blend(&self, f: Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.beta == 1.0 {
            Ok(f)
        } else {
            (f * self.beta)? + (x * (1.0 - self.beta))?
        }
    }

    /// The mixing weights of one sample from its `n x n` Gram rows.
    fn weights(&self, gram: &[Vec<f64>], n: usize) -> Vec<f64> {
        let mut fallback = vec![0.0; n];
        fallback[n - 1] = 1.0;
        if gram.len() != n || gram.iter().any(|r| r.len() != n) {
            return fallback;
        }
        let mean_diag = (0..n).map(|i| gram[i][i]).sum::<f64>() / n as f64;
        if !mean_diag.is_finite() || mean_diag <= 0.0 {
            return fallback;
        }
        let reg = self.lam * mean_diag;
        let mut a: Vec<f64> = gram.iter().flatten().copied().collect();
        for i in 0..n {
            a[i * n + i] += reg;
        }
        let ones = vec![1.0; n];
        let w = match solve_spd(&a, n, &ones).or_else(|| solve_lu(&a, n, &ones)) {
            Some(w) => w,
            None => return fallback,
        };
        let s: f64 = w.iter().sum();
        if !s.is_finite() || s.abs() <= 1e-300 {
            return fallback;
        }
        let alpha: Vec<f64> = w.iter().map(|v| v / s).collect();
        if alpha.iter().all(|v| v.is_finite()) {
            alpha
        } else {
            fallback
        }
    }
}
