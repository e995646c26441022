//! Solver bookkeeping in place on CPU memory: per-sample sums, dot products
//! and weighted sums of `[B, N]` tensors in one pass each.
//!
//! The device-generic forms (`(a - b).sqr().sum_keepdim(1)`, a scaled add per
//! history slot) allocate a full `[B, N]` temporary per operation and walk
//! memory once per operation; on the CPU these read the operands in place
//! and allocate only their results. Every function returns `None` when its
//! operands are not contiguous f32/f64 CPU `[B, N]` tensors of one shape and
//! dtype, and the caller then takes the generic path. Results agree with it
//! up to summation order: sums accumulate in f64 (the generic path sums in
//! the tensor's dtype), weighted sums in the tensor's dtype in slot order.
//! Large tensors are split by sample across the thread pool; each sample's
//! sums are computed exactly as on one thread, so the bits do not depend
//! on the number of threads.
//! The dot products of one row with several others and the row loops of
//! the weighted sums and residuals run with AVX-512 or AVX2 where the CPU
//! has them ([`wide`]), with the bits of the portable loops.

use std::mem::MaybeUninit;

use candle_core::{DType, Device, Tensor, WithDType};

use crate::exec::slices::with_cpu_slices;
use rayon::prelude::*;

mod wide;

/// From this many elements per tensor on, samples are spread over the
/// thread pool: below it the work (tens of microseconds) does not pay for
/// waking the threads.
const PARALLEL_MIN: usize = 1 << 18;

/// Whether `b` samples of `n` elements are worth splitting across threads.
fn split_rows(b: usize, n: usize) -> bool {
    b > 1 && b * n >= PARALLEL_MIN && rayon::current_num_threads() > 1
}

/// `f(r)` for each sample `r` in `0..b`, in order, on the pool when
/// [`split_rows`] says so.
fn per_row<R: Send>(b: usize, n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    if split_rows(b, n) {
        (0..b).into_par_iter().map(f).collect()
    } else {
        (0..b).map(f).collect()
    }
}

/// Run `f` on the element slices of `ts` (all `[B, N]`, contiguous, CPU, of
/// type `T`), with `(B, N)`.
fn with_slices<T: WithDType, R>(
    ts: &[&Tensor],
    f: impl FnOnce(&[&[T]], (usize, usize)) -> R,
) -> Option<R> {
    #[cfg(test)]
    if FORCE_GENERIC.with(std::cell::Cell::get) {
        return None;
    }
    let first = ts.first()?;
    let (b, n) = match first.dims() {
        [b, n] => (*b, *n),
        _ => return None,
    };
    if ts
        .iter()
        .any(|t| t.dims() != first.dims() || t.dtype() != T::DTYPE)
    {
        return None;
    }
    with_cpu_slices::<T, _>(ts, |slices| {
        (slices.first().map_or(0, |s| s.len()) == b * n).then(|| f(slices, (b, n)))
    })?
}

#[cfg(test)]
thread_local! {
    /// Tests set this to run the solvers' generic path on this thread.
    static FORCE_GENERIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Dispatch on the dtype of the first tensor.
macro_rules! by_dtype {
    ($ts:expr, |$s:ident, $dims:ident| $body:expr) => {
        match $ts.first().map(|t| t.dtype()) {
            Some(DType::F32) => with_slices::<f32, _>($ts, |$s, $dims| $body),
            Some(DType::F64) => with_slices::<f64, _>($ts, |$s, $dims| $body),
            _ => None,
        }
    };
}

/// Independent accumulators per sum: one f64 chain per sum would be bound
/// by the add latency; lanes pipeline (and vectorize).
const LANES: usize = 8;

/// `sum a_i b_i` in f64; with AVX2 where the CPU has it (the build targets
/// baseline x86-64, whose SSE2 converts two floats at a time). The same
/// lanes in the same order either way, so the same result to the bit.
fn dot<T: WithDType>(a: &[T], b: &[T]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::dot(a, b) };
    }
    dot_lanes(a, b)
}

/// `[sum (f - z)^2, sum f^2, 0 if every f is finite else 1]` in f64 (with
/// AVX2 where the CPU has it, as [`dot`]).
fn residual_row<T: WithDType>(z: &[T], f: &[T]) -> [f64; 3] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::residual_row(z, f) };
    }
    residual_lanes(z, f)
}

/// The loops above compiled for AVX2. f32 inputs take explicit vector code
/// (the compiler's own vectorization of the f32-to-f64 lanes was mostly
/// scalar): the same eight lanes, the same operations (a multiply, then an
/// add: no fused multiply-add) and the same final sums, so the same bits as
/// the portable lanes (tested).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use candle_core::DType;

    use super::{dot_finish, dot_lanes, dot_tail, residual_finish, residual_lanes, residual_tail};
    use super::{WithDType, LANES};

    /// # Safety
    /// `T` must be `f32`.
    unsafe fn as_f32<T>(s: &[T]) -> &[f32] {
        std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len())
    }

    /// Eight f32 at `p` as two vectors of four f64 (lanes 0-3, 4-7).
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> (__m256d, __m256d) {
        (
            _mm256_cvtps_pd(_mm_loadu_ps(p)),
            _mm256_cvtps_pd(_mm_loadu_ps(p.add(4))),
        )
    }

    unsafe fn lanes(lo: __m256d, hi: __m256d) -> [f64; LANES] {
        let mut out = [0.0f64; LANES];
        _mm256_storeu_pd(out.as_mut_ptr(), lo);
        _mm256_storeu_pd(out.as_mut_ptr().add(4), hi);
        out
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot<T: WithDType>(a: &[T], b: &[T]) -> f64 {
        if T::DTYPE != DType::F32 || a.len() != b.len() {
            return dot_lanes(a, b);
        }
        let (a, b) = (as_f32(a), as_f32(b));
        let full = a.len() / LANES * LANES;
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        let mut i = 0;
        while i < full {
            let (al, ah) = load8(a.as_ptr().add(i));
            let (bl, bh) = load8(b.as_ptr().add(i));
            lo = _mm256_add_pd(lo, _mm256_mul_pd(al, bl));
            hi = _mm256_add_pd(hi, _mm256_mul_pd(ah, bh));
            i += LANES;
        }
        dot_finish(&lanes(lo, hi), dot_tail(&a[full..], &b[full..]))
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn residual_row<T: WithDType>(z: &[T], f: &[T]) -> [f64; 3] {
        if T::DTYPE != DType::F32 || z.len() != f.len() {
            return residual_lanes(z, f);
        }
        let (z, f) = (as_f32(z), as_f32(f));
        let full = z.len() / LANES * LANES;
        let zero = _mm256_setzero_pd();
        let (mut d2l, mut d2h, mut f2l, mut f2h, mut pl, mut ph) =
            (zero, zero, zero, zero, zero, zero);
        let mut i = 0;
        while i < full {
            let (xl, xh) = load8(z.as_ptr().add(i));
            let (yl, yh) = load8(f.as_ptr().add(i));
            let (dl, dh) = (_mm256_sub_pd(yl, xl), _mm256_sub_pd(yh, xh));
            d2l = _mm256_add_pd(d2l, _mm256_mul_pd(dl, dl));
            d2h = _mm256_add_pd(d2h, _mm256_mul_pd(dh, dh));
            f2l = _mm256_add_pd(f2l, _mm256_mul_pd(yl, yl));
            f2h = _mm256_add_pd(f2h, _mm256_mul_pd(yh, yh));
            pl = _mm256_add_pd(pl, _mm256_mul_pd(yl, zero));
            ph = _mm256_add_pd(ph, _mm256_mul_pd(yh, zero));
            i += LANES;
        }
        let tail = residual_tail(&z[full..], &f[full..]);
        residual_finish(&lanes(d2l, d2h), &lanes(f2l, f2h), &lanes(pl, ph), tail)
    }
}

#[inline(always)]
fn dot_tail<T: WithDType>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.to_f64() * y.to_f64()).sum()
}

#[inline(always)]
fn dot_finish(acc: &[f64; LANES], tail: f64) -> f64 {
    acc.iter().sum::<f64>() + tail
}

#[inline(always)]
fn dot_lanes<T: WithDType>(a: &[T], b: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail = dot_tail(ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l].to_f64() * y[l].to_f64();
        }
    }
    dot_finish(&acc, tail)
}

#[inline(always)]
fn residual_tail<T: WithDType>(z: &[T], f: &[T]) -> [f64; 3] {
    let mut tail = [0.0f64; 3];
    for (a, b) in z.iter().zip(f) {
        let (a, b) = (a.to_f64(), b.to_f64());
        tail[0] += (b - a) * (b - a);
        tail[1] += b * b;
        tail[2] += b * 0.0;
    }
    tail
}

#[inline(always)]
fn residual_finish(
    d2: &[f64; LANES],
    f2: &[f64; LANES],
    probe: &[f64; LANES],
    tail: [f64; 3],
) -> [f64; 3] {
    let finite = (probe.iter().sum::<f64>() + tail[2]) == 0.0;
    [
        d2.iter().sum::<f64>() + tail[0],
        f2.iter().sum::<f64>() + tail[1],
        if finite { 0.0 } else { 1.0 },
    ]
}

#[inline(always)]
fn residual_lanes<T: WithDType>(z: &[T], f: &[T]) -> [f64; 3] {
    // `f * 0` is 0 for a finite f and NaN otherwise.
    let (mut d2, mut f2, mut probe) = ([0.0f64; LANES], [0.0f64; LANES], [0.0f64; LANES]);
    let (cz, cf) = (z.chunks_exact(LANES), f.chunks_exact(LANES));
    let tail = residual_tail(cz.remainder(), cf.remainder());
    for (a, b) in cz.zip(cf) {
        for l in 0..LANES {
            let (x, y) = (a[l].to_f64(), b[l].to_f64());
            d2[l] += (y - x) * (y - x);
            f2[l] += y * y;
            probe[l] += y * 0.0;
        }
    }
    residual_finish(&d2, &f2, &probe, tail)
}

/// Per sample of `z`, `f(z)`: `[sum (fz - z)^2, sum fz^2, 1 if fz has a
/// NaN or infinity else 0]`, in f64.
pub(crate) fn residual_sums(z: &Tensor, fz: &Tensor) -> Option<Vec<[f64; 3]>> {
    fn go<T: WithDType>(s: &[&[T]], (b, n): (usize, usize)) -> Vec<[f64; 3]> {
        per_row(b, n, |r| {
            residual_row(&s[0][r * n..(r + 1) * n], &s[1][r * n..(r + 1) * n])
        })
    }
    by_dtype!(&[z, fz], |s, dims| go(s, dims))
}

/// Per sample, the dot products of `a` with each of `others`, row-major in
/// one buffer: sample `r`, other `j` at `r * k + j` (no vector per sample).
pub(crate) fn row_dots(a: &Tensor, others: &[&Tensor]) -> Option<Vec<f64>> {
    fn go<T: WithDType>(s: &[&[T]], (b, n): (usize, usize)) -> Vec<f64> {
        let k = s.len() - 1;
        let mut out = vec![0.0; b * k];
        let fill = |(r, row): (usize, &mut [f64])| {
            let span = r * n..(r + 1) * n;
            wide::dots(&s[0][span.clone()], &s[1..], span, row);
        };
        if split_rows(b, n) {
            out.par_chunks_mut(k.max(1)).enumerate().for_each(fill);
        } else {
            out.chunks_mut(k.max(1)).enumerate().for_each(fill);
        }
        out
    }
    let mut all = Vec::with_capacity(others.len() + 1);
    all.push(a);
    all.extend_from_slice(others);
    by_dtype!(&all, |s, dims| go(s, dims))
}

/// Per sample `r`: `sum_j coefs[r * k + j] * ts[j][r, :]` (`k` tensors),
/// accumulated in slot order in the tensors' dtype (as a chain of scaled
/// adds would).
pub(crate) fn weighted_sum(ts: &[&Tensor], coefs: &[f64]) -> Option<Tensor> {
    fn go<T: WithDType>(s: &[&[T]], (b, n): (usize, usize), coefs: &[f64]) -> Option<Vec<T>> {
        let k = s.len();
        if coefs.len() != b * k {
            return None;
        }
        // `k >= 1` (the caller's first tensor), so slot 0 writes each row.
        Some(rows_written(b, n, |r, row| {
            for (j, t) in s.iter().enumerate() {
                let c = T::from_f64(coefs[r * k + j]);
                let src = &t[r * n..(r + 1) * n];
                if j == 0 {
                    wide::scale_into(row, src, c);
                } else {
                    // SAFETY: slot 0 wrote every element of the row.
                    unsafe { wide::add_scaled(row, src, c) };
                }
            }
        }))
    }
    let dims = ts.first()?.dims().to_vec();
    match ts.first()?.dtype() {
        DType::F32 => {
            let v = with_slices::<f32, _>(ts, |s, d| go(s, d, coefs))??;
            Tensor::from_vec(v, dims, &Device::Cpu).ok()
        }
        DType::F64 => {
            let v = with_slices::<f64, _>(ts, |s, d| go(s, d, coefs))??;
            Tensor::from_vec(v, dims, &Device::Cpu).ok()
        }
        _ => None,
    }
}

/// Per element, `g = fz - z` and `dg = g - g_prev` in one pass, in the
/// tensors' dtype (the bits of the two subtractions done apart): a
/// fixed-point solver's residual and its change since the last iterate.
pub(crate) fn residual_and_change(
    fz: &Tensor,
    z: &Tensor,
    g_prev: &Tensor,
) -> Option<(Tensor, Tensor)> {
    fn go<T: WithDType>(s: &[&[T]], (b, n): (usize, usize)) -> (Vec<T>, Vec<T>) {
        type Rows<'a, T> = (&'a mut [MaybeUninit<T>], &'a mut [MaybeUninit<T>]);
        let fill = |(r, (g, dg)): (usize, Rows<T>)| {
            let span = r * n..(r + 1) * n;
            let (fz, z, gp) = (&s[0][span.clone()], &s[1][span.clone()], &s[2][span]);
            wide::residual_change_into((g, dg), fz, z, gp);
        };
        let chunk = n.max(1);
        written2(b * n, |g, dg| {
            if split_rows(b, n) {
                g.par_chunks_mut(chunk)
                    .zip(dg.par_chunks_mut(chunk))
                    .enumerate()
                    .for_each(fill);
            } else {
                g.chunks_mut(chunk)
                    .zip(dg.chunks_mut(chunk))
                    .enumerate()
                    .for_each(fill);
            }
        })
    }
    let dims = z.dims();
    match z.dtype() {
        DType::F32 => {
            let (g, dg) = with_slices::<f32, _>(&[fz, z, g_prev], go)?;
            Some((tensor_of(g, dims)?, tensor_of(dg, dims)?))
        }
        DType::F64 => {
            let (g, dg) = with_slices::<f64, _>(&[fz, z, g_prev], go)?;
            Some((tensor_of(g, dims)?, tensor_of(dg, dims)?))
        }
        _ => None,
    }
}

/// Per element `a + b`, in the tensors' dtype (an iterate plus its step).
pub(crate) fn sum(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    fn go<T: WithDType>(s: &[&[T]], (rows, n): (usize, usize)) -> Vec<T> {
        rows_written(rows, n, |r, o| {
            let span = r * n..(r + 1) * n;
            for ((y, x), z) in o.iter_mut().zip(&s[0][span.clone()]).zip(&s[1][span]) {
                y.write(*x + *z);
            }
        })
    }
    let dims = a.dims();
    match a.dtype() {
        DType::F32 => tensor_of(with_slices::<f32, _>(&[a, b], go)?, dims),
        DType::F64 => tensor_of(with_slices::<f64, _>(&[a, b], go)?, dims),
        _ => None,
    }
}

/// Per element `a - b`, in the tensors' dtype (a residual `f(z) - z`).
pub(crate) fn difference(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    fn go<T: WithDType>(s: &[&[T]], (rows, n): (usize, usize)) -> Vec<T> {
        rows_written(rows, n, |r, o| {
            let span = r * n..(r + 1) * n;
            wide::difference_into(o, &s[0][span.clone()], &s[1][span]);
        })
    }
    let dims = a.dims();
    match a.dtype() {
        DType::F32 => tensor_of(with_slices::<f32, _>(&[a, b], go)?, dims),
        DType::F64 => tensor_of(with_slices::<f64, _>(&[a, b], go)?, dims),
        _ => None,
    }
}

/// Per sample `r`, `(a[r] - b[r]) * coefs[r]` in the tensors' dtype (the
/// bits of a subtraction and a multiplication by a per-sample column).
pub(crate) fn scaled_difference(a: &Tensor, b: &Tensor, coefs: &[f64]) -> Option<Tensor> {
    fn go<T: WithDType>(s: &[&[T]], (rows, n): (usize, usize), coefs: &[f64]) -> Option<Vec<T>> {
        if coefs.len() != rows {
            return None;
        }
        Some(rows_written(rows, n, |r, o| {
            let c = T::from_f64(coefs[r]);
            let span = r * n..(r + 1) * n;
            for ((y, x), z) in o.iter_mut().zip(&s[0][span.clone()]).zip(&s[1][span]) {
                y.write((*x - *z) * c);
            }
        }))
    }
    let dims = a.dims();
    match a.dtype() {
        DType::F32 => tensor_of(
            with_slices::<f32, _>(&[a, b], |s, d| go(s, d, coefs))??,
            dims,
        ),
        DType::F64 => tensor_of(
            with_slices::<f64, _>(&[a, b], |s, d| go(s, d, coefs))??,
            dims,
        ),
        _ => None,
    }
}

/// A vector of `len` elements that `fill` writes completely through
/// `MaybeUninit`: no zero fill first, which on a state of megabytes is a
/// whole extra pass over memory.
fn written<T>(len: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: every caller's `fill` writes each of the `len` elements (a
    // row's first write initializes it; later ones add to it).
    unsafe { v.set_len(len) };
    v
}

/// `rows` rows of `n` elements, row `r` written by `fill(r, row)` as in
/// [`written`], on the pool when [`split_rows`] says so.
fn rows_written<T: WithDType>(
    rows: usize,
    n: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send,
) -> Vec<T> {
    written(rows * n, |out| {
        let each = |(r, row): (usize, &mut [MaybeUninit<T>])| fill(r, row);
        if split_rows(rows, n) {
            out.par_chunks_mut(n.max(1))
                .enumerate()
                .take(rows)
                .for_each(each);
        } else {
            out.chunks_mut(n.max(1))
                .enumerate()
                .take(rows)
                .for_each(each);
        }
    })
}

/// Two vectors as [`written`], filled together.
fn written2<T>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]),
) -> (Vec<T>, Vec<T>) {
    let mut second = Vec::new();
    let first = written(len, |a| second = written(len, |b| fill(a, b)));
    (first, second)
}

fn tensor_of<T: WithDType>(v: Vec<T>, dims: &[usize]) -> Option<Tensor> {
    Tensor::from_vec(v, dims, &Device::Cpu).ok()
}

/// Per sample, the dot products of each of `xs` with each of `others`:
/// `out[i][r * k + j] = xs[i][r] . others[j][r]`, each `others` row read
/// from memory once for all of `xs` (the same sums as [`row_dots`]).
pub(crate) fn row_dots_many(xs: &[&Tensor], others: &[&Tensor]) -> Option<Vec<Vec<f64>>> {
    fn go<T: WithDType>(s: &[&[T]], (b, n): (usize, usize), m: usize) -> Vec<Vec<f64>> {
        let k = s.len() - m;
        let rows = per_row(b, n, |r| {
            let span = r * n..(r + 1) * n;
            // Sample `r`'s dots by other: `d[j * m + i] = others[j] . xs[i]`
            // (the products commute, so the bits of `dot(xs[i], others[j])`).
            let mut d = vec![0.0; k * m];
            for (j, column) in d.chunks_mut(m.max(1)).enumerate().take(k) {
                wide::dots(&s[m + j][span.clone()], &s[..m], span.clone(), column);
            }
            d
        });
        (0..m)
            .map(|i| {
                rows.iter()
                    .flat_map(|d| (0..k).map(move |j| d[j * m + i]))
                    .collect()
            })
            .collect()
    }
    let mut all = xs.to_vec();
    all.extend_from_slice(others);
    let m = xs.len();
    by_dtype!(&all, |s, dims| go(s, dims, m))
}

/// One output of [`weighted_sum_pair`]: per sample `r`,
/// `head[r] * coefs[r * w] + sum_j coefs[r * w + 1 + j] * shared[skip + j][r]`
/// with `w = 1 + shared.len() - skip`, in that order.
pub(crate) struct Mix<'a> {
    pub head: &'a Tensor,
    pub skip: usize,
    pub coefs: &'a [f64],
}

/// Two weighted sums over the same tensors with one read of them from
/// memory; each output has the bits [`weighted_sum`] gives it alone.
pub(crate) fn weighted_sum_pair(shared: &[&Tensor], a: Mix, b: Mix) -> Option<(Tensor, Tensor)> {
    fn go<T: WithDType>(
        s: &[&[T]],
        (rows, n): (usize, usize),
        skips: [usize; 2],
        coefs: [&[f64]; 2],
    ) -> Option<(Vec<T>, Vec<T>)> {
        let k = s.len() - 2;
        let widths = skips.map(|skip| 1 + k.saturating_sub(skip));
        if skips.iter().any(|skip| *skip > k) || (0..2).any(|m| coefs[m].len() != rows * widths[m])
        {
            return None;
        }
        let mix = |r: usize, o0: &mut [MaybeUninit<T>], o1: &mut [MaybeUninit<T>]| {
            let c = |m: usize, slot: usize| T::from_f64(coefs[m][r * widths[m] + slot]);
            for (m, o) in [(0, &mut *o0), (1, &mut *o1)] {
                wide::scale_into(o, &s[m][r * n..(r + 1) * n], c(m, 0));
            }
            for j in 0..k {
                let src = &s[2 + j][r * n..(r + 1) * n];
                for (m, o) in [(0, &mut *o0), (1, &mut *o1)] {
                    if j < skips[m] {
                        continue;
                    }
                    // SAFETY: the head wrote every element of the row.
                    unsafe { wide::add_scaled(o, src, c(m, 1 + j - skips[m])) };
                }
            }
        };
        let out = written2(rows * n, |o0, o1| {
            if split_rows(rows, n) {
                o0.par_chunks_mut(n.max(1))
                    .zip(o1.par_chunks_mut(n.max(1)))
                    .enumerate()
                    .take(rows)
                    .for_each(|(r, (x, y))| mix(r, x, y));
            } else {
                o0.chunks_mut(n.max(1))
                    .zip(o1.chunks_mut(n.max(1)))
                    .enumerate()
                    .take(rows)
                    .for_each(|(r, (x, y))| mix(r, x, y));
            }
        });
        Some(out)
    }
    let mut all = vec![a.head, b.head];
    all.extend_from_slice(shared);
    let dims = a.head.dims().to_vec();
    let (skips, coefs) = ([a.skip, b.skip], [a.coefs, b.coefs]);
    match a.head.dtype() {
        DType::F32 => {
            let (x, y) = with_slices::<f32, _>(&all, |s, d| go(s, d, skips, coefs))??;
            Some((
                Tensor::from_vec(x, dims.as_slice(), &Device::Cpu).ok()?,
                Tensor::from_vec(y, dims.as_slice(), &Device::Cpu).ok()?,
            ))
        }
        DType::F64 => {
            let (x, y) = with_slices::<f64, _>(&all, |s, d| go(s, d, skips, coefs))??;
            Some((
                Tensor::from_vec(x, dims.as_slice(), &Device::Cpu).ok()?,
                Tensor::from_vec(y, dims.as_slice(), &Device::Cpu).ok()?,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
