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

use candle_core::{DType, Device, Storage, Tensor, WithDType};
use rayon::prelude::*;

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
    // The read guards live for the whole call, so the slices stay valid.
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(cpu) = &**storage else {
            return None;
        };
        let (start, end) = layout.contiguous_offsets()?;
        slices.push(T::cpu_storage_as_slice(cpu).ok()?.get(start..end)?);
    }
    if slices.iter().any(|s| s.len() != b * n) {
        return None;
    }
    Some(f(&slices, (b, n)))
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
            let a = &s[0][r * n..(r + 1) * n];
            for (slot, o) in row.iter_mut().zip(&s[1..]) {
                *slot = dot(a, &o[r * n..(r + 1) * n]);
            }
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
        let mut out = vec![T::from_f64(0.0); b * n];
        let mix_row = |(r, row): (usize, &mut [T])| {
            for (j, t) in s.iter().enumerate() {
                let c = T::from_f64(coefs[r * k + j]);
                let src = &t[r * n..(r + 1) * n];
                if j == 0 {
                    for (o, x) in row.iter_mut().zip(src) {
                        *o = *x * c;
                    }
                } else {
                    for (o, x) in row.iter_mut().zip(src) {
                        *o += *x * c;
                    }
                }
            }
        };
        if split_rows(b, n) {
            out.par_chunks_mut(n.max(1))
                .enumerate()
                .take(b)
                .for_each(mix_row);
        } else {
            out.chunks_mut(n.max(1))
                .enumerate()
                .take(b)
                .for_each(mix_row);
        }
        Some(out)
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

/// Per sample, the dot products of each of `xs` with each of `others`:
/// `out[i][r * k + j] = xs[i][r] . others[j][r]`, each `others` row read
/// from memory once for all of `xs` (the same sums as [`row_dots`]).
pub(crate) fn row_dots_many(xs: &[&Tensor], others: &[&Tensor]) -> Option<Vec<Vec<f64>>> {
    fn go<T: WithDType>(s: &[&[T]], (b, n): (usize, usize), m: usize) -> Vec<Vec<f64>> {
        let k = s.len() - m;
        let rows = per_row(b, n, |r| {
            let span = r * n..(r + 1) * n;
            let mut d = vec![0.0; m * k];
            for j in 0..k {
                let o = &s[m + j][span.clone()];
                for i in 0..m {
                    d[i * k + j] = dot(&s[i][span.clone()], o);
                }
            }
            d
        });
        (0..m)
            .map(|i| {
                rows.iter()
                    .flat_map(|d| d[i * k..(i + 1) * k].iter().copied())
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
        let mut out = (
            vec![T::from_f64(0.0); rows * n],
            vec![T::from_f64(0.0); rows * n],
        );
        let mix = |r: usize, o0: &mut [T], o1: &mut [T]| {
            let c = |m: usize, slot: usize| T::from_f64(coefs[m][r * widths[m] + slot]);
            for (m, o) in [(0, &mut *o0), (1, &mut *o1)] {
                let c0 = c(m, 0);
                for (y, x) in o.iter_mut().zip(&s[m][r * n..(r + 1) * n]) {
                    *y = *x * c0;
                }
            }
            for j in 0..k {
                let src = &s[2 + j][r * n..(r + 1) * n];
                for (m, o) in [(0, &mut *o0), (1, &mut *o1)] {
                    if j < skips[m] {
                        continue;
                    }
                    let cj = c(m, 1 + j - skips[m]);
                    for (y, x) in o.iter_mut().zip(src) {
                        *y += *x * cj;
                    }
                }
            }
        };
        let (o0, o1) = (&mut out.0, &mut out.1);
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
mod tests {
    use super::*;

    fn t(v: &[f64], dtype: DType) -> Tensor {
        Tensor::from_vec(v.to_vec(), (2, v.len() / 2), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .expect("tensor")
    }

    /// Large enough to be split across threads: the same bits on a pool of
    /// two threads as on one.
    #[test]
    fn split_samples_give_the_bits_of_one_thread() {
        let (b, n) = (8, PARALLEL_MIN / 4);
        let vals = |seed: f64| -> Vec<f64> {
            (0..b * n)
                .map(|i| ((i as f64 * 0.618 + seed).sin() * 3.0).tanh())
                .collect()
        };
        let mk = |v: Vec<f64>| Tensor::from_vec(v, (b, n), &Device::Cpu).expect("tensor");
        let (z, fz, h) = (mk(vals(0.0)), mk(vals(1.0)), mk(vals(2.0)));
        let coefs: Vec<f64> = (0..b * 3).map(|i| 0.1 * i as f64 - 0.7).collect();
        let run = || {
            let sums = residual_sums(&z, &fz).expect("cpu");
            let dots = row_dots(&z, &[&fz, &h]).expect("cpu");
            let mix: Vec<f64> = weighted_sum(&[&z, &fz, &h], &coefs)
                .expect("cpu")
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .expect("values");
            let many = row_dots_many(&[&z, &h], &[&fz, &h]).expect("cpu");
            let pair_coefs: Vec<f64> = (0..b * 2).map(|i| 0.3 * i as f64 - 1.1).collect();
            let (p, q) = weighted_sum_pair(
                &[&fz, &h],
                Mix {
                    head: &z,
                    skip: 0,
                    coefs: &coefs,
                },
                Mix {
                    head: &h,
                    skip: 1,
                    coefs: &pair_coefs,
                },
            )
            .expect("cpu");
            let flat = |t: Tensor| -> Vec<f64> {
                t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
            };
            // The fused forms are the single ones, read together.
            assert_eq!(many[0], dots);
            assert_eq!(flat(p.clone()), mix);
            let single = weighted_sum(&[&h, &h], &pair_coefs).expect("cpu");
            assert_eq!(flat(q.clone()), flat(single));
            (sums, dots, mix, many, flat(p), flat(q))
        };
        let pool = |k| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(k)
                .build()
                .expect("pool")
        };
        let one = pool(1).install(|| {
            assert!(!split_rows(b, n));
            run()
        });
        let two = pool(2).install(|| {
            assert!(split_rows(b, n));
            run()
        });
        assert_eq!(one, two);
    }

    #[test]
    fn sums_dots_and_mixes_match_the_generic_forms() {
        for dtype in [DType::F32, DType::F64] {
            let z = t(&[1.0, 2.0, 3.0, -1.0, 0.5, 0.25], dtype);
            let fz = t(&[1.5, 1.0, 3.0, f64::NAN, 0.5, 1.0], dtype);
            let s = residual_sums(&z, &fz).expect("cpu f32/f64");
            assert_eq!(s[0], [0.25 + 1.0, 2.25 + 1.0 + 9.0, 0.0]);
            assert_eq!(s[1][2], 1.0);
            let d = row_dots(&z, &[&z, &fz]).expect("cpu");
            // Row-major [B, k]: sample 0's two dots, then sample 1's.
            assert_eq!(d.len(), 4);
            assert_eq!(d[..2], [14.0, 1.5 + 2.0 + 9.0]);
            let m = weighted_sum(&[&z, &z], &[1.0, 2.0, 0.5, 0.0]).expect("cpu");
            let want = t(&[3.0, 6.0, 9.0, -0.5, 0.25, 0.125], dtype);
            let diff = (m - want)
                .and_then(|d| d.abs())
                .and_then(|d| d.sum_all())
                .and_then(|d| d.to_dtype(DType::F64))
                .and_then(|d| d.to_scalar::<f64>())
                .expect("diff");
            assert_eq!(diff, 0.0);
        }
    }

    #[test]
    fn lane_sums_match_a_plain_sum() {
        for n in [1usize, 7, 8, 9, 37, 1000, 4099] {
            let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
            let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(
                (dot(&a, &b) - plain).abs() <= 1e-12 * plain.abs().max(1.0),
                "{n}"
            );
            // The AVX2 forms (taken on this CPU when it has it) give the
            // portable lanes' results to the bit.
            assert_eq!(dot(&a, &b).to_bits(), dot_lanes(&a, &b).to_bits(), "{n}");
            let af: Vec<f32> = a.iter().map(|x| *x as f32).collect();
            let bf: Vec<f32> = b.iter().map(|x| *x as f32).collect();
            assert_eq!(dot(&af, &bf).to_bits(), dot_lanes(&af, &bf).to_bits());
            assert_eq!(residual_row(&af, &bf), residual_lanes(&af, &bf));
            let r = residual_row(&a, &b);
            let d2: f64 = a.iter().zip(&b).map(|(x, y)| (y - x) * (y - x)).sum();
            assert!(
                (r[0] - d2).abs() <= 1e-12 * d2.max(1.0) && r[2] == 0.0,
                "{n}"
            );
            let mut bad32 = bf.clone();
            bad32[n - 1] = f32::NAN;
            assert_eq!(residual_row(&af, &bad32)[2], 1.0, "{n}");
            let mut bad = b.clone();
            bad[n - 1] = f64::INFINITY;
            assert_eq!(residual_row(&a, &bad)[2], 1.0, "{n}");
        }
    }

    /// Solve `z = tanh(z W + x)` with the in-place bookkeeping or the
    /// generic one.
    fn solve(kind: crate::solver::SolverKind, dtype: DType, generic: bool) -> (Vec<f64>, usize) {
        use crate::solver::{SolverError, SolverSpec, Stop};
        FORCE_GENERIC.with(|f| f.set(generic));
        let (b, n) = (3, 19);
        let w: Vec<f64> = (0..n * n)
            .map(|i| 0.9 * ((i as f64) * 0.7).sin() / n as f64)
            .collect();
        let x: Vec<f64> = (0..b * n).map(|i| ((i as f64) * 0.3).cos()).collect();
        let w = Tensor::from_vec(w, (n, n), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .expect("w");
        let x = Tensor::from_vec(x, (b, n), &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .expect("x");
        let spec = SolverSpec {
            kind,
            tol: 1e-30,
            max_iter: 15,
            stop: Stop::Rel,
        };
        let mut f =
            |z: &Tensor| -> Result<Tensor, SolverError> { Ok((z.matmul(&w)? + &x)?.tanh()?) };
        let z0 = x.zeros_like().expect("z0");
        let sol = crate::solver::solve(&spec, &mut f, &z0).expect("solves");
        FORCE_GENERIC.with(|f| f.set(false));
        let z = sol
            .z
            .to_dtype(DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("z");
        (z, sol.stats.iterations)
    }

    #[test]
    fn solvers_give_the_same_iterates_on_both_paths() {
        use crate::solver::SolverKind;
        for kind in [
            SolverKind::Anderson {
                m: 5,
                beta: 1.0,
                lam: 1e-4,
            },
            SolverKind::Anderson {
                m: 3,
                beta: 0.7,
                lam: 1e-4,
            },
            SolverKind::Broyden { memory: 8 },
        ] {
            for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
                let (fast, it_fast) = solve(kind.clone(), dtype, false);
                let (slow, it_slow) = solve(kind.clone(), dtype, true);
                assert_eq!(it_fast, it_slow);
                let scale = slow.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let err = fast
                    .iter()
                    .zip(&slow)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(err <= tol * scale, "{kind:?} {dtype:?}: {err:e}");
            }
        }
    }

    #[test]
    fn other_layouts_take_the_generic_path() {
        let z = t(&[1.0, 2.0, 3.0, 4.0], DType::F32);
        let zt = z.t().expect("transpose");
        assert!(residual_sums(&zt, &z).is_none());
        let h = z.to_dtype(DType::F16).expect("f16");
        assert!(row_dots(&h, &[&h]).is_none());
        let z64 = z.to_dtype(DType::F64).expect("f64");
        assert!(weighted_sum(&[&z, &z64], &[1.0; 4]).is_none());
    }
}
