//! Jacobian products as values: `vjp(f, x, v)` and `jvp(f, x, u)`; and
//! `probe(shape, kind)`, the random vectors their estimators need.
//!
//! Owns the checking of both built-ins. `f` is anything callable on one
//! tensor (a `fn`, a layer instance, a built-in such as `tanh`); it is
//! called on `x` at the call site, like any call, and the product is one
//! `Prim::Vjp`/`Prim::Jvp` instruction whose operands are `[f(x), x, v]`.
//! Lowering turns it into IR nodes with the reverse sweep
//! (`ir::lower`), so the product is an ordinary value: usable in an
//! equilibrium body, differentiable again.
//!
//! Guarantees: `x` is a float tensor; `f(x)` is one float tensor; the
//! vector has exactly the type the product needs (`f(x)`'s for `vjp`,
//! `x`'s for `jvp`), dimension by dimension; every misuse is a diagnostic
//! at the offending argument of the call.

use super::Args;
use crate::ir::{Op, ProbeKind};
use crate::sema::dim::DimCmp;
use crate::sema::elab::expr::ArgVal;
use crate::sema::elab::{Elab, Value};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::source::Span;

/// Which product a call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Product {
    /// `v^T J`: the cotangent of `x` for the cotangent `v` of `f(x)`.
    Vjp,
    /// `J u`: the tangent of `f(x)` for the tangent `u` of `x`.
    Jvp,
}

impl Product {
    fn name(self) -> &'static str {
        match self {
            Product::Vjp => "vjp",
            Product::Jvp => "jvp",
        }
    }
}

/// Whether two types are the same, allowing dimensions that cannot be
/// decided at compile time.
fn same_type(a: &Type, b: &Type) -> bool {
    a.dtype == b.dtype
        && a.rank() == b.rank()
        && a.shape
            .iter()
            .zip(&b.shape)
            .all(|(x, y)| x.compare(y) != DimCmp::Different)
}

impl Elab<'_> {
    /// How a diagnostic names the function of a product.
    fn callee_name(&self, f: &Value) -> String {
        match f {
            Value::Item(r) => match self.modules.item(*r) {
                crate::syntax::ast::Item::Fn(def) => format!("the fn `{}`", def.name.name),
                _ => f.describe(&self.m),
            },
            _ => f.describe(&self.m),
        }
    }

    /// `vjp(f, x, v)` or `jvp(f, x, u)`: arguments 0, 1, 2 of `a`.
    pub(super) fn jacobian_product(&mut self, product: Product, a: &Args, span: Span) -> Value {
        let op = product.name();
        let f = a.get(0).clone();
        if !matches!(f, Value::Item(_) | Value::Instance(_) | Value::Builtin(_)) {
            let what = f.describe(&self.m);
            return self.report(
                a.span(0),
                SemaError::NotDifferentiable {
                    op: op.into(),
                    what,
                    span: a.span(0).into(),
                    label: "not a function".into(),
                    help: Some(format!(
                        "pass a fn, a layer instance or a built-in: `{op}(cell, z, v)` with `let cell = nn::Linear[4, 4];`"
                    )),
                },
            );
        }
        let Some((x, x_ty)) = self.tensor(a, 1) else {
            return Value::Unknown;
        };
        if !x_ty.dtype.is_float() {
            return self.report(
                a.span(1),
                SemaError::NotDifferentiable {
                    op: op.into(),
                    what: format!("with respect to a tensor {x_ty}"),
                    span: a.span(1).into(),
                    label: "integer values have no derivative".into(),
                    help: Some("differentiate with respect to a float tensor".into()),
                },
            );
        }
        let call = vec![ArgVal {
            name: None,
            value: Value::Tensor(x),
            span: a.span(1),
        }];
        let out = match self.call(f.clone(), call, a.span(0), span) {
            Value::Tensor(t) => t,
            Value::Unknown => return Value::Unknown,
            other => {
                let found = other.describe(&self.m);
                let callee = self.callee_name(&f);
                return self.report(
                    a.span(0),
                    SemaError::NotDifferentiable {
                        op: op.into(),
                        what: format!("{callee}: it returns {found}"),
                        span: a.span(0).into(),
                        label: "returns no single tensor".into(),
                        help: Some(
                            "wrap it in a fn that returns one float tensor (e.g. one part of the tuple)"
                                .into(),
                        ),
                    },
                );
            }
        };
        let out_ty = self.ty(out).clone();
        if !out_ty.dtype.is_float() {
            let callee = self.callee_name(&f);
            return self.report(
                a.span(0),
                SemaError::NotDifferentiable {
                    op: op.into(),
                    what: format!("{callee}: it returns a tensor {out_ty}"),
                    span: a.span(0).into(),
                    label: "integer result".into(),
                    help: Some("only functions with a float result have a Jacobian".into()),
                },
            );
        }
        let Some((v, v_ty)) = self.tensor(a, 2) else {
            return Value::Unknown;
        };
        let (expected, what, result_ty) = match product {
            Product::Vjp => (&out_ty, "the function's result", x_ty.clone()),
            Product::Jvp => (&x_ty, "the point", out_ty.clone()),
        };
        if !same_type(expected, &v_ty) {
            return self.report(
                a.span(2),
                SemaError::ProductVector {
                    op: op.into(),
                    expected: format!("a tensor {expected} ({what})"),
                    found: format!("a tensor {v_ty}"),
                    span: a.span(2).into(),
                    help: Some(match product {
                        Product::Vjp => format!(
                            "`vjp(f, x, v)` is v^T J_f(x): `v` has the type of `f(x)`, here {out_ty}"
                        ),
                        Product::Jvp => format!(
                            "`jvp(f, x, u)` is J_f(x) u: `u` has the type of `x`, here {x_ty}"
                        ),
                    }),
                },
            );
        }
        let prim = match product {
            Product::Vjp => Prim::Vjp,
            Product::Jvp => Prim::Jvp,
        };
        self.emit1(InstKind::Prim(prim, vec![out, x, v]), result_ty, span)
    }

    /// `probe(shape, kind = "gaussian" | "rademacher")`: an f32 tensor of
    /// random entries, fixed within a training step.
    pub(super) fn probe(&mut self, a: &Args, span: Span) -> Value {
        let Some(shape) = self.dims(a, 0) else {
            return Value::Unknown;
        };
        let kind = match a.get(1) {
            Value::Unknown => ProbeKind::Gaussian,
            Value::Str(s) if s == "gaussian" => ProbeKind::Gaussian,
            Value::Str(s) if s == "rademacher" => ProbeKind::Rademacher,
            other => {
                let found = other.describe(&self.m);
                return self.bad_setting(
                    a.span(1),
                    "probe",
                    "kind = \"gaussian\" or \"rademacher\"",
                    found,
                );
            }
        };
        self.emit1(
            InstKind::Prim(
                Prim::Op(Op::Probe {
                    kind,
                    shape: shape.clone(),
                }),
                vec![],
            ),
            Type::new(DType::F32, shape),
            span,
        )
    }
}
