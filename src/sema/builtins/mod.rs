//! The built-in functions of LANGUAGE.md section 7 and their shape rules.
//!
//! Owns the argument lists (names, defaults) of every built-in and the rule
//! that computes each result type. Guarantees: arguments bind by position or
//! name exactly once; axes may be negative; every shape violation is
//! reported at the call with the shapes involved; composite shape
//! operations (transpose, squeeze, flatten, ...) lower to the primitive
//! `Reshape`/`Permute` so later stages see few primitives.
//!
//! [`Builtin`] names every built-in once; its arity and defaults
//! (`Builtin::schema`) and its elaboration (`Elab::builtin`) are each one
//! exhaustive `match`, so a new built-in does not compile until both exist.

use crate::ir::{Op, ReduceOp};
use crate::sema::dim::{Dim, DimCmp};
use crate::sema::elab::expr::ArgVal;
use crate::sema::elab::{Elab, Value};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::source::Span;

mod jacobian;
mod network;
pub mod normalize;
mod shape_ops;

/// Defines [`Builtin`] with its [`Builtin::ALL`] table and names from one
/// list, so that the enum, the table and the names cannot disagree.
macro_rules! builtins {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// A built-in function of the language.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Builtin {
            $($variant),*
        }

        impl Builtin {
            /// Every built-in, in the order of LANGUAGE.md section 7.
            pub const ALL: &'static [Builtin] = &[$(Builtin::$variant),*];

            /// Their names, in the same order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The name a program calls it by.
            pub fn name(self) -> &'static str {
                match self {
                    $(Builtin::$variant => $name),*
                }
            }
        }
    };
}

builtins! {
    Exp = "exp",
    Log = "log",
    Sqrt = "sqrt",
    Abs = "abs",
    Tanh = "tanh",
    Sigmoid = "sigmoid",
    Relu = "relu",
    Gelu = "gelu",
    Softplus = "softplus",
    Sin = "sin",
    Cos = "cos",
    LeakyRelu = "leaky_relu",
    Maximum = "maximum",
    Minimum = "minimum",
    Where = "where",
    Clamp = "clamp",
    Sum = "sum",
    Mean = "mean",
    Max = "max",
    Min = "min",
    LogSumExp = "logsumexp",
    Softmax = "softmax",
    LogSoftmax = "log_softmax",
    Reshape = "reshape",
    Transpose = "transpose",
    Permute = "permute",
    Concat = "concat",
    Split = "split",
    Unsqueeze = "unsqueeze",
    Squeeze = "squeeze",
    Broadcast = "broadcast",
    Flatten = "flatten",
    Eye = "eye",
    Zeros = "zeros",
    Ones = "ones",
    Arange = "arange",
    Conv1d = "conv1d",
    Conv2d = "conv2d",
    AvgPool2d = "avg_pool2d",
    MaxPool2d = "max_pool2d",
    UpsampleNearest2d = "upsample_nearest2d",
    Embedding = "embedding",
    Dropout = "dropout",
    CausalMask = "causal_mask",
    Cast = "cast",
    Vjp = "vjp",
    Jvp = "jvp",
    Probe = "probe",
    WeightNorm = "weight_norm",
    SpectralNorm = "spectral_norm",
    NormalizeWeight = "normalize_weight",
}

/// Every built-in function name (generated with [`Builtin`]).
pub const BUILTINS: &[&str] = Builtin::NAMES;

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

impl Builtin {
    /// The built-in called `name`, if any.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.iter().copied().find(|b| b.name() == name)
    }

    /// The parameters, in order, with their defaults.
    fn schema(self) -> &'static [(&'static str, D)] {
        use Builtin::*;
        use D::*;
        match self {
            Exp | Log | Sqrt | Abs | Tanh | Sigmoid | Relu | Gelu | Softplus | Sin | Cos => {
                &[("x", Required)]
            }
            LeakyRelu => &[("x", Required), ("slope", Float(0.01))],
            Maximum | Minimum => &[("a", Required), ("b", Required)],
            Where => &[("mask", Required), ("a", Required), ("b", Required)],
            Clamp => &[("x", Required), ("lo", Required), ("hi", Required)],
            Sum | Mean | Max | Min | LogSumExp => {
                &[("x", Required), ("axis", Absent), ("keepdim", Bool(false))]
            }
            Softmax | LogSoftmax => &[("x", Required), ("axis", Int(-1))],
            Reshape | Broadcast => &[("x", Required), ("shape", Required)],
            Transpose => &[("x", Required), ("a", Required), ("b", Required)],
            Permute => &[("x", Required), ("axes", Required)],
            Concat => &[("tensors", Required), ("axis", Required)],
            Split => &[("x", Required), ("axis", Required), ("sizes", Required)],
            Unsqueeze | Squeeze => &[("x", Required), ("axis", Required)],
            Flatten => &[("x", Required), ("start", Int(1))],
            Eye | Arange => &[("n", Required)],
            Zeros | Ones => &[("shape", Required)],
            Conv1d | Conv2d => &[
                ("x", Required),
                ("w", Required),
                ("stride", Int(1)),
                ("padding", Int(0)),
                ("dilation", Int(1)),
                ("groups", Int(1)),
            ],
            AvgPool2d | MaxPool2d => &[("x", Required), ("k", Required), ("stride", Absent)],
            UpsampleNearest2d => &[("x", Required), ("scale", Required)],
            Embedding => &[("ids", Required), ("table", Required)],
            Dropout => &[("x", Required), ("p", Required)],
            CausalMask => &[("t", Required)],
            Cast => &[("x", Required), ("dtype", Required)],
            Vjp => &[("f", Required), ("x", Required), ("v", Required)],
            Jvp => &[("f", Required), ("x", Required), ("u", Required)],
            Probe => &[("shape", Required), ("kind", Absent)],
            WeightNorm => &[("w", Required), ("axis", Required)],
            SpectralNorm => &[("w", Required), ("axis", Required), ("coeff", Float(1.0))],
            NormalizeWeight => &[
                ("w", Required),
                ("axis", Required),
                ("norm", Required),
                ("coeff", Float(1.0)),
            ],
        }
    }
}

/// GELU's tanh form, for folding `gelu` of a known number.
fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x.powi(3))).tanh())
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
    pub fn builtin(&mut self, b: Builtin, args: Vec<ArgVal>, span: Span) -> Value {
        let params = b.schema();
        let name = b.name();
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
        if matches!(a.get(0), Value::Unknown) && b != Builtin::Where {
            return Value::Unknown;
        }
        match b {
            Builtin::Exp => self.math(Op::Exp, f64::exp, &a, name, span),
            Builtin::Log => self.math(Op::Log, f64::ln, &a, name, span),
            Builtin::Sqrt => self.math(Op::Sqrt, f64::sqrt, &a, name, span),
            Builtin::Abs => self.math(Op::Abs, f64::abs, &a, name, span),
            Builtin::Tanh => self.math(Op::Tanh, f64::tanh, &a, name, span),
            Builtin::Sigmoid => {
                self.math(Op::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), &a, name, span)
            }
            Builtin::Relu => self.math(Op::Relu, |x| x.max(0.0), &a, name, span),
            Builtin::Gelu => self.math(Op::Gelu, gelu, &a, name, span),
            Builtin::Softplus => self.math(
                Op::Softplus,
                |x| x.max(0.0) + (-x.abs()).exp().ln_1p(),
                &a,
                name,
                span,
            ),
            Builtin::Sin => self.math(Op::Sin, f64::sin, &a, name, span),
            Builtin::Cos => self.math(Op::Cos, f64::cos, &a, name, span),
            Builtin::LeakyRelu => {
                let Some(slope) = self.float(&a, 1) else {
                    return Value::Unknown;
                };
                self.unary(Op::LeakyRelu { slope }, &a, name, span)
            }
            Builtin::Maximum => {
                self.elementwise(Op::Maximum, a.get(0).clone(), a.get(1).clone(), span)
            }
            Builtin::Minimum => {
                self.elementwise(Op::Minimum, a.get(0).clone(), a.get(1).clone(), span)
            }
            Builtin::Where => self.where_(&a, span),
            Builtin::Clamp => {
                let (Some(lo), Some(hi)) = (self.float(&a, 1), self.float(&a, 2)) else {
                    return Value::Unknown;
                };
                if lo > hi {
                    return self.bad_setting(
                        span,
                        name,
                        "lo <= hi",
                        format!("the empty range [{lo}, {hi}]"),
                    );
                }
                self.unary(Op::Clamp { lo, hi }, &a, name, span)
            }
            Builtin::Sum => self.reduce(ReduceOp::Sum, &a, span),
            Builtin::Mean => self.reduce(ReduceOp::Mean, &a, span),
            Builtin::Max => self.reduce(ReduceOp::Max, &a, span),
            Builtin::Min => self.reduce(ReduceOp::Min, &a, span),
            Builtin::LogSumExp => self.reduce(ReduceOp::LogSumExp, &a, span),
            Builtin::Softmax => self.softmax(&a, span, |axis| Op::Softmax { axis }),
            Builtin::LogSoftmax => self.softmax(&a, span, |axis| Op::LogSoftmax { axis }),
            Builtin::Reshape => self.reshape(&a, span),
            Builtin::Transpose => self.transpose(&a, span),
            Builtin::Permute => self.permute(&a, span),
            Builtin::Concat => self.concat(&a, span),
            Builtin::Split => self.split(&a, span),
            Builtin::Unsqueeze => self.unsqueeze(&a, span),
            Builtin::Squeeze => self.squeeze(&a, span),
            Builtin::Flatten => self.flatten(&a, span),
            Builtin::Broadcast => self.broadcast(&a, span),
            Builtin::Eye => self.sized(&a, span, |n| {
                (
                    Op::Eye { n: n.clone() },
                    Type::new(DType::F32, vec![n.clone(), n]),
                )
            }),
            Builtin::Arange => self.sized(&a, span, |n| {
                (Op::Arange { n: n.clone() }, Type::new(DType::I64, vec![n]))
            }),
            Builtin::CausalMask => self.sized(&a, span, |n| {
                (
                    Op::CausalMask { t: n.clone() },
                    Type::new(DType::F32, vec![n.clone(), n]),
                )
            }),
            Builtin::Zeros => self.fill(&a, span, 0.0),
            Builtin::Ones => self.fill(&a, span, 1.0),
            Builtin::Conv1d => self.conv(name, 1, &a, span),
            Builtin::Conv2d => self.conv(name, 2, &a, span),
            Builtin::AvgPool2d => self.pool(name, &a, span, |kernel, stride| Op::AvgPool2d {
                kernel,
                stride,
            }),
            Builtin::MaxPool2d => self.pool(name, &a, span, |kernel, stride| Op::MaxPool2d {
                kernel,
                stride,
            }),
            Builtin::UpsampleNearest2d => self.upsample(&a, name, span),
            Builtin::Embedding => self.embedding(&a, name, span),
            Builtin::Dropout => {
                let Some(p) = self.float(&a, 1) else {
                    return Value::Unknown;
                };
                if !(0.0..1.0).contains(&p) {
                    return self.bad_setting(
                        a.span(1),
                        name,
                        "a probability in [0, 1)",
                        format!("p = {p}"),
                    );
                }
                let Some((x, ty)) = self.tensor(&a, 0) else {
                    return Value::Unknown;
                };
                if !ty.dtype.is_float() {
                    return self.needs_float(&a, &ty, name);
                }
                self.emit1(InstKind::Prim(Prim::Dropout { p }, vec![x]), ty, span)
            }
            Builtin::Cast => self.cast(&a, span),
            Builtin::Vjp => self.jacobian_product(jacobian::Product::Vjp, &a, span),
            Builtin::Jvp => self.jacobian_product(jacobian::Product::Jvp, &a, span),
            Builtin::Probe => self.probe(&a, span),
            Builtin::WeightNorm => self.weight_norm(&a, name, span),
            Builtin::SpectralNorm => self.spectral_norm(&a, 2, name, span),
            Builtin::NormalizeWeight => self.normalize_weight(&a, name, span),
        }
    }

    /// A unary math function: `fold` computes it when its argument is a
    /// known number, `op` otherwise.
    fn math(&mut self, op: Op, fold: fn(f64) -> f64, a: &Args, name: &str, span: Span) -> Value {
        match a.get(0) {
            Value::Int(_) | Value::Float(_) => Value::Float(self.as_f64(a.get(0)).map(fold)),
            _ => self.unary(op, a, name, span),
        }
    }

    fn softmax(&mut self, a: &Args, span: Span, op: impl FnOnce(usize) -> Op) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let Some(axis) = self.axis_arg(a, 1, ty.rank()) else {
            return Value::Unknown;
        };
        self.emit_op(op(axis), vec![x], span)
    }

    fn broadcast(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let Some(shape) = self.dims(a, 1) else {
            return Value::Unknown;
        };
        match Self::broadcast_shapes(&ty.shape, &shape) {
            Ok(b)
                if b.len() == shape.len()
                    && b.iter()
                        .zip(&shape)
                        .all(|(x, y)| x.compare(y) != DimCmp::Different) =>
            {
                self.emit_op(Op::BroadcastTo { shape }, vec![x], span)
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

    /// A constructor of one size argument (`eye(n)`, `arange(n)`, ...).
    fn sized(&mut self, a: &Args, span: Span, make: impl FnOnce(Dim) -> (Op, Type)) -> Value {
        let Some(n) = self.dim(a, 0) else {
            return Value::Unknown;
        };
        let (op, ty) = make(n);
        self.emit1(InstKind::Prim(Prim::Op(op), vec![]), ty, span)
    }

    fn fill(&mut self, a: &Args, span: Span, value: f64) -> Value {
        let Some(shape) = self.dims(a, 0) else {
            return Value::Unknown;
        };
        self.emit1(
            InstKind::Prim(
                Prim::Op(Op::Fill {
                    value,
                    shape: shape.clone(),
                }),
                vec![],
            ),
            Type::new(DType::F32, shape),
            span,
        )
    }

    fn upsample(&mut self, a: &Args, name: &str, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let Some(scale) = self.int(a, 1) else {
            return Value::Unknown;
        };
        if ty.rank() != 4 {
            return self.input_rank(name, "an input [B, C, H, W]", &ty, a.span(0));
        }
        if scale < 1 {
            return self.bad_setting(
                a.span(1),
                name,
                "a positive scale",
                format!("scale {scale}"),
            );
        }
        self.emit_op(Op::UpsampleNearest2d { scale }, vec![x], span)
    }

    fn embedding(&mut self, a: &Args, name: &str, span: Span) -> Value {
        let (Some((ids, ti)), Some((table, tt))) = (self.tensor(a, 0), self.tensor(a, 1)) else {
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
            return self.input_rank(name, "a float [n, d] table", &tt, a.span(1));
        }
        self.emit_op(Op::Embedding, vec![ids, table], span)
    }

    fn cast(&mut self, a: &Args, span: Span) -> Value {
        let Some((x, _)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        let to = match a.get(1) {
            Value::Str(s) if s == "f32" => DType::F32,
            Value::Str(s) if s == "f64" => DType::F64,
            Value::Str(s) if s == "i64" => DType::I64,
            other => {
                let found = other.describe(&self.m);
                return self.report(
                    a.span(1),
                    SemaError::UnknownDType {
                        found,
                        span: a.span(1).into(),
                    },
                );
            }
        };
        self.emit_op(Op::Cast { to }, vec![x], span)
    }

    fn bad_setting(&mut self, span: Span, op: &str, requirement: &str, found: String) -> Value {
        self.report(
            span,
            SemaError::BadSetting {
                op: op.into(),
                requirement: requirement.into(),
                found,
                span: span.into(),
            },
        )
    }

    fn kernel_too_large(&mut self, span: Span, op: &str, kernel: String, input: String) -> Value {
        self.report(
            span,
            SemaError::KernelTooLarge {
                op: op.into(),
                kernel,
                input,
                span: span.into(),
            },
        )
    }

    fn input_rank(&mut self, op: &str, expected: &str, found: &Type, span: Span) -> Value {
        self.report(
            span,
            SemaError::InputRank {
                op: op.into(),
                expected: expected.into(),
                found: found.to_string(),
                span: span.into(),
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
                self.type_mismatch(a.span(i), "an int", found);
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
                self.not_constant(
                    a.span(i),
                    format!("this argument must be a known int, not {d}"),
                );
                None
            }
        }
    }

    /// Argument `i` as an axis of a rank-`rank` tensor (negative counts
    /// from the end).
    /// Argument 0, a tensor, and argument 1, an axis of it (of its rank
    /// plus `extra`, for an op that adds axes).
    fn tensor_and_axis(&mut self, a: &Args, extra: usize) -> Option<(ValueId, Type, usize)> {
        let (x, ty) = self.tensor(a, 0)?;
        let axis = self.axis_arg(a, 1, ty.rank() + extra)?;
        Some((x, ty, axis))
    }

    fn axis_arg(&mut self, a: &Args, i: usize, rank: usize) -> Option<usize> {
        let v = self.int(a, i)?;
        self.axis(v, rank, a.span(i))
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
                self.type_mismatch(a.span(i), "a number", found);
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
                            self.type_mismatch(
                                a.span(i),
                                "a list of ints",
                                format!("a list holding {found}"),
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
                self.type_mismatch(a.span(i), "a list of dimensions like [B, 4]", found);
                None
            }
        }
    }

    /// A unary elementwise op; the IR's rule says which element types it
    /// takes.
    fn unary(&mut self, op: Op, a: &Args, name: &str, span: Span) -> Value {
        let Some((x, ty)) = self.tensor(a, 0) else {
            return Value::Unknown;
        };
        if crate::ir::shape::infer(&op, &[&ty]).is_err() {
            return self.needs_float(a, &ty, name);
        }
        self.emit_op(op, vec![x], span)
    }

    fn needs_float(&mut self, a: &Args, ty: &Type, name: &str) -> Value {
        self.report(
            a.span(0),
            SemaError::TypeMismatch {
                expected: format!("a float tensor for `{name}`"),
                found: format!("a tensor {ty}"),
                span: a.span(0).into(),
                help: Some("convert with `cast(x, \"f32\")`".into()),
            },
        )
    }
}
