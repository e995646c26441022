//! Matrix products of f32/f64 CPU tensors straight onto the `gemm` crate.
//!
//! candle's CPU `matmul` wants each operand contiguous (or a plain
//! transposed matrix), materializes a broadcast weight once per batch entry,
//! and runs one threaded gemm per batch entry: for the `[B, T, d] @ [d, o]`
//! products of a transformer that is B small products, each too small to pay
//! for its threads, plus copies of every permuted attention operand. Here:
//! - operands are read in place through their strides (permuted, transposed
//!   and broadcast views need no copy; gemm packs them anyway);
//! - a product whose right operand has no batch (a weight) and whose left
//!   operand's batch and row axes form one strided axis is one gemm of
//!   `B·T` rows, threaded by gemm over the pool;
//! - any other batched product runs its batch entries in parallel over
//!   fixed blocks, each entry one single-threaded gemm;
//! - a product with a long summed axis and a small result (a weight's
//!   gradient over `B·T` rows) is cut along the summed axis into fixed
//!   pieces computed in parallel and added in order;
//! - a batched product whose only user permutes it can be stored in that
//!   order (`matmul_laid_out`): the attention's heads then merge back into
//!   rows without a copy.
//!
//! Guarantees: the same numbers as one gemm per batch entry up to gemm's
//! blocking and the fixed pieces (f64 within 1e-12 relative of candle's,
//! f32 within 1e-5; tested); results do not depend on the thread count (gemm
//! splits rows and columns, never the summed axis, and the pieces are chosen
//! by shape alone; tested bit for bit); only f32/f64 CPU operands of one dtype
//! whose every addressed element lies inside their storage are taken,
//! anything else returns `None` and stays on candle (CUDA included).

use candle_core::{DType, Device, Storage, Tensor, WithDType};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on one thread: waking the
/// pool costs more than it saves.
const THREADED_MACS: usize = 1 << 18;

/// Length of the pieces a long summed axis is cut into (see [`split_k`]).
const SPLIT_K_CHUNK: usize = 512;

/// The shortest summed axis a product may be cut along ([`split_k`]);
/// whether it is also depends on the product's rows and columns.
pub(crate) const CUT_SUMS_FROM: usize = SPLIT_K_CHUNK * 2;

/// One operand seen as a batch of strided matrices.
pub(crate) struct Operand<'a, T> {
    pub(crate) data: &'a [T],
    /// Offset of every batch entry's first element, in output batch order.
    pub(crate) offsets: Vec<usize>,
    /// Row and column strides.
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

/// `a @ b` with numpy broadcasting over the batch axes; `out` is the
/// result's shape. `None` when the fast path does not apply.
#[cfg(test)]
pub(super) fn matmul(a: &Tensor, b: &Tensor, out: &[usize]) -> candle_core::Result<Option<Tensor>> {
    matmul_laid_out(a, b, out, None)
}

/// [`matmul`], its result laid out in memory so that permuting it by
/// `order` (a permutation of its axes) gives a contiguous tensor: the
/// executor asks for it when the product's only user is that permutation,
/// or a chain of them (the attention heads merged back into rows), which
/// then needs no copy. Products that run as one
/// gemm over all rows ignore it. Same values as [`matmul`], bit for bit.
pub(super) fn matmul_laid_out(
    a: &Tensor,
    b: &Tensor,
    out: &[usize],
    order: Option<&[usize]>,
) -> candle_core::Result<Option<Tensor>> {
    let dt = a.dtype();
    let cpu = matches!(a.device(), Device::Cpu) && matches!(b.device(), Device::Cpu);
    if !cpu || b.dtype() != dt || a.rank() < 2 || b.rank() < 2 || out.len() < 2 {
        return Ok(None);
    }
    let r = out.len();
    let (m, n) = (out[r - 2], out[r - 1]);
    let k = a.dims()[a.rank() - 1];
    if b.dims()[b.rank() - 2] != k || a.dims()[a.rank() - 2] != m || b.dims()[b.rank() - 1] != n {
        return Ok(None);
    }
    let batch = &out[..r - 2];
    let mut a_shape = batch.to_vec();
    a_shape.extend([m, k]);
    let mut b_shape = batch.to_vec();
    b_shape.extend([k, n]);
    // Views with stride 0 along broadcast axes; nothing is copied.
    let (a, b) = (a.broadcast_as(a_shape)?, b.broadcast_as(b_shape)?);
    let layout = order.and_then(|o| OutLayout::permuted(out, o));
    let layout = layout.as_ref();
    let stored = match dt {
        DType::F32 => typed::<f32>(&a, &b, batch, m, k, n, layout)
            .map(|(v, l)| (Tensor::from_vec(v, out_dims(out, l), &Device::Cpu), l)),
        DType::F64 => typed::<f64>(&a, &b, batch, m, k, n, layout)
            .map(|(v, l)| (Tensor::from_vec(v, out_dims(out, l), &Device::Cpu), l)),
        _ => None,
    };
    match stored {
        // Stored in the permuted order: viewed in the product's own.
        Some((t, Some(l))) => t?.permute(l.inverse.clone()).map(Some),
        Some((t, None)) => t.map(Some),
        None => Ok(None),
    }
}

/// The result's shape as stored: permuted by `order` when it was honoured.
fn out_dims(out: &[usize], layout: Option<&OutLayout>) -> Vec<usize> {
    match layout {
        Some(l) => l.order.iter().map(|a| out[*a]).collect(),
        None => out.to_vec(),
    }
}

/// Where each element of a product goes when it is stored in a permuted
/// order: the element strides of the product's own axes.
#[derive(Debug, Clone)]
pub(crate) struct OutLayout {
    pub(crate) order: Vec<usize>,
    pub(crate) inverse: Vec<usize>,
    strides: Vec<usize>,
}

impl OutLayout {
    /// `None` unless `order` permutes the axes of `out` (and is no identity).
    pub(crate) fn permuted(out: &[usize], order: &[usize]) -> Option<OutLayout> {
        let r = out.len();
        let mut seen = vec![false; r];
        for a in order {
            if *a >= r || std::mem::replace(&mut seen[*a], true) {
                return None;
            }
        }
        if order.len() != r || order.iter().enumerate().all(|(i, a)| i == *a) {
            return None;
        }
        let mut inverse = vec![0; r];
        let mut strides = vec![0; r];
        let mut acc = 1;
        for (pos, a) in order.iter().enumerate().rev() {
            inverse[*a] = pos;
            strides[*a] = acc;
            acc *= out[*a];
        }
        Some(OutLayout {
            order: order.to_vec(),
            inverse,
            strides,
        })
    }

    /// Offset of each batch entry (in the product's batch order) and the
    /// row and column strides.
    pub(crate) fn entries(&self, batch: &[usize]) -> (Vec<usize>, usize, usize) {
        let mut offsets = vec![0];
        for (d, s) in batch.iter().zip(&self.strides) {
            offsets = offsets
                .iter()
                .flat_map(|o| (0..*d).map(move |i| o + i * s))
                .collect();
        }
        (
            offsets,
            self.strides[batch.len()],
            self.strides[batch.len() + 1],
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn typed<'l, T: WithDType>(
    a: &Tensor,
    b: &Tensor,
    batch: &[usize],
    m: usize,
    k: usize,
    n: usize,
    layout: Option<&'l OutLayout>,
) -> Option<(Vec<T>, Option<&'l OutLayout>)> {
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (Storage::Cpu(ca), Storage::Cpu(cb)) = (&*sa, &*sb) else {
        return None;
    };
    let (da, db) = (
        T::cpu_storage_as_slice(ca).ok()?,
        T::cpu_storage_as_slice(cb).ok()?,
    );
    let entries: usize = batch.iter().product();
    let len = entries.checked_mul(m)?.checked_mul(n)?;
    if len == 0 || k == 0 {
        return Some((vec![T::from_f64(0.0); len], None));
    }
    let lhs = operand(da, la.start_offset(), la.dims(), la.stride(), batch)?;
    let rhs = operand(db, lb.start_offset(), lb.dims(), lb.stride(), batch)?;
    let threads = crate::threads::available().max(1);
    let threaded = threads > 1 && len.saturating_mul(k) >= THREADED_MACS;
    if let Some(rs) = rows_as_one_axis(la.dims(), la.stride(), &rhs) {
        let lhs = Operand {
            offsets: vec![lhs.offsets[0]],
            rs,
            ..lhs
        };
        let rhs = Operand {
            offsets: vec![rhs.offsets[0]],
            ..rhs
        };
        let rows = entries * m;
        // Decided by the shapes alone, so the sums do not depend on the pool.
        if len.saturating_mul(k) >= THREADED_MACS && k >= CUT_SUMS_FROM && k >= 4 * rows.max(n) {
            return Some((split_k(&lhs, &rhs, rows, k, n), None));
        }
        let v = fill(len, |dst| {
            // SAFETY: `operand` checked every addressed element of both
            // inputs; `dst` holds `rows * n` elements.
            unsafe {
                gemm_into(
                    Dst::at(dst, n),
                    rows,
                    (0, k),
                    n,
                    &lhs,
                    &rhs,
                    0,
                    threaded.then_some(threads),
                )
            }
        });
        return Some((v, None));
    }
    // Each batch entry's place in the result: consecutive `m × n` blocks,
    // or where the permuted layout puts them.
    let (starts, rs, cs) = match layout {
        Some(l) => l.entries(batch),
        None => ((0..entries).map(|e| e * m * n).collect(), n, 1),
    };
    let mut out: Vec<T> = Vec::with_capacity(len);
    let base = SendPtr(out.as_mut_ptr());
    let entry = |e: usize, threads: Option<usize>| {
        let base = &base;
        // SAFETY: as above; every entry writes its own `m × n` elements
        // (the layout is a permutation of the result's elements).
        unsafe {
            gemm_into(
                Dst {
                    ptr: base.0.add(starts[e]),
                    rs,
                    cs,
                },
                m,
                (0, k),
                n,
                &lhs,
                &rhs,
                e,
                threads,
            )
        }
    };
    if entries < threads {
        for e in 0..entries {
            entry(e, threaded.then_some(threads));
        }
    } else {
        let per_block = entries.div_ceil(threads);
        (0..entries.div_ceil(per_block))
            .into_par_iter()
            .for_each(|blk| {
                for e in blk * per_block..((blk + 1) * per_block).min(entries) {
                    entry(e, None);
                }
            });
    }
    // SAFETY: the entries cover all `len` elements and gemm wrote each one
    // (it never reads the destination when `read_dst` is false).
    unsafe { out.set_len(len) };
    Some((out, layout))
}

/// A raw destination shared by the blocks of one product, which write
/// disjoint elements.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: only used for disjoint writes, joined before the vector is read.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// Where gemm writes one `m × n` result: its first element, row and
/// column strides.
struct Dst<T> {
    ptr: *mut T,
    rs: usize,
    cs: usize,
}

impl<T> Dst<T> {
    /// Rows of `rs` elements, columns consecutive.
    fn at(ptr: *mut T, rs: usize) -> Dst<T> {
        Dst { ptr, rs, cs: 1 }
    }
}

/// A vector of `len` elements written entirely by `write` (through a raw
/// pointer, so no zero fill precedes gemm's own writes).
fn fill<T>(len: usize, write: impl FnOnce(*mut T)) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(len);
    write(out.as_mut_ptr());
    // SAFETY: the callers' gemm writes all `len` elements (it never reads
    // the destination when `read_dst` is false).
    unsafe { out.set_len(len) };
    out
}

/// One product whose summed axis is long and whose result is small (a
/// weight gradient over all rows of a batch): gemm threads over rows and
/// columns only, so here the summed axis is cut into fixed chunks computed
/// in parallel and added in order; the chunks do not depend on the pool.
/// The pieces are written without a zero fill first, and added in
/// parallel blocks (each element still in piece order).
fn split_k<T: WithDType>(
    lhs: &Operand<T>,
    rhs: &Operand<T>,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<T> {
    let chunks = k.div_ceil(SPLIT_K_CHUNK);
    let size = m * n;
    let mut parts = fill(chunks * size, |base: *mut T| {
        let base = SendPtr(base);
        (0..chunks).into_par_iter().for_each(|c| {
            let base = &base;
            let range = (c * SPLIT_K_CHUNK, ((c + 1) * SPLIT_K_CHUNK).min(k));
            // SAFETY: `operand` checked both inputs over the whole summed
            // axis; piece `c` owns elements `c * size .. (c + 1) * size`.
            unsafe {
                let ptr = base.0.add(c * size);
                gemm_into(Dst::at(ptr, n), m, range, n, lhs, rhs, 0, None)
            }
        });
    });
    // Pieces added in order, element by element, in parallel blocks.
    let (first, rest) = parts.split_at_mut(size);
    first
        .par_chunks_mut(SUM_BLOCK)
        .enumerate()
        .for_each(|(blk, out)| {
            let (lo, len) = (blk * SUM_BLOCK, out.len());
            for part in rest.chunks(size) {
                for (o, p) in out.iter_mut().zip(&part[lo..lo + len]) {
                    *o += *p;
                }
            }
        });
    parts.truncate(size);
    parts.shrink_to_fit();
    parts
}

/// Elements per parallel block when [`split_k`] adds its pieces.
const SUM_BLOCK: usize = 1 << 14;

/// The batch offsets and matrix strides of a `[batch.., rows, cols]` view,
/// after checking that every element it addresses lies inside `data`.
pub(crate) fn operand<'a, T>(
    data: &'a [T],
    start: usize,
    dims: &[usize],
    stride: &[usize],
    batch: &[usize],
) -> Option<Operand<'a, T>> {
    let r = dims.len();
    let mut last = start;
    for (d, s) in dims.iter().zip(stride) {
        last = last.checked_add(d.checked_sub(1)?.checked_mul(*s)?)?;
    }
    if last >= data.len() {
        return None;
    }
    let mut offsets = vec![start];
    for (d, s) in batch.iter().zip(stride) {
        offsets = offsets
            .iter()
            .flat_map(|o| (0..*d).map(move |i| o + i * s))
            .collect();
    }
    Some(Operand {
        data,
        offsets,
        rs: stride[r - 2],
        cs: stride[r - 1],
    })
}

/// When the right operand is one matrix for every batch entry and the left
/// operand's batch and row axes step through memory as one axis, that
/// axis's stride: the whole product is then one gemm.
fn rows_as_one_axis<T>(dims: &[usize], stride: &[usize], rhs: &Operand<T>) -> Option<usize> {
    if rhs.offsets.iter().any(|o| *o != rhs.offsets[0]) {
        return None;
    }
    let r = dims.len();
    let row_stride = stride[r - 2];
    let mut expected = row_stride.checked_mul(dims[r - 2])?;
    for ax in (0..r - 2).rev() {
        if dims[ax] != 1 && stride[ax] != expected {
            return None;
        }
        expected = expected.checked_mul(dims[ax])?;
    }
    Some(row_stride)
}

/// `dst = lhs[e] @ rhs[e]` over the summed range `k0..k1`, for `m × k`
/// left matrices and `k × n` right ones; `threads` runs gemm on the pool.
///
/// # Safety
/// Every element addressed must lie inside the operands (checked by
/// [`operand`]); `dst` must be valid for `m * n` writes.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into<T: WithDType>(
    dst: Dst<T>,
    m: usize,
    (k0, k1): (usize, usize),
    n: usize,
    lhs: &Operand<T>,
    rhs: &Operand<T>,
    e: usize,
    threads: Option<usize>,
) {
    let parallelism = match threads {
        Some(t) => gemm::Parallelism::Rayon(t),
        None => gemm::Parallelism::None,
    };
    gemm::gemm(
        m,
        n,
        k1 - k0,
        dst.ptr,
        dst.cs as isize,
        dst.rs as isize,
        false,
        lhs.data.as_ptr().add(lhs.offsets[e] + k0 * lhs.cs),
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.data.as_ptr().add(rhs.offsets[e] + k0 * rhs.rs),
        rhs.cs as isize,
        rhs.rs as isize,
        T::from_f64(0.0),
        T::from_f64(1.0),
        false,
        false,
        false,
        parallelism,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(shape: &[usize], seed: f64) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::arange(0f64, n as f64, &Device::Cpu)
            .and_then(|t| (((t * 0.731)? + seed)?.sin()? * 2.0)?.reshape(shape))
            .expect("sample")
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
        let (a, b) = (
            a.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("a"),
            b.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("b"),
        );
        assert_eq!(a.len(), b.len());
        let scale = a.iter().fold(1e-300f64, |m, x| m.max(x.abs()));
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / scale)
            .fold(0.0, f64::max)
    }

    /// Every layout the executor produces: weights, broadcast batches,
    /// permuted and transposed views, and a product whose batch is smaller
    /// than the pool.
    #[test]
    fn strided_and_broadcast_products_match_candle() {
        let x = sample(&[3, 5, 4], 0.1);
        let w = sample(&[4, 6], 0.2);
        let q = sample(&[2, 5, 3, 4], 0.3).permute([0, 2, 1, 3]).expect("q");
        let kt = sample(&[2, 5, 3, 4], 0.4)
            .permute([0, 2, 3, 1])
            .expect("kt");
        let wt = sample(&[6, 4], 0.5).t().expect("wt");
        let xt = sample(&[4, 15], 0.6).t().expect("xt");
        let one = sample(&[1, 5, 4], 0.7);
        let cases: Vec<(Tensor, Tensor)> = vec![
            (x.clone(), w.clone()),
            (x.clone(), wt),
            (xt, w.clone()),
            (q, kt),
            (one, sample(&[3, 4, 2], 0.8)),
            (x.permute([1, 0, 2]).expect("perm"), w),
            (sample(&[1, 7], 0.9), sample(&[7, 1], 1.0)),
        ];
        for (a, b) in cases {
            let reference = a
                .contiguous()
                .and_then(|a| a.broadcast_matmul(&b.contiguous()?))
                .expect("candle");
            let got = matmul(&a, &b, reference.dims())
                .expect("matmul")
                .expect("fast path taken");
            assert!(
                max_rel(&reference, &got) < 1e-12,
                "{:?} @ {:?}",
                a.dims(),
                b.dims()
            );
            let (a32, b32) = (
                a.to_dtype(DType::F32).expect("a"),
                b.to_dtype(DType::F32).expect("b"),
            );
            let got32 = matmul(&a32, &b32, reference.dims())
                .expect("f32")
                .expect("taken");
            let got32 = got32.to_dtype(DType::F64).expect("up");
            assert!(
                max_rel(&reference, &got32) < 1e-5,
                "f32 {:?} @ {:?}",
                a.dims(),
                b.dims()
            );
        }
    }

    /// A weight gradient's shape (long summed axis, small result) is cut
    /// into pieces; it and every other path give the same bits on pools of
    /// one and two threads.
    #[test]
    fn long_sums_and_thread_counts() {
        let x = sample(&[2048, 32], 1.1).t().expect("xt");
        let g = sample(&[2048, 24], 1.2);
        let q = sample(&[4, 3, 64, 32], 1.3);
        let kt = sample(&[4, 3, 64, 32], 1.4).transpose(2, 3).expect("kt");
        let big = sample(&[16, 64, 96], 1.5);
        let w = sample(&[96, 80], 1.6);
        for (a, b) in [(x, g), (q, kt), (big, w)] {
            let reference = a
                .contiguous()
                .and_then(|a| a.broadcast_matmul(&b.contiguous()?))
                .expect("candle");
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("pool");
                pool.install(|| matmul(&a, &b, reference.dims()))
                    .expect("matmul")
                    .expect("taken")
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f64>())
                    .expect("values")
            };
            let (one, two) = (on(1), on(2));
            assert_eq!(one, two, "{:?} @ {:?}", a.dims(), b.dims());
            let got = Tensor::from_vec(two, reference.dims(), &Device::Cpu).expect("t");
            assert!(
                max_rel(&reference, &got) < 1e-12,
                "{:?} @ {:?}",
                a.dims(),
                b.dims()
            );
        }
    }

    /// A product stored in the order its user permutes it to: the same
    /// bits as the plain product, and the permuted view is contiguous (so
    /// merging the heads back into rows needs no copy), also for orders
    /// that move the column axis. Orders that are no permutation, the
    /// identity, and products run as one gemm over all rows give the plain
    /// layout.
    #[test]
    fn products_stored_in_their_users_order() {
        let q = sample(&[2, 5, 3, 4], 2.1).permute([0, 2, 1, 3]).expect("q");
        let v = sample(&[2, 5, 3, 4], 2.2).permute([0, 2, 1, 3]).expect("v");
        let scores = matmul(&q, &v.transpose(2, 3).expect("kt"), &[2, 3, 5, 5])
            .expect("scores")
            .expect("taken");
        let plain = matmul(&scores, &v, &[2, 3, 5, 4])
            .expect("plain")
            .expect("taken");
        let bits = |t: &Tensor| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f64>())
                .expect("values")
        };
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let laid = pool
                .install(|| matmul_laid_out(&scores, &v, &[2, 3, 5, 4], Some(&[0, 2, 1, 3])))
                .expect("laid out")
                .expect("taken");
            assert_eq!(laid.dims(), plain.dims());
            assert!(!laid.is_contiguous());
            assert_eq!(bits(&laid), bits(&plain), "{threads} threads");
            let merged = laid.permute([0, 2, 1, 3]).expect("permute");
            assert!(
                merged.is_contiguous(),
                "the user's permutation is contiguous"
            );
        }
        for order in [&[0, 1, 3, 2][..], &[3, 1, 0, 2]] {
            let t = matmul_laid_out(&scores, &v, &[2, 3, 5, 4], Some(order))
                .expect("ok")
                .expect("taken");
            assert_eq!(bits(&t), bits(&plain), "{order:?}");
            let p = t.permute(order.to_vec()).expect("permute");
            assert!(p.is_contiguous(), "{order:?}");
        }
        for order in [&[0, 1, 2, 3][..], &[0, 0, 1, 3], &[1, 0, 2]] {
            let t = matmul_laid_out(&scores, &v, &[2, 3, 5, 4], Some(order))
                .expect("ok")
                .expect("taken");
            assert!(t.is_contiguous(), "{order:?}");
            assert_eq!(bits(&t), bits(&plain), "{order:?}");
        }
        let x = sample(&[3, 5, 4], 2.3);
        let w = sample(&[4, 6], 2.4);
        let rows = matmul_laid_out(&x, &w, &[3, 5, 6], Some(&[1, 0, 2]))
            .expect("ok")
            .expect("taken");
        assert!(rows.is_contiguous());
        assert_eq!(
            bits(&rows),
            bits(&matmul(&x, &w, &[3, 5, 6]).expect("ok").expect("taken"))
        );
    }

    /// An empty summed axis gives zeros; mismatched shapes are not taken.
    #[test]
    fn degenerate_products() {
        let a = Tensor::zeros((2, 3, 0), DType::F32, &Device::Cpu).expect("a");
        let b = Tensor::zeros((0, 4), DType::F32, &Device::Cpu).expect("b");
        let y = matmul(&a, &b, &[2, 3, 4]).expect("ok").expect("taken");
        assert_eq!(
            y.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("v"),
            vec![0.0; 24]
        );
        let c = Tensor::zeros((5, 4), DType::F32, &Device::Cpu).expect("c");
        assert!(matmul(&a, &c, &[2, 3, 4]).expect("ok").is_none());
    }
}
