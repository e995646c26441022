//! The built-in functions of LANGUAGE.md section 7 and their shape rules.
//!
//! Owns the argument lists (names, defaults) of every built-in and the rule
//! that computes each result type. Guarantees: arguments bind by position or
//! name exactly once; axes may be negative; every shape violation is
//! reported at the call with the shapes involved; composite shape
//! operations (transpose, squeeze, flatten, ...) lower to the primitive
//! `Reshape`/`Permute` so later stages see few primitives.

use crate::sema::dim::{Dim, DimCmp};
use crate::sema::elab::expr::ArgVal;
use crate::sema::elab::{Elab, Value};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::source::Span;

mod network;
mod shape_ops;

/// Every built-in function name.
pub const BUILTINS: &[&str] = &[
    "exp",
    "log",
    "sqrt",
    "abs",
    "tanh",
    "sigmoid",
    "relu",
    "gelu",
    "softplus",
    "sin",
    "cos",
    "leaky_relu",
    "maximum",
    "minimum",
    "where",
    "clamp",
    "sum",
    "mean",
    "max",
    "min",
    "logsumexp",
    "softmax",
    "log_softmax",
    "reshape",
    "transpose",
    "permute",
    "concat",
    "split",
    "unsqueeze",
    "squeeze",
    "broadcast",
    "flatten",
    "eye",
    "zeros",
    "ones",
    "arange",
    "conv1d",
    "conv2d",
    "avg_pool2d",
    "max_pool2d",
    "upsample_nearest2d",
    "embedding",
    "dropout",
    "causal_mask",
    "cast",
];

/// A default argument value.
#[derive(Clone, Copy)]
enum D {
    Required,
    /// Optional with no default (e.g. `axis` of a reduction: all axes).
    Absent,
    Int(i64),
    Float(f64),
    Bool(bool),
}

fn schema(name: &str) -> &'static [(&'static str, D)] {
    use D::*;
    match name {
        "leaky_relu" => &[("x", Required), ("slope", Float(0.01))],
        "maximum" | "minimum" => &[("a", Required), ("b", Required)],
        "where" => &[("mask", Required), ("a", Required), ("b", Required)],
        "clamp" => &[("x", Required), ("lo", Required), ("hi", Required)],
        "sum" | "mean" | "max" | "min" | "logsumexp" => {
            &[("x", Required), ("axis", Absent), ("keepdim", Bool(false))]
        }
        "softmax" | "log_softmax" => &[("x", Required), ("axis", Int(-1))],
        "reshape" | "broadcast" => &[("x", Required), ("shape", Required)],
        "transpose" => &[("x", Required), ("a", Required), ("b", Required)],
        "permute" => &[("x", Required), ("axes", Required)],
        "concat" => &[("tensors", Required), ("axis", Required)],
        "split" => &[("x", Required), ("axis", Required), ("sizes", Required)],
        "unsqueeze" | "squeeze" => &[("x", Required), ("axis", Required)],
        "flatten" => &[("x", Required), ("start", Int(1))],
        "eye" | "arange" => &[("n", Required)],
        "zeros" | "ones" => &[("shape", Required)],
        "conv1d" | "conv2d" => &[
            ("x", Required),
            ("w", Required),
            ("stride", Int(1)),
            ("padding", Int(0)),
            ("dilation", Int(1)),
            ("groups", Int(1)),
        ],
        "avg_pool2d" | "max_pool2d" => &[("x", Required), ("k", Required), ("stride", Absent)],
        "upsample_nearest2d" => &[("x", Required), ("scale", Required)],
        "embedding" => &[("ids", Required), ("table", Required)],
        "dropout" => &[("x", Required), ("p", Required)],
        "causal_mask" => &[("t", Required)],
        "cast" => &[("x", Required), ("dtype", Required)],
        _ => &[("x", Required)],
    }
}

fn unary_fn(name: &str) -> Option<UnaryFn> {
    Some(match name {
        "exp" => UnaryFn::Exp,
        "log" => UnaryFn::Log,
        "sqrt" => UnaryFn::Sqrt,
        "abs" => UnaryFn::Abs,
        "tanh" => UnaryFn::Tanh,
        "sigmoid" => UnaryFn::Sigmoid,
        "relu" => UnaryFn::Relu,
        "gelu" => UnaryFn::Gelu,
        "softplus" => UnaryFn::Softplus,
        "sin" => UnaryFn::Sin,
        "cos" => UnaryFn::Cos,
        _ => return None,
    })
}

/// Scalar versions of the unary functions, for compile-time folding.
fn fold_unary(f: UnaryFn, x: f64) -> f64 {
    match f {
        UnaryFn::Neg => -x,
        UnaryFn::Exp => x.exp(),
        UnaryFn::Log => x.ln(),
        UnaryFn::Sqrt => x.sqrt(),
        UnaryFn::Abs => x.abs(),
        UnaryFn::Tanh => x.tanh(),
        UnaryFn::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryFn::Relu => x.max(0.0),
        UnaryFn::Gelu => {
            0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x.powi(3))).tanh())
        }
        UnaryFn::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        UnaryFn::Sin => x.sin(),
        UnaryFn::Cos => x.cos(),
    }
}

/// Bound arguments of one built-in call.
struct Args {
    values: Vec<(Value, Span)>,
}

impl Args {
    fn get(&self, i: usize) -> &Value {
        &self.values[i].0
    }
    fn span(&self, i: usize) -> Span {
        self.values[i].1
    }
}

impl Elab<'_> {
    pub fn builtin(&mut self, name: &'static str, args: Vec<ArgVal>, span: Span) -> Value {
        let params = schema(name);
        let names: Vec<(String, bool)> = params
            .iter()
            .map(|(n, d)| (n.to_string(), !matches!(d, D::Required)))
            .collect();
        let Some(slots) = self.bind_args(name, "argument", &names, args, span) else {
            return Value::Unknown;
        };
        let values = slots
            .into_iter()
            .zip(params)
            .map(|(slot, (_, d))| match slot {
                Some(a) => (a.value, a.span),
                None => (
                    match d {
                        D::Int(i) => Value::Int(Dim::konst(*i)),
                        D::Float(x) => Value::Float(Some(*x)),
                        D::Bool(b) => Value::Bool(Some(*b)),
                        D::Required | D::Absent => Value::Unknown,
                    },
                    span,
                ),
            })
            .collect();
        let a = Args { values };
        // An unknown tensor operand silences the rule (error already shown).
        if matches!(a.get(0), Value::Unknown) && !matches!(name, "where") {
            return Value::Unknown;
        }
        if let Some(f) = unary_fn(name) {
            return match a.get(0) {
                Value::Int(_) | Value::Float(_) => {
                    Value::Float(self.as_f64(a.get(0)).map(|x| fold_unary(f, x)))
                }
                _ => self.unary(Prim::Unary(f), &a, name, span),
            };
        }
        match name {
            "leaky_relu" => {
                let Some(slope) = self.float(&a, 1) else {
                    return Value::Unknown;
                };
                self.unary(Prim::LeakyRelu { slope }, &a, name, span)
            }
            "maximum" | "minimum" => {
                let f = if name == "maximum" {
                    BinaryFn::Maximum
                } else {
                    BinaryFn::Minimum
                };
                self.elementwise(f, a.get(0).clone(), a.get(1).clone(), span)
            }
            "where" => self.where_(&a, span),
            "clamp" => {
                let (Some(lo), Some(hi)) = (self.float(&a, 1), self.float(&a, 2)) else {
                    return Value::Unknown;
                };
                if lo > hi {
                    return self.invalid(
                        span,
                        format!("clamp range [{lo}, {hi}] is empty"),
                        "lo is above hi",
                    );
                }
                self.unary(Prim::Clamp { lo, hi }, &a, name, span)
            }
            "sum" | "mean" | "max" | "min" | "logsumexp" => self.reduce(name, &a, span),
            "softmax" | "log_softmax" => {
                let Some((x, ty)) = self.tensor(&a, 0) else {
                    return Value::Unknown;
                };
                let Some(axis) = self
                    .int(&a, 1)
                    .and_then(|i| self.axis(i, ty.rank(), a.span(1)))
                else {
                    return Value::Unknown;
                };
                let p = if name == "softmax" {
                    Prim::Softmax { axis }
                } else {
                    Prim::LogSoftmax { axis }
                };
                self.emit1(InstKind::Prim(p, vec![x]), ty, span)
            }
            "reshape" => self.reshape(&a, span),
            "transpose" | "permute" => self.permute(name, &a, span),
            "concat" => self.concat(&a, span),
            "split" => self.split(&a, span),
            "unsqueeze" | "squeeze" | "flatten" => self.squeeze_like(name, &a, span),
            "broadcast" => {
                let Some((x, ty)) = self.tensor(&a, 0) else {
                    return Value::Unknown;
                };
                let Some(shape) = self.dims(&a, 1) else {
                    return Value::Unknown;
                };
                match Self::broadcast_shapes(&ty.shape, &shape) {
                    Ok(b)
                        if b.len() == shape.len()
                            && b.iter()
                                .zip(&shape)
                                .all(|(x, y)| x.compare(y) != DimCmp::Different) =>
                    {
                        self.emit1(
                            InstKind::Prim(
                                Prim::Broadcast {
                                    shape: shape.clone(),
                                },
                                vec![x],
                            ),
                            Type::new(ty.dtype, shape),
                            span,
                        )
                    }
                    _ => self.report(
                        span,
                        SemaError::Broadcast {
                            lhs: ty.to_string(),
                            rhs: Self::shape_string(&shape),
                            span: span.into(),
                            detail: "cannot broadcast to this shape".into(),
                        },
                    ),
                }
            }
            "eye" | "arange" | "causal_mask" => {
                let Some(n) = self.dim(&a, 0) else {
                    return Value::Unknown;
                };
                let (p, ty) = match name {
                    "eye" => (
                        Prim::Eye { n: n.clone() },
                        Type::new(DType::F32, vec![n.clone(), n]),
                    ),
                    "arange" => (
                        Prim::Arange { n: n.clone() },
                        Type::new(DType::I64, vec![n]),
                    ),
                    _ => (
                        Prim::CausalMask { t: n.clone() },
                        Type::new(DType::F32, vec![n.clone(), n]),
                    ),
                };
                self.emit1(InstKind::Prim(p, vec![]), ty, span)
            }
            "zeros" | "ones" => {
                let Some(shape) = self.dims(&a, 0) else {
                    return Value::Unknown;
                };
                let value = if name == "ones" { 1.0 } else { 0.0 };
                self.emit1(
                    InstKind::Prim(
                        Prim::Fill {
                            value,
                            shape: shape.clone(),
                        },
                        vec![],
                    ),
                    Type::new(DType::F32, shape),
                    span,
                )
            }
            "conv1d" | "conv2d" => self.conv(name, &a, span),
            "avg_pool2d" | "max_pool2d" => self.pool(name, &a, span),
            "upsample_nearest2d" => {
                let Some((x, ty)) = self.tensor(&a, 0) else {
                    return Value::Unknown;
                };
                let Some(scale) = self.int(&a, 1) else {
                    return Value::Unknown;
                };
                if ty.rank() != 4 || scale < 1 {
                    return self.shape_err(
                        name,
                        format!(
                            "needs a [B, C, H, W] input and a positive scale, got {ty} and {scale}"
                        ),
                        span,
                    );
                }
                let s = Dim::konst(scale);
                let mut shape = ty.shape.clone();
                for d in &mut shape[2..] {
                    *d = d.mul(&s).unwrap_or_else(|| d.clone());
                }
                self.emit1(
                    InstKind::Prim(Prim::UpsampleNearest2d { scale }, vec![x]),
                    Type::new(ty.dtype, shape),
                    span,
                )
            }
            "embedding" => {
                let (Some((ids, ti)), Some((table, tt))) = (self.tensor(&a, 0), self.tensor(&a, 1))
                else {
                    return Value::Unknown;
                };
                if ti.dtype != DType::I64 {
                    return self.report(
                        a.span(0),
                        SemaError::TypeMismatch {
                            expected: "i64 token ids".into(),
                            found: format!("a tensor {ti}"),
                            span: a.span(0).into(),
                            help: Some("declare the input as `i64[B, T]`".into()),
                        },
                    );
                }
                if tt.rank() != 2 || !tt.dtype.is_float() {
                    return self.shape_err(
                        name,
                        format!("the table must be a float [n, d] matrix, got {tt}"),
                        a.span(1),
                    );
                }
                let mut shape = ti.shape.clone();
                shape.push(tt.shape[1].clone());
                self.emit1(
                    InstKind::Prim(Prim::Embedding, vec![ids, table]),
                    Type::new(tt.dtype, shape),
                    span,
                )
            }
            "dropout" => {
                let Some(p) = self.float(&a, 1) else {
                    return Value::Unknown;
                };
                if !(0.0..1.0).contains(&p) {
                    return self.invalid(
                        a.span(1),
                        format!("dropout probability {p} is outside [0, 1)"),
                        "bad probability",
                    );
                }
                self.unary(Prim::Dropout { p }, &a, name, span)
            }
            "cast" => {
                let Some((x, ty)) = self.tensor(&a, 0) else {
                    return Value::Unknown;
                };
                let to = match a.get(1) {
                    Value::Str(s) if s == "f32" => DType::F32,
                    Value::Str(s) if s == "f64" => DType::F64,
                    Value::Str(s) if s == "i64" => DType::I64,
                    _ => {
                        return self.invalid(
                            a.span(1),
                            "cast needs a dtype: \"f32\", \"f64\" or \"i64\"".into(),
                            "not a dtype",
                        )
                    }
                };
                self.emit1(
                    InstKind::Prim(Prim::Cast { to }, vec![x]),
                    Type::new(to, ty.shape),
                    span,
                )
            }
            _ => self.report(
                span,
                SemaError::NotCallable {
                    what: format!("`{name}`"),
                    span: span.into(),
                    help: None,
                },
            ),
        }
    }

    fn invalid(&mut self, span: Span, message: String, label: &str) -> Value {
        self.report(
            span,
            SemaError::InvalidValue {
                message,
                span: span.into(),
                label: label.into(),
                help: None,
            },
        )
    }

    fn shape_err(&mut self, op: &str, detail: String, span: Span) -> Value {
        self.report(
            span,
            SemaError::Shape {
                op: op.into(),
                detail,
                span: span.into(),
                help: None,
            },
        )
    }

    fn tensor(&mut self, a: &Args, i: usize) -> Option<(ValueId, Type)> {
        match a.get(i) {
            Value::Tensor(t) => Some((*t, self.ty(*t).clone())),
            Value::Unknown => None,
            other => {
                self.not_tensor(&other.clone(), a.span(i));
                None
            }
        }
    }

    fn dim(&mut self, a: &Args, i: usize) -> Option<Dim> {
        match a.get(i) {
            Value::Int(d) => Some(d.clone()),
            Value::Unknown => None,
            other => {
                let found = other.describe(&self.m);
                self.report(
                    a.span(i),
                    SemaError::TypeMismatch {
                        expected: "an int".into(),
                        found,
                        span: a.span(i).into(),
                        help: None,
                    },
                );
                None
            }
        }
    }

    fn int(&mut self, a: &Args, i: usize) -> Option<i64> {
        let d = self.dim(a, i)?;
        match d.as_const() {
            Some(v) => Some(v),
            None if self.generic => None,
            None => {
                self.report(
                    a.span(i),
                    SemaError::NotConstant {
                        message: format!("this argument must be a known int, not {d}"),
                        span: a.span(i).into(),
                        help: None,
                    },
                );
                None
            }
        }
    }

    fn float(&mut self, a: &Args, i: usize) -> Option<f64> {
        match a.get(i) {
            Value::Int(_) | Value::Float(_) => {
                self.as_f64(a.get(i))
                    .or(if self.generic { Some(0.0) } else { None })
            }
            Value::Unknown => None,
            other => {
                let found = other.describe(&self.m);
                self.report(
                    a.span(i),
                    SemaError::TypeMismatch {
                        expected: "a number".into(),
                        found,
                        span: a.span(i).into(),
                        help: None,
                    },
                );
                None
            }
        }
    }

    /// A list of dims, e.g. `[B, -1]` (`-1` kept as the constant -1).
    fn dims(&mut self, a: &Args, i: usize) -> Option<Vec<Dim>> {
        match a.get(i) {
            Value::List(items) | Value::Tuple(items) => {
                let mut out = Vec::new();
                for v in items {
                    match v {
                        Value::Int(d) => out.push(d.clone()),
                        Value::Unknown => return None,
                        other => {
                            let found = other.describe(&self.m);
                            self.report(
                                a.span(i),
                                SemaError::TypeMismatch {
                                    expected: "a list of ints".into(),
                                    found: format!("a list holding {found}"),
                                    span: a.span(i).into(),
                                    help: None,
                                },
                            );
                            return None;
                        }
                    }
                }
                Some(out)
            }
            Value::Unknown => None,
            other => {
                let found = other.describe(&self.m);
                self.report(
                    a.span(i),
                    SemaError::TypeMismatch {
                        expected: "a list of dimensions like [B, 4]".into(),
                        found,
                        span: a.span(i).into(),
                        help: None,
                    },
                );
                None
            }
        }
    }

    fn unary(&mut self, p: Prim, a: &Args, name: &str, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let needs_float = !matches!(p, Prim::Unary(UnaryFn::Abs | UnaryFn::Relu | UnaryFn::Neg));
        if needs_float && !ty.dtype.is_float() {
            return self.report(
                a.span(0),
                SemaError::TypeMismatch {
                    expected: format!("a float tensor for `{name}`"),
                    found: format!("a tensor {ty}"),
                    span: a.span(0).into(),
                    help: Some("convert with `cast(x, \"f32\")`".into()),
                },
            );
        }
        self.emit1(InstKind::Prim(p, vec![x]), ty, span)
    }
}
