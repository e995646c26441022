//! Shape built-ins: reshape, transpose/permute, concat, split, squeeze,
//! unsqueeze and flatten. Guarantees: element counts are preserved (checked
//! exactly when known, symbolically otherwise); composite operations lower
//! to the primitive `Reshape`/`Permute`.

use super::Args;
use crate::ir::Op;
use crate::sema::dim::{Dim, DimCmp};
use crate::sema::elab::{Elab, Value};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::source::Span;

impl Elab<'_> {
    pub(super) fn reshape_to(&mut self, x: ValueId, shape: Vec<Dim>, span: Span) -> Value {
        self.emit_op(Op::Reshape { shape }, vec![x], span)
    }

    pub(super) fn product(dims: &[Dim]) -> Option<Dim> {
        dims.iter().try_fold(Dim::konst(1), |acc, d| acc.mul(d))
    }

    pub(super) fn reshape(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let Some(mut shape) = self.dims(a, 1) else {
            return Value::Unknown;
        };
        let infer: Vec<usize> = shape
            .iter()
            .enumerate()
            .filter(|(_, d)| d.as_const() == Some(-1))
            .map(|(i, _)| i)
            .collect();
        if infer.len() > 1 {
            return self.report(
                a.span(1),
                SemaError::ReshapeInfer {
                    span: a.span(1).into(),
                },
            );
        }
        if let Some(bad) = shape
            .iter()
            .find(|d| d.as_const().is_some_and(|v| v < -1 || v == 0))
        {
            return self.report(
                a.span(1),
                SemaError::ReshapeDim {
                    dim: bad.to_string(),
                    span: a.span(1).into(),
                },
            );
        }
        let Some(total) = Self::product(&ty.shape) else {
            return Value::Unknown;
        };
        if let Some(&i) = infer.first() {
            let others: Vec<Dim> = shape
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != i)
                .map(|(_, d)| d.clone())
                .collect();
            let Some(known) = Self::product(&others) else {
                return Value::Unknown;
            };
            if let (Some(t), Some(k)) = (total.as_const(), known.as_const()) {
                if k == 0 || t % k != 0 {
                    return self.reshape_error(&ty, &shape, &total, &known, a.span(1));
                }
            }
            shape[i] = total.div(&known).unwrap_or(Dim::konst(0));
        }
        let Some(new_total) = Self::product(&shape) else {
            return Value::Unknown;
        };
        if total.compare(&new_total) == DimCmp::Different {
            return self.reshape_error(&ty, &shape, &total, &new_total, a.span(1));
        }
        self.reshape_to(x, shape, span)
    }

    fn reshape_error(
        &mut self,
        ty: &Type,
        shape: &[Dim],
        total: &Dim,
        to_count: &Dim,
        span: Span,
    ) -> Value {
        let to = Self::shape_string(shape).replace("-1", "?");
        self.report(
            span,
            SemaError::Reshape {
                from: ty.to_string(),
                to,
                from_count: total.to_string(),
                to_count: to_count.to_string(),
                span: span.into(),
                help: Some(
                    "a reshape keeps the number of elements; one dimension may be -1 to infer it"
                        .into(),
                ),
            },
        )
    }

    pub(super) fn transpose(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let r = ty.rank();
        let (Some(p), Some(q)) = (self.int(a, 1), self.int(a, 2)) else {
            return Value::Unknown;
        };
        let (Some(p), Some(q)) = (self.axis(p, r, a.span(1)), self.axis(q, r, a.span(2))) else {
            return Value::Unknown;
        };
        let mut axes: Vec<usize> = (0..r).collect();
        axes.swap(p, q);
        self.permute_to(x, axes, span)
    }

    pub(super) fn permute(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let r = ty.rank();
        let Some(list) = self.dims(a, 1) else {
            return Value::Unknown;
        };
        let mut axes = Vec::new();
        for d in list {
            let Some(ax) = d.as_const().and_then(|i| self.axis(i, r, a.span(1))) else {
                return Value::Unknown;
            };
            axes.push(ax);
        }
        let mut sorted = axes.clone();
        sorted.sort();
        if sorted != (0..r).collect::<Vec<_>>() {
            return self.report(
                a.span(1),
                SemaError::NotPermutation {
                    axes: format!("{axes:?}"),
                    rank: r,
                    ty: ty.to_string(),
                    span: a.span(1).into(),
                },
            );
        }
        self.permute_to(x, axes, span)
    }

    fn permute_to(&mut self, x: ValueId, axes: Vec<usize>, span: Span) -> Value {
        self.emit_op(Op::Permute { axes }, vec![x], span)
    }

    pub(super) fn concat(&mut self, a: &Args, span: Span) -> Value {
        let parts = match a.get(0) {
            Value::Tuple(p) | Value::List(p) if !p.is_empty() => p.clone(),
            other => {
                let found = other.describe(&self.m);
                return self.type_mismatch(a.span(0), "a tuple of tensors, e.g. (a, b)", found);
            }
        };
        let mut ids = Vec::new();
        for p in &parts {
            match p {
                Value::Tensor(t) => ids.push(*t),
                Value::Unknown => return Value::Unknown,
                other => return self.not_tensor(&other.clone(), a.span(0)),
            }
        }
        let first = self.ty(ids[0]).clone();
        let Some(axis) = self.axis_arg(a, 1, first.rank()) else {
            return Value::Unknown;
        };
        for id in &ids[1..] {
            let t = self.ty(*id).clone();
            let same_rest = t.rank() == first.rank()
                && t.dtype == first.dtype
                && (0..t.rank())
                    .all(|k| k == axis || t.shape[k].compare(&first.shape[k]) != DimCmp::Different);
            if !same_rest {
                return self.report(
                    span,
                    SemaError::ConcatShape {
                        first: first.to_string(),
                        other: t.to_string(),
                        axis,
                        span: span.into(),
                    },
                );
            }
        }
        self.emit_op(Op::Concat { axis }, ids, span)
    }

    pub(super) fn split(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty, axis)) = self.tensor_and_axis(a, 0) else {
            return Value::Unknown;
        };
        let Some(sizes) = self.dims(a, 2) else {
            return Value::Unknown;
        };
        let Some(sum) = Self::product(&[])
            .and_then(|_| sizes.iter().try_fold(Dim::konst(0), |acc, d| acc.add(d)))
        else {
            return Value::Unknown;
        };
        if sizes.is_empty()
            || sizes.iter().any(|d| d.as_const().is_some_and(|v| v <= 0))
            || sum.compare(&ty.shape[axis]) == DimCmp::Different
        {
            return self.report(
                a.span(2),
                SemaError::SplitSizes {
                    sizes: Self::shape_string(&sizes),
                    axis,
                    ty: ty.to_string(),
                    dim: ty.shape[axis].to_string(),
                    span: a.span(2).into(),
                },
            );
        }
        let tys = sizes
            .iter()
            .map(|s| {
                let mut shape = ty.shape.clone();
                shape[axis] = s.clone();
                Type::new(ty.dtype, shape)
            })
            .collect();
        let ids = self.m.emit(
            InstKind::Prim(Prim::Split { axis, sizes }, vec![x]),
            tys,
            span,
        );
        Value::Tuple(ids.into_iter().map(Value::Tensor).collect())
    }

    pub(super) fn unsqueeze(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty, ax)) = self.tensor_and_axis(a, 1) else {
            return Value::Unknown;
        };
        let mut shape = ty.shape.clone();
        shape.insert(ax, Dim::konst(1));
        self.reshape_to(x, shape, span)
    }

    pub(super) fn squeeze(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty, ax)) = self.tensor_and_axis(a, 0) else {
            return Value::Unknown;
        };
        let mut shape = ty.shape.clone();
        if (shape[ax].is_const() || !self.generic) && shape[ax].as_const() != Some(1) {
            return self.report(
                a.span(1),
                SemaError::SqueezeSize {
                    axis: ax,
                    ty: ty.to_string(),
                    size: shape[ax].to_string(),
                    span: a.span(1).into(),
                },
            );
        }
        shape.remove(ax);
        self.reshape_to(x, shape, span)
    }

    pub(super) fn flatten(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty, start)) = self.tensor_and_axis(a, 0) else {
            return Value::Unknown;
        };
        let mut shape = ty.shape.clone();
        let Some(flat) = Self::product(&shape[start..]) else {
            return Value::Unknown;
        };
        shape.truncate(start);
        shape.push(flat);
        self.reshape_to(x, shape, span)
    }
}
