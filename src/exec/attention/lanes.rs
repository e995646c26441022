//! The vector pieces of fused attention: register blocks of products,
//! transposing gathers and row softmaxes, in f32 and f64, with AVX-512
//! builds chosen at run time.
//!
//! Guarantees: each block result sums its products in order of the summed
//! index (one multiply-add per step, fused in the AVX-512 builds); the f32
//! row softmax uses rten-vecmath's `exp` (the registered f32 `exp`), the f64
//! one the fused kernels' row function; a row with a NaN, a `+inf` or only
//! `-inf` comes out NaN throughout, as from the fused kernels.

use candle_core::WithDType;

use crate::jit::strip::{self, RowFunc};
use crate::jit::{KType, RowStrip};

#[cfg(target_arch = "x86_64")]
use rten_simd::isa::Avx512Isa;

/// Columns per register block (16 f32 lanes of AVX-512).
pub(super) const LANES: usize = 16;
/// Rows per register block: eight accumulators in flight hide the latency
/// of the multiply-adds.
pub(super) const ROWS: usize = 8;

/// The float types the kernel runs in.
pub(super) trait Lane: WithDType {
    /// The kernel type of `Self`.
    const KTYPE: KType;

    /// Softmax of the first `lens[i]` values of each row `i` of `s` (rows
    /// `keys` apart), in place, as the fused kernels' row softmax computes it.
    fn softmax_rows(s: &mut [Self], keys: usize, lens: &[usize]) {
        let softmax: RowStrip = strip::row(RowFunc::Softmax, Self::KTYPE);
        for (i, len) in lens.iter().enumerate() {
            let row = &mut s[i * keys..i * keys + len];
            // SAFETY: the row holds `len` values, read and written in place.
            unsafe {
                softmax(
                    row.as_ptr() as *const u8,
                    row.as_mut_ptr() as *mut u8,
                    *len as i64,
                )
            };
        }
    }

    /// `dst[k * keys + j] = src[at + k * rs + j * cs]` for `k < rows`,
    /// `j < cols`, by AVX-512 gathers; `false` (nothing written) where the
    /// type or the strides do not allow it.
    ///
    /// # Safety
    /// The CPU has AVX-512F; every addressed element of `src` exists.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn gather_rows_avx512(
        src: &[Self],
        at: usize,
        rs: usize,
        cs: usize,
        rows: usize,
        cols: usize,
        dst: &mut [Self],
        keys: usize,
    ) -> bool;

    /// [`Lane::softmax_rows`] in AVX-512 registers.
    ///
    /// # Safety
    /// Called only from code compiled with the features of `isa`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn softmax_rows_avx512(isa: Avx512Isa, s: &mut [Self], keys: usize, lens: &[usize]);

    /// [`block`] in AVX-512 registers with fused multiply-adds.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` holds `ROWS` rows of `n` values, rows and
    /// values `strides` apart, `b` holds `n` rows of `LANES` values `ldb`
    /// apart.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block_avx512(
        a: *const Self,
        strides: (usize, usize),
        b: *const Self,
        ldb: usize,
        n: usize,
    ) -> [[Self; LANES]; ROWS];

    /// Two [`Lane::block_avx512`]s side by side (`b`'s rows `2 × LANES`
    /// long): sixteen accumulators, each broadcast of `a` used twice.
    ///
    /// # Safety
    /// As for [`Lane::block_avx512`], with rows of `2 × LANES` in `b`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block2_avx512(
        a: *const Self,
        strides: (usize, usize),
        b: *const Self,
        ldb: usize,
        n: usize,
    ) -> [[[Self; LANES]; ROWS]; 2] {
        [
            Self::block_avx512(a, strides, b, ldb, n),
            Self::block_avx512(a, strides, b.add(LANES), ldb, n),
        ]
    }
}

impl Lane for f32 {
    const KTYPE: KType = KType::F32;

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn gather_rows_avx512(
        src: &[f32],
        at: usize,
        rs: usize,
        cs: usize,
        rows: usize,
        cols: usize,
        dst: &mut [f32],
        keys: usize,
    ) -> bool {
        use std::arch::x86_64::*;
        let Ok(step) = i32::try_from(cs * LANES) else {
            return false;
        };
        if step > i32::MAX / LANES as i32 || dst.len() < rows * keys || keys < cols {
            return false;
        }
        let index = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(cs as i32),
        );
        let base = src.as_ptr().add(at);
        for k in 0..rows {
            let row = base.add(k * rs);
            for j0 in (0..cols).step_by(LANES) {
                let n = (cols - j0).min(LANES);
                let mask = ((1u32 << n) - 1) as __mmask16;
                let x = _mm512_mask_i32gather_ps::<4>(
                    _mm512_setzero_ps(),
                    mask,
                    index,
                    row.add(j0 * cs),
                );
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(k * keys + j0), mask, x);
            }
        }
        true
    }

    /// The maximum, `exp` of the differences (rten-vecmath's, the registered
    /// f32 `exp`), their sum and the products with its reciprocal, sixteen
    /// lanes at a time. A row with a NaN, a `+inf` or only `-inf` comes out
    /// NaN throughout, as from the row softmax.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn softmax_rows_avx512(isa: Avx512Isa, s: &mut [f32], keys: usize, lens: &[usize]) {
        use std::arch::x86_64::*;

        // Three passes over all rows (maxima, exponentials and sums,
        // products), so that the rows' horizontal reductions overlap instead
        // of each row waiting for its own.
        let tail = |len: usize| ((1u32 << (len % LANES)) - 1) as __mmask16;
        let low = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut maxima = [0.0f32; 256];
        let mut sums = [0.0f32; 256];
        for (rows, at) in lens.chunks(256).zip((0..).step_by(256)) {
            for (i, &len) in rows.iter().enumerate() {
                let p = s.as_ptr().add((at + i) * keys);
                let mut m = low;
                for c in 0..len / LANES {
                    m = _mm512_max_ps(m, _mm512_loadu_ps(p.add(c * LANES)));
                }
                if len % LANES > 0 {
                    let x = _mm512_mask_loadu_ps(low, tail(len), p.add(len / LANES * LANES));
                    m = _mm512_max_ps(m, x);
                }
                maxima[i] = _mm512_reduce_max_ps(m);
            }
            for (i, &len) in rows.iter().enumerate() {
                let p = s.as_mut_ptr().add((at + i) * keys);
                let max = _mm512_set1_ps(maxima[i]);
                let mut sum = _mm512_setzero_ps();
                for c in 0..len / LANES {
                    let x = _mm512_sub_ps(_mm512_loadu_ps(p.add(c * LANES)), max);
                    let e = exp_or_zero(isa, x);
                    _mm512_storeu_ps(p.add(c * LANES), e);
                    sum = _mm512_add_ps(sum, e);
                }
                if len % LANES > 0 {
                    let (at, t) = (p.add(len / LANES * LANES), tail(len));
                    let x = _mm512_sub_ps(_mm512_mask_loadu_ps(max, t, at), max);
                    let e = exp_or_zero(isa, x);
                    _mm512_mask_storeu_ps(at, t, e);
                    sum = _mm512_mask_add_ps(sum, t, sum, e);
                }
                sums[i] = _mm512_reduce_add_ps(sum);
            }
            for (i, &len) in rows.iter().enumerate() {
                let p = s.as_mut_ptr().add((at + i) * keys);
                let r = _mm512_set1_ps(1.0 / sums[i]);
                for c in 0..len / LANES {
                    let x = _mm512_loadu_ps(p.add(c * LANES));
                    _mm512_storeu_ps(p.add(c * LANES), _mm512_mul_ps(x, r));
                }
                if len % LANES > 0 {
                    let (at, t) = (p.add(len / LANES * LANES), tail(len));
                    _mm512_mask_storeu_ps(at, t, _mm512_mul_ps(_mm512_mask_loadu_ps(r, t, at), r));
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_avx512(
        a: *const f32,
        (sr, sk): (usize, usize),
        b: *const f32,
        ldb: usize,
        n: usize,
    ) -> [[f32; LANES]; ROWS] {
        use std::arch::x86_64::*;
        let mut acc = [_mm512_setzero_ps(); ROWS];
        // One base pointer per row and one index: every broadcast is a
        // `[base + k * 4]` operand.
        let p: [*const f32; ROWS] = std::array::from_fn(|r| a.add(r * sr));
        let mut row_b = b;
        for k in 0..n {
            let row = _mm512_loadu_ps(row_b);
            row_b = row_b.add(ldb);
            for r in 0..ROWS {
                acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(*p[r].add(k * sk)), row, acc[r]);
            }
        }
        let mut out = [[0.0; LANES]; ROWS];
        for (o, x) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), x);
        }
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block2_avx512(
        a: *const f32,
        (sr, sk): (usize, usize),
        b: *const f32,
        ldb: usize,
        n: usize,
    ) -> [[[f32; LANES]; ROWS]; 2] {
        use std::arch::x86_64::*;
        let mut lo = [_mm512_setzero_ps(); ROWS];
        let mut hi = [_mm512_setzero_ps(); ROWS];
        let p: [*const f32; ROWS] = std::array::from_fn(|r| a.add(r * sr));
        let mut row_b = b;
        for k in 0..n {
            let (bl, bh) = (_mm512_loadu_ps(row_b), _mm512_loadu_ps(row_b.add(LANES)));
            row_b = row_b.add(ldb);
            for r in 0..ROWS {
                let x = _mm512_set1_ps(*p[r].add(k * sk));
                lo[r] = _mm512_fmadd_ps(x, bl, lo[r]);
                hi[r] = _mm512_fmadd_ps(x, bh, hi[r]);
            }
        }
        let mut out = [[[0.0; LANES]; ROWS]; 2];
        for r in 0..ROWS {
            _mm512_storeu_ps(out[0][r].as_mut_ptr(), lo[r]);
            _mm512_storeu_ps(out[1][r].as_mut_ptr(), hi[r]);
        }
        out
    }
}

/// rten-vecmath's `exp` of `x`, 0 below where the row softmax's
/// reduced-range `exp` gives 0 (about -87.67): no subnormal weights, which
/// would slow every product that reads them. NaN stays NaN.
///
/// # Safety
/// Called only from code compiled with the features of `isa`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp_or_zero(isa: Avx512Isa, x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use rten_simd::{Isa, SimdUnaryOp};
    use std::arch::x86_64::*;
    type V = <Avx512Isa as Isa>::F32;
    let e = rten_vecmath::Exp::default().eval(isa, V::from(x)).0;
    let cutoff = _mm512_set1_ps(-126.5 * std::f32::consts::LN_2 + 0.01);
    let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, cutoff);
    _mm512_mask_mov_ps(e, below, _mm512_setzero_ps())
}

impl Lane for f64 {
    const KTYPE: KType = KType::F64;

    #[cfg(target_arch = "x86_64")]
    unsafe fn gather_rows_avx512(
        _: &[f64],
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: &mut [f64],
        _: usize,
    ) -> bool {
        false
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn softmax_rows_avx512(_: Avx512Isa, s: &mut [f64], keys: usize, lens: &[usize]) {
        Self::softmax_rows(s, keys, lens)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_avx512(
        a: *const f64,
        (sr, sk): (usize, usize),
        b: *const f64,
        ldb: usize,
        n: usize,
    ) -> [[f64; LANES]; ROWS] {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_pd(); 2]; ROWS];
        for k in 0..n {
            let lo = _mm512_loadu_pd(b.add(k * ldb));
            let hi = _mm512_loadu_pd(b.add(k * ldb + 8));
            for (r, x) in acc.iter_mut().enumerate() {
                let s = _mm512_set1_pd(*a.add(r * sr + k * sk));
                x[0] = _mm512_fmadd_pd(s, lo, x[0]);
                x[1] = _mm512_fmadd_pd(s, hi, x[1]);
            }
        }
        let mut out = [[0.0; LANES]; ROWS];
        for (o, x) in out.iter_mut().zip(acc) {
            _mm512_storeu_pd(o.as_mut_ptr(), x[0]);
            _mm512_storeu_pd(o.as_mut_ptr().add(8), x[1]);
        }
        out
    }
}

/// [`block`] over the first `chunks` lane blocks of `b`'s rows, two at a
/// time where two remain; `emit(c, acc)` receives block `c`.
#[inline(always)]
pub(super) fn blocks<T: Lane, const WIDE: bool>(
    a: &[T],
    strides: (usize, usize),
    b: &[T],
    ldb: usize,
    n: usize,
    chunks: usize,
    mut emit: impl FnMut(usize, &[[T; LANES]; ROWS]),
) {
    let mut c = 0;
    while c + 1 < chunks {
        let [lo, hi] = block2::<T, WIDE>(a, strides, &b[c * LANES..], ldb, n);
        emit(c, &lo);
        emit(c + 1, &hi);
        c += 2;
    }
    if c < chunks {
        emit(c, &block::<T, WIDE>(a, strides, &b[c * LANES..], ldb, n));
    }
}

/// [`block`] for `2 × LANES` columns at once (`b`'s rows that long).
#[inline(always)]
fn block2<T: Lane, const WIDE: bool>(
    a: &[T],
    strides: (usize, usize),
    b: &[T],
    ldb: usize,
    n: usize,
) -> [[[T; LANES]; ROWS]; 2] {
    #[cfg(target_arch = "x86_64")]
    if WIDE && n > 0 {
        let (sr, sk) = strides;
        let _ = &a[..(ROWS - 1) * sr + (n - 1) * sk + 1];
        let _ = &b[..(n - 1) * ldb + 2 * LANES];
        // SAFETY: the slices above checked both operands' extents; the
        // caller checked the CPU.
        return unsafe { T::block2_avx512(a.as_ptr(), strides, b.as_ptr(), ldb, n) };
    }
    [
        block::<T, WIDE>(a, strides, b, ldb, n),
        block::<T, WIDE>(a, strides, &b[LANES.min(b.len())..], ldb, n),
    ]
}

/// `ROWS × LANES` results: row `r` is `sum over k < n of a[r * sr + k * sk]
/// * b[k * ldb ..][..LANES]`, summed in order of `k`; `WIDE` uses
/// [`Lane::block_avx512`] (the caller checked the CPU).
#[inline(always)]
pub(super) fn block<T: Lane, const WIDE: bool>(
    a: &[T],
    (sr, sk): (usize, usize),
    b: &[T],
    ldb: usize,
    n: usize,
) -> [[T; LANES]; ROWS] {
    let z = T::from_f64(0.0);
    if n == 0 {
        return [[z; LANES]; ROWS];
    }
    // The extents every read below stays inside.
    let _ = &a[..(ROWS - 1) * sr + (n - 1) * sk + 1];
    let _ = &b[..(n - 1) * ldb + LANES];
    #[cfg(target_arch = "x86_64")]
    if WIDE {
        // SAFETY: the slices above checked both operands' extents; the
        // caller checked the CPU.
        return unsafe { T::block_avx512(a.as_ptr(), (sr, sk), b.as_ptr(), ldb, n) };
    }
    let mut acc = [[z; LANES]; ROWS];
    for k in 0..n {
        let brow: &[T; LANES] = b[k * ldb..k * ldb + LANES]
            .try_into()
            .expect("a whole lane block");
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = a[r * sr + k * sk];
            for l in 0..LANES {
                acc[l] += x * brow[l];
            }
        }
    }
    acc
}

/// Where a result matrix goes: first element, row and column strides.
pub(super) struct Out<T> {
    pub ptr: *mut T,
    pub rs: usize,
    pub cs: usize,
}

impl<T: Copy> Out<T> {
    /// The same elements with rows and columns swapped.
    pub fn transposed(&self) -> Out<T> {
        Out {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Write rows `row0..row0 + rows` of `acc`, columns `col0..col0 +
    /// width`.
    ///
    /// # Safety
    /// Every element written lies in the destination.
    #[inline(always)]
    pub unsafe fn store(
        &self,
        acc: &[[T; LANES]; ROWS],
        row0: usize,
        rows: usize,
        col0: usize,
        width: usize,
    ) {
        for (r, a) in acc.iter().enumerate().take(rows) {
            let dst = self.ptr.add((row0 + r) * self.rs + col0 * self.cs);
            if self.cs == 1 {
                std::ptr::copy_nonoverlapping(a.as_ptr(), dst, width);
            } else {
                for (l, x) in a.iter().enumerate().take(width) {
                    *dst.add(l * self.cs) = *x;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<T: Lane>(n: usize, seed: f64) -> Vec<T> {
        (0..n)
            .map(|i| T::from_f64(((i as f64) * 0.37 + seed).sin()))
            .collect()
    }

    /// The portable blocks (what a CPU without AVX-512 runs) against the
    /// AVX-512 ones, for both strides of `a`, one and two lane blocks at a
    /// time, in f32 and f64.
    fn portable_equals_wide<T: Lane>(tol: f64) {
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let (n, ldb) = (23, 3 * LANES);
        let a = values::<T>(ROWS * 40 + n * 40, 0.3);
        let b = values::<T>(n * ldb, 1.1);
        for strides in [(40, 1), (1, 40)] {
            let plain = block::<T, false>(&a, strides, &b, ldb, n);
            let wide = block::<T, true>(&a, strides, &b, ldb, n);
            let mut got = Vec::new();
            blocks::<T, true>(&a, strides, &b, ldb, n, 3, |c, acc| got.push((c, *acc)));
            let mut want = Vec::new();
            blocks::<T, false>(&a, strides, &b, ldb, n, 3, |c, acc| want.push((c, *acc)));
            assert_eq!(got.len(), 3);
            for ((c, g), (d, w)) in got.iter().zip(&want) {
                assert_eq!(c, d);
                for (x, y) in g.iter().flatten().zip(w.iter().flatten()) {
                    assert!((x.to_f64() - y.to_f64()).abs() <= tol, "{x} {y}");
                }
            }
            for (x, y) in plain.iter().flatten().zip(wide.iter().flatten()) {
                assert!((x.to_f64() - y.to_f64()).abs() <= tol, "{x} {y}");
            }
            // Row r, lane l by hand.
            let (r, l) = (5, 7);
            let mut sum = 0.0;
            for k in 0..n {
                sum += a[r * strides.0 + k * strides.1].to_f64() * b[k * ldb + l].to_f64();
            }
            assert!((plain[r][l].to_f64() - sum).abs() <= tol);
        }
    }

    #[test]
    fn portable_blocks_equal_the_wide_ones() {
        portable_equals_wide::<f32>(1e-5);
        portable_equals_wide::<f64>(1e-12);
    }
}
