//! The forward kernel of fused attention: one batch entry's scores,
//! weights and mixed values, in cache (see the module above for what it
//! guarantees).

use crate::passes::attention::Scale;

use super::lanes::{block, blocks, Lane, Out, LANES, ROWS};
#[cfg(target_arch = "x86_64")]
use rten_simd::isa::Avx512Isa;

/// How far below a row's largest score the masked scores must lie for the
/// masked part to be skipped: `exp` of anything below -745 is 0 in f64
/// (below -104 in f32).
const SKIP_BELOW: f64 = -1000.0;

/// The row softmax an entry calls: rows, their stride and lengths.
type SoftmaxRows<'a, T> = dyn Fn(&mut [T], usize, &[usize]) + 'a;

/// The sizes and the scale and mask of one attention.
pub(super) struct Shape {
    pub tq: usize,
    pub tk: usize,
    pub dh: usize,
    pub dv: usize,
    pub scale: Option<Scale>,
    /// The masked scores' value, when causal.
    pub fill: Option<f64>,
}

impl Shape {
    /// Rows padded to whole register blocks.
    pub fn rows(&self) -> usize {
        self.tq.div_ceil(ROWS) * ROWS
    }
    /// Key positions padded to whole lanes.
    pub fn keys(&self) -> usize {
        self.tk.div_ceil(LANES) * LANES
    }
    /// Value columns padded to whole lanes.
    pub fn cols(&self) -> usize {
        self.dv.div_ceil(LANES) * LANES
    }
}

/// One block of entries' working copies; the padding stays zero.
pub(super) struct Scratch<T> {
    /// Queries, `rows × dh`.
    q: Vec<T>,
    /// Keys transposed, `dh × keys`.
    kt: Vec<T>,
    /// Values, `tk × cols`.
    v: Vec<T>,
    /// Scores, then weights, `rows × keys`.
    s: Vec<T>,
    /// Each row's weights that may be nonzero.
    len: Vec<usize>,
}

impl<T: Lane> Scratch<T> {
    pub fn new(s: &Shape) -> Self {
        let z = T::from_f64(0.0);
        Scratch {
            q: vec![z; s.rows() * s.dh],
            kt: vec![z; s.dh * s.keys()],
            v: vec![z; s.tk * s.cols()],
            s: vec![z; s.rows() * s.keys()],
            len: vec![0; s.rows()],
        }
    }
}

/// An entry's operands: data, first element, row and column strides.
pub(super) struct Operands<'a, T> {
    pub q: (&'a [T], usize, usize, usize),
    pub kt: (&'a [T], usize, usize, usize),
    pub v: (&'a [T], usize, usize, usize),
}

/// One entry, with the widest instructions the CPU has.
///
/// # Safety
/// Every element the operands address lies inside their data; `out`
/// addresses `tq × dv` writable elements, `weights` (when given) `tq × tk`
/// consecutive ones.
pub(super) unsafe fn entry<T: Lane>(
    s: &Shape,
    scratch: &mut Scratch<T>,
    ops: &Operands<T>,
    out: &Out<T>,
    weights: Option<*mut T>,
) {
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = Avx512Isa::new().filter(|_| !super::portable_only()) {
        return entry_avx512(isa, s, scratch, ops, out, weights);
    }
    entry_with::<T, false>(s, scratch, ops, out, weights, &|s, keys, lens| {
        T::softmax_rows(s, keys, lens)
    })
}

/// The features `Avx512Isa::new` checks for, so that rten-vecmath's `exp`
/// inlines.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,f16c")]
unsafe fn entry_avx512<T: Lane>(
    isa: Avx512Isa,
    s: &Shape,
    scratch: &mut Scratch<T>,
    ops: &Operands<T>,
    out: &Out<T>,
    weights: Option<*mut T>,
) {
    entry_with::<T, true>(s, scratch, ops, out, weights, &|s, keys, lens| {
        // SAFETY: this function has the features of `isa`.
        unsafe { T::softmax_rows_avx512(isa, s, keys, lens) }
    })
}

/// One entry; `WIDE` computes the products in AVX-512 registers (only
/// where the CPU has them).
#[inline(always)]
unsafe fn entry_with<T: Lane, const WIDE: bool>(
    s: &Shape,
    scratch: &mut Scratch<T>,
    ops: &Operands<T>,
    out: &Out<T>,
    weights: Option<*mut T>,
    softmax_rows: &SoftmaxRows<'_, T>,
) {
    let (keys, cols) = (s.keys(), s.cols());
    // Queries, scaled here rather than each score: the same up to rounding,
    // for a quarter of the work at the transformer's shapes.
    let factor = match s.scale {
        Some(Scale::Div(c)) => T::from_f64(1.0 / c),
        Some(Scale::Mul(c)) => T::from_f64(c),
        None => T::from_f64(1.0),
    };
    let (d, o, rs, cs) = ops.q;
    for i in 0..s.tq {
        let dst = &mut scratch.q[i * s.dh..(i + 1) * s.dh];
        if cs == 1 {
            let src = d.get_unchecked(o + i * rs..o + i * rs + s.dh);
            for (x, y) in dst.iter_mut().zip(src) {
                *x = *y * factor;
            }
        } else {
            for (k, x) in dst.iter_mut().enumerate() {
                *x = *d.get_unchecked(o + i * rs + k * cs) * factor;
            }
        }
    }
    // Keys transposed, written along the rows of the copy.
    let (d, o, rs, cs) = ops.kt;
    #[cfg(target_arch = "x86_64")]
    let gathered = WIDE && T::gather_rows_avx512(d, o, rs, cs, s.dh, s.tk, &mut scratch.kt, keys);
    #[cfg(not(target_arch = "x86_64"))]
    let gathered = false;
    if !gathered {
        for k in 0..s.dh {
            let dst = &mut scratch.kt[k * keys..k * keys + s.tk];
            for (j, x) in dst.iter_mut().enumerate() {
                *x = *d.get_unchecked(o + k * rs + j * cs);
            }
        }
    }
    // Values read in place when their rows are whole lane blocks.
    let (d, o, rs, cs) = ops.v;
    let direct_values = cs == 1 && s.dv.is_multiple_of(LANES);
    if !direct_values {
        for j in 0..s.tk {
            let dst = &mut scratch.v[j * cols..j * cols + s.dv];
            for (c, x) in dst.iter_mut().enumerate() {
                *x = *d.get_unchecked(o + j * rs + c * cs);
            }
        }
    }
    let (values, values_at, values_ld) = match direct_values {
        true => (d, o, rs),
        false => (&scratch.v[..], 0, cols),
    };
    // Scores, eight rows at a time; with a causal mask only up to the
    // block's last row's position.
    for i0 in (0..s.tq).step_by(ROWS) {
        let end = match s.fill {
            Some(_) => (i0 + ROWS).min(s.tk),
            None => s.tk,
        };
        for c in 0..end.div_ceil(LANES) {
            let acc = block::<T, WIDE>(
                &scratch.q[i0 * s.dh..],
                (s.dh, 1),
                &scratch.kt[c * LANES..],
                keys,
                s.dh,
            );
            for (r, a) in acc.iter().enumerate() {
                let at = (i0 + r) * keys + c * LANES;
                scratch.s[at..at + LANES].copy_from_slice(a);
            }
        }
    }
    for i in 0..s.tq {
        let row = &mut scratch.s[i * keys..(i + 1) * keys];
        let open = match s.fill {
            Some(_) => (i + 1).min(s.tk),
            None => s.tk,
        };
        scratch.len[i] = match s.fill {
            Some(fill) if !skippable(&row[..open], fill) => {
                row[open..s.tk].fill(T::from_f64(fill));
                s.tk
            }
            _ => open,
        };
    }
    softmax_rows(&mut scratch.s, keys, &scratch.len[..s.tq]);
    for i in 0..s.tq {
        let row = &mut scratch.s[i * keys..(i + 1) * keys];
        let len = scratch.len[i];
        // A row that came out NaN (a NaN or an infinite score) is NaN
        // throughout, its masked part too, as unfused.
        let tail = if row[0].to_f64().is_nan() {
            f64::NAN
        } else {
            0.0
        };
        row[len..s.tk].fill(T::from_f64(tail));
        row[s.tk..].fill(T::from_f64(0.0));
        if let Some(w) = weights {
            std::ptr::copy_nonoverlapping(row.as_ptr(), w.add(i * s.tk), s.tk);
        }
        if tail.is_nan() {
            // The values must not see NaN weights they would not have seen.
            row[len..s.tk].fill(T::from_f64(0.0));
        }
    }
    // Weights times values, eight rows at a time, over the positions any of
    // the block's rows weighs.
    for i0 in (0..s.tq).step_by(ROWS) {
        let rows = (s.tq - i0).min(ROWS);
        let end = scratch.len[i0..i0 + rows]
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let a = &scratch.s[i0 * keys..];
        let b = &values[values_at..];
        blocks::<T, WIDE>(a, (keys, 1), b, values_ld, end, cols / LANES, |c, acc| {
            out.store(acc, i0, rows, c * LANES, (s.dv - c * LANES).min(LANES));
        });
    }
}

/// Whether a causal row's masked scores (`fill`) weigh exactly 0: they lie
/// far below its largest unmasked score, which is finite.
fn skippable<T: Lane>(open: &[T], fill: f64) -> bool {
    // The first score is never masked: when it already lies far enough above
    // `fill`, so does the largest (a NaN or +inf row comes out of the
    // softmax NaN, and the caller makes its masked part NaN too).
    if open[0].to_f64() - fill > -SKIP_BELOW {
        return true;
    }
    let mut max = f64::NEG_INFINITY;
    for x in open {
        let x = x.to_f64();
        if x.is_nan() {
            return false;
        }
        max = max.max(x);
    }
    max.is_finite() && fill - max < SKIP_BELOW
}
