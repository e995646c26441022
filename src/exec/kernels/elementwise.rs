//! Lone arithmetic ops (`+ - * /` that no fused kernel took, such as the
//! bias added after a matrix product) on the thread pool.
//!
//! Owns [`binary`]: the four operations on f32 and f64 CPU tensors whose
//! operands are each the output's shape, a row repeated over the leading
//! axes (a bias), or one value, computed in parallel row blocks. The binary
//! sets `CANDLE_NUM_THREADS=1` (see `threads::one_pool`), so candle runs
//! these on the calling thread alone; on the transformer they were a tenth
//! of the step with the second core idle.
//!
//! Guarantees: every element is the one IEEE operation candle would
//! compute on the same two values (same bits); any other case (dtype,
//! device, strides, broadcast pattern, a small output) returns `None` and
//! stays with candle.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor, WithDType};
use rayon::prelude::*;

/// Outputs with fewer elements run on candle, on the calling thread.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// The unit of work when no operand is a repeated row.
const PIECE: usize = 1 << 13;

/// The four operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// How an operand lines up with the output's elements.
#[derive(Clone, Copy)]
enum Reach {
    /// One element per output element.
    Full,
    /// One row of the output's trailing `cols` elements, for every row.
    Row,
    /// A single value.
    One,
}

/// `a op b` broadcast to `out`, or `None` when the case is left to candle.
pub(crate) fn binary(
    op: Arith,
    a: &Tensor,
    b: &Tensor,
    out: &[usize],
) -> candle_core::Result<Option<Tensor>> {
    let total: usize = out.iter().product();
    let pooled = crate::threads::available() > 1;
    let cpu = matches!(a.device(), Device::Cpu) && matches!(b.device(), Device::Cpu);
    if !pooled || !cpu || total < PARALLEL_ELEMENTS || a.dtype() != b.dtype() {
        return Ok(None);
    }
    let Some(cols) = row_length(a.dims(), b.dims(), out) else {
        return Ok(None);
    };
    let (Some(ra), Some(rb)) = (reach(a.dims(), out, cols), reach(b.dims(), out, cols)) else {
        return Ok(None);
    };
    // Without a repeated row, the output is cut into pieces of `PIECE`
    // elements (the last one shorter) so that it still splits.
    let step = if matches!((ra, rb), (Reach::Row, _) | (_, Reach::Row)) {
        cols
    } else {
        PIECE
    };
    let values = match a.dtype() {
        DType::F32 => typed::<f32>(op, (a, ra), (b, rb), total, step).map(CpuStorage::F32),
        DType::F64 => typed::<f64>(op, (a, ra), (b, rb), total, step).map(CpuStorage::F64),
        _ => None,
    };
    match values {
        Some(CpuStorage::F32(v)) => Tensor::from_vec(v, out, &Device::Cpu).map(Some),
        Some(CpuStorage::F64(v)) => Tensor::from_vec(v, out, &Device::Cpu).map(Some),
        _ => Ok(None),
    }
}

/// The length of the repeated row: the product of the output's trailing
/// axes that a row-shaped operand covers (the whole output when neither
/// operand is one).
fn row_length(a: &[usize], b: &[usize], out: &[usize]) -> Option<usize> {
    let total: usize = out.iter().product();
    let mut cols = total;
    for dims in [a, b] {
        let n: usize = dims.iter().product();
        if n == total || n == 1 {
            continue;
        }
        cols = n;
    }
    (cols > 0 && total.is_multiple_of(cols)).then_some(cols)
}

/// How an operand of `dims` reaches the output: the same shape, a row of
/// the trailing `cols` elements (size-1 or missing leading axes, the
/// output's own trailing axes), or one value.
fn reach(dims: &[usize], out: &[usize], cols: usize) -> Option<Reach> {
    let n: usize = dims.iter().product();
    if n == 1 {
        return Some(Reach::One);
    }
    if dims == out {
        return Some(Reach::Full);
    }
    if n != cols || dims.len() > out.len() {
        return None;
    }
    // Right-aligned, the operand's axes must equal the output's trailing
    // axes once its leading size-1 axes are dropped.
    let lead = dims.iter().take_while(|d| **d == 1).count();
    let kept = &dims[lead..];
    (out.ends_with(kept) && kept.iter().product::<usize>() == cols).then_some(Reach::Row)
}

fn typed<T: WithDType>(
    op: Arith,
    (a, ra): (&Tensor, Reach),
    (b, rb): (&Tensor, Reach),
    total: usize,
    cols: usize,
) -> Option<Vec<T>> {
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Storage::Cpu(ca), Storage::Cpu(cb)) = (&*sa, &*sb) else {
        return None;
    };
    let (a0, a1) = la.contiguous_offsets()?;
    let (b0, b1) = lb.contiguous_offsets()?;
    let va = T::cpu_storage_as_slice(ca).ok()?.get(a0..a1)?;
    let vb = T::cpu_storage_as_slice(cb).ok()?.get(b0..b1)?;
    // One monomorphized loop per operation, so each vectorizes.
    Some(match op {
        Arith::Add => apply(va, vb, (ra, rb), total, cols, |x, y| x + y),
        Arith::Sub => apply(va, vb, (ra, rb), total, cols, |x, y| x - y),
        Arith::Mul => apply(va, vb, (ra, rb), total, cols, |x, y| x * y),
        Arith::Div => apply(va, vb, (ra, rb), total, cols, |x, y| x / y),
    })
}

/// `f` over the output in pieces of `cols` elements (its rows, when an
/// operand is a repeated row; the last piece may be shorter otherwise), in
/// parallel blocks of pieces.
fn apply<T: WithDType>(
    va: &[T],
    vb: &[T],
    (ra, rb): (Reach, Reach),
    total: usize,
    cols: usize,
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    // Where the operand's elements for output row `r` start, and whether
    // it is one value.
    let row = |reach: Reach, r: usize| -> (usize, bool) {
        match reach {
            Reach::Full => (r * cols, false),
            Reach::Row => (0, false),
            Reach::One => (0, true),
        }
    };
    let rows = total.div_ceil(cols);
    let per_task = rows.div_ceil(crate::threads::available() * 4).max(1);
    let mut out: Vec<T> = Vec::with_capacity(total);
    out.spare_capacity_mut()[..total]
        .par_chunks_mut(per_task * cols)
        .enumerate()
        .for_each(|(task, block)| {
            for (i, dst) in block.chunks_mut(cols).enumerate() {
                let r = task * per_task + i;
                let ((oa, one_a), (ob, one_b)) = (row(ra, r), row(rb, r));
                let n = dst.len();
                match (one_a, one_b) {
                    (false, false) => {
                        let (x, y) = (&va[oa..oa + n], &vb[ob..ob + n]);
                        for ((d, x), y) in dst.iter_mut().zip(x).zip(y) {
                            d.write(f(*x, *y));
                        }
                    }
                    (false, true) => {
                        let (x, y) = (&va[oa..oa + n], vb[0]);
                        for (d, x) in dst.iter_mut().zip(x) {
                            d.write(f(*x, y));
                        }
                    }
                    (true, false) => {
                        let (x, y) = (va[0], &vb[ob..ob + n]);
                        for (d, y) in dst.iter_mut().zip(y) {
                            d.write(f(x, *y));
                        }
                    }
                    (true, true) => {
                        let v = f(va[0], vb[0]);
                        for d in dst.iter_mut() {
                            d.write(v);
                        }
                    }
                }
            }
        });
    // SAFETY: the blocks cover all `total` elements, each written once.
    unsafe { out.set_len(total) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(dims: &[usize], dtype: DType, offset: f64) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0 + offset)
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .expect("ramp")
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        let flat = t.flatten_all().expect("flatten");
        match t.dtype() {
            DType::F32 => flat
                .to_vec1::<f32>()
                .expect("f32")
                .into_iter()
                .map(|x| u64::from(x.to_bits()))
                .collect(),
            _ => flat
                .to_vec1::<f64>()
                .expect("f64")
                .into_iter()
                .map(f64::to_bits)
                .collect(),
        }
    }

    #[test]
    fn same_bits_as_candle_for_full_row_and_scalar_operands() {
        // The second size is no multiple of a piece (full and scalar
        // operands are cut into pieces of PIECE elements).
        for out in [[8, 64, 128], [5, 99, 77]] {
            let [_, mid, last] = out;
            let cases: [(&[usize], &[usize]); 7] = [
                (&out, &out),
                (&out, &[last]),
                (&[last], &out),
                (&out, &[1, 1, last]),
                (&out, &[mid, last]),
                (&out, &[1]),
                (&[], &out),
            ];
            same_bits_for(&out, &cases);
        }
    }

    fn same_bits_for(out: &[usize], cases: &[(&[usize], &[usize])]) {
        for dtype in [DType::F32, DType::F64] {
            for &(da, db) in cases {
                let (a, b) = (ramp(da, dtype, 0.5), ramp(db, dtype, 3.25));
                for (op, expected) in [
                    (Arith::Add, a.broadcast_add(&b)),
                    (Arith::Sub, a.broadcast_sub(&b)),
                    (Arith::Mul, a.broadcast_mul(&b)),
                    (Arith::Div, a.broadcast_div(&b)),
                ] {
                    let got = rayon::ThreadPoolBuilder::new()
                        .num_threads(2)
                        .build()
                        .expect("pool")
                        .install(|| binary(op, &a, &b, out))
                        .expect("runs")
                        .unwrap_or_else(|| panic!("{op:?} {da:?} {db:?} left to candle"));
                    assert_eq!(got.dims(), out);
                    assert_eq!(
                        bits(&got),
                        bits(&expected.expect("candle")),
                        "{op:?} {da:?} {db:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn other_cases_stay_with_candle() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let out = [8, 64, 128];
        let a = ramp(&out, DType::F32, 0.0);
        // A column broadcast, a strided view, mixed dtypes, a small output.
        let column = ramp(&[8, 64, 1], DType::F32, 1.0);
        let strided = ramp(&[8, 128, 64], DType::F32, 1.0)
            .transpose(1, 2)
            .expect("transpose");
        let f64s = ramp(&out, DType::F64, 1.0);
        let small = ramp(&[4, 4], DType::F32, 1.0);
        pool.install(|| {
            assert!(binary(Arith::Add, &a, &column, &out).unwrap().is_none());
            assert!(binary(Arith::Add, &a, &strided, &out).unwrap().is_none());
            assert!(binary(Arith::Add, &a, &f64s, &out).unwrap().is_none());
            assert!(binary(Arith::Add, &small, &small, &[4, 4])
                .unwrap()
                .is_none());
        });
        // One thread: nothing to gain from the pool.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        assert!(one
            .install(|| binary(Arith::Add, &a, &a, &out))
            .unwrap()
            .is_none());
    }
}
