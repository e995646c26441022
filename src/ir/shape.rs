//! Shape rules of the IR ops on symbolic types.
//!
//! Owns [`infer`]: the result type of an op from its operands' types and its
//! attributes. This is the one shape rule of each primitive: sema's checker
//! asks it for the result type of every primitive it emits (`Elab::emit_op`)
//! and only words the diagnostics itself, so a lowered graph re-checks by
//! construction. Guarantees: an error means
//! the operands cannot feed the op; `Ok(None)` means the type is not a
//! function of the operands (sources, constants, equilibria), so the node's
//! declared type is taken as is. Dims that cannot be compared at compile time
//! are accepted.

use crate::types::dim::{Dim, DimCmp};
use crate::types::{DType, SliceAxis, Type};

use super::op::{ConvAttrs, Op, ReduceOp};
use super::op_groups::{binary_math_ops, equilibrium_ops, source_ops};

use crate::types::shape_text as show;

/// NumPy broadcasting of two symbolic shapes.
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
    crate::types::dim::broadcast(a, b)
        .map_err(|_| format!("shapes {} and {} do not broadcast", show(a), show(b)))
}

/// Can `from` be broadcast to exactly `to`?
pub fn broadcasts_to(from: &[Dim], to: &[Dim]) -> bool {
    match broadcast_shapes(from, to) {
        Ok(b) => b.len() == to.len() && b.iter().zip(to).all(|(x, y)| same(x, y)),
        Err(_) => false,
    }
}

/// Equal, or not decidable at compile time.
pub fn same(a: &Dim, b: &Dim) -> bool {
    a.compare(b) != DimCmp::Different
}

pub fn same_shape(a: &[Dim], b: &[Dim]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
}

fn product(d: &[Dim]) -> Option<Dim> {
    d.iter().try_fold(Dim::konst(1), |acc, x| acc.mul(x))
}

fn expect_float(t: &Type, what: &str) -> Result<(), String> {
    if t.dtype.is_float() {
        Ok(())
    } else {
        Err(format!("{what} needs a float tensor, got {t}"))
    }
}

/// The shape after a reduction over `axes`.
pub fn reduced_shape(shape: &[Dim], axes: &[usize], keepdim: bool) -> Vec<Dim> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keepdim) {
            (false, _) => Some(d.clone()),
            (true, true) => Some(Dim::konst(1)),
            (true, false) => None,
        })
        .collect()
}

/// Output length of a convolution along one axis.
pub fn conv_out(size: &Dim, kernel: &Dim, a: &ConvAttrs) -> Option<Dim> {
    kernel
        .sub(&Dim::konst(1))?
        .mul(&Dim::konst(a.dilation))
        .and_then(|span| size.add(&Dim::konst(2 * a.padding - 1))?.sub(&span))?
        .div(&Dim::konst(a.stride))?
        .add(&Dim::konst(1))
}

/// Output length of a pooling window along one axis.
pub fn pool_out(size: &Dim, kernel: i64, stride: i64) -> Option<Dim> {
    size.sub(&Dim::konst(kernel))?
        .div(&Dim::konst(stride))?
        .add(&Dim::konst(1))
}

/// The shape after a slice.
pub fn sliced_shape(shape: &[Dim], axes: &[SliceAxis]) -> Result<Vec<Dim>, String> {
    if axes.len() != shape.len() {
        return Err(format!(
            "{} slice axes for a tensor of rank {}",
            axes.len(),
            shape.len()
        ));
    }
    let mut out = Vec::new();
    for (a, d) in axes.iter().zip(shape) {
        match a {
            SliceAxis::Full => out.push(d.clone()),
            SliceAxis::Index(_) => {}
            SliceAxis::Range { start, end, step } => {
                let len = end
                    .sub(start)
                    .and_then(|l| l.add(&Dim::konst(step - 1)))
                    .and_then(|l| l.div(&Dim::konst(*step)))
                    .ok_or("slice length overflows")?;
                out.push(len);
            }
        }
    }
    Ok(out)
}

fn conv_shape(x: &Type, w: &Type, a: &ConvAttrs) -> Result<Type, String> {
    if x.rank() != a.spatial + 2 || w.rank() != a.spatial + 2 {
        return Err(format!("conv{}d of {x} and {w}: bad ranks", a.spatial));
    }
    let mut shape = vec![x.shape[0].clone(), w.shape[0].clone()];
    for k in 0..a.spatial {
        shape.push(conv_out(&x.shape[2 + k], &w.shape[2 + k], a).ok_or("overflow")?);
    }
    Ok(Type::new(x.dtype, shape))
}

/// The result type of `op` applied to operands of types `args`.
pub fn infer(op: &Op, args: &[&Type]) -> Result<Option<Type>, String> {
    if !op.arity().accepts(args.len()) {
        return Err(format!(
            "{} operands for `{}` ({:?})",
            args.len(),
            op.name(),
            op.arity()
        ));
    }
    let t = |i: usize| args[i];
    let ty = match op {
        source_ops!()
        | Op::Const(_)
        | equilibrium_ops!()
        | Op::Fill { .. }
        | Op::Count { .. }
        | Op::Eye { .. }
        | Op::CausalMask { .. }
        | Op::DropoutMask { .. }
        | Op::Probe { .. } => return Ok(None),
        Op::Arange { n } => Type::new(DType::I64, vec![n.clone()]),
        Op::Neg | Op::Abs | Op::Relu => t(0).clone(),
        Op::Exp
        | Op::Log
        | Op::Sqrt
        | Op::Tanh
        | Op::Sigmoid
        | Op::Gelu
        | Op::Softplus
        | Op::Sin
        | Op::Cos
        | Op::LeakyRelu { .. }
        | Op::Clamp { .. } => {
            expect_float(t(0), op.name())?;
            t(0).clone()
        }
        binary_math_ops!() => {
            if t(0).dtype != t(1).dtype {
                return Err(format!("dtypes of {} and {} differ", t(0), t(1)));
            }
            Type::new(t(0).dtype, broadcast_shapes(&t(0).shape, &t(1).shape)?)
        }
        Op::Where => {
            if t(1).dtype != t(2).dtype {
                return Err(format!("dtypes of {} and {} differ", t(1), t(2)));
            }
            let s = broadcast_shapes(&t(0).shape, &t(1).shape)?;
            Type::new(t(1).dtype, broadcast_shapes(&s, &t(2).shape)?)
        }
        Op::Reduce {
            op: r,
            axes,
            keepdim,
        } => {
            if axes.iter().any(|a| *a >= t(0).rank()) {
                return Err(format!("axes {axes:?} out of range for {}", t(0)));
            }
            if matches!(r, ReduceOp::Mean | ReduceOp::LogSumExp) {
                expect_float(t(0), r.name())?;
            }
            Type::new(t(0).dtype, reduced_shape(&t(0).shape, axes, *keepdim))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            expect_float(t(0), op.name())?;
            if *axis >= t(0).rank() {
                return Err(format!("axis {axis} out of range for {}", t(0)));
            }
            t(0).clone()
        }
        Op::MatMul => {
            let (a, b) = (t(0), t(1));
            if a.rank() < 2 || b.rank() < 2 || a.dtype != b.dtype {
                return Err(format!("matmul of {a} and {b}"));
            }
            let (ra, rb) = (a.rank(), b.rank());
            if !same(&a.shape[ra - 1], &b.shape[rb - 2]) {
                return Err(format!("matmul of {a} and {b}: inner dimensions differ"));
            }
            let mut s = broadcast_shapes(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
            s.push(a.shape[ra - 2].clone());
            s.push(b.shape[rb - 1].clone());
            Type::new(a.dtype, s)
        }
        Op::Reshape { shape } => {
            if let (Some(p), Some(q)) = (product(&t(0).shape), product(shape)) {
                if !same(&p, &q) {
                    return Err(format!("cannot reshape {} to {}", t(0), show(shape)));
                }
            }
            Type::new(t(0).dtype, shape.clone())
        }
        Op::Permute { axes } => {
            let mut sorted = axes.clone();
            sorted.sort();
            if sorted != (0..t(0).rank()).collect::<Vec<_>>() {
                return Err(format!(
                    "{axes:?} is not a permutation of the axes of {}",
                    t(0)
                ));
            }
            Type::new(
                t(0).dtype,
                axes.iter().map(|&i| t(0).shape[i].clone()).collect(),
            )
        }
        Op::Concat { axis } => {
            let first = t(0);
            if *axis >= first.rank() {
                return Err(format!("axis {axis} out of range for {first}"));
            }
            let mut total = first.shape[*axis].clone();
            for other in &args[1..] {
                let ok = other.rank() == first.rank()
                    && other.dtype == first.dtype
                    && (0..first.rank())
                        .all(|k| k == *axis || same(&other.shape[k], &first.shape[k]));
                if !ok {
                    return Err(format!("{first} and {other} differ outside axis {axis}"));
                }
                total = total.add(&other.shape[*axis]).ok_or("overflow")?;
            }
            let mut s = first.shape.clone();
            s[*axis] = total;
            Type::new(first.dtype, s)
        }
        Op::BroadcastTo { shape } => {
            if !broadcasts_to(&t(0).shape, shape) {
                return Err(format!("cannot broadcast {} to {}", t(0), show(shape)));
            }
            Type::new(t(0).dtype, shape.clone())
        }
        Op::SumTo { shape } => {
            if !broadcasts_to(shape, &t(0).shape) {
                return Err(format!("cannot sum {} to {}", t(0), show(shape)));
            }
            Type::new(t(0).dtype, shape.clone())
        }
        Op::Slice { axes } => Type::new(t(0).dtype, sliced_shape(&t(0).shape, axes)?),
        Op::SliceBackward { axes, shape } => {
            let s = sliced_shape(shape, axes)?;
            if !same_shape(&s, &t(0).shape) {
                return Err(format!("{} is not a slice of {}", t(0), show(shape)));
            }
            Type::new(t(0).dtype, shape.clone())
        }
        Op::Conv(a) => conv_shape(t(0), t(1), a)?,
        Op::ConvInputGrad { attrs, shape } => {
            let x = Type::new(t(0).dtype, shape.clone());
            let y = conv_shape(&x, t(1), attrs)?;
            if !same_shape(&y.shape, &t(0).shape) {
                return Err(format!("{} is not the output of {x} and {}", t(0), t(1)));
            }
            x
        }
        Op::ConvWeightGrad { attrs, shape } => {
            let w = Type::new(t(0).dtype, shape.clone());
            let y = conv_shape(t(0), &w, attrs)?;
            if !same_shape(&y.shape, &t(1).shape) {
                return Err(format!("{} is not the output of {} and {w}", t(1), t(0)));
            }
            w
        }
        Op::AvgPool2d { kernel, stride } | Op::MaxPool2d { kernel, stride } => {
            if t(0).rank() != 4 {
                return Err(format!("pooling needs [B, C, H, W], got {}", t(0)));
            }
            let mut s = t(0).shape.clone();
            for d in &mut s[2..] {
                *d = pool_out(d, *kernel, *stride).ok_or("overflow")?;
            }
            Type::new(t(0).dtype, s)
        }
        Op::AvgPool2dBackward {
            kernel,
            stride,
            shape,
        } => {
            let x = Type::new(t(0).dtype, shape.clone());
            let y = infer(
                &Op::AvgPool2d {
                    kernel: *kernel,
                    stride: *stride,
                },
                &[&x],
            )?;
            if y.is_some_and(|y| !same_shape(&y.shape, &t(0).shape)) {
                return Err(format!("{} is not the pooled shape of {x}", t(0)));
            }
            x
        }
        Op::MaxPool2dBackward { kernel, stride } => {
            let y = infer(
                &Op::MaxPool2d {
                    kernel: *kernel,
                    stride: *stride,
                },
                &[t(0)],
            )?;
            if y.is_some_and(|y| !same_shape(&y.shape, &t(1).shape)) {
                return Err(format!("{} is not the pooled shape of {}", t(1), t(0)));
            }
            t(0).clone()
        }
        Op::MaxPool2dSelect { kernel, stride } => {
            if !same_shape(&t(0).shape, &t(1).shape) {
                return Err(format!("{} and {} differ", t(0), t(1)));
            }
            return infer(
                &Op::MaxPool2d {
                    kernel: *kernel,
                    stride: *stride,
                },
                &[t(1)],
            );
        }
        Op::UpsampleNearest2d { scale } => {
            if t(0).rank() != 4 {
                return Err(format!("upsampling needs [B, C, H, W], got {}", t(0)));
            }
            let mut s = t(0).shape.clone();
            for d in &mut s[2..] {
                *d = d.mul(&Dim::konst(*scale)).ok_or("overflow")?;
            }
            Type::new(t(0).dtype, s)
        }
        Op::Embedding => {
            if t(0).dtype != DType::I64 || t(1).rank() != 2 {
                return Err(format!("embedding of {} in {}", t(0), t(1)));
            }
            let mut s = t(0).shape.clone();
            s.push(t(1).shape[1].clone());
            Type::new(t(1).dtype, s)
        }
        Op::EmbeddingBackward { rows } => {
            let (ids, g) = (t(0), t(1));
            if ids.dtype != DType::I64
                || g.rank() != ids.rank() + 1
                || !same_shape(&ids.shape, &g.shape[..ids.rank()])
            {
                return Err(format!("embedding gradient of {g} for ids {ids}"));
            }
            Type::new(g.dtype, vec![rows.clone(), g.shape[ids.rank()].clone()])
        }
        Op::Cast { to } => Type::new(*to, t(0).shape.clone()),
    };
    Ok(Some(ty))
}
