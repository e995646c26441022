//! One vector-Jacobian product rule per [`Op`], built only from IR ops.
//!
//! Owns the derivative of every op. Given a forward node `y = op(x...)` and
//! the cotangent `g` of `y`, [`vjp`] appends nodes computing the cotangent
//! of each operand that is `needed` (others get `None`, and nothing is built
//! for them). Guarantees: every cotangent has its operand's exact type
//! (broadcasting is undone by `SumTo`); every rule uses only ops that have
//! rules themselves, so gradient graphs can be differentiated again.
//!
//! Conventions at non-differentiable points (documented choices, tested):
//! - `maximum`/`minimum` ties split the gradient half to each operand (what a
//!   central difference measures); a `max`/`min` reduction divides it evenly
//!   among the tied elements;
//! - `relu`, `abs`, `leaky_relu` use the derivative of the right piece only
//!   for `x > 0` (so 0 at the kink for relu and abs);
//! - `clamp` passes the gradient for `lo <= x <= hi`;
//! - max pooling sends each window's gradient to its first maximum.

use crate::ir::op_groups::{constructor_ops, equilibrium_ops, source_ops};
use crate::ir::{Cmp, ConvAttrs, NodeId, Op, ReduceOp};
use crate::types::dim::Dim;
use crate::types::SliceAxis;

use super::builder::Builder;
use super::AdError;

type Grads = Vec<Option<NodeId>>;

/// sqrt(2 / pi) and the cubic coefficient of GELU's tanh form. Fused
/// kernels compute GELU itself with the same steps as its derivative here
/// (`exec::fused`), so that the two share one `sigmoid`.
pub(crate) const GELU_C: f64 = 0.797_884_560_802_865_4;
pub(crate) const GELU_K: f64 = 0.044715;

/// The cotangents of `node`'s operands, given the cotangent `g` of its result.
pub fn vjp(b: &mut Builder, node: NodeId, g: NodeId, needed: &[bool]) -> Result<Grads, AdError> {
    let op = b.g.op(node).clone();
    let xs = b.g.operands(node);
    let need = |k: usize| needed.get(k).copied().unwrap_or(false);
    let x = |k: usize| xs[k];
    let mut out: Grads = vec![None; xs.len()];
    // Elementwise unary rules: the cotangent is g * f'(x).
    let unary =
        |b: &mut Builder, d: NodeId| -> Result<Grads, AdError> { Ok(vec![Some(b.mul(g, d)?)]) };
    match &op {
        source_ops!() | Op::Const(_) | constructor_ops!() | Op::Count { .. } | Op::Compare(_) => {
            return Ok(out)
        }
        equilibrium_ops!() => {
            return Err(AdError::Internal(
                "equilibrium results are differentiated by the reverse sweep".into(),
            ))
        }
        Op::Neg => out[0] = Some(b.neg(g)?),
        Op::Exp => return unary(b, node),
        Op::Log => out[0] = Some(b.div(g, x(0))?),
        Op::Sqrt => {
            let two_y = b.scale(node, 2.0)?;
            out[0] = Some(b.div(g, two_y)?);
        }
        Op::Abs => {
            let pos = b.cmp_const(Cmp::Gt, x(0), 0.0)?;
            let neg = b.cmp_const(Cmp::Lt, x(0), 0.0)?;
            let sign = b.sub(pos, neg)?;
            return unary(b, sign);
        }
        Op::Tanh => {
            let y2 = b.mul(node, node)?;
            let d = b.rsub(1.0, y2)?;
            return unary(b, d);
        }
        Op::Sigmoid => {
            let one_minus = b.rsub(1.0, node)?;
            let d = b.mul(node, one_minus)?;
            return unary(b, d);
        }
        Op::Relu => {
            let d = b.cmp_const(Cmp::Gt, x(0), 0.0)?;
            return unary(b, d);
        }
        Op::Gelu => {
            // GELU's tanh form as x σ(2u), u = c (x + k x³) (0.5 (1 + tanh u)
            // is σ(2u)); its derivative σ + x σ (1 − σ) · 2c (1 + 3k x²).
            let x0 = x(0);
            let x2 = b.mul(x0, x0)?;
            let x3 = b.mul(x2, x0)?;
            let kx3 = b.scale(x3, GELU_K)?;
            let inner = b.add(x0, kx3)?;
            let two_u = b.scale(inner, 2.0 * GELU_C)?;
            let s = b.unary(Op::Sigmoid, two_u)?;
            let one_minus = b.rsub(1.0, s)?;
            let ds = b.mul(s, one_minus)?;
            let du = b.scale(x2, 3.0 * GELU_K)?;
            let du = b.shift(du, 1.0)?;
            let du = b.scale(du, 2.0 * GELU_C)?;
            let right = b.mul(ds, du)?;
            let right = b.mul(right, x0)?;
            let d = b.add(s, right)?;
            return unary(b, d);
        }
        Op::Softplus => {
            let d = b.unary(Op::Sigmoid, x(0))?;
            return unary(b, d);
        }
        Op::Sin => {
            let d = b.unary(Op::Cos, x(0))?;
            return unary(b, d);
        }
        Op::Cos => {
            let s = b.unary(Op::Sin, x(0))?;
            let d = b.neg(s)?;
            return unary(b, d);
        }
        Op::LeakyRelu { slope } => {
            let pos = b.cmp_const(Cmp::Gt, x(0), 0.0)?;
            let d = b.scale(pos, 1.0 - slope)?;
            let d = b.shift(d, *slope)?;
            return unary(b, d);
        }
        Op::Clamp { lo, hi } => {
            let above = b.cmp_const(Cmp::Ge, x(0), *lo)?;
            let below = b.cmp_const(Cmp::Le, x(0), *hi)?;
            let d = b.mul(above, below)?;
            return unary(b, d);
        }
        Op::Add | Op::Sub => {
            if need(0) {
                let s = b.shape(x(0));
                out[0] = Some(b.sum_to(g, &s)?);
            }
            if need(1) {
                let s = b.shape(x(1));
                let gb = if matches!(op, Op::Sub) { b.neg(g)? } else { g };
                out[1] = Some(b.sum_to(gb, &s)?);
            }
        }
        Op::Mul => {
            for (k, other) in [(0, x(1)), (1, x(0))] {
                if need(k) {
                    let s = b.shape(x(k));
                    let p = b.mul(g, other)?;
                    out[k] = Some(b.sum_to(p, &s)?);
                }
            }
        }
        Op::Div => {
            if need(0) {
                let s = b.shape(x(0));
                let q = b.div(g, x(1))?;
                out[0] = Some(b.sum_to(q, &s)?);
            }
            if need(1) {
                // -g * a / b^2 = -(g * y) / b
                let s = b.shape(x(1));
                let gy = b.mul(g, node)?;
                let q = b.div(gy, x(1))?;
                let q = b.neg(q)?;
                out[1] = Some(b.sum_to(q, &s)?);
            }
        }
        Op::Pow => {
            if need(0) {
                let s = b.shape(x(0));
                let e1 = b.shift(x(1), -1.0)?;
                let p = b.op(Op::Pow, &[x(0), e1])?;
                let d = b.mul(p, x(1))?;
                let q = b.mul(g, d)?;
                out[0] = Some(b.sum_to(q, &s)?);
            }
            if need(1) {
                let s = b.shape(x(1));
                let la = b.unary(Op::Log, x(0))?;
                let d = b.mul(node, la)?;
                let q = b.mul(g, d)?;
                out[1] = Some(b.sum_to(q, &s)?);
            }
        }
        Op::Maximum | Op::Minimum => {
            let (win_a, win_b) = if matches!(op, Op::Maximum) {
                (Cmp::Gt, Cmp::Lt)
            } else {
                (Cmp::Lt, Cmp::Gt)
            };
            let tie = b.cmp(Cmp::Eq, x(0), x(1))?;
            let half_tie = b.scale(tie, 0.5)?;
            for (k, c) in [(0, win_a), (1, win_b)] {
                if need(k) {
                    let s = b.shape(x(k));
                    let win = b.cmp(c, x(0), x(1))?;
                    let w = b.add(win, half_tie)?;
                    let q = b.mul(g, w)?;
                    out[k] = Some(b.sum_to(q, &s)?);
                }
            }
        }
        Op::Where => {
            for (k, take_a) in [(1, true), (2, false)] {
                if need(k) {
                    let s = b.shape(x(k));
                    let zero = b.konst_like(0.0, g);
                    let (t, f) = if take_a { (g, zero) } else { (zero, g) };
                    let q = b.op(Op::Where, &[x(0), t, f])?;
                    out[k] = Some(b.sum_to(q, &s)?);
                }
            }
        }
        Op::Reduce {
            op: r,
            axes,
            keepdim,
        } => out[0] = Some(reduce_vjp(b, node, x(0), g, *r, axes, *keepdim)?),
        Op::Softmax { axis } => {
            // y * (g - sum(g * y))
            let gy = b.mul(g, node)?;
            let s = b.sum_keep(gy, &[*axis])?;
            let d = b.sub(g, s)?;
            out[0] = Some(b.mul(node, d)?);
        }
        Op::LogSoftmax { axis } => {
            // g - softmax * sum(g)
            let s = b.sum_keep(g, &[*axis])?;
            let p = b.unary(Op::Exp, node)?;
            let ps = b.mul(p, s)?;
            out[0] = Some(b.sub(g, ps)?);
        }
        Op::MatMul => {
            if need(0) {
                let s = b.shape(x(0));
                let bt = b.transpose_last(x(1))?;
                let q = b.op(Op::MatMul, &[g, bt])?;
                out[0] = Some(b.sum_to(q, &s)?);
            }
            if need(1) {
                out[1] = Some(matmul_rhs_grad(b, x(0), x(1), g)?);
            }
        }
        Op::Reshape { .. } => {
            let s = b.shape(x(0));
            out[0] = Some(b.reshape(g, &s)?);
        }
        Op::Permute { axes } => {
            let mut inv = vec![0; axes.len()];
            for (i, a) in axes.iter().enumerate() {
                inv[*a] = i;
            }
            out[0] = Some(b.op(Op::Permute { axes: inv }, &[g])?);
        }
        Op::Concat { axis } => {
            let mut start = Dim::konst(0);
            for (k, xk) in xs.iter().enumerate() {
                let ty = b.ty(*xk).clone();
                let len = ty.shape[*axis].clone();
                let end = start
                    .add(&len)
                    .ok_or_else(|| AdError::Internal("dim overflow".into()))?;
                if need(k) {
                    let axes = SliceAxis::along(ty.rank(), *axis, &start, &end);
                    out[k] = Some(b.op(Op::Slice { axes }, &[g])?);
                }
                start = end;
            }
        }
        Op::BroadcastTo { .. } => {
            let s = b.shape(x(0));
            out[0] = Some(b.sum_to(g, &s)?);
        }
        Op::SumTo { .. } => {
            let s = b.shape(x(0));
            out[0] = Some(b.broadcast_to(g, &s)?);
        }
        Op::Slice { axes } => {
            let shape = b.shape(x(0));
            let axes = axes.clone();
            out[0] = Some(b.op(Op::SliceBackward { axes, shape }, &[g])?);
        }
        Op::SliceBackward { axes, .. } => {
            out[0] = Some(b.op(Op::Slice { axes: axes.clone() }, &[g])?);
        }
        Op::Conv(a) => {
            if need(0) {
                out[0] = Some(conv_input_grad(b, *a, x(0), g, x(1))?);
            }
            if need(1) {
                out[1] = Some(conv_weight_grad(b, *a, x(1), x(0), g)?);
            }
        }
        Op::ConvInputGrad { attrs, .. } => {
            // y = CIG(g0, w): linear in each operand.
            let (g0, w) = (x(0), x(1));
            if need(0) {
                out[0] = Some(b.op(Op::Conv(*attrs), &[g, w])?);
            }
            if need(1) {
                out[1] = Some(conv_weight_grad(b, *attrs, w, g, g0)?);
            }
        }
        Op::ConvWeightGrad { attrs, .. } => {
            // y = CWG(x0, g0): linear in each operand.
            let (x0, g0) = (x(0), x(1));
            if need(0) {
                out[0] = Some(conv_input_grad(b, *attrs, x0, g0, g)?);
            }
            if need(1) {
                out[1] = Some(b.op(Op::Conv(*attrs), &[x0, g])?);
            }
        }
        Op::AvgPool2d { kernel, stride } => {
            let shape = b.shape(x(0));
            out[0] = Some(b.op(
                Op::AvgPool2dBackward {
                    kernel: *kernel,
                    stride: *stride,
                    shape,
                },
                &[g],
            )?);
        }
        Op::AvgPool2dBackward { kernel, stride, .. } => {
            out[0] = Some(b.op(
                Op::AvgPool2d {
                    kernel: *kernel,
                    stride: *stride,
                },
                &[g],
            )?);
        }
        Op::MaxPool2d { kernel, stride } => {
            let (kernel, stride) = (*kernel, *stride);
            out[0] = Some(b.op(Op::MaxPool2dBackward { kernel, stride }, &[x(0), g])?);
        }
        Op::MaxPool2dBackward { kernel, stride } => {
            if need(1) {
                let (kernel, stride) = (*kernel, *stride);
                out[1] = Some(b.op(Op::MaxPool2dSelect { kernel, stride }, &[x(0), g])?);
            }
        }
        Op::MaxPool2dSelect { kernel, stride } => {
            if need(1) {
                let (kernel, stride) = (*kernel, *stride);
                out[1] = Some(b.op(Op::MaxPool2dBackward { kernel, stride }, &[x(0), g])?);
            }
        }
        Op::UpsampleNearest2d { scale } => {
            // Each input pixel feeds a scale x scale block: sum the block.
            let s = *scale;
            let pooled = b.op(
                Op::AvgPool2d {
                    kernel: s,
                    stride: s,
                },
                &[g],
            )?;
            out[0] = Some(b.scale(pooled, (s * s) as f64)?);
        }
        Op::Embedding => {
            if need(1) {
                let rows = b.shape(x(1))[0].clone();
                out[1] = Some(b.op(Op::EmbeddingBackward { rows }, &[x(0), g])?);
            }
        }
        Op::EmbeddingBackward { .. } => {
            if need(1) {
                out[1] = Some(b.op(Op::Embedding, &[x(0), g])?);
            }
        }
        Op::Cast { .. } => {
            let from = b.dtype(x(0));
            if from.is_float() && b.dtype(g).is_float() {
                out[0] = Some(b.op(Op::Cast { to: from }, &[g])?);
            }
        }
    }
    for (k, o) in out.iter_mut().enumerate() {
        if !need(k) {
            *o = None;
        }
    }
    Ok(out)
}

/// The gradient of `a @ b` with respect to `b`. A weight (`b` of rank 2)
/// under a batched `a` (`[.., m, k]`) gets one product over all rows,
/// `reshape(a, [N, k])^T @ reshape(g, [N, n])`, instead of one product per
/// batch entry summed afterwards: the same sum, one large gemm.
fn matmul_rhs_grad(b: &mut Builder, a: NodeId, w: NodeId, g: NodeId) -> Result<NodeId, AdError> {
    let (a_shape, w_shape, g_shape) = (b.shape(a), b.shape(w), b.shape(g));
    let rows = a_shape[..a_shape.len() - 1]
        .iter()
        .try_fold(Dim::konst(1), |acc, d| acc.mul(d));
    let flat = match rows {
        Some(rows) if w_shape.len() == 2 && a_shape.len() > 2 && g_shape.len() == a_shape.len() => {
            let k = a_shape[a_shape.len() - 1].clone();
            let n = g_shape[g_shape.len() - 1].clone();
            Some((rows, k, n))
        }
        _ => None,
    };
    if let Some((rows, k, n)) = flat {
        let a2 = b.reshape(a, &[rows.clone(), k])?;
        let g2 = b.reshape(g, &[rows, n])?;
        let at = b.transpose_last(a2)?;
        return b.op(Op::MatMul, &[at, g2]);
    }
    let at = b.transpose_last(a)?;
    let q = b.op(Op::MatMul, &[at, g])?;
    b.sum_to(q, &w_shape)
}

fn conv_input_grad(
    b: &mut Builder,
    attrs: ConvAttrs,
    x: NodeId,
    g: NodeId,
    w: NodeId,
) -> Result<NodeId, AdError> {
    let shape = b.shape(x);
    b.op(Op::ConvInputGrad { attrs, shape }, &[g, w])
}

fn conv_weight_grad(
    b: &mut Builder,
    attrs: ConvAttrs,
    w: NodeId,
    x: NodeId,
    g: NodeId,
) -> Result<NodeId, AdError> {
    let shape = b.shape(w);
    b.op(Op::ConvWeightGrad { attrs, shape }, &[x, g])
}

fn reduce_vjp(
    b: &mut Builder,
    y: NodeId,
    x: NodeId,
    g: NodeId,
    r: ReduceOp,
    axes: &[usize],
    keepdim: bool,
) -> Result<NodeId, AdError> {
    let xshape = b.shape(x);
    let kept: Vec<Dim> = crate::ir::shape::reduced_shape(&xshape, axes, true);
    // Cotangent and result with the reduced axes kept as size 1.
    let gk = b.reshape(g, &kept)?;
    let kept_result = |b: &mut Builder| -> Result<NodeId, AdError> {
        if keepdim {
            Ok(y)
        } else {
            b.reshape(y, &kept)
        }
    };
    match r {
        ReduceOp::Sum => b.broadcast_to(gk, &xshape),
        ReduceOp::Mean => {
            let n: Vec<Dim> = axes.iter().map(|a| xshape[*a].clone()).collect();
            let dt = b.dtype(g);
            let count = b.count(n, dt);
            let q = b.div(gk, count)?;
            b.broadcast_to(q, &xshape)
        }
        ReduceOp::Max | ReduceOp::Min => {
            let yk = kept_result(b)?;
            let hit = b.cmp(Cmp::Eq, x, yk)?;
            let ties = b.sum_keep(hit, axes)?;
            let share = b.div(hit, ties)?;
            b.mul(share, gk)
        }
        ReduceOp::LogSumExp => {
            let yk = kept_result(b)?;
            let shifted = b.sub(x, yk)?;
            let p = b.unary(Op::Exp, shifted)?;
            b.mul(p, gk)
        }
    }
}
