//! Limited-memory "good" Broyden on `g(z) = f(z) - z`, per sample.
//!
//! Owns `broyden(memory)`. Each sample keeps an approximation of the inverse
//! Jacobian of `g`, `H = -I + sum_i u_i v_i^T` (starting at `-I`, the
//! inverse Jacobian of `g` when `f` is flat), stored as `k` pairs of `[B, N]`
//! vectors; the step is `z <- z - H g(z)` (the first step is the
//! plain fixed-point step `z <- f(z)`). After a step `dz`, `dg`, the
//! Sherman–Morrison form of the good Broyden update adds
//! `u = (dz - H dg) / (dz^T H dg)`, `v^T = dz^T H`.
//!
//! Safety, per sample:
//! - a degenerate update (`|dz^T H dg| <= eps ||dz^T H|| ||dg||`, with
//!   `eps = 1e-12` in f64 and `1e-6` in lower precision, or non-finite)
//!   is skipped for that sample (its `u`, `v` are zero);
//! - a non-finite or vanishing step (`||H g|| <= 1e-10 ||g||`) is replaced
//!   by the fixed-point step `z <- f(z)` for that sample;
//! - beyond `memory` pairs the oldest pair is dropped (`memory = 0` is plain
//!   fixed-point iteration).

use std::collections::VecDeque;

use candle_core::{DType, Tensor};

use super::host;
use super::track::{column, select, Step, Tracker};
use super::{Control, Map, Solution, Solver, SolverError};

/// `broyden(memory)`; sema's default `memory` is the default `max_iter` (40).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broyden {
    /// The number of rank-one pairs kept.
    pub memory: usize,
}

impl Solver for Broyden {
    fn name(&self) -> &'static str {
        "broyden"
    }

    fn solve<E>(&self, ctl: &Control, f: &mut Map<'_, E>, z0: &Tensor) -> Result<Solution, E>
    where
        E: From<SolverError> + From<candle_core::Error>,
    {
        let mut tr = Tracker::new(self.name(), ctl, z0)?;
        if !tr.has_budget(ctl.max_iter) {
            return Ok(tr.finish_best());
        }
        let mut x = z0.clone();
        let (fx, step) = tr.eval(f, &x)?;
        if step != Step::Continue {
            return Ok(tr.finish_best());
        }
        let mut gx = (fx - &x)?;
        let mut mem = Memory::default();
        // H0 = -I: the first step is the fixed-point step.
        let mut update = gx.clone();
        while tr.has_budget(ctl.max_iter) {
            let x_new = match host::sum(&x, &update) {
                Some(t) => t,
                None => (&x + &update)?,
            };
            let (fx_new, step) = tr.eval(f, &x_new)?;
            if step != Step::Continue {
                break;
            }
            let (gx_new, dg) = match host::residual_and_change(&fx_new, &x_new, &gx) {
                Some(pair) => pair,
                None => {
                    let gx_new = (fx_new - &x_new)?;
                    let dg = (&gx_new - &gx)?;
                    (gx_new, dg)
                }
            };
            let fused = if self.memory > 0 {
                self.update_and_step(&mut mem, &update, &dg, &gx_new, &tr)?
            } else {
                None
            };
            x = x_new;
            gx = gx_new;
            update = match fused {
                Some(step) => step,
                None => {
                    if self.memory > 0 {
                        self.update(&mut mem, &update, &dg, &tr)?;
                    }
                    safe_step(&mem, &gx)?
                }
            };
        }
        Ok(tr.finish_best())
    }
}

/// The low-rank part of `H`: pairs `(u_i, v_i)`, each `[B, N]`, oldest
/// first. `H x` and `x^T H` are sums of scaled pairs (per-sample dot
/// products, then scaled adds): `O(k B N)` work with no copy of the history,
/// where stacking the pairs into `[B, N, k]` factors cost a strided copy of
/// the whole memory after every update.
#[derive(Default)]
struct Memory {
    us: VecDeque<Tensor>,
    vs: VecDeque<Tensor>,
}

impl Memory {
    /// Add a pair, dropping the oldest beyond `limit`.
    fn push(&mut self, u: Tensor, v: Tensor, limit: usize) {
        self.us.push_back(u);
        self.vs.push_back(v);
        while self.us.len() > limit {
            self.us.pop_front();
            self.vs.pop_front();
        }
    }

    /// `H x = -x + sum_i u_i (v_i . x)` per sample.
    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        low_rank(&self.us, &self.vs, x)
    }

    /// `x^T H = -x + sum_i (x . u_i) v_i` per sample (a `[B, N]` row each).
    fn apply_t(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        low_rank(&self.vs, &self.us, x)
    }
}

/// `-x + sum_i scaled_i (dotted_i . x)`, per sample.
fn low_rank(
    scaled: &VecDeque<Tensor>,
    dotted: &VecDeque<Tensor>,
    x: &Tensor,
) -> candle_core::Result<Tensor> {
    // On the CPU: the dot products in one pass each, the sum in one pass.
    let ds: Vec<&Tensor> = dotted.iter().collect();
    if let Some(coefs) = host::row_dots(x, &ds) {
        let mut ts = vec![x];
        ts.extend(scaled.iter());
        // Per sample: -1 for `x`, then its dot products (row-major `[B, k]`).
        let k = ds.len();
        let batch = x.dim(0)?;
        let mut rows: Vec<f64> = Vec::with_capacity(batch * (k + 1));
        for r in 0..batch {
            rows.push(-1.0);
            rows.extend_from_slice(coefs.get(r * k..(r + 1) * k).unwrap_or_default());
        }
        if let Some(t) = host::weighted_sum(&ts, &rows) {
            return Ok(t);
        }
    }
    let mut acc = x.neg()?;
    for (s, d) in scaled.iter().zip(dotted) {
        let coef = (d * x)?.sum_keepdim(1)?;
        acc = (acc + s.broadcast_mul(&coef)?)?;
    }
    Ok(acc)
}

impl Broyden {
    /// Add the good Broyden pair for the step `dx` that changed `g` by `dg`.
    fn update(
        &self,
        mem: &mut Memory,
        dx: &Tensor,
        dg: &Tensor,
        tr: &Tracker,
    ) -> candle_core::Result<()> {
        let hdg = mem.apply(dg)?;
        let vt = mem.apply_t(dx)?;
        let sums = row_sums(&[(&vt, dg), (&vt, &vt), (dg, dg)])?;
        let eps = degeneracy_eps(tr.dtype());
        let mut ok = Vec::with_capacity(sums.len());
        let mut inv = Vec::with_capacity(sums.len());
        for s in &sums {
            let (den, nv, ng) = (s[0], s[1], s[2]);
            let good = sound_pair(den, nv, ng, eps);
            ok.push(good);
            inv.push(if good { 1.0 / den } else { 0.0 });
        }
        let u = (dx - hdg)?.broadcast_mul(&column(&inv, tr.dtype(), tr.device())?)?;
        // Zero the pairs of skipped samples (usually none: then no copies).
        let (u, vt) = if ok.iter().all(|o| *o) {
            (u, vt)
        } else {
            let zeros = dx.zeros_like()?;
            (select(&ok, &u, &zeros)?, select(&ok, &vt, &zeros)?)
        };
        mem.push(u, vt, self.memory);
        Ok(())
    }

    /// [`Self::update`] followed by [`safe_step`], with the same bits, but
    /// reading the history from memory four times instead of six (it is
    /// `memory` vectors the size of the state, far beyond the caches on an
    /// MDEQ): one read of `V` for both `dg . v_i` and `g . v_i`, one of `U`
    /// for `dx . u_i`, one of `U` for both `H dg` and `H g` (`H` before the
    /// update, without the pair it will drop), one of `V` for `dx^T H`; the
    /// new pair's share of `H g` is added last, as the slot order puts it.
    /// `None` when the operands are not CPU f32/f64 `[B, N]` tensors (the
    /// caller then takes the two calls).
    fn update_and_step(
        &self,
        mem: &mut Memory,
        dx: &Tensor,
        dg: &Tensor,
        g: &Tensor,
        tr: &Tracker,
    ) -> candle_core::Result<Option<Tensor>> {
        let us: Vec<&Tensor> = mem.us.iter().collect();
        let vs: Vec<&Tensor> = mem.vs.iter().collect();
        let k = us.len();
        let Some(v_dots) = host::row_dots_many(&[dg, g], &vs) else {
            return Ok(None);
        };
        let Some(u_dots) = host::row_dots(dx, &us) else {
            return Ok(None);
        };
        let batch = dx.dim(0)?;
        // The oldest pairs the push will drop take no part in `H g`.
        let drop = (k + 1).saturating_sub(self.memory).min(k);
        let head_then = |dots: &[f64], skip: usize| -> Vec<f64> {
            let mut rows = Vec::with_capacity(batch * (1 + k - skip));
            for r in 0..batch {
                rows.push(-1.0);
                rows.extend_from_slice(dots.get(r * k + skip..(r + 1) * k).unwrap_or_default());
            }
            rows
        };
        let (hdg_coefs, hg_coefs) = (head_then(&v_dots[0], 0), head_then(&v_dots[1], drop));
        let hdg_mix = host::Mix {
            head: dg,
            skip: 0,
            coefs: &hdg_coefs,
        };
        let hg_mix = host::Mix {
            head: g,
            skip: drop,
            coefs: &hg_coefs,
        };
        let Some((hdg, hg_old)) = host::weighted_sum_pair(&us, hdg_mix, hg_mix) else {
            return Ok(None);
        };
        let mut with_dx = vec![dx];
        with_dx.extend(vs.iter().copied());
        let Some(vt) = host::weighted_sum(&with_dx, &head_then(&u_dots, 0)) else {
            return Ok(None);
        };
        let (Some(vt_dots), Some(dg_dg)) = (
            host::row_dots(&vt, &[dg, &vt, g]),
            host::row_dots(dg, &[dg]),
        ) else {
            return Ok(None);
        };
        let eps = degeneracy_eps(tr.dtype());
        let mut ok = Vec::with_capacity(batch);
        let mut inv = Vec::with_capacity(batch);
        let mut g_share = Vec::with_capacity(batch * 2);
        for r in 0..batch {
            let (den, nv, ng) = (vt_dots[3 * r], vt_dots[3 * r + 1], dg_dg[r]);
            let good = sound_pair(den, nv, ng, eps);
            ok.push(good);
            inv.push(if good { 1.0 / den } else { 0.0 });
            // `-H g`: minus (`H g` so far, then the new pair, zero for a
            // skipped sample); negating each term gives the value of
            // `-(a + b)` (rounding is symmetric; at most a zero's sign
            // differs).
            g_share.extend([-1.0, if good { -vt_dots[3 * r + 2] } else { 0.0 }]);
        }
        let u = match host::scaled_difference(dx, &hdg, &inv) {
            Some(u) => u,
            None => (dx - hdg)?.broadcast_mul(&column(&inv, tr.dtype(), tr.device())?)?,
        };
        let (u, vt) = if ok.iter().all(|o| *o) {
            (u, vt)
        } else {
            let zeros = dx.zeros_like()?;
            (select(&ok, &u, &zeros)?, select(&ok, &vt, &zeros)?)
        };
        let Some(step) = host::weighted_sum(&[&hg_old, &u], &g_share) else {
            return Ok(None);
        };
        mem.push(u, vt, self.memory);
        checked_step(step, g).map(Some)
    }
}

/// The `eps` of the degenerate-update test (see the module docs).
fn degeneracy_eps(dtype: DType) -> f64 {
    if dtype == DType::F64 {
        1e-12
    } else {
        1e-6
    }
}

/// Whether a sample's update is sound: `den = dz^T H dg`, `nv = ||dz^T
/// H||^2`, `ng = ||dg||^2` finite and `|den| > eps ||dz^T H|| ||dg||`.
fn sound_pair(den: f64, nv: f64, ng: f64, eps: f64) -> bool {
    den.is_finite()
        && nv.is_finite()
        && ng.is_finite()
        && den.abs() > eps * (nv * ng).sqrt()
        && den != 0.0
}

/// `-H g` per sample, or the fixed-point step `g` where that is non-finite
/// or vanishes.
fn safe_step(mem: &Memory, g: &Tensor) -> candle_core::Result<Tensor> {
    if mem.us.is_empty() {
        return Ok(g.clone());
    }
    checked_step(mem.apply(g)?.neg()?, g)
}

/// `step` per sample, or `g` where `step` is non-finite or vanishes.
fn checked_step(step: Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    let sums = row_sums(&[(&step, &step), (g, g)])?;
    let ok: Vec<bool> = sums
        .iter()
        .map(|s| s[0].is_finite() && (s[0] > 1e-20 * s[1] || s[1] == 0.0))
        .collect();
    if ok.iter().all(|o| *o) {
        Ok(step)
    } else {
        select(&ok, &step, g)
    }
}

/// Per sample, `sum(a * b)` for each of up to three pairs, on the host in
/// f64: `[B][3]` (unused pairs read 0), no vector per sample.
fn row_sums(pairs: &[(&Tensor, &Tensor)]) -> candle_core::Result<Vec<[f64; 3]>> {
    if pairs.len() > 3 {
        candle_core::bail!("row_sums takes at most three pairs");
    }
    let host: Option<Vec<Vec<f64>>> = pairs
        .iter()
        .map(|(a, b)| host::row_dots(a, &[*b]))
        .collect();
    if let Some(per_pair) = host {
        // [pair][B] -> [B][pair]
        let batch = per_pair.first().map_or(0, Vec::len);
        return Ok((0..batch)
            .map(|r| {
                let mut row = [0.0; 3];
                for (v, p) in row.iter_mut().zip(&per_pair) {
                    *v = p[r];
                }
                row
            })
            .collect());
    }
    let cols = pairs
        .iter()
        .map(|(a, b)| (*a * *b)?.sum_keepdim(1))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let rows = Tensor::cat(&cols, 1)?
        .to_dtype(DType::F64)?
        .to_vec2::<f64>()?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut row = [0.0; 3];
            for (v, x) in row.iter_mut().zip(r) {
                *v = *x;
            }
            row
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::solver::Control;

    fn rows(b: usize, n: usize, seed: f64, dtype: DType) -> Tensor {
        let v: Vec<f64> = (0..b * n)
            .map(|i| ((i as f64 * 0.731 + seed).sin() * 1.7).tanh())
            .collect();
        Tensor::from_vec(v, (b, n), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .expect("rows")
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        t.to_dtype(DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .expect("values")
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// The fused iteration gives the update and the step of the two calls
    /// to the bit: empty history, history below its limit, and full history
    /// (the oldest pair dropped), in f32 and f64.
    #[test]
    fn fused_iteration_matches_update_then_step() {
        for dtype in [DType::F32, DType::F64] {
            for (pairs, limit) in [(0, 3), (2, 4), (3, 3)] {
                let (b, n) = (3, 37);
                let mut mem = Memory::default();
                for p in 0..pairs {
                    let (u, v) = (
                        rows(b, n, p as f64, dtype),
                        rows(b, n, 10.0 + p as f64, dtype),
                    );
                    mem.push((u * 0.3).expect("u"), v, limit);
                }
                let mut copy = Memory::default();
                for (u, v) in mem.us.iter().zip(&mem.vs) {
                    copy.push(u.clone(), v.clone(), limit);
                }
                let (dx, dg, g) = (
                    rows(b, n, 20.0, dtype),
                    rows(b, n, 21.0, dtype),
                    rows(b, n, 22.0, dtype),
                );
                let solver = Broyden { memory: limit };
                let ctl = Control::default();
                let tr = Tracker::new("broyden", &ctl, &dx).expect("tracker");
                let fused = solver
                    .update_and_step(&mut mem, &dx, &dg, &g, &tr)
                    .expect("runs")
                    .expect("CPU path");
                solver.update(&mut copy, &dx, &dg, &tr).expect("update");
                let plain = safe_step(&copy, &g).expect("step");
                assert_eq!(bits(&fused), bits(&plain), "{dtype:?} {pairs}/{limit}");
                assert_eq!(mem.us.len(), copy.us.len());
                for (a, c) in mem
                    .us
                    .iter()
                    .zip(&copy.us)
                    .chain(mem.vs.iter().zip(&copy.vs))
                {
                    assert_eq!(bits(a), bits(c), "{dtype:?} {pairs}/{limit}: history");
                }
            }
        }
    }
}
