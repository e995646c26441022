//! Expressions: names, arithmetic, calls, indexing and compile-time values.
//!
//! Guarantees: integer arithmetic on dimensions is exact and checked for
//! overflow; a scalar mixed with a tensor becomes a scalar constant of the
//! tensor's element type; comparisons of tensors yield 0/1 masks of the
//! operands' element type; settings (`with`, `param` initializers, `train`)
//! are evaluated to [`CVal`]s without emitting any tensor code.

use super::{BodyKind, Elab, Env, Value};
use crate::ir::{Cmp, Op};
use crate::sema::dim::Dim;
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::sema::options::{suggest, CArg, CVal, Spanned};
use crate::source::Span;
use crate::syntax::ast::{self, BinOp, ExprKind};

impl Elab<'_> {
    pub fn expr(&mut self, env: &mut Env, e: &ast::Expr) -> Value {
        match &e.kind {
            ExprKind::Int(i) => Value::Int(Dim::konst(*i)),
            ExprKind::Float(x) => Value::Float(Some(*x)),
            ExprKind::Bool(b) => Value::Bool(Some(*b)),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Path(segs) => self.path(env, segs, e.span),
            ExprKind::Tuple(items) => {
                Value::Tuple(items.iter().map(|i| self.expr(env, i)).collect())
            }
            ExprKind::List(items) => Value::List(items.iter().map(|i| self.expr(env, i)).collect()),
            ExprKind::Unary(ast::UnOp::Neg, x) => {
                let v = self.expr(env, x);
                self.negate(v, e.span)
            }
            ExprKind::Binary(op, a, b) => {
                let va = self.expr(env, a);
                let vb = self.expr(env, b);
                self.binary(*op, va, vb, e.span)
            }
            ExprKind::Call { callee, args } => {
                let f = self.expr(env, callee);
                let args: Vec<ArgVal> = args
                    .iter()
                    .map(|a| ArgVal {
                        name: a.name.clone(),
                        value: self.expr(env, &a.value),
                        span: a.value.span,
                    })
                    .collect();
                self.call(f, args, callee.span, e.span)
            }
            ExprKind::Bracket { base, items } => {
                let b = self.expr(env, base);
                self.bracket(env, b, items, None, e.span)
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => match self.expr(env, cond) {
                Value::Bool(Some(true)) => self.block(env, then),
                Value::Bool(Some(false)) => self.block(env, otherwise),
                Value::Bool(None) => {
                    // Generic checking: both branches are checked.
                    let v = self.block(env, then);
                    self.block(env, otherwise);
                    v
                }
                Value::Unknown => Value::Unknown,
                other => {
                    let found = other.describe(&self.m);
                    self.report(
                        cond.span,
                        SemaError::NotConstant {
                            message: format!("the condition of `if` must be a compile-time bool, not {found}"),
                            span: cond.span.into(),
                            help: Some("`if` chooses between alternatives at compile time (e.g. on a `bool` hyper-parameter); use `where(mask, a, b)` to choose per element".into()),
                        },
                    )
                }
            },
        }
    }

    fn path(&mut self, env: &mut Env, segs: &[ast::Ident], span: Span) -> Value {
        let first = &segs[0];
        if segs.len() == 1 {
            if let Some(v) = env.lookup(&first.name) {
                return v.clone();
            }
            let module = self.modules.get(env.module);
            if let Some(r) = module.items.get(&first.name).copied() {
                return match self.modules.item(r) {
                    ast::Item::Const(_) => self.const_value(r, span),
                    _ => Value::Item(r),
                };
            }
            if let Some(m) = module.imports.get(&first.name) {
                return Value::Module(*m);
            }
            if let Some(b) = crate::sema::builtins::Builtin::from_name(&first.name) {
                return Value::Builtin(b);
            }
            if first.name == "repeat" {
                return self.report(
                    span,
                    SemaError::InvalidValue {
                        message: "`repeat` names its instances after a `let`".into(),
                        span: span.into(),
                        label: "not bound by `let`".into(),
                        help: Some(
                            "write `let blocks = repeat(N, Block[d]);`, then `blocks(x)`".into(),
                        ),
                    },
                );
            }
            let names = self.visible_names(env);
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let help = suggest(&first.name, &refs)
                .filter(|h| h.starts_with("did you mean"))
                .map(|h| h.split('?').next().unwrap_or("").to_string() + "?");
            return self.report(
                span,
                SemaError::UnknownName {
                    name: first.name.clone(),
                    span: first.span.into(),
                    help,
                },
            );
        }
        let module = self.modules.get(env.module);
        let Some(mid) = module.imports.get(&first.name).copied() else {
            let imports: Vec<&str> = module.imports.keys().map(String::as_str).collect();
            let help = if first.name == "nn"
                || crate::sema::modules::STDLIB
                    .iter()
                    .any(|(n, _)| *n == first.name)
            {
                Some(format!("add `use {};` at the top of the file", first.name))
            } else {
                suggest(&first.name, &imports)
            };
            return self.report(
                span,
                SemaError::UnknownModule {
                    name: first.name.clone(),
                    span: first.span.into(),
                    help,
                },
            );
        };
        let target = self.modules.get(mid);
        let second = &segs[1];
        if segs.len() > 2 {
            return self.report(
                span,
                SemaError::UnknownItem {
                    module: target.name.clone(),
                    name: segs[1..]
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join("::"),
                    span: span.into(),
                    help: Some("paths have two parts: `module::Item`".into()),
                },
            );
        }
        match target.items.get(&second.name).copied() {
            Some(r) => match self.modules.item(r) {
                ast::Item::Const(_) => self.const_value(r, span),
                _ => Value::Item(r),
            },
            None => {
                let names: Vec<&str> = target.items.keys().map(String::as_str).collect();
                let mut sorted = names.clone();
                sorted.sort();
                let module_name = target.name.clone();
                self.report(
                    span,
                    SemaError::UnknownItem {
                        module: module_name,
                        name: second.name.clone(),
                        span: second.span.into(),
                        help: suggest(&second.name, &sorted),
                    },
                )
            }
        }
    }

    pub fn negate(&mut self, v: Value, span: Span) -> Value {
        match v {
            Value::Int(d) => match d.neg() {
                Some(n) => Value::Int(n),
                None => self.report(span, SemaError::Arithmetic { span: span.into() }),
            },
            Value::Float(x) => Value::Float(x.map(|x| -x)),
            Value::Tensor(t) => self.emit_op(Op::Neg, vec![t], span),
            Value::Unknown => Value::Unknown,
            other => self.not_numeric(&other, span),
        }
    }

    fn not_numeric(&mut self, v: &Value, span: Span) -> Value {
        let found = v.describe(&self.m);
        self.type_mismatch(span, "a number or a tensor", found)
    }

    pub fn binary(&mut self, op: BinOp, a: Value, b: Value, span: Span) -> Value {
        use Value::*;
        match (&a, &b) {
            (Unknown, _) | (_, Unknown) => Unknown,
            (Int(x), Int(y)) => self.int_binary(op, x, y, span),
            (Int(_) | Float(_), Int(_) | Float(_)) if op == BinOp::MatMul => self.report(
                span,
                SemaError::TypeMismatch {
                    expected: "tensors on both sides of `@`".into(),
                    found: "numbers".into(),
                    span: span.into(),
                    help: Some("`*` multiplies numbers".into()),
                },
            ),
            (Int(_) | Float(_), Int(_) | Float(_)) => {
                let (x, y) = (self.as_f64(&a), self.as_f64(&b));
                float_binary(op, x, y)
            }
            (Tensor(_), Tensor(_) | Int(_) | Float(_)) | (Int(_) | Float(_), Tensor(_)) => {
                let f = match op {
                    BinOp::MatMul => {
                        return match (a, b) {
                            (Tensor(x), Tensor(y)) => self.matmul(x, y, span),
                            (other, Tensor(_)) | (_, other) => self.not_tensor(&other, span),
                        }
                    }
                    BinOp::Add => Op::Add,
                    BinOp::Sub => Op::Sub,
                    BinOp::Mul => Op::Mul,
                    BinOp::Div => Op::Div,
                    BinOp::Pow => Op::Pow,
                    BinOp::Lt => Op::Compare(Cmp::Lt),
                    BinOp::Le => Op::Compare(Cmp::Le),
                    BinOp::Gt => Op::Compare(Cmp::Gt),
                    BinOp::Ge => Op::Compare(Cmp::Ge),
                    BinOp::Eq => Op::Compare(Cmp::Eq),
                    BinOp::Ne => Op::Compare(Cmp::Ne),
                };
                self.elementwise(f, a, b, span)
            }
            _ => {
                let bad = if matches!(a, Int(_) | Float(_) | Tensor(_)) {
                    &b
                } else {
                    &a
                };
                let found = bad.describe(&self.m);
                self.report(
                    span,
                    SemaError::TypeMismatch {
                        expected: format!("numbers or tensors on both sides of `{}`", op.symbol()),
                        found,
                        span: span.into(),
                        help: None,
                    },
                )
            }
        }
    }

    pub fn not_tensor(&mut self, v: &Value, span: Span) -> Value {
        let found = v.describe(&self.m);
        self.type_mismatch(span, "a tensor", found)
    }

    /// A float view of a compile-time number (`None` when unknown).
    pub fn as_f64(&self, v: &Value) -> Option<f64> {
        match v {
            Value::Int(d) => d.as_const().map(|i| i as f64),
            Value::Float(x) => *x,
            _ => None,
        }
    }

    fn int_binary(&mut self, op: BinOp, x: &Dim, y: &Dim, span: Span) -> Value {
        let r = match op {
            BinOp::Add => x.add(y),
            BinOp::Sub => x.sub(y),
            BinOp::Mul => x.mul(y),
            BinOp::Div => x.div(y),
            BinOp::Pow => match (x.as_const(), y.as_const()) {
                (Some(a), Some(b)) if b >= 0 => u32::try_from(b)
                    .ok()
                    .and_then(|b| a.checked_pow(b))
                    .map(Dim::konst),
                (Some(a), Some(b)) => return Value::Float(Some((a as f64).powf(b as f64))),
                _ => return self.not_constant(span, "`^` on symbolic dimensions is not supported"),
            },
            BinOp::MatMul => {
                return self.type_mismatch(span, "tensors on both sides of `@`", "ints".into())
            }
            cmp => {
                return match (x.as_const(), y.as_const()) {
                    (Some(a), Some(b)) => Value::Bool(Some(match cmp {
                        BinOp::Lt => a < b,
                        BinOp::Le => a <= b,
                        BinOp::Gt => a > b,
                        BinOp::Ge => a >= b,
                        BinOp::Eq => a == b,
                        _ => a != b,
                    })),
                    _ => Value::Bool(None),
                }
            }
        };
        match r {
            Some(d) => Value::Int(d),
            None => self.report(span, SemaError::Arithmetic { span: span.into() }),
        }
    }

    /// Call a function value with evaluated arguments.
    pub fn call(&mut self, f: Value, args: Vec<ArgVal>, callee_span: Span, span: Span) -> Value {
        match f {
            Value::Unknown => Value::Unknown,
            Value::Builtin(name) => self.builtin(name, args, span),
            Value::Item(r) => match self.modules.item(r) {
                ast::Item::Fn(_) => self.call_fn(r, args, span),
                ast::Item::Layer(l) => {
                    let name = l.name.name.clone();
                    self.report(
                        callee_span,
                        SemaError::NotCallable {
                            what: format!("the layer `{name}`"),
                            span: callee_span.into(),
                            help: Some(format!(
                                "create an instance first: `let {} = {name}[...];`, then call it",
                                super::snake_case(&name)
                            )),
                        },
                    )
                }
                _ => self.report(
                    callee_span,
                    SemaError::NotCallable {
                        what: "a const".into(),
                        span: callee_span.into(),
                        help: None,
                    },
                ),
            },
            Value::Instance(inst) => self.call_instance(&inst, args, span),
            // `repeat(N, Layer[...])`: the instances applied in order.
            Value::List(parts)
                if !parts.is_empty() && parts.iter().all(|p| matches!(p, Value::Instance(_))) =>
            {
                let insts: Vec<_> = parts
                    .into_iter()
                    .filter_map(|p| match p {
                        Value::Instance(i) => Some(i),
                        _ => None,
                    })
                    .collect();
                self.call_chain(&insts, args, span)
            }
            other => {
                let what = other.describe(&self.m);
                self.report(
                    callee_span,
                    SemaError::NotCallable {
                        what,
                        span: callee_span.into(),
                        help: None,
                    },
                )
            }
        }
    }

    /// `base[items]`: instantiate a layer, index a tuple or list, or slice a
    /// tensor. `name` is the `let` name when the brackets are a whole `let`.
    pub fn bracket(
        &mut self,
        env: &mut Env,
        base: Value,
        items: &[ast::BracketItem],
        name: Option<&ast::Ident>,
        span: Span,
    ) -> Value {
        match base {
            Value::Unknown => Value::Unknown,
            Value::Item(r) if matches!(self.modules.item(r), ast::Item::Layer(_)) => {
                self.instantiate(env, r, items, name, span)
            }
            Value::Tensor(t) => self.slice(env, t, items, span),
            Value::Tuple(parts) | Value::List(parts) => {
                let idx = match items {
                    [ast::BracketItem::Expr(e)] => self.expr(env, e),
                    _ => Value::Unknown,
                };
                match idx {
                    Value::Int(d) => {
                        let n = parts.len() as i64;
                        match d.as_const() {
                            Some(i) if (-n..n).contains(&i) => {
                                parts[i.rem_euclid(n) as usize].clone()
                            }
                            _ => self.report(
                                span,
                                SemaError::InvalidValue {
                                    message: format!("index {d} is out of range for {n} elements"),
                                    span: span.into(),
                                    label: "out of range".into(),
                                    help: None,
                                },
                            ),
                        }
                    }
                    Value::Unknown if items.len() == 1 => Value::Unknown,
                    _ => self.report(
                        span,
                        SemaError::TypeMismatch {
                            expected: "one int index".into(),
                            found: format!("{} bracket items", items.len()),
                            span: span.into(),
                            help: None,
                        },
                    ),
                }
            }
            other => {
                let found = other.describe(&self.m);
                self.type_mismatch(span, "a tensor to index or a layer to instantiate", found)
            }
        }
    }

    /// Evaluate a setting (`with` value, initializer, train value) to a
    /// compile-time value. `None` after an error, or when the value is not
    /// known in generic checking.
    pub fn setting(&mut self, env: &mut Env, e: &ast::Expr) -> Option<Spanned> {
        let value = match &e.kind {
            ExprKind::Path(segs) if segs.len() == 1 => match env.lookup(&segs[0].name).is_some()
                || self
                    .modules
                    .get(env.module)
                    .items
                    .contains_key(&segs[0].name)
            {
                true => return self.setting_of_value(env, e),
                false => CVal::Name(segs[0].name.clone()),
            },
            ExprKind::Call { callee, args } => {
                let ExprKind::Path(segs) = &callee.kind else {
                    return self.setting_of_value(env, e);
                };
                let name = segs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join("::");
                let mut out = Vec::new();
                for a in args {
                    out.push(CArg {
                        name: a.name.as_ref().map(|n| (n.name.clone(), n.span)),
                        value: self.setting(env, &a.value)?,
                    });
                }
                CVal::Call(name, out)
            }
            // `[5, 6, 7]` (e.g. `classes`) reads like a tuple of values.
            ExprKind::Tuple(items) | ExprKind::List(items) => {
                let mut out = Vec::new();
                for i in items {
                    out.push(self.setting(env, i)?);
                }
                CVal::Tuple(out)
            }
            _ => return self.setting_of_value(env, e),
        };
        Some(Spanned {
            value,
            span: e.span,
        })
    }

    fn setting_of_value(&mut self, env: &mut Env, e: &ast::Expr) -> Option<Spanned> {
        let v = self.expr(env, e);
        let value = match v {
            Value::Int(d) => match d.as_const() {
                Some(i) => CVal::Int(i),
                None if self.generic => return None,
                None => {
                    self.not_constant(
                        e.span,
                        format!(
                            "this setting must be a known number, not the symbolic dimension {d}"
                        ),
                    );
                    return None;
                }
            },
            Value::Float(Some(x)) => CVal::Float(x),
            Value::Bool(Some(b)) => CVal::Bool(b),
            Value::Str(s) => CVal::Str(s),
            Value::Float(None) | Value::Bool(None) | Value::Unknown => return None,
            other => {
                let found = other.describe(&self.m);
                self.not_constant(
                    e.span,
                    format!("a setting must be a compile-time value, not {found}"),
                );
                return None;
            }
        };
        Some(Spanned {
            value,
            span: e.span,
        })
    }

    /// Evaluate the dims of a written tensor type where every name must
    /// already be bound (param and equilibrium types).
    pub fn eval_type(&mut self, env: &mut Env, t: &ast::TensorType) -> Option<Type> {
        let mut shape = Vec::new();
        let mut ok = true;
        for d in &t.dims {
            match d {
                ast::DimSyntax::Rest(span) => {
                    self.report(
                        *span,
                        SemaError::InvalidStatement {
                            message: "`*` may only stand first in a layer's input or output type"
                                .into(),
                            span: (*span).into(),
                            label: "not allowed here".into(),
                            help: None,
                        },
                    );
                    ok = false;
                }
                ast::DimSyntax::Expr(e) => match self.dim_value(env, e) {
                    Some(d) => shape.push(d),
                    None => ok = false,
                },
            }
        }
        ok.then(|| Type::new(t.dtype.unwrap_or(ast::DType::F32), shape))
    }

    /// A dimension: an int expression (possibly symbolic).
    pub fn dim_value(&mut self, env: &mut Env, e: &ast::Expr) -> Option<Dim> {
        match self.expr(env, e) {
            Value::Int(d) => Some(d),
            Value::Unknown => None,
            other => {
                let found = other.describe(&self.m);
                self.type_mismatch(e.span, "an int dimension", found);
                None
            }
        }
    }

    /// The `param` statement is legal here?
    pub fn in_layer(&self, env: &Env) -> bool {
        env.kind == BodyKind::Layer && !self.layers.is_empty()
    }
}

/// An evaluated call argument.
#[derive(Debug, Clone)]
pub struct ArgVal {
    pub name: Option<ast::Ident>,
    pub value: Value,
    pub span: Span,
}

fn float_binary(op: BinOp, x: Option<f64>, y: Option<f64>) -> Value {
    let (Some(a), Some(b)) = (x, y) else {
        return if op.is_comparison() {
            Value::Bool(None)
        } else {
            Value::Float(None)
        };
    };
    match op {
        BinOp::Add => Value::Float(Some(a + b)),
        BinOp::Sub => Value::Float(Some(a - b)),
        BinOp::Mul | BinOp::MatMul => Value::Float(Some(a * b)),
        BinOp::Div => Value::Float(Some(a / b)),
        BinOp::Pow => Value::Float(Some(a.powf(b))),
        BinOp::Lt => Value::Bool(Some(a < b)),
        BinOp::Le => Value::Bool(Some(a <= b)),
        BinOp::Gt => Value::Bool(Some(a > b)),
        BinOp::Ge => Value::Bool(Some(a >= b)),
        BinOp::Eq => Value::Bool(Some(a == b)),
        BinOp::Ne => Value::Bool(Some(a != b)),
    }
}
