//! Anderson mixing (type II, per sample).
//!
//! Owns `anderson(m, beta, lam)`. With the last `n <= m` iterates `X_i` and
//! their images `F_i = f(X_i)` (residuals `G_i = F_i - X_i`), each sample
//! solves `min ||sum_i a_i G_i||^2 + reg ||a||^2` subject to `sum_i a_i = 1`
//! and moves to `beta sum_i a_i F_i + (1 - beta) sum_i a_i X_i`.
//!
//! - Each sample's `n x n` Gram matrix `G G^T` is kept on the host in f64
//!   and updated incrementally: a new residual costs one batched row of dot
//!   products with the stored residuals (`O(n B N)` on the device, one
//!   transfer of `B x n` numbers), never a re-stack or transpose of the whole
//!   history. The tiny systems `(G G^T + reg I) w = 1`, `a = w / sum(w)`,
//!   are solved on the host (Cholesky, then Gaussian elimination with
//!   partial pivoting), and the mix `sum_i a_i F_i` is `n` scaled adds.
//! - `reg = lam * mean(diag(G G^T))`: `lam` is *relative* to the size of the
//!   residuals, so the regularization means the same thing at every scale.
//!   (An absolute `lam`, as in TorchDEQ, dominates once residuals drop
//!   below `sqrt(lam)` and silently turns Anderson into plain averaging of
//!   the history; with the relative form the default `lam = 1e-4` still
//!   reaches tight tolerances: on `tests/solvers.rs`'s tanh problem at tol
//!   1e-8, 30 iterations against 196 with an absolute `lam = 1e-4`, where
//!   plain iteration needs 120.)
//! - A singular system (more stored residuals than dimensions, with
//!   `lam = 0`) is solved again with a relative ridge of 1e-12. Safe
//!   fallback: a sample whose system still cannot be solved (zero
//!   residuals, non-finite) takes the damped fixed-point step from its
//!   latest iterate (`a = e_newest`).
//! - History beyond `m` drops the oldest pair. Samples that already met
//!   `tol` keep being mixed with the batch; the tracker keeps their best.

use candle_core::{DType, Tensor};

use super::linalg::{solve_lu, solve_spd_into, SpdLanes, LANES};
use super::track::{Step, Tracker};
use super::{check_setting, Control, Map, Solution, Solver, SolverError};

/// The relative ridge tried when the Gram matrix with `lam` is singular.
const SINGULAR_RIDGE: f64 = 1e-12;

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
        let mut history = History::new(self.m, tr.batch(), self.beta != 1.0);
        let mut x = z0.clone();
        while tr.has_budget(ctl.max_iter) {
            let (fx, step) = tr.eval(f, &x)?;
            if step != Step::Continue {
                break;
            }
            history.push(x, fx)?;
            x = self.mix(&history, &tr)?;
        }
        Ok(tr.finish_best())
    }
}

/// Buffers of the tiny per-sample solves of one mix (reused per sample).
struct Scratch {
    a: Vec<f64>,
    l: Vec<f64>,
    y: Vec<f64>,
    ones: Vec<f64>,
}

impl Scratch {
    fn new(n: usize) -> Scratch {
        Scratch {
            a: vec![0.0; n * n],
            l: vec![0.0; n * n],
            y: vec![0.0; n],
            ones: vec![1.0; n],
        }
    }
}

/// The last `n <= m` iterates, their images and residuals, in ring slots,
/// with each sample's Gram matrix of the residuals (f64, by slot).
struct History {
    m: usize,
    /// The iterates, kept only where the mix reads them (`beta != 1`): the
    /// usual `beta = 1` mixes the images alone, and holding five unread
    /// states would crowd the ones that are read out of the cache.
    xs: Vec<Option<Tensor>>,
    keep_iterates: bool,
    fs: Vec<Tensor>,
    gs: Vec<Tensor>,
    /// The slot the next pair goes into.
    next: usize,
    /// `gram[b][i * m + j] = <g_i, g_j>` for sample `b`.
    gram: Vec<Vec<f64>>,
    /// The slot of the newest pair.
    newest: usize,
}

impl History {
    fn new(m: usize, batch: usize, keep_iterates: bool) -> History {
        History {
            m,
            xs: Vec::with_capacity(m),
            keep_iterates,
            fs: Vec::with_capacity(m),
            gs: Vec::with_capacity(m),
            next: 0,
            gram: vec![vec![0.0; m * m]; batch],
            newest: 0,
        }
    }

    fn len(&self) -> usize {
        self.fs.len()
    }

    /// Add `(x, f(x))`, replacing the oldest pair when full.
    fn push(&mut self, x: Tensor, fx: Tensor) -> candle_core::Result<()> {
        // On the CPU one pass on the pool (candle's runs on one thread).
        let g = match super::host::difference(&fx, &x) {
            Some(g) => g,
            None => (&fx - &x)?,
        };
        let slot = self.next;
        let x = self.keep_iterates.then_some(x);
        if slot == self.xs.len() {
            self.xs.push(x);
            self.fs.push(fx);
            self.gs.push(g);
        } else {
            self.xs[slot] = x;
            self.fs[slot] = fx;
            self.gs[slot] = g;
        }
        self.newest = slot;
        self.next = (slot + 1) % self.m;
        // One row of the Gram matrix: <g_new, g_j> for every stored j.
        let new = &self.gs[slot];
        let stored: Vec<&Tensor> = self.gs.iter().collect();
        // Row-major `[B, k]`, sample by sample.
        let dots: Vec<f64> = match super::host::row_dots(new, &stored) {
            Some(d) => d,
            None => {
                let dots = self
                    .gs
                    .iter()
                    .map(|gj| (new * gj)?.sum_keepdim(1))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&dots, 1)?
                    .to_dtype(DType::F64)?
                    .flatten_all()?
                    .to_vec1::<f64>()?
            }
        };
        let m = self.m;
        for (gram, row) in self.gram.iter_mut().zip(dots.chunks(stored.len().max(1))) {
            for (j, d) in row.iter().enumerate() {
                gram[slot * m + j] = *d;
                gram[j * m + slot] = *d;
            }
        }
        Ok(())
    }
}

impl Anderson {
    /// The next iterate from the (non-empty) history.
    fn mix(&self, h: &History, tr: &Tracker) -> candle_core::Result<Tensor> {
        let n = h.len();
        if n == 0 {
            candle_core::bail!("anderson: empty history");
        }
        if n == 1 {
            if self.beta == 1.0 {
                return Ok(h.fs[0].clone());
            }
            return self.blend(h.fs[0].clone(), iterate(h, 0)?);
        }
        // Per sample, the weights by slot (row b, slot j at b * n + j), with
        // one set of scratch buffers for every sample's solve.
        let batch = tr.batch();
        let mut by_row = vec![0.0; batch * n];
        let mut scratch = Scratch::new(n);
        let mut lanes = SpdLanes::new(n);
        for (grams, outs) in h.gram.chunks(LANES).zip(by_row.chunks_mut(n * LANES)) {
            self.weights_by_lanes(grams, h.m, n, h.newest, (&mut lanes, &mut scratch), outs);
        }
        // On the CPU, one pass per mix instead of a scaled add per slot.
        let fs: Vec<&Tensor> = h.fs.iter().collect();
        if let Some(f) = super::host::weighted_sum(&fs, &by_row) {
            if self.beta == 1.0 {
                return Ok(f);
            }
            let xs: Vec<&Tensor> = (0..n)
                .map(|j| iterate(h, j))
                .collect::<candle_core::Result<_>>()?;
            if let Some(x) = super::host::weighted_sum(&xs, &by_row) {
                return self.blend(f, &x);
            }
        }
        let columns: Vec<Vec<f64>> = (0..n)
            .map(|j| (0..batch).map(|b| by_row[b * n + j]).collect())
            .collect();
        let mut fmix: Option<Tensor> = None;
        let mut xmix: Option<Tensor> = None;
        for (j, col) in columns.into_iter().enumerate() {
            let a = Tensor::from_vec(col, (batch, 1), tr.device())?.to_dtype(tr.dtype())?;
            let fj = h.fs[j].broadcast_mul(&a)?;
            fmix = Some(match fmix {
                Some(acc) => (acc + fj)?,
                None => fj,
            });
            if self.beta != 1.0 {
                let xj = iterate(h, j)?.broadcast_mul(&a)?;
                xmix = Some(match xmix {
                    Some(acc) => (acc + xj)?,
                    None => xj,
                });
            }
        }
        match (fmix, xmix) {
            (Some(f), Some(x)) => self.blend(f, &x),
            (Some(f), None) => Ok(f),
            _ => candle_core::bail!("anderson: empty history"),
        }
    }

    /// `beta * f + (1 - beta) * x`.
    fn blend(&self, f: Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.beta == 1.0 {
            Ok(f)
        } else {
            (f * self.beta)? + (x * (1.0 - self.beta))?
        }
    }

    /// [`Anderson::weights_into`] for up to [`LANES`] samples, with their
    /// first Cholesky solves side by side (the same bits); a sample whose
    /// solve there fails takes `weights_into`'s whole path again.
    fn weights_by_lanes(
        &self,
        grams: &[Vec<f64>],
        m: usize,
        n: usize,
        newest: usize,
        (lanes, s): (&mut SpdLanes, &mut Scratch),
        outs: &mut [f64],
    ) {
        let mut usable = [false; LANES];
        for (t, use_lane) in usable.iter_mut().enumerate() {
            let gram = grams.get(t).filter(|g| n > 0 && g.len() >= (n - 1) * m + n);
            let mean_diag = gram.map_or(0.0, |g| {
                (0..n).map(|i| g[i * m + i]).sum::<f64>() / n as f64
            });
            *use_lane = gram.is_some() && mean_diag.is_finite() && mean_diag > 0.0;
            for i in 0..n {
                for j in 0..n {
                    lanes.a[i * n + j][t] = match gram {
                        Some(g) if *use_lane => g[i * m + j],
                        // An unused lane solves the identity, harmlessly.
                        _ => f64::from(i == j),
                    };
                }
                if *use_lane {
                    lanes.a[i * n + i][t] += self.lam * mean_diag;
                }
            }
        }
        let solved = lanes.solve();
        for (t, (gram, out)) in grams.iter().zip(outs.chunks_mut(n)).enumerate() {
            if usable[t] && solved[t] && out.len() == n {
                for (j, o) in out.iter_mut().enumerate() {
                    *o = lanes.x[j][t];
                }
                normalize(out, newest);
            } else {
                self.weights_into(gram, m, n, newest, s, out);
            }
        }
    }

    /// The mixing weights of one sample into `out` (`n` values), from its
    /// Gram matrix `gram` (row stride `m`, the first `n` rows and columns
    /// used); the fallback takes the plain step from slot `newest`.
    fn weights_into(
        &self,
        gram: &[f64],
        m: usize,
        n: usize,
        newest: usize,
        s: &mut Scratch,
        out: &mut [f64],
    ) {
        let fallback = |out: &mut [f64]| plain_step(out, newest);
        if out.len() != n || n == 0 || gram.len() < (n - 1) * m + n || s.a.len() != n * n {
            return fallback(out);
        }
        let mean_diag = (0..n).map(|i| gram[i * m + i]).sum::<f64>() / n as f64;
        if !mean_diag.is_finite() || mean_diag <= 0.0 {
            return fallback(out);
        }
        // A singular Gram matrix (more residuals than dimensions, `lam = 0`)
        // still has a best mix; the smallest ridge that makes the system
        // solvable finds it, where the plain step would throw it away.
        let mut solve = |lam: f64, out: &mut [f64]| {
            for i in 0..n {
                s.a[i * n..(i + 1) * n].copy_from_slice(&gram[i * m..i * m + n]);
                s.a[i * n + i] += lam * mean_diag;
            }
            if solve_spd_into(&s.a, n, &s.ones, (&mut s.l, &mut s.y), out) {
                return true;
            }
            match solve_lu(&s.a, n, &s.ones) {
                Some(w) => {
                    out.copy_from_slice(&w);
                    true
                }
                None => false,
            }
        };
        if !solve(self.lam, out) && !solve(self.lam.max(SINGULAR_RIDGE), out) {
            return fallback(out);
        }
        normalize(out, newest);
    }
}

/// The iterate in slot `j`, which the history keeps where `beta != 1`.
fn iterate(h: &History, j: usize) -> candle_core::Result<&Tensor> {
    match h.xs.get(j) {
        Some(Some(x)) => Ok(x),
        _ => candle_core::bail!("anderson: iterate {j} was not kept"),
    }
}

/// The weights that take the plain step from slot `newest`.
fn plain_step(out: &mut [f64], newest: usize) {
    out.fill(0.0);
    if let Some(x) = out.get_mut(newest) {
        *x = 1.0;
    }
}

/// Scale a solve's `w` to `a = w / sum(w)`, or take the plain step where
/// that is not finite.
fn normalize(out: &mut [f64], newest: usize) {
    let sum: f64 = out.iter().sum();
    if !sum.is_finite() || sum.abs() <= 1e-300 {
        return plain_step(out, newest);
    }
    for v in out.iter_mut() {
        *v /= sum;
    }
    if !out.iter().all(|v| v.is_finite()) {
        plain_step(out, newest);
    }
}
