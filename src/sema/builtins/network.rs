//! Network built-ins with their own shape rules: `where`, reductions,
//! convolutions and pooling. Guarantees: output sizes follow PyTorch's
//! formulas (floor division), and impossible sizes are errors at the call.

use super::Args;
use crate::ir::shape as ir_shape;
use crate::ir::{ConvAttrs, Op, ReduceOp};
use crate::sema::dim::{Dim, DimCmp};
use crate::sema::elab::{Elab, Value};
use crate::sema::error::SemaError;
use crate::source::Span;

impl Elab<'_> {
    pub(super) fn where_(&mut self, a: &Args, span: Span) -> Value {
        if (0..3).any(|i| matches!(a.get(i), Value::Unknown)) {
            return Value::Unknown;
        }
        let Some((mask, tm)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let dtype = match (a.get(1), a.get(2)) {
            (Value::Tensor(t), _) | (_, Value::Tensor(t)) => self.ty(*t).dtype,
            _ => tm.dtype,
        };
        let (Some(x), Some(y)) = (
            self.scalar_tensor(a.get(1), dtype, a.span(1)),
            self.scalar_tensor(a.get(2), dtype, a.span(2)),
        ) else {
            return Value::Unknown;
        };
        let (tx, ty) = (self.ty(x).clone(), self.ty(y).clone());
        if tx.dtype != ty.dtype {
            return self.dtype_mismatch(span, tx.dtype, ty.dtype, None);
        }
        let shape = Self::broadcast_shapes(&tm.shape, &tx.shape)
            .and_then(|s| Self::broadcast_shapes(&s, &ty.shape));
        match shape {
            Ok(_) => self.emit_op(Op::Where, vec![mask, x, y], span),
            Err((p, q)) => self.report(
                span,
                SemaError::Broadcast {
                    lhs: tm.to_string(),
                    rhs: format!("{tx} and {ty}"),
                    span: span.into(),
                    detail: format!("dimensions {p} and {q} differ and neither is 1"),
                },
            ),
        }
    }

    pub(super) fn reduce(&mut self, op: ReduceOp, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let axes: Vec<usize> = match a.get(1) {
            Value::Unknown => (0..ty.rank()).collect(),
            Value::Int(_) => match self.axis_arg(a, 1, ty.rank()) {
                Some(ax) => vec![ax],
                None => return Value::Unknown,
            },
            Value::Tuple(items) | Value::List(items) => {
                let mut out = Vec::new();
                for it in items.clone() {
                    let d = match it {
                        Value::Int(d) => d,
                        other => {
                            let found = other.describe(&self.m);
                            return self.type_mismatch(a.span(1), "an int axis", found);
                        }
                    };
                    let Some(ax) = d
                        .as_const()
                        .and_then(|i| self.axis(i, ty.rank(), a.span(1)))
                    else {
                        return Value::Unknown;
                    };
                    if out.contains(&ax) {
                        return self.report(
                            a.span(1),
                            SemaError::RepeatedAxis {
                                axis: ax,
                                span: a.span(1).into(),
                            },
                        );
                    }
                    out.push(ax);
                }
                out.sort();
                out
            }
            other => {
                let found = other.describe(&self.m);
                return self.type_mismatch(a.span(1), "an axis or a tuple of axes", found);
            }
        };
        let keepdim = match a.get(2) {
            Value::Bool(b) => b.unwrap_or(false),
            other => {
                let found = other.describe(&self.m);
                return self.type_mismatch(a.span(2), "a bool", found);
            }
        };
        self.emit_op(Op::Reduce { op, axes, keepdim }, vec![x], span)
    }

    pub(super) fn conv(&mut self, name: &str, spatial: usize, a: &Args, span: Span) -> Value {
        let (Some((x, tx)), Some((w, tw))) = (self.tensor(a, 0), self.tensor(a, 1)) else {
            return Value::Unknown;
        };
        let ints: Vec<Option<i64>> = (2..6).map(|i| self.int(a, i)).collect();
        let [Some(stride), Some(padding), Some(dilation), Some(groups)] = ints[..] else {
            return Value::Unknown;
        };
        if stride < 1 || padding < 0 || dilation < 1 || groups < 1 {
            return self.bad_setting(span, name, "stride >= 1, padding >= 0, dilation >= 1 and groups >= 1", format!(
                        "stride = {stride}, padding = {padding}, dilation = {dilation}, groups = {groups}"
                    ));
        }
        let layout = if spatial == 1 {
            "[B, C, L]"
        } else {
            "[B, C, H, W]"
        };
        if tx.rank() != spatial + 2 {
            return self.input_rank(name, &format!("an input {layout}"), &tx, a.span(0));
        }
        if tw.rank() != spatial + 2 {
            let expected = format!("a weight of rank {}", spatial + 2);
            return self.input_rank(name, &expected, &tw, a.span(1));
        }
        if tx.dtype != tw.dtype {
            return self.dtype_mismatch(span, tx.dtype, tw.dtype, None);
        }
        let g = Dim::konst(groups);
        let c = &tx.shape[1];
        if c.rem_const(&g).is_some_and(|r| r != 0)
            || tw.shape[0].rem_const(&g).is_some_and(|r| r != 0)
        {
            return self.report(
                span,
                SemaError::Groups {
                    op: name.into(),
                    groups,
                    inputs: c.to_string(),
                    outputs: tw.shape[0].to_string(),
                    span: span.into(),
                },
            );
        }
        let per_group = c.div(&g).unwrap_or(c.clone());
        if tw.shape[1].compare(&per_group) == DimCmp::Different {
            return self.report(
                span,
                SemaError::WeightChannels {
                    op: name.into(),
                    weight: tw.to_string(),
                    expected: tw.shape[1].to_string(),
                    input: tx.to_string(),
                    found: per_group.to_string(),
                    span: span.into(),
                },
            );
        }
        let attrs = ConvAttrs {
            spatial,
            stride,
            padding,
            dilation,
            groups,
        };
        for k in 0..spatial {
            let size = &tx.shape[2 + k];
            let kernel = &tw.shape[2 + k];
            let Some(out) = ir_shape::conv_out(size, kernel, &attrs) else {
                return Value::Unknown;
            };
            if out.as_const().is_some_and(|o| o < 1) {
                return self.kernel_too_large(
                    span,
                    name,
                    format!("{kernel} (dilation {dilation})"),
                    format!("{size} padded by 2 * {padding}"),
                );
            }
        }
        self.emit_op(Op::Conv(attrs), vec![x, w], span)
    }

    pub(super) fn pool(
        &mut self,
        name: &str,
        a: &Args,
        span: Span,
        op: impl FnOnce(i64, i64) -> Op,
    ) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let Some(k) = self.int(a, 1) else {
            return Value::Unknown;
        };
        let stride = match a.get(2) {
            Value::Unknown => k,
            _ => match self.int(a, 2) {
                Some(s) => s,
                None => return Value::Unknown,
            },
        };
        if ty.rank() != 4 {
            return self.input_rank(name, "an input [B, C, H, W]", &ty, a.span(0));
        }
        if k < 1 || stride < 1 {
            return self.bad_setting(
                span,
                name,
                "a positive kernel and stride",
                format!("kernel {k}, stride = {stride}"),
            );
        }
        for d in &ty.shape[2..] {
            let Some(out) = ir_shape::pool_out(d, k, stride) else {
                return Value::Unknown;
            };
            if out.as_const().is_some_and(|o| o < 1) {
                return self.kernel_too_large(span, name, k.to_string(), d.to_string());
            }
        }
        self.emit_op(op(k, stride), vec![x], span)
    }
}
