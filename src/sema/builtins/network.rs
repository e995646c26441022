//! Network built-ins with their own shape rules: `where`, reductions,
//! convolutions and pooling. Guarantees: output sizes follow PyTorch's
//! formulas (floor division), and impossible sizes are errors at the call.

use super::Args;
use crate::sema::dim::{Dim, DimCmp};
use crate::sema::elab::{Elab, Value};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
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
            return self.report(
                span,
                SemaError::DTypeMismatch {
                    lhs: tx.dtype.name().into(),
                    rhs: ty.dtype.name().into(),
                    span: span.into(),
                    help: None,
                },
            );
        }
        let shape = Self::broadcast_shapes(&tm.shape, &tx.shape)
            .and_then(|s| Self::broadcast_shapes(&s, &ty.shape));
        match shape {
            Ok(shape) => self.emit1(
                InstKind::Prim(Prim::Where, vec![mask, x, y]),
                Type::new(tx.dtype, shape),
                span,
            ),
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

    pub(super) fn reduce(&mut self, name: &str, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let axes: Vec<usize> = match a.get(1) {
            Value::Unknown => (0..ty.rank()).collect(),
            Value::Int(_) => match self
                .int(a, 1)
                .and_then(|i| self.axis(i, ty.rank(), a.span(1)))
            {
                Some(ax) => vec![ax],
                None => return Value::Unknown,
            },
            Value::Tuple(items) | Value::List(items) => {
                let mut out = Vec::new();
                for it in items.clone() {
                    let Value::Int(d) = it else {
                        return self.invalid(a.span(1), "axes must be ints".into(), "not an axis");
                    };
                    let Some(ax) = d
                        .as_const()
                        .and_then(|i| self.axis(i, ty.rank(), a.span(1)))
                    else {
                        return Value::Unknown;
                    };
                    if out.contains(&ax) {
                        return self.invalid(
                            a.span(1),
                            format!("axis {ax} is given twice"),
                            "repeated axis",
                        );
                    }
                    out.push(ax);
                }
                out.sort();
                out
            }
            other => {
                let found = other.describe(&self.m);
                return self.report(
                    a.span(1),
                    SemaError::TypeMismatch {
                        expected: "an axis or a tuple of axes".into(),
                        found,
                        span: a.span(1).into(),
                        help: None,
                    },
                );
            }
        };
        let keepdim = match a.get(2) {
            Value::Bool(b) => b.unwrap_or(false),
            other => {
                let found = other.describe(&self.m);
                return self.report(
                    a.span(2),
                    SemaError::TypeMismatch {
                        expected: "a bool".into(),
                        found,
                        span: a.span(2).into(),
                        help: None,
                    },
                );
            }
        };
        let op = match name {
            "sum" => ReduceFn::Sum,
            "mean" => ReduceFn::Mean,
            "max" => ReduceFn::Max,
            "min" => ReduceFn::Min,
            _ => ReduceFn::LogSumExp,
        };
        let shape: Vec<Dim> = ty
            .shape
            .iter()
            .enumerate()
            .filter_map(|(i, d)| match (axes.contains(&i), keepdim) {
                (false, _) => Some(d.clone()),
                (true, true) => Some(Dim::konst(1)),
                (true, false) => None,
            })
            .collect();
        self.emit1(
            InstKind::Prim(Prim::Reduce { op, axes, keepdim }, vec![x]),
            Type::new(ty.dtype, shape),
            span,
        )
    }

    pub(super) fn conv(&mut self, name: &str, a: &Args, span: Span) -> Value {
        let spatial = if name == "conv1d" { 1 } else { 2 };
        let (Some((x, tx)), Some((w, tw))) = (self.tensor(a, 0), self.tensor(a, 1)) else {
            return Value::Unknown;
        };
        let ints: Vec<Option<i64>> = (2..6).map(|i| self.int(a, i)).collect();
        let [Some(stride), Some(padding), Some(dilation), Some(groups)] = ints[..] else {
            return Value::Unknown;
        };
        if stride < 1 || padding < 0 || dilation < 1 || groups < 1 {
            return self.invalid(
                span,
                format!("{name} needs stride >= 1, padding >= 0, dilation >= 1, groups >= 1"),
                "bad setting",
            );
        }
        let layout = if spatial == 1 {
            "[B, C, L]"
        } else {
            "[B, C, H, W]"
        };
        if tx.rank() != spatial + 2 {
            return self.shape_err(
                name,
                format!("the input must be {layout}, got {tx}"),
                a.span(0),
            );
        }
        if tw.rank() != spatial + 2 {
            return self.shape_err(
                name,
                format!("the weight must have rank {}, got {tw}", spatial + 2),
                a.span(1),
            );
        }
        if tx.dtype != tw.dtype {
            return self.report(
                span,
                SemaError::DTypeMismatch {
                    lhs: tx.dtype.name().into(),
                    rhs: tw.dtype.name().into(),
                    span: span.into(),
                    help: None,
                },
            );
        }
        let g = Dim::konst(groups);
        let c = &tx.shape[1];
        if c.rem_const(&g).is_some_and(|r| r != 0)
            || tw.shape[0].rem_const(&g).is_some_and(|r| r != 0)
        {
            return self.shape_err(
                name,
                format!(
                    "{groups} groups do not divide the {c} input or {} output channels",
                    tw.shape[0]
                ),
                span,
            );
        }
        let per_group = c.div(&g).unwrap_or(c.clone());
        if tw.shape[1].compare(&per_group) == DimCmp::Different {
            return self.shape_err(
                name,
                format!("the weight {tw} expects {} input channels per group, but the input {tx} has {per_group}", tw.shape[1]),
                span,
            );
        }
        let mut shape = vec![tx.shape[0].clone(), tw.shape[0].clone()];
        for k in 0..spatial {
            let size = &tx.shape[2 + k];
            let kernel = &tw.shape[2 + k];
            // (size + 2p - d (k - 1) - 1) / s + 1
            let out = kernel
                .sub(&Dim::konst(1))
                .and_then(|km1| km1.mul(&Dim::konst(dilation)))
                .and_then(|span_k| size.add(&Dim::konst(2 * padding - 1))?.sub(&span_k))
                .and_then(|n| n.div(&Dim::konst(stride)))
                .and_then(|n| n.add(&Dim::konst(1)));
            let Some(out) = out else {
                return Value::Unknown;
            };
            if out.as_const().is_some_and(|o| o < 1) {
                return self.shape_err(name, format!("the kernel {kernel} (dilation {dilation}) is larger than the padded input {size} + 2 * {padding}"), span);
            }
            shape.push(out);
        }
        let p = Prim::Conv {
            spatial,
            stride,
            padding,
            dilation,
            groups,
        };
        self.emit1(
            InstKind::Prim(p, vec![x, w]),
            Type::new(tx.dtype, shape),
            span,
        )
    }

    pub(super) fn pool(&mut self, name: &str, a: &Args, span: Span) -> Value {
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
            return self.shape_err(
                name,
                format!("the input must be [B, C, H, W], got {ty}"),
                a.span(0),
            );
        }
        if k < 1 || stride < 1 {
            return self.invalid(
                span,
                format!("{name} needs a positive kernel and stride"),
                "bad setting",
            );
        }
        let mut shape = ty.shape.clone();
        for d in &mut shape[2..] {
            let out = d
                .sub(&Dim::konst(k))
                .and_then(|n| n.div(&Dim::konst(stride)))
                .and_then(|n| n.add(&Dim::konst(1)));
            let Some(out) = out else {
                return Value::Unknown;
            };
            if out.as_const().is_some_and(|o| o < 1) {
                return self.shape_err(
                    name,
                    format!("the kernel {k} is larger than the input {d}"),
                    span,
                );
            }
            *d = out;
        }
        let p = if name == "avg_pool2d" {
            Prim::AvgPool2d { kernel: k, stride }
        } else {
            Prim::MaxPool2d { kernel: k, stride }
        };
        self.emit1(InstKind::Prim(p, vec![x]), Type::new(ty.dtype, shape), span)
    }
}
