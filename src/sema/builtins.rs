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

    fn where_(&mut self, a: &Args, span: Span) -> Value {
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

    fn reduce(&mut self, name: &str, a: &Args, span: Span) -> Value {
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

    fn reshape_to(&mut self, x: ValueId, dtype: DType, shape: Vec<Dim>, span: Span) -> Value {
        self.emit1(
            InstKind::Prim(
                Prim::Reshape {
                    shape: shape.clone(),
                },
                vec![x],
            ),
            Type::new(dtype, shape),
            span,
        )
    }

    fn product(dims: &[Dim]) -> Option<Dim> {
        dims.iter().try_fold(Dim::konst(1), |acc, d| acc.mul(d))
    }

    fn reshape(&mut self, a: &Args, span: Span) -> Value {
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
            return self.invalid(
                a.span(1),
                "at most one dimension of a reshape may be -1".into(),
                "several -1",
            );
        }
        if let Some(bad) = shape
            .iter()
            .find(|d| d.as_const().is_some_and(|v| v < -1 || v == 0))
        {
            return self.invalid(
                a.span(1),
                format!("{bad} is not a valid dimension"),
                "bad dimension",
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
        self.reshape_to(x, ty.dtype, shape, span)
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

    fn permute(&mut self, name: &str, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let r = ty.rank();
        let axes: Vec<usize> = if name == "transpose" {
            let (Some(p), Some(q)) = (self.int(a, 1), self.int(a, 2)) else {
                return Value::Unknown;
            };
            let (Some(p), Some(q)) = (self.axis(p, r, a.span(1)), self.axis(q, r, a.span(2)))
            else {
                return Value::Unknown;
            };
            let mut axes: Vec<usize> = (0..r).collect();
            axes.swap(p, q);
            axes
        } else {
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
                return self.invalid(
                    a.span(1),
                    format!("{axes:?} is not a permutation of the {r} axes of {ty}"),
                    "not a permutation",
                );
            }
            axes
        };
        let shape = axes.iter().map(|&i| ty.shape[i].clone()).collect();
        self.emit1(
            InstKind::Prim(Prim::Permute { axes }, vec![x]),
            Type::new(ty.dtype, shape),
            span,
        )
    }

    fn concat(&mut self, a: &Args, span: Span) -> Value {
        let parts = match a.get(0) {
            Value::Tuple(p) | Value::List(p) if !p.is_empty() => p.clone(),
            other => {
                let found = other.describe(&self.m);
                return self.report(
                    a.span(0),
                    SemaError::TypeMismatch {
                        expected: "a tuple of tensors, e.g. (a, b)".into(),
                        found,
                        span: a.span(0).into(),
                        help: None,
                    },
                );
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
        let Some(axis) = self
            .int(a, 1)
            .and_then(|i| self.axis(i, first.rank(), a.span(1)))
        else {
            return Value::Unknown;
        };
        let mut total = first.shape[axis].clone();
        for id in &ids[1..] {
            let t = self.ty(*id).clone();
            let same_rest = t.rank() == first.rank()
                && t.dtype == first.dtype
                && (0..t.rank())
                    .all(|k| k == axis || t.shape[k].compare(&first.shape[k]) != DimCmp::Different);
            if !same_rest {
                return self.shape_err(
                    "concat",
                    format!("{first} and {t} differ outside axis {axis}"),
                    span,
                );
            }
            total = total.add(&t.shape[axis]).unwrap_or(total);
        }
        let mut shape = first.shape.clone();
        shape[axis] = total;
        self.emit1(
            InstKind::Prim(Prim::Concat { axis }, ids),
            Type::new(first.dtype, shape),
            span,
        )
    }

    fn split(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let Some(axis) = self
            .int(a, 1)
            .and_then(|i| self.axis(i, ty.rank(), a.span(1)))
        else {
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
            return self.shape_err(
                "split",
                format!(
                    "sizes {} do not add up to dimension {axis} of {ty}, which is {}",
                    Self::shape_string(&sizes),
                    ty.shape[axis]
                ),
                a.span(2),
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

    fn squeeze_like(&mut self, name: &str, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let Some(i) = self.int(a, 1) else {
            return Value::Unknown;
        };
        let mut shape = ty.shape.clone();
        match name {
            "unsqueeze" => {
                let Some(ax) = self.axis(i, ty.rank() + 1, a.span(1)) else {
                    return Value::Unknown;
                };
                shape.insert(ax, Dim::konst(1));
            }
            "squeeze" => {
                let Some(ax) = self.axis(i, ty.rank(), a.span(1)) else {
                    return Value::Unknown;
                };
                if shape[ax].as_const() != Some(1) && !(self.generic && !shape[ax].is_const()) {
                    return self.shape_err(
                        "squeeze",
                        format!("axis {ax} of {ty} has size {}, not 1", shape[ax]),
                        a.span(1),
                    );
                }
                shape.remove(ax);
            }
            _ => {
                let Some(start) = self.axis(i, ty.rank(), a.span(1)) else {
                    return Value::Unknown;
                };
                let Some(flat) = Self::product(&shape[start..]) else {
                    return Value::Unknown;
                };
                shape.truncate(start);
                shape.push(flat);
            }
        }
        self.reshape_to(x, ty.dtype, shape, span)
    }

    fn conv(&mut self, name: &str, a: &Args, span: Span) -> Value {
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

    fn pool(&mut self, name: &str, a: &Args, span: Span) -> Value {
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
