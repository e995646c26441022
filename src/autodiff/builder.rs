//! A small node builder for VJP rules: typed helpers over
//! [`Graph::add_inferred`] that inherit one span.
//!
//! Guarantees: every node it makes has the type given by the op's shape rule
//! (or an explicit one for constants), and the span of the forward node it
//! differentiates, so runtime errors in the backward pass point at source.

use crate::ir::{Cmp, Graph, NodeId, Op, ReduceOp};
use crate::source::Span;
use crate::types::dim::Dim;
use crate::types::{DType, Type};

use super::AdError;

pub struct Builder<'g> {
    pub g: &'g mut Graph,
    pub span: Option<Span>,
}

type R = Result<NodeId, AdError>;

impl Builder<'_> {
    pub fn op(&mut self, op: Op, args: &[NodeId]) -> R {
        Ok(self.g.add_inferred(op, args, self.span)?)
    }

    pub fn ty(&self, n: NodeId) -> &Type {
        self.g.ty(n)
    }

    pub fn shape(&self, n: NodeId) -> Vec<Dim> {
        self.g.ty(n).shape.clone()
    }

    pub fn dtype(&self, n: NodeId) -> DType {
        self.g.ty(n).dtype
    }

    /// A scalar constant of `dtype`.
    pub fn konst(&mut self, v: f64, dtype: DType) -> NodeId {
        self.g
            .add(Op::Const(v), Type::scalar(dtype), &[], self.span)
    }

    /// A scalar constant of `like`'s dtype.
    pub fn konst_like(&mut self, v: f64, like: NodeId) -> NodeId {
        let d = self.dtype(like);
        self.konst(v, d)
    }

    /// Zeros of a type.
    pub fn zeros(&mut self, ty: &Type) -> NodeId {
        self.g.add(
            Op::Fill {
                value: 0.0,
                shape: ty.shape.clone(),
            },
            ty.clone(),
            &[],
            self.span,
        )
    }

    /// The product of `dims` as a scalar of `dtype`.
    pub fn count(&mut self, dims: Vec<Dim>, dtype: DType) -> NodeId {
        self.g
            .add(Op::Count { dims }, Type::scalar(dtype), &[], self.span)
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> R {
        self.op(Op::Add, &[a, b])
    }
    pub fn sub(&mut self, a: NodeId, b: NodeId) -> R {
        self.op(Op::Sub, &[a, b])
    }
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> R {
        self.op(Op::Mul, &[a, b])
    }
    pub fn div(&mut self, a: NodeId, b: NodeId) -> R {
        self.op(Op::Div, &[a, b])
    }
    pub fn neg(&mut self, a: NodeId) -> R {
        self.op(Op::Neg, &[a])
    }
    pub fn unary(&mut self, op: Op, a: NodeId) -> R {
        self.op(op, &[a])
    }
    pub fn cmp(&mut self, c: Cmp, a: NodeId, b: NodeId) -> R {
        self.op(Op::Compare(c), &[a, b])
    }
    /// `a * v` for a constant `v`.
    pub fn scale(&mut self, a: NodeId, v: f64) -> R {
        let k = self.konst_like(v, a);
        self.mul(a, k)
    }
    /// `a + v` for a constant `v`.
    pub fn shift(&mut self, a: NodeId, v: f64) -> R {
        let k = self.konst_like(v, a);
        self.add(a, k)
    }
    /// `v - a` for a constant `v`.
    pub fn rsub(&mut self, v: f64, a: NodeId) -> R {
        let k = self.konst_like(v, a);
        self.sub(k, a)
    }
    /// Compare with a constant.
    pub fn cmp_const(&mut self, c: Cmp, a: NodeId, v: f64) -> R {
        let k = self.konst_like(v, a);
        self.cmp(c, a, k)
    }

    /// Sum a (broadcast) cotangent back to `shape`; no node when the shapes
    /// already agree.
    pub fn sum_to(&mut self, x: NodeId, shape: &[Dim]) -> R {
        self.shaped(x, shape, |shape| Op::SumTo { shape })
    }

    pub fn broadcast_to(&mut self, x: NodeId, shape: &[Dim]) -> R {
        self.shaped(x, shape, |shape| Op::BroadcastTo { shape })
    }

    pub fn reshape(&mut self, x: NodeId, shape: &[Dim]) -> R {
        self.shaped(x, shape, |shape| Op::Reshape { shape })
    }

    /// `x` itself when it already has `shape`, else the op `make(shape)`.
    fn shaped(&mut self, x: NodeId, shape: &[Dim], make: fn(Vec<Dim>) -> Op) -> R {
        if self.g.ty(x).shape.as_slice() == shape {
            return Ok(x);
        }
        self.op(make(shape.to_vec()), &[x])
    }

    /// Sum over `axes`, keeping them.
    pub fn sum_keep(&mut self, x: NodeId, axes: &[usize]) -> R {
        self.op(
            Op::Reduce {
                op: ReduceOp::Sum,
                axes: axes.to_vec(),
                keepdim: true,
            },
            &[x],
        )
    }

    /// Swap the last two axes.
    pub fn transpose_last(&mut self, x: NodeId) -> R {
        let r = self.g.ty(x).rank();
        let mut axes: Vec<usize> = (0..r).collect();
        axes.swap(r - 2, r - 1);
        self.op(Op::Permute { axes }, &[x])
    }
}
