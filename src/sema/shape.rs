//! Shape rules shared by operators and built-ins: broadcasting, matrix
//! products, axes and slicing.
//!
//! Guarantees: broadcasting follows NumPy (align from the right; equal dims
//! or a 1); matmul batches over broadcast leading dimensions; negative axes
//! and slice bounds count from the end; every violation is reported at the
//! expression's span with the shapes involved.

use crate::ir::Op;
use crate::sema::dim::{Dim, DimCmp};
use crate::sema::elab::{Elab, Value};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::source::Span;
use crate::syntax::ast;

use crate::types::shape_text as shape_str;

impl Elab<'_> {
    /// The broadcast of two shapes, or the position that clashes.
    pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, (Dim, Dim)> {
        crate::sema::dim::broadcast(a, b)
    }

    /// Turn a compile-time number into a scalar constant of `dtype`.
    pub fn scalar_tensor(&mut self, v: &Value, dtype: DType, span: Span) -> Option<ValueId> {
        let x = match v {
            Value::Int(d) => match d.as_const() {
                Some(i) => i as f64,
                None => {
                    self.report(
                        span,
                        SemaError::NotConstant {
                            message: format!(
                                "the symbolic dimension {d} cannot be used as a tensor value"
                            ),
                            span: span.into(),
                            help: Some(
                                "dimensions fixed by the data are not known at compile time".into(),
                            ),
                        },
                    );
                    return None;
                }
            },
            // Unknown in generic checking: any placeholder value will do.
            Value::Float(x) => x.unwrap_or(0.0),
            Value::Tensor(t) => return Some(*t),
            _ => return None,
        };
        match self.emit1(InstKind::Const(x), Type::scalar(dtype), span) {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// Emit `op` on `args` with the result type of the IR's shape rule
    /// (`ir::shape::infer`, the one rule). Callers check first what they can
    /// explain better; what the rule still rejects is reported here, with
    /// the rule's own words.
    pub fn emit_op(&mut self, op: Op, args: Vec<ValueId>, span: Span) -> Value {
        let types: Vec<Type> = args.iter().map(|a| self.ty(*a).clone()).collect();
        let refs: Vec<&Type> = types.iter().collect();
        let rule = crate::ir::shape::infer(&op, &refs).and_then(|ty| {
            ty.ok_or_else(|| "the result type is not a function of the operands".to_string())
        });
        match rule {
            Ok(ty) => self.emit1(InstKind::Prim(Prim::Op(op), args), ty, span),
            Err(detail) => self.report(
                span,
                SemaError::Shape {
                    op: op.name().into(),
                    detail,
                    span: span.into(),
                    help: None,
                },
            ),
        }
    }

    pub fn dtype_mismatch(
        &mut self,
        span: Span,
        lhs: DType,
        rhs: DType,
        help: Option<String>,
    ) -> Value {
        self.report(
            span,
            SemaError::DTypeMismatch {
                lhs: lhs.name().into(),
                rhs: rhs.name().into(),
                span: span.into(),
                help,
            },
        )
    }

    /// "expected X, found Y" at `span`, with no hint.
    pub fn type_mismatch(&mut self, span: Span, expected: &str, found: String) -> Value {
        self.report(
            span,
            SemaError::TypeMismatch {
                expected: expected.into(),
                found,
                span: span.into(),
                help: None,
            },
        )
    }

    /// An elementwise binary operation with broadcasting.
    pub fn elementwise(&mut self, op: Op, a: Value, b: Value, span: Span) -> Value {
        let dtype = match (&a, &b) {
            (Value::Tensor(t), _) | (_, Value::Tensor(t)) => self.ty(*t).dtype,
            _ => DType::F32,
        };
        let (Some(x), Some(y)) = (
            self.scalar_tensor(&a, dtype, span),
            self.scalar_tensor(&b, dtype, span),
        ) else {
            return Value::Unknown;
        };
        let (tx, ty) = (self.ty(x).clone(), self.ty(y).clone());
        if tx.dtype != ty.dtype {
            let help = Some("convert one side with `cast(x, \"f32\")`".into());
            return self.dtype_mismatch(span, tx.dtype, ty.dtype, help);
        }
        match Self::broadcast_shapes(&tx.shape, &ty.shape) {
            Ok(_) => self.emit_op(op, vec![x, y], span),
            Err((da, db)) => self.report(
                span,
                SemaError::Broadcast {
                    lhs: tx.to_string(),
                    rhs: ty.to_string(),
                    span: span.into(),
                    detail: format!("dimensions {da} and {db} differ and neither is 1"),
                },
            ),
        }
    }

    pub fn matmul(&mut self, a: ValueId, b: ValueId, span: Span) -> Value {
        let (ta, tb) = (self.ty(a).clone(), self.ty(b).clone());
        let err = |this: &mut Self, detail: String, help: Option<String>| {
            this.report(
                span,
                SemaError::MatmulShape {
                    lhs: ta.to_string(),
                    rhs: tb.to_string(),
                    detail,
                    span: span.into(),
                    help,
                },
            )
        };
        if ta.dtype != tb.dtype {
            return err(
                self,
                format!(
                    "element types {} and {} differ",
                    ta.dtype.name(),
                    tb.dtype.name()
                ),
                None,
            );
        }
        if ta.rank() < 2 || tb.rank() < 2 {
            return err(
                self,
                "both operands need at least 2 dimensions".into(),
                Some("use `unsqueeze(v, 0)` to make a vector a [1, n] matrix".into()),
            );
        }
        let (k1, k2) = (&ta.shape[ta.rank() - 1], &tb.shape[tb.rank() - 2]);
        if k1.compare(k2) == DimCmp::Different {
            let help = (ta.shape[ta.rank() - 2].compare(k2) == DimCmp::Equal)
                .then(|| "did you mean to transpose the left operand?".to_string())
                .or_else(|| {
                    (tb.shape[tb.rank() - 1].compare(k1) == DimCmp::Equal).then(|| {
                        "did you mean to transpose the right operand: `transpose(w, 0, 1)`?"
                            .to_string()
                    })
                });
            return err(self, format!("inner dimensions {k1} and {k2} differ"), help);
        }
        let batch = Self::broadcast_shapes(&ta.shape[..ta.rank() - 2], &tb.shape[..tb.rank() - 2]);
        if let Err((x, y)) = batch {
            return err(
                self,
                format!("batch dimensions {x} and {y} cannot be broadcast"),
                None,
            );
        }
        self.emit_op(Op::MatMul, vec![a, b], span)
    }

    /// Normalize a possibly negative axis; reports when out of range.
    pub fn axis(&mut self, axis: i64, rank: usize, span: Span) -> Option<usize> {
        let r = rank as i64;
        if (-r..r).contains(&axis) {
            Some(axis.rem_euclid(r.max(1)) as usize)
        } else {
            self.report(
                span,
                SemaError::AxisOutOfRange {
                    axis,
                    rank,
                    span: span.into(),
                },
            );
            None
        }
    }

    /// `x[items]`: indexing and slicing of a tensor.
    pub fn slice(
        &mut self,
        env: &mut crate::sema::elab::Env,
        t: ValueId,
        items: &[ast::BracketItem],
        span: Span,
    ) -> Value {
        let ty = self.ty(t).clone();
        let ellipses = items
            .iter()
            .filter(|i| matches!(i, ast::BracketItem::Ellipsis(_)))
            .count();
        if ellipses > 1 {
            return self.report(
                span,
                SemaError::InvalidValue {
                    message: "at most one `..` in an index".into(),
                    span: span.into(),
                    label: "several `..`".into(),
                    help: None,
                },
            );
        }
        let explicit = items.len() - ellipses;
        if explicit > ty.rank() {
            return self.report(
                span,
                SemaError::Shape {
                    op: "indexing".into(),
                    detail: format!(
                        "{explicit} indices for a tensor of rank {} ({ty})",
                        ty.rank()
                    ),
                    span: span.into(),
                    help: None,
                },
            );
        }
        let mut axes: Vec<SliceAxis> = Vec::new();
        let mut axis = 0;
        for it in items {
            match it {
                ast::BracketItem::Ellipsis(_) => {
                    for _ in 0..ty.rank() - explicit {
                        axes.push(SliceAxis::Full);
                        axis += 1;
                    }
                }
                ast::BracketItem::Expr(e) => {
                    let n = ty.shape[axis].clone();
                    let Some(i) = self.bound(env, e, &n, false) else {
                        return Value::Unknown;
                    };
                    axes.push(SliceAxis::Index(i));
                    axis += 1;
                }
                ast::BracketItem::Slice {
                    start, end, step, ..
                } => {
                    let n = ty.shape[axis].clone();
                    let s = match start {
                        Some(e) => self.bound(env, e, &n, true),
                        None => Some(Dim::konst(0)),
                    };
                    let en = match end {
                        Some(e) => self.bound(env, e, &n, true),
                        None => Some(n.clone()),
                    };
                    let st = match step {
                        Some(e) => match self.dim_value(env, e).and_then(|d| d.as_const()) {
                            Some(k) if k >= 1 => Some(k),
                            _ => {
                                self.report(
                                    e.span,
                                    SemaError::InvalidValue {
                                        message: "a slice step must be a positive int".into(),
                                        span: e.span.into(),
                                        label: "bad step".into(),
                                        help: None,
                                    },
                                );
                                None
                            }
                        },
                        None => Some(1),
                    };
                    let (Some(s), Some(en), Some(st)) = (s, en, st) else {
                        return Value::Unknown;
                    };
                    let len = en
                        .sub(&s)
                        .and_then(|l| l.add(&Dim::konst(st - 1)))
                        .and_then(|l| l.div(&Dim::konst(st)));
                    let Some(len) = len else {
                        return Value::Unknown;
                    };
                    if len.as_const().is_some_and(|l| l <= 0) {
                        return self.report(
                            it.span(),
                            SemaError::Shape {
                                op: "slicing".into(),
                                detail: format!(
                                    "the slice {s}:{en} of a dimension of size {n} is empty"
                                ),
                                span: it.span().into(),
                                help: None,
                            },
                        );
                    }
                    axes.push(SliceAxis::Range {
                        start: s,
                        end: en,
                        step: st,
                    });
                    axis += 1;
                }
                ast::BracketItem::Named { span, .. } => {
                    return self.report(
                        *span,
                        SemaError::InvalidValue {
                            message:
                                "named items are hyper-parameters; a tensor is indexed by position"
                                    .into(),
                            span: (*span).into(),
                            label: "not an index".into(),
                            help: None,
                        },
                    )
                }
            }
        }
        while axis < ty.rank() {
            axes.push(SliceAxis::Full);
            axis += 1;
        }
        self.emit_op(Op::Slice { axes }, vec![t], span)
    }

    /// A slice bound or index, normalized against the dimension size `n`
    /// (negative counts from the end). `inclusive_end`: `n` itself is valid.
    fn bound(
        &mut self,
        env: &mut crate::sema::elab::Env,
        e: &ast::Expr,
        n: &Dim,
        inclusive_end: bool,
    ) -> Option<Dim> {
        let d = self.dim_value(env, e)?;
        let norm = match d.as_const() {
            Some(i) if i < 0 => n.add(&d)?,
            _ => d.clone(),
        };
        if let (Some(i), Some(size)) = (norm.as_const(), n.as_const()) {
            let max = if inclusive_end { size } else { size - 1 };
            if i < 0 || i > max {
                self.report(
                    e.span,
                    SemaError::Shape {
                        op: "indexing".into(),
                        detail: format!("{} is out of range for a dimension of size {size}", d),
                        span: e.span.into(),
                        help: None,
                    },
                );
                return None;
            }
        }
        Some(norm)
    }

    pub fn shape_string(s: &[Dim]) -> String {
        shape_str(s)
    }
}
