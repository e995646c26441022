//! The kernels: one exhaustive `match` from [`Op`] to candle calls.
//!
//! Owns the numerical definition of every op on concrete tensors.
//! Guarantees: the result has the node's resolved shape and dtype; only
//! device-generic candle APIs are used (the same code runs on CUDA), except
//! the CPU fast paths for matrix products (`matmul`) and convolutions,
//! which fall back to candle for anything else; every
//! candle failure becomes an [`ExecError::KernelLibrary`] (operand and
//! result shapes in deqc's words, candle's message as a detail) with the
//! node's span;
//! out-of-range embedding ids and slice bounds are errors, not panics.
//! Conventions: comparisons give 0/1 in the operands' dtype; `where` takes
//! `a` where the mask is nonzero; max pooling routes each window's gradient
//! to its first maximum (row-major order).

use candle_core::{DType as CDType, Device, Tensor};
use rayon::prelude::*;

use crate::ir::op_groups::{binary_math_ops, equilibrium_ops, source_ops};
use crate::ir::{Cmp, Op, ProbeKind, ReduceOp};
use crate::source::Span;
use crate::types::dim::Dim;

use super::{DimEnv, ExecError, ExecOptions};

mod elementwise;
use elementwise::Arith;
pub(crate) mod matmul;
pub(crate) use matmul::CUT_SUMS_FROM;
mod nn;
mod simd;

/// What a kernel may read besides its operands.
pub struct KernelCtx<'a> {
    pub device: &'a Device,
    /// The candle dtype of the result.
    pub dtype: CDType,
    /// The resolved shape of the result.
    pub out_shape: &'a [usize],
    pub dims: &'a DimEnv,
    pub span: Option<Span>,
    pub options: &'a ExecOptions,
    /// The node's slot (seeds dropout masks).
    pub node_index: usize,
    /// The permutation the result's only user applies, when it has one: a
    /// matrix product then stores its result in that order (see
    /// `matmul::matmul_laid_out`).
    pub out_order: Option<&'a [usize]>,
}

/// A kernel failure before it gets the node's name and span.
pub(crate) enum KErr {
    Candle(candle_core::Error),
    Msg(String),
    Exec(ExecError),
}

impl From<candle_core::Error> for KErr {
    fn from(e: candle_core::Error) -> Self {
        KErr::Candle(e)
    }
}

impl From<ExecError> for KErr {
    fn from(e: ExecError) -> Self {
        KErr::Exec(e)
    }
}

pub(crate) type KResult<T> = std::result::Result<T, KErr>;

/// An op and its operands' shapes, for `deqc bench --ops` (`strided` marks
/// an operand that is a view with gaps or a permuted order).
fn describe(op: &Op, args: &[&Tensor]) -> String {
    let operands: Vec<String> = args
        .iter()
        .map(|t| {
            let strided = if t.is_contiguous() { "" } else { " strided" };
            format!("{:?}{strided}", t.dims())
        })
        .collect();
    format!("{} {}", op.name(), operands.join(", "))
}

/// Evaluate one op on its operand tensors.
pub fn eval(op: &Op, args: &[&Tensor], ctx: &KernelCtx) -> Result<Tensor, ExecError> {
    let _timer = crate::profile::scope(crate::profile::Category::of(op));
    let started = crate::profile::op_timing().then(std::time::Instant::now);
    let result = eval_inner(op, args, ctx);
    if let Some(t) = started {
        crate::profile::record_op(describe(op, args), t.elapsed());
    }
    result.map_err(|e| match e {
        KErr::Candle(e) => ExecError::KernelLibrary(Box::new(super::LibraryFailure {
            op: op.name().to_string(),
            operands: args.iter().map(|t| t.dims().to_vec()).collect(),
            declared: None,
            resolved: ctx.out_shape.to_vec(),
            library: e.to_string(),
            span: ctx.span,
        })),
        KErr::Msg(message) => ExecError::Kernel {
            op: op.name().to_string(),
            message,
            span: ctx.span,
        },
        KErr::Exec(e) => e,
    })
}

/// A scalar tensor of `dtype`.
pub fn scalar(v: f64, dtype: CDType, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::new(v, device)?.to_dtype(dtype)
}

fn shape_of(ctx: &KernelCtx, dims: &[Dim]) -> KResult<Vec<usize>> {
    Ok(ctx.dims.shape(dims, ctx.span)?)
}

fn dim_of(ctx: &KernelCtx, d: &Dim) -> KResult<usize> {
    Ok(shape_of(ctx, std::slice::from_ref(d))?[0])
}

fn mask(t: Tensor, dtype: CDType) -> candle_core::Result<Tensor> {
    t.to_dtype(dtype)
}

/// Max (or min) over several axes, keeping them.
fn extreme_keepdim(x: &Tensor, axes: &[usize], max: bool) -> candle_core::Result<Tensor> {
    let mut r = x.clone();
    for a in axes {
        r = if max {
            r.max_keepdim(*a)?
        } else {
            r.min_keepdim(*a)?
        };
    }
    Ok(r)
}

/// A matmul operand as candle's kernels take it: a transposed matrix (the
/// VJP's `w^T`, `x^T`) is used in place, since gemm reads either layout;
/// any other strided view is copied first.
fn matmul_operand(t: &Tensor) -> candle_core::Result<Tensor> {
    let transposed_matrix = match (t.dims(), t.stride()) {
        ([rows, _], [1, col_stride]) => *col_stride == *rows,
        _ => false,
    };
    if t.is_contiguous() || transposed_matrix {
        Ok(t.clone())
    } else {
        t.contiguous()
    }
}

fn pow(a: &Tensor, b: &Tensor, out: &[usize]) -> candle_core::Result<Tensor> {
    if b.elem_count() == 1 {
        let e = b.flatten_all()?.to_dtype(CDType::F64)?.to_vec1::<f64>()?[0];
        return a.broadcast_as(out)?.powf(e);
    }
    // |a|^b, with the sign of a negative base for integer exponents and NaN
    // for fractional ones, as `powf` does.
    let (a, b) = (a.broadcast_as(out)?, b.broadcast_as(out)?);
    let dt = a.dtype();
    let mag = (b.mul(&a.abs()?.log()?)?).exp()?;
    let zero_exp = b.eq(0.0)?;
    let mag = zero_exp.where_cond(&Tensor::ones(out, dt, a.device())?, &mag)?;
    let neg = a.lt(0.0)?;
    let is_int = b.eq(&b.floor()?)?;
    let half = b.affine(0.5, 0.0)?;
    let odd = half.ne(&half.floor()?)?;
    let signed = odd.where_cond(&mag.neg()?, &mag)?;
    let nan = Tensor::full(f64::NAN, out, a.device())?.to_dtype(dt)?;
    let neg_val = is_int.where_cond(&signed, &nan)?;
    neg.where_cond(&neg_val, &mag)
}

fn reduce(op: ReduceOp, x: &Tensor, axes: &[usize], out: &[usize]) -> candle_core::Result<Tensor> {
    if axes.is_empty() {
        return x.reshape(out);
    }
    let kept = match op {
        ReduceOp::Sum => x.sum_keepdim(axes)?,
        ReduceOp::Mean => x.mean_keepdim(axes)?,
        ReduceOp::Max => extreme_keepdim(x, axes, true)?,
        ReduceOp::Min => extreme_keepdim(x, axes, false)?,
        ReduceOp::LogSumExp => {
            let m = extreme_keepdim(x, axes, true)?;
            // A row of -inf keeps -inf (exp(-inf - -inf) would be NaN).
            let finite = m.ne(f64::NEG_INFINITY)?;
            let m = finite.where_cond(&m, &m.zeros_like()?)?;
            x.broadcast_sub(&m)?
                .exp()?
                .sum_keepdim(axes)?
                .log()?
                .add(&m)?
        }
    };
    kept.reshape(out)
}

fn softmax(x: &Tensor, axis: usize, log: bool) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(axis)?;
    let shifted = x.broadcast_sub(&m)?;
    let e = shifted.exp()?;
    let s = e.sum_keepdim(axis)?;
    if log {
        shifted.broadcast_sub(&s.log()?)
    } else {
        e.broadcast_div(&s)
    }
}

/// Sum `x` down to `target` (the inverse of broadcasting).
pub(crate) fn sum_to(x: &Tensor, target: &[usize]) -> candle_core::Result<Tensor> {
    if let Some(t) = sum_leading_rows(x, target) {
        return Ok(t);
    }
    let lead = x.rank().saturating_sub(target.len());
    let mut r = if lead > 0 {
        x.sum((0..lead).collect::<Vec<_>>())?
    } else {
        x.clone()
    };
    let axes: Vec<usize> = (0..target.len())
        .filter(|&k| target[k] == 1 && r.dims().get(k).is_some_and(|d| *d != 1))
        .collect();
    if !axes.is_empty() {
        r = r.sum_keepdim(axes)?;
    }
    r.reshape(target)
}

/// Rows of one piece of [`sum_leading_rows`]: a bias gradient over the
/// transformer's 2048 rows reads 1 MB, bound by memory on one core.
const SUM_PIECE_ROWS: usize = 512;

/// `sum_to` where the summed axes all lead (a bias or broadcast gradient,
/// `[B, T, D] -> [D]`) on a contiguous f32/f64 CPU tensor: the rows of the
/// `[R, C]` view added in order, in pieces of [`SUM_PIECE_ROWS`] rows
/// summed in parallel and then added in order. candle reduces leading axes
/// element by element through strided indices (a fifth of a transformer
/// training step); `None` leaves other cases to it.
fn sum_leading_rows(x: &Tensor, target: &[usize]) -> Option<Tensor> {
    use super::slices::with_cpu_slices;
    use candle_core::WithDType;
    fn add_rows<T: WithDType>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
        let add_into = |out: &mut [T], row: &[T]| {
            for (o, x) in out.iter_mut().zip(row) {
                *o += *x;
            }
        };
        let add = |rows: &[T]| {
            let mut out = vec![T::from_f64(0.0); cols];
            for row in rows.chunks_exact(cols.max(1)) {
                add_into(&mut out, row);
            }
            out
        };
        let v = &v[..rows * cols];
        if rows <= SUM_PIECE_ROWS || cols == 0 {
            return add(v);
        }
        // Pieces of fixed length (so the sums do not depend on the pool),
        // summed on the pool, then added in order.
        let pieces: Vec<Vec<T>> = v.par_chunks(SUM_PIECE_ROWS * cols).map(add).collect();
        let mut pieces = pieces.into_iter();
        let mut out = pieces.next().unwrap_or_default();
        for piece in pieces {
            add_into(&mut out, &piece);
        }
        out
    }
    let dims = x.dims();
    let lead = dims.len().checked_sub(target.len())?;
    let kept = |a: usize| if a < lead { 1 } else { target[a - lead] };
    // The first axis from which every axis is kept whole.
    let k = (0..=dims.len()).find(|&k| (k..dims.len()).all(|a| kept(a) == dims[a]))?;
    if k == 0 || (0..k).any(|a| kept(a) != 1) {
        return None;
    }
    let rows: usize = dims[..k].iter().product();
    let cols: usize = dims[k..].iter().product();
    let sums = match x.dtype() {
        CDType::F32 => Tensor::from_vec(
            with_cpu_slices::<f32, _>(&[x], |s| add_rows(s[0], rows, cols))?,
            target,
            &Device::Cpu,
        ),
        CDType::F64 => Tensor::from_vec(
            with_cpu_slices::<f64, _>(&[x], |s| add_rows(s[0], rows, cols))?,
            target,
            &Device::Cpu,
        ),
        _ => return None,
    };
    sums.ok()
}

fn dropout_mask(p: f64, ctx: &KernelCtx) -> KResult<Tensor> {
    let shape = ctx.out_shape;
    if !ctx.options.training {
        return Ok(Tensor::ones(shape, ctx.dtype, ctx.device)?);
    }
    use rand::{Rng, SeedableRng};
    let seed = ctx
        .options
        .seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(ctx.node_index as u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let keep = 1.0 / (1.0 - p);
    let v: Vec<f64> = (0..n)
        .map(|_| if rng.random::<f64>() >= p { keep } else { 0.0 })
        .collect();
    Ok(Tensor::from_vec(v, shape, ctx.device)?.to_dtype(ctx.dtype)?)
}

/// A probe drawn from the run's seed (per step when training) and the
/// node, so every evaluation of one graph in one step sees the same values.
fn probe(kind: ProbeKind, ctx: &KernelCtx) -> KResult<Tensor> {
    use rand::{Rng, SeedableRng};
    let seed = (ctx.options.seed ^ 0x5052_4F42_4521)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(ctx.node_index as u64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = ctx.out_shape.iter().product();
    let v: Vec<f64> = match kind {
        ProbeKind::Gaussian => (0..n)
            .map(|_| rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng))
            .collect(),
        ProbeKind::Rademacher => (0..n)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect(),
    };
    Ok(Tensor::from_vec(v, ctx.out_shape, ctx.device)?.to_dtype(ctx.dtype)?)
}

fn binary(op: &Op, a: &Tensor, b: &Tensor, ctx: &KernelCtx) -> KResult<Tensor> {
    let dt = ctx.dtype;
    let arith = match op {
        Op::Add => Some(Arith::Add),
        Op::Sub => Some(Arith::Sub),
        Op::Mul => Some(Arith::Mul),
        Op::Div => Some(Arith::Div),
        _ => None,
    };
    if let Some(arith) = arith {
        if let Some(t) = elementwise::binary(arith, a, b, ctx.out_shape)? {
            return Ok(t);
        }
    }
    Ok(match op {
        Op::Add => a.broadcast_add(b)?,
        Op::Sub => a.broadcast_sub(b)?,
        Op::Mul => a.broadcast_mul(b)?,
        Op::Div => a.broadcast_div(b)?,
        Op::Maximum => a.broadcast_maximum(b)?,
        Op::Minimum => a.broadcast_minimum(b)?,
        Op::Pow => pow(a, b, ctx.out_shape)?,
        Op::Compare(c) => {
            let m = match c {
                Cmp::Lt => a.broadcast_lt(b)?,
                Cmp::Le => a.broadcast_le(b)?,
                Cmp::Gt => a.broadcast_gt(b)?,
                Cmp::Ge => a.broadcast_ge(b)?,
                Cmp::Eq => a.broadcast_eq(b)?,
                Cmp::Ne => a.broadcast_ne(b)?,
            };
            mask(m, dt)?
        }
        other => return Err(KErr::Msg(format!("`{}` is not binary", other.name()))),
    })
}

fn eval_inner(op: &Op, args: &[&Tensor], ctx: &KernelCtx) -> KResult<Tensor> {
    let arg = |k: usize| -> KResult<&Tensor> {
        args.get(k)
            .copied()
            .ok_or_else(|| KErr::Msg(format!("missing operand {k}")))
    };
    let out = ctx.out_shape;
    let dt = ctx.dtype;
    let dev = ctx.device;
    let t = match op {
        source_ops!() | equilibrium_ops!() => {
            return Err(KErr::Msg(
                "sources and equilibria are evaluated by the executor".into(),
            ))
        }
        Op::Const(v) => scalar(*v, dt, dev)?,
        Op::Neg => arg(0)?.neg()?,
        Op::Exp => simd::Func::Exp.apply(arg(0)?)?,
        Op::Log => arg(0)?.log()?,
        Op::Sqrt => arg(0)?.sqrt()?,
        Op::Abs => arg(0)?.abs()?,
        Op::Tanh => simd::Func::Tanh.apply(arg(0)?)?,
        Op::Sigmoid => simd::Func::Sigmoid.apply(arg(0)?)?,
        Op::Relu => arg(0)?.relu()?,
        Op::Gelu => simd::Func::Gelu.apply(arg(0)?)?,
        Op::Softplus => {
            let x = arg(0)?;
            let tail = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
            x.relu()?.add(&tail)?
        }
        Op::Sin => arg(0)?.sin()?,
        Op::Cos => arg(0)?.cos()?,
        Op::LeakyRelu { slope } => {
            let x = arg(0)?;
            let r = x.relu()?;
            r.add(&x.sub(&r)?.affine(*slope, 0.0)?)?
        }
        Op::Clamp { lo, hi } => arg(0)?.clamp(*lo, *hi)?,
        binary_math_ops!() => binary(op, arg(0)?, arg(1)?, ctx)?,
        Op::Where => {
            let m = arg(0)?.broadcast_as(out)?.ne(0.0)?;
            m.where_cond(&arg(1)?.broadcast_as(out)?, &arg(2)?.broadcast_as(out)?)?
        }
        Op::Reduce { op, axes, .. } => reduce(*op, arg(0)?, axes, out)?,
        Op::Softmax { axis } => softmax(arg(0)?, *axis, false)?,
        Op::LogSoftmax { axis } => softmax(arg(0)?, *axis, true)?,
        Op::MatMul => match matmul::matmul_laid_out(arg(0)?, arg(1)?, out, ctx.out_order)? {
            Some(t) => t,
            None => matmul_operand(arg(0)?)?.broadcast_matmul(&matmul_operand(arg(1)?)?)?,
        },
        Op::Reshape { .. } => arg(0)?.reshape(out)?,
        Op::Permute { axes } => arg(0)?.permute(axes.clone())?,
        Op::Concat { axis } => Tensor::cat(args, *axis)?,
        Op::BroadcastTo { .. } => arg(0)?.broadcast_as(out)?,
        Op::Slice { axes } => nn::slice(arg(0)?, axes, ctx)?,
        Op::SliceBackward { axes, .. } => nn::slice_backward(arg(0)?, axes, ctx)?,
        Op::Eye { n } => Tensor::eye(dim_of(ctx, n)?, dt, dev)?,
        Op::Fill { value, .. } => Tensor::full(*value, out, dev)?.to_dtype(dt)?,
        Op::Arange { n } => Tensor::arange(0i64, dim_of(ctx, n)? as i64, dev)?.to_dtype(dt)?,
        Op::CausalMask { t } => Tensor::tril2(dim_of(ctx, t)?, dt, dev)?,
        Op::Count { dims } => {
            let n: usize = shape_of(ctx, dims)?.iter().product();
            scalar(n as f64, dt, dev)?
        }
        Op::Conv(a) => nn::conv(arg(0)?, arg(1)?, a)?,
        Op::ConvInputGrad { attrs, .. } => nn::conv_input_grad(arg(0)?, arg(1)?, attrs, out)?,
        Op::ConvWeightGrad { attrs, .. } => nn::conv_weight_grad(arg(0)?, arg(1)?, attrs, out)?,
        Op::AvgPool2d { kernel, stride } => {
            let (k, s) = (*kernel as usize, *stride as usize);
            arg(0)?.avg_pool2d_with_stride((k, k), (s, s))?
        }
        Op::MaxPool2d { kernel, stride } => {
            let (k, s) = (*kernel as usize, *stride as usize);
            arg(0)?.max_pool2d_with_stride((k, k), (s, s))?
        }
        Op::AvgPool2dBackward { kernel, stride, .. } => {
            nn::avg_pool_backward(arg(0)?, *kernel as usize, *stride as usize, out)?
        }
        Op::MaxPool2dBackward { kernel, stride } => {
            nn::max_pool_backward(arg(0)?, arg(1)?, *kernel as usize, *stride as usize)?
        }
        Op::MaxPool2dSelect { kernel, stride } => {
            nn::max_pool_select(arg(0)?, arg(1)?, *kernel as usize, *stride as usize)?
        }
        Op::UpsampleNearest2d { .. } => arg(0)?.upsample_nearest2d(out[2], out[3])?,
        Op::Embedding => nn::embedding(arg(0)?, arg(1)?, out)?,
        Op::EmbeddingBackward { .. } => nn::embedding_backward(arg(0)?, arg(1)?, out)?,
        Op::DropoutMask { p, .. } => dropout_mask(*p, ctx)?,
        Op::Probe { kind, .. } => probe(*kind, ctx)?,
        Op::Cast { .. } => arg(0)?.to_dtype(dt)?,
        Op::SumTo { .. } => sum_to(arg(0)?, out)?,
    };
    Ok(if t.dtype() != dt { t.to_dtype(dt)? } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row pass gives candle's sums, and leaves the other cases to it.
    #[test]
    fn sum_to_over_leading_axes_matches_candle() {
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .and_then(|t| (t * 0.37)?.sin()?.reshape((2, 3, 4)))
            .expect("x");
        let cases: [(&[usize], &[usize]); 4] = [
            (&[4], &[0, 1]),
            (&[1, 4], &[0, 1]),
            (&[3, 4], &[0]),
            (&[1, 1, 4], &[0, 1]),
        ];
        for dtype in [CDType::F32, CDType::F64] {
            let x = x.to_dtype(dtype).expect("cast");
            for (target, axes) in cases {
                assert!(sum_leading_rows(&x, target).is_some(), "{target:?}");
                let fast = sum_to(&x, target).expect("sum_to");
                let want = x
                    .sum(axes.to_vec())
                    .and_then(|t| t.reshape(target))
                    .expect("candle");
                let diff = (fast - want)
                    .and_then(|d| d.abs()?.max_all()?.to_dtype(CDType::F64))
                    .and_then(|d| d.to_scalar::<f64>())
                    .expect("diff");
                assert!(diff <= 1e-6, "{target:?} {dtype:?}: {diff}");
            }
            // A middle axis summed, nothing summed, a transposed operand.
            assert!(sum_leading_rows(&x, &[2, 1, 4]).is_none());
            assert!(sum_leading_rows(&x, &[2, 3, 4]).is_none());
            let t = x.transpose(0, 2).expect("view");
            assert!(sum_leading_rows(&t, &[2]).is_none());
        }
    }

    /// More rows than one piece: the pieces are summed on the pool, and
    /// the sums match candle's and do not depend on the pool's size.
    #[test]
    fn long_leading_sums_in_pieces() {
        let rows = 3 * SUM_PIECE_ROWS + 17;
        let x = Tensor::arange(0f64, (rows * 5) as f64, &Device::Cpu)
            .and_then(|t| (t * 0.37)?.sin()?.reshape((rows, 1, 5)))
            .expect("x");
        for dtype in [CDType::F32, CDType::F64] {
            let x = x.to_dtype(dtype).expect("cast");
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("pool");
                pool.install(|| sum_leading_rows(&x, &[1, 5]))
                    .expect("taken")
                    .to_dtype(CDType::F64)
                    .and_then(|t| t.flatten_all()?.to_vec1::<f64>())
                    .expect("values")
            };
            let (one, two) = (on(1), on(2));
            assert_eq!(one, two, "{dtype:?}");
            let want = x
                .sum(0)
                .and_then(|t| t.to_dtype(CDType::F64)?.flatten_all()?.to_vec1::<f64>())
                .expect("candle");
            for (a, b) in one.iter().zip(&want) {
                let tol = if dtype == CDType::F32 { 1e-4 } else { 1e-12 };
                assert!(
                    (a - b).abs() <= tol * b.abs().max(1.0),
                    "{dtype:?}: {a} vs {b}"
                );
            }
        }
    }
}
