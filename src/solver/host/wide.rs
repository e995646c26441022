//! The host loops that gain from wider vectors than the baseline build's
//! SSE2, chosen at run time: several dot products of one row in one pass,
//! and the scaled row adds of a weighted sum.
//!
//! Owns [`dots`], [`Width`], and the row loops of the weighted sums
//! ([`scale_into`], [`add_scaled`]) and of the residuals
//! ([`difference_into`], [`residual_change_into`]), each an
//! `#[inline(always)]` loop that one macro (`widened!`) compiles for
//! AVX-512 and AVX2 beside the baseline. Why: a single f64 dot
//! product is bound by its adds' latency (eight lanes in two AVX2 vectors,
//! one add per lane and step); Anderson's Gram row takes the dots of a new
//! residual with every stored one, and those chains run side by side here,
//! with the new row read once. The weighted sums are plain element loops
//! that the baseline build runs four floats at a time.
//!
//! Guarantees: the same bits as the portable forms. Each dot keeps
//! [`super::dot`]'s eight f64 lanes (element `i` in lane `i % 8`), its
//! multiply then add (no fused multiply-add) and its final sums; AVX-512
//! holds the eight lanes in one vector and AVX2 in two, which changes no
//! lane's operations. The weighted sums compute each element as the
//! portable loop does (a product, then an add; Rust never fuses them), only
//! more elements at a time. Tested against the portable forms.

use std::mem::MaybeUninit;

use candle_core::{DType, WithDType};

use super::{dot, dot_finish, dot_tail, LANES};

/// `out[j] = dot(a, &others[j][span])` for every `j`, with [`dot`]'s bits.
pub(super) fn dots<T: WithDType>(
    a: &[T],
    others: &[&[T]],
    span: std::ops::Range<usize>,
    out: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if T::DTYPE == DType::F32 && span.len() == a.len() && others.iter().all(|o| o.len() >= span.end)
    {
        // SAFETY: `T` is f32 (checked); every other holds the span
        // (checked); the CPU has the features named.
        unsafe {
            let a = as_f32(a);
            let at = |j: usize| others[j].as_ptr().cast::<f32>().add(span.start);
            if std::arch::is_x86_feature_detected!("avx512f") {
                let mut j = 0;
                while j < others.len() {
                    let k = (others.len() - j).min(8);
                    let ps: [*const f32; 8] = std::array::from_fn(|i| at(j + i.min(k - 1)));
                    x86::dots_avx512(a, &ps, k, &mut out[j..j + k]);
                    j += k;
                }
                return;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut j = 0;
                while j < others.len() {
                    let k = (others.len() - j).min(4);
                    let ps: [*const f32; 4] = std::array::from_fn(|i| at(j + i.min(k - 1)));
                    x86::dots_avx2(a, &ps, k, &mut out[j..j + k]);
                    j += k;
                }
                return;
            }
        }
    }
    for (o, slot) in others.iter().zip(out) {
        *slot = dot(a, &o[span.clone()]);
    }
}

/// # Safety
/// `T` must be `f32`.
#[cfg(target_arch = "x86_64")]
unsafe fn as_f32<T>(s: &[T]) -> &[f32] {
    std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len())
}

#[inline(always)]
fn scale_into_plain<T: WithDType>(out: &mut [MaybeUninit<T>], x: &[T], c: T) {
    for (o, x) in out.iter_mut().zip(x) {
        o.write(*x * c);
    }
}

#[inline(always)]
fn add_scaled_plain<T: WithDType>(out: &mut [T], x: &[T], c: T) {
    for (o, x) in out.iter_mut().zip(x) {
        *o += *x * c;
    }
}

#[inline(always)]
fn difference_plain<T: WithDType>(out: &mut [MaybeUninit<T>], x: &[T], z: &[T]) {
    for ((y, x), z) in out.iter_mut().zip(x).zip(z) {
        y.write(*x - *z);
    }
}

#[inline(always)]
fn residual_change_plain<T: WithDType>(
    (g, dg): (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]),
    fz: &[T],
    z: &[T],
    gp: &[T],
) {
    for i in 0..g
        .len()
        .min(dg.len())
        .min(fz.len())
        .min(z.len())
        .min(gp.len())
    {
        let gi = fz[i] - z[i];
        g[i].write(gi);
        dg[i].write(gi - gp[i]);
    }
}

/// The vector width a row loop is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Width {
    Avx512,
    Avx2,
    /// The build's baseline (SSE2 on x86-64).
    Baseline,
}

impl Width {
    /// The widest this CPU has.
    pub(super) fn best() -> Width {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Width::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Width::Avx2;
            }
        }
        Width::Baseline
    }

    /// Whether this CPU can run code compiled for `self`.
    #[cfg(test)]
    pub(super) fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Width::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Width::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            Width::Avx512 | Width::Avx2 => false,
            Width::Baseline => true,
        }
    }
}

/// `$name(args)` runs the `#[inline(always)]` loop `$plain` compiled for the
/// widest vectors the CPU has; `$on(width, args)` for a given width (which
/// the CPU must have: it falls back to the baseline where the width is not
/// an x86-64 one).
macro_rules! widened {
    ($(#[$doc:meta])* $name:ident, $on:ident = $plain:ident($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        pub(super) fn $name<T: WithDType>($($arg: $ty),*) {
            // SAFETY: `best` is a width this CPU has.
            unsafe { $on(Width::best(), $($arg),*) }
        }

        /// # Safety
        /// The CPU must have `width`.
        pub(super) unsafe fn $on<T: WithDType>(width: Width, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512<T: WithDType>($($arg: $ty),*) {
                    $plain($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<T: WithDType>($($arg: $ty),*) {
                    $plain($($arg),*)
                }
                match width {
                    Width::Avx512 => return avx512($($arg),*),
                    Width::Avx2 => return avx2($($arg),*),
                    Width::Baseline => {}
                }
            }
            let _ = width;
            $plain($($arg),*)
        }
    };
}

widened! {
    /// `out[i] = x[i] - z[i]`.
    difference_into, difference_on = difference_plain(out: &mut [MaybeUninit<T>], x: &[T], z: &[T])
}

widened! {
    /// `g[i] = fz[i] - z[i]` and `dg[i] = g[i] - gp[i]`.
    residual_change_into, residual_change_on = residual_change_plain(
        out: (&mut [MaybeUninit<T>], &mut [MaybeUninit<T>]),
        fz: &[T],
        z: &[T],
        gp: &[T]
    )
}

widened! {
    /// `out[i] = x[i] * c`.
    scale_into, scale_into_on = scale_into_plain(out: &mut [MaybeUninit<T>], x: &[T], c: T)
}

widened! {
    /// `out[i] += x[i] * c`.
    add_scaled_init, add_scaled_on = add_scaled_plain(out: &mut [T], x: &[T], c: T)
}

/// `out[i] += x[i] * c` on a row already written.
///
/// # Safety
/// Every element of `out` must have been written.
pub(super) unsafe fn add_scaled<T: WithDType>(out: &mut [MaybeUninit<T>], x: &[T], c: T) {
    add_scaled_init(&mut *(out as *mut [MaybeUninit<T>] as *mut [T]), x, c)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{dot_finish, dot_tail, LANES};

    /// `k` (1 to 8) dots of `a` with the rows at `ps`, each in one vector
    /// of eight f64 lanes.
    ///
    /// # Safety
    /// The CPU has AVX-512F; each of the first `k` pointers holds
    /// `a.len()` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn dots_avx512(a: &[f32], ps: &[*const f32; 8], k: usize, out: &mut [f64]) {
        match k {
            1 => dots512::<1>(a, ps, out),
            2 => dots512::<2>(a, ps, out),
            3 => dots512::<3>(a, ps, out),
            4 => dots512::<4>(a, ps, out),
            5 => dots512::<5>(a, ps, out),
            6 => dots512::<6>(a, ps, out),
            7 => dots512::<7>(a, ps, out),
            _ => dots512::<8>(a, ps, out),
        }
    }

    #[inline(always)]
    unsafe fn dots512<const K: usize>(a: &[f32], ps: &[*const f32; 8], out: &mut [f64]) {
        let full = a.len() / LANES * LANES;
        let mut acc = [_mm512_setzero_pd(); K];
        let mut i = 0;
        while i < full {
            let x = _mm512_cvtps_pd(_mm256_loadu_ps(a.as_ptr().add(i)));
            for (j, acc) in acc.iter_mut().enumerate() {
                let y = _mm512_cvtps_pd(_mm256_loadu_ps(ps[j].add(i)));
                *acc = _mm512_add_pd(*acc, _mm512_mul_pd(x, y));
            }
            i += LANES;
        }
        for (j, acc) in acc.iter().enumerate() {
            let mut lanes = [0.0f64; LANES];
            _mm512_storeu_pd(lanes.as_mut_ptr(), *acc);
            let o = std::slice::from_raw_parts(ps[j], a.len());
            out[j] = dot_finish(&lanes, dot_tail(&a[full..], &o[full..]));
        }
    }

    /// `k` (1 to 4) dots, each in two vectors of four f64 lanes (0-3, 4-7).
    ///
    /// # Safety
    /// The CPU has AVX2; each of the first `k` pointers holds `a.len()`
    /// values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dots_avx2(a: &[f32], ps: &[*const f32; 4], k: usize, out: &mut [f64]) {
        match k {
            1 => dots256::<1>(a, ps, out),
            2 => dots256::<2>(a, ps, out),
            3 => dots256::<3>(a, ps, out),
            _ => dots256::<4>(a, ps, out),
        }
    }

    #[inline(always)]
    unsafe fn dots256<const K: usize>(a: &[f32], ps: &[*const f32; 4], out: &mut [f64]) {
        let full = a.len() / LANES * LANES;
        let mut lo = [_mm256_setzero_pd(); K];
        let mut hi = [_mm256_setzero_pd(); K];
        let mut i = 0;
        while i < full {
            let xl = _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr().add(i)));
            let xh = _mm256_cvtps_pd(_mm_loadu_ps(a.as_ptr().add(i + 4)));
            for j in 0..K {
                let yl = _mm256_cvtps_pd(_mm_loadu_ps(ps[j].add(i)));
                let yh = _mm256_cvtps_pd(_mm_loadu_ps(ps[j].add(i + 4)));
                lo[j] = _mm256_add_pd(lo[j], _mm256_mul_pd(xl, yl));
                hi[j] = _mm256_add_pd(hi[j], _mm256_mul_pd(xh, yh));
            }
            i += LANES;
        }
        for j in 0..K {
            let mut lanes = [0.0f64; LANES];
            _mm256_storeu_pd(lanes.as_mut_ptr(), lo[j]);
            _mm256_storeu_pd(lanes.as_mut_ptr().add(4), hi[j]);
            let o = std::slice::from_raw_parts(ps[j], a.len());
            out[j] = dot_finish(&lanes, dot_tail(&a[full..], &o[full..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 997.0 - 1.0
            })
            .collect()
    }

    /// Every count of others from 0 to 11 (one group, several, a partial
    /// one) and lengths with and without a tail: the bits of one `dot` each.
    #[test]
    fn dots_match_one_dot_at_a_time() {
        for n in [0usize, 5, 8, 64, 256, 259] {
            let a = values(n, 1);
            for k in 0..12u32 {
                let others: Vec<Vec<f32>> = (0..k).map(|j| values(n, 10 + j)).collect();
                let refs: Vec<&[f32]> = others.iter().map(|o| o.as_slice()).collect();
                let mut got = vec![f64::NAN; k as usize];
                dots(&a, &refs, 0..n, &mut got);
                for (g, o) in got.iter().zip(&refs) {
                    assert_eq!(g.to_bits(), dot(&a, o).to_bits(), "n {n} k {k}");
                    assert_eq!(g.to_bits(), super::super::dot_lanes(&a, o).to_bits());
                }
            }
        }
        let a: Vec<f64> = (0..37).map(|i| i as f64 * 0.25 - 3.0).collect();
        let b: Vec<f64> = (0..37).map(|i| 1.0 - i as f64 * 0.125).collect();
        let mut got = [0.0];
        dots(&a, &[&b], 0..37, &mut got);
        assert_eq!(got[0].to_bits(), dot(&a, &b).to_bits());
        // A span inside longer rows.
        let long: Vec<f32> = values(300, 9);
        let short = values(40, 8);
        let mut got32 = [0.0; 2];
        dots(&short, &[&long, &long], 100..140, &mut got32);
        assert_eq!(got32[1].to_bits(), dot(&short, &long[100..140]).to_bits());
    }

    /// The AVX2 dots, which a machine with AVX-512 does not pick, give the
    /// same bits as well (where the CPU has AVX2).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_forms_match_too() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        for n in [3usize, 64, 259] {
            let a = values(n, 21);
            let others: Vec<Vec<f32>> = (0..4).map(|j| values(n, 30 + j)).collect();
            for k in 1..=4 {
                let ps: [*const f32; 4] = std::array::from_fn(|i| others[i.min(k - 1)].as_ptr());
                let mut got = vec![f64::NAN; k];
                // SAFETY: AVX2 checked; each row holds `n` values.
                unsafe { x86::dots_avx2(&a, &ps, k, &mut got) };
                for j in 0..k {
                    assert_eq!(
                        got[j].to_bits(),
                        super::super::dot_lanes(&a, &others[j]).to_bits()
                    );
                }
            }
        }
    }

    /// Every width this CPU has gives the baseline's bits, for each row
    /// loop, f32 and f64.
    #[test]
    fn every_width_gives_the_baseline_bits() {
        fn bits<T: WithDType>(v: &[MaybeUninit<T>]) -> Vec<u64> {
            // SAFETY: the callers wrote every element.
            v.iter()
                .map(|x| unsafe { x.assume_init() }.to_f64().to_bits())
                .collect()
        }
        fn rows<T: WithDType>(width: Width, n: usize) -> Vec<Vec<u64>> {
            let cast = |v: Vec<f32>| {
                v.into_iter()
                    .map(|x| T::from_f64(x as f64 / 3.0))
                    .collect::<Vec<T>>()
            };
            let (x, y, z) = (cast(values(n, 5)), cast(values(n, 6)), cast(values(n, 7)));
            let fresh = || vec![MaybeUninit::<T>::uninit(); n];
            let (mut mix, mut d, mut g, mut dg) = (fresh(), fresh(), fresh(), fresh());
            // SAFETY: the test runs only widths the CPU has; `mix` is
            // written in full before it is added to.
            unsafe {
                scale_into_on(width, &mut mix, &x, T::from_f64(0.3));
                add_scaled_on(
                    width,
                    &mut *(mix.as_mut_slice() as *mut [MaybeUninit<T>] as *mut [T]),
                    &y,
                    T::from_f64(2.1),
                );
                difference_on(width, &mut d, &x, &y);
                residual_change_on(width, (&mut g, &mut dg), &x, &y, &z);
            }
            vec![bits(&mix), bits(&d), bits(&g), bits(&dg)]
        }
        for n in [1usize, 7, 16, 33, 256, 259] {
            for width in [Width::Avx512, Width::Avx2] {
                if width.available() {
                    assert_eq!(
                        rows::<f32>(width, n),
                        rows::<f32>(Width::Baseline, n),
                        "{width:?}"
                    );
                    assert_eq!(
                        rows::<f64>(width, n),
                        rows::<f64>(Width::Baseline, n),
                        "{width:?}"
                    );
                }
            }
        }
    }

    /// The residual loops give the portable loop's bits.
    #[test]
    fn residual_rows_match_the_plain_loop() {
        for n in [1usize, 9, 64, 257] {
            let (fz, z, gp) = (values(n, 11), values(n, 12), values(n, 13));
            let run = |wide: bool| {
                let mut d = vec![MaybeUninit::<f32>::uninit(); n];
                let (mut g, mut dg) = (d.clone(), d.clone());
                if wide {
                    difference_into(&mut d, &fz, &z);
                    residual_change_into((&mut g, &mut dg), &fz, &z, &gp);
                } else {
                    difference_plain(&mut d, &fz, &z);
                    residual_change_plain((&mut g, &mut dg), &fz, &z, &gp);
                }
                // SAFETY: each loop wrote all `n` elements.
                [d, g, dg].map(|v| unsafe {
                    v.iter()
                        .map(|x| x.assume_init().to_bits())
                        .collect::<Vec<_>>()
                })
            };
            assert_eq!(run(true), run(false));
            let expected: Vec<u32> = (0..n).map(|i| ((fz[i] - z[i]) - gp[i]).to_bits()).collect();
            assert_eq!(run(true)[2], expected);
        }
    }

    /// The wide row loops give the portable loop's bits, f32 and f64.
    #[test]
    fn scaled_rows_match_the_plain_loop() {
        for n in [1usize, 7, 16, 33, 256] {
            let (x, y) = (values(n, 3), values(n, 4));
            let mut wide = vec![MaybeUninit::<f32>::uninit(); n];
            scale_into(&mut wide, &x, 0.37);
            // SAFETY: `scale_into` wrote the row.
            unsafe { add_scaled(&mut wide, &y, -1.3) };
            let mut plain = vec![MaybeUninit::<f32>::uninit(); n];
            scale_into_plain(&mut plain, &x, 0.37);
            // SAFETY: written just above.
            let plain_init = unsafe { &mut *(plain.as_mut_slice() as *mut _ as *mut [f32]) };
            add_scaled_plain(plain_init, &y, -1.3);
            // SAFETY: both written in full.
            let (w, p) = unsafe {
                (
                    wide.iter()
                        .map(|v| v.assume_init().to_bits())
                        .collect::<Vec<_>>(),
                    plain
                        .iter()
                        .map(|v| v.assume_init().to_bits())
                        .collect::<Vec<_>>(),
                )
            };
            assert_eq!(w, p);
            let (x64, y64): (Vec<f64>, Vec<f64>) = (
                x.iter().map(|v| *v as f64 / 3.0).collect(),
                y.iter().map(|v| *v as f64).collect(),
            );
            let mut wide64 = vec![MaybeUninit::<f64>::uninit(); n];
            scale_into(&mut wide64, &x64, 0.1);
            // SAFETY: as above.
            unsafe { add_scaled(&mut wide64, &y64, 0.7) };
            for i in 0..n {
                // SAFETY: written in full.
                let got = unsafe { wide64[i].assume_init() };
                assert_eq!(got.to_bits(), (x64[i] * 0.1 + y64[i] * 0.7).to_bits());
            }
        }
    }
}
