//! Models, layers and fns: signatures, instances and inlining.
//!
//! Guarantees: a call binds positional and named arguments exactly once
//! each (unknown names get a "did you mean"); tensor arguments unify with the
//! declared signature (a bare unbound name in a signature is a symbolic
//! dimension, bound at its first use; `*` binds any leading dimensions);
//! an instance's parameters live under its path, shared by every call.

use super::{BodyKind, Elab, Env, Instance, LayerCtx, ModelBuilder, Value};
use crate::sema::dim::{Dim, DimCmp};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::sema::modules::ItemRef;
use crate::sema::options::suggest;
use crate::source::Span;
use crate::syntax::ast::{self, DimSyntax, ExprKind};

use super::expr::ArgVal;

/// The hint "`f` takes: a, b, c".
fn takes(callee: &str, params: &[(String, bool)]) -> String {
    let names: Vec<&str> = params.iter().map(|p| p.0.as_str()).collect();
    format!("`{callee}` takes: {}", names.join(", "))
}

impl Elab<'_> {
    /// [`Self::bind_args`] for declared parameters.
    pub(super) fn bind_decls(
        &mut self,
        callee: &str,
        kind: &str,
        decls: &[ast::FnParam],
        args: Vec<ArgVal>,
        span: Span,
    ) -> Option<Vec<Option<ArgVal>>> {
        let params: Vec<(String, bool)> = decls
            .iter()
            .map(|p| (p.name.name.clone(), p.default.is_some()))
            .collect();
        self.bind_args(callee, kind, &params, args, span)
    }

    /// A parameter's value and where it came from: its argument, else its
    /// default evaluated in `env` (which holds the parameters before it).
    pub(super) fn arg_or_default(
        &mut self,
        slot: Option<ArgVal>,
        p: &ast::FnParam,
        env: &mut Env,
        span: Span,
    ) -> (Value, Span) {
        match (slot, &p.default) {
            (Some(a), _) => (a.value, a.span),
            (None, Some(d)) => (self.expr(env, d), d.span),
            (None, None) => (Value::Unknown, span),
        }
    }

    /// Match call arguments to declared names. `params` holds each name and
    /// whether it has a default.
    pub fn bind_args(
        &mut self,
        callee: &str,
        kind: &str,
        params: &[(String, bool)],
        args: Vec<ArgVal>,
        span: Span,
    ) -> Option<Vec<Option<ArgVal>>> {
        let mut slots: Vec<Option<ArgVal>> = vec![None; params.len()];
        let mut ok = true;
        let mut positional = 0;
        let count = args.len();
        for a in args {
            let index = match &a.name {
                Some(n) => match params.iter().position(|p| p.0 == n.name) {
                    Some(i) => i,
                    None => {
                        let valid: Vec<&str> = params.iter().map(|p| p.0.as_str()).collect();
                        self.report(
                            n.span,
                            SemaError::UnknownArgument {
                                callee: callee.to_string(),
                                kind: kind.to_string(),
                                name: n.name.clone(),
                                span: n.span.into(),
                                help: suggest(&n.name, &valid)
                                    .or(Some(format!("`{callee}` takes no {kind}s"))),
                            },
                        );
                        ok = false;
                        continue;
                    }
                },
                None => {
                    positional += 1;
                    if positional > params.len() {
                        self.report(
                            a.span,
                            SemaError::ArgumentCount {
                                callee: callee.to_string(),
                                kind: kind.to_string(),
                                expected: format!("at most {}", params.len()),
                                found: count,
                                span: a.span.into(),
                                help: Some(takes(callee, params)),
                            },
                        );
                        ok = false;
                        continue;
                    }
                    positional - 1
                }
            };
            if slots[index].is_some() {
                self.report(
                    a.span,
                    SemaError::DuplicateArgument {
                        callee: callee.to_string(),
                        kind: kind.to_string(),
                        name: params[index].0.clone(),
                        span: a.span.into(),
                    },
                );
                ok = false;
                continue;
            }
            slots[index] = Some(a);
        }
        for (i, (name, has_default)) in params.iter().enumerate() {
            if slots[i].is_none() && !has_default {
                self.report(
                    span,
                    SemaError::MissingArgument {
                        callee: callee.to_string(),
                        kind: kind.to_string(),
                        name: name.clone(),
                        span: span.into(),
                        help: Some(takes(callee, params)),
                    },
                );
                ok = false;
            }
        }
        ok.then_some(slots)
    }

    /// Check a value against a `fn` argument or hyper-parameter type.
    pub(super) fn check_param_type(
        &mut self,
        env: &mut Env,
        callee: &str,
        param: &ast::FnParam,
        v: Value,
        span: Span,
        rest: &mut Option<Vec<Dim>>,
    ) -> Value {
        let (name, ty) = (param.name.name.as_str(), param.ty.as_ref());
        let expected = match ty {
            None => return v,
            Some(ast::ParamType::Tensor(t)) => {
                return match v {
                    Value::Tensor(id) => {
                        let what = format!("argument `{name}` of `{callee}`");
                        // A mismatched argument is reported once, not again inside the body.
                        match self.unify(env, t, id, &what, span, rest) {
                            true => v,
                            false => Value::Unknown,
                        }
                    }
                    Value::Unknown => v,
                    other => self.not_tensor(&other, span),
                };
            }
            Some(ast::ParamType::Int(_)) => "an int",
            Some(ast::ParamType::Float(_)) => "a float",
            Some(ast::ParamType::Bool(_)) => "a bool",
        };
        match (ty, v) {
            (_, Value::Unknown) => Value::Unknown,
            (Some(ast::ParamType::Int(_)), v @ Value::Int(_)) => v,
            (Some(ast::ParamType::Float(_)), v @ Value::Float(_)) => v,
            (Some(ast::ParamType::Float(_)), Value::Int(d)) => match d.as_const() {
                Some(i) => Value::Float(Some(i as f64)),
                None => Value::Float(None),
            },
            (Some(ast::ParamType::Bool(_)), v @ Value::Bool(_)) => v,
            (_, other) => {
                let found = other.describe(&self.m);
                self.report(
                    span,
                    SemaError::ArgumentType {
                        callee: callee.to_string(),
                        name: name.to_string(),
                        expected: expected.into(),
                        found,
                        span: span.into(),
                        help: None,
                    },
                )
            }
        }
    }

    /// Unify a tensor with a written type, binding symbolic names in `env`.
    pub fn unify(
        &mut self,
        env: &mut Env,
        t: &ast::TensorType,
        actual: ValueId,
        what: &str,
        span: Span,
        rest: &mut Option<Vec<Dim>>,
    ) -> bool {
        let found = self.ty(actual).clone();
        let mismatch =
            |this: &mut Self, env: &mut Env, rest: &Option<Vec<Dim>>, detail: Option<String>| {
                let expected = this.describe_type(env, t, rest);
                this.report(
                    span,
                    SemaError::Signature {
                        what: what.to_string(),
                        expected,
                        found: found.to_string(),
                        span: span.into(),
                        declared: (t.span.file == span.file).then(|| t.span.into()),
                        help: detail,
                    },
                );
                false
            };
        let dtype = t.dtype.unwrap_or(ast::DType::F32);
        if dtype != found.dtype {
            return mismatch(
                self,
                env,
                rest,
                Some(format!(
                    "element types differ: {} and {}",
                    dtype.name(),
                    found.dtype.name()
                )),
            );
        }
        let has_rest = matches!(t.dims.first(), Some(DimSyntax::Rest(_)));
        let fixed = &t.dims[usize::from(has_rest)..];
        if found.rank() < fixed.len() || (!has_rest && found.rank() != fixed.len()) {
            let detail = format!(
                "expected rank {}{}, found rank {}",
                if has_rest { "at least " } else { "" },
                fixed.len(),
                found.rank()
            );
            return mismatch(self, env, rest, Some(detail));
        }
        let lead = found.rank() - fixed.len();
        if has_rest {
            let leading = found.shape[..lead].to_vec();
            match rest {
                Some(prev)
                    if prev.len() != leading.len()
                        || prev
                            .iter()
                            .zip(&leading)
                            .any(|(a, b)| a.compare(b) == DimCmp::Different) =>
                {
                    return mismatch(
                        self,
                        env,
                        rest,
                        Some("the leading dimensions `*` differ from another argument's".into()),
                    );
                }
                Some(_) => {}
                None => *rest = Some(leading),
            }
        }
        // First bind bare names seen for the first time, then check all.
        for (d, actual_dim) in fixed.iter().zip(&found.shape[lead..]) {
            if let Some(name) = self.unbound_symbol(env, d) {
                env.bind(&name, Value::Int(actual_dim.clone()));
            }
        }
        for (d, actual_dim) in fixed.iter().zip(&found.shape[lead..]) {
            let DimSyntax::Expr(e) = d else {
                let s = d_span(d);
                self.report(
                    s,
                    SemaError::InvalidStatement {
                        message: "`*` may only stand first in a type".into(),
                        span: s.into(),
                        label: "not first".into(),
                        help: None,
                    },
                );
                return false;
            };
            if let Some(want) = self.dim_value(env, e) {
                if want.compare(actual_dim) == DimCmp::Different {
                    let detail = format!(
                        "dimension `{}` is {want} but the value has {actual_dim}",
                        crate::sema::print::expr_text(e)
                    );
                    return mismatch(self, env, rest, Some(detail));
                }
            }
        }
        true
    }

    /// A bare name in a signature that is bound nowhere yet.
    fn unbound_symbol(&self, env: &Env, d: &DimSyntax) -> Option<String> {
        let DimSyntax::Expr(ast::Expr {
            kind: ExprKind::Path(p),
            ..
        }) = d
        else {
            return None;
        };
        let [name] = p.as_slice() else { return None };
        let module = self.modules.get(env.module);
        let known = env.lookup(&name.name).is_some()
            || module.items.contains_key(&name.name)
            || module.imports.contains_key(&name.name);
        (!known).then(|| name.name.clone())
    }

    /// A written type with the values known so far (for messages).
    fn describe_type(
        &mut self,
        env: &mut Env,
        t: &ast::TensorType,
        rest: &Option<Vec<Dim>>,
    ) -> String {
        let mut parts = Vec::new();
        for d in &t.dims {
            match d {
                DimSyntax::Rest(_) => match rest {
                    Some(r) if !r.is_empty() => parts.extend(r.iter().map(|d| d.to_string())),
                    Some(_) => {}
                    None => parts.push("*".into()),
                },
                DimSyntax::Expr(e) => {
                    let known = match &e.kind {
                        ExprKind::Path(p) if p.len() == 1 => env.lookup(&p[0].name).cloned(),
                        ExprKind::Int(i) => Some(Value::Int(Dim::konst(*i))),
                        _ => None,
                    };
                    parts.push(match known {
                        Some(Value::Int(d)) => d.to_string(),
                        _ => crate::sema::print::expr_text(e),
                    });
                }
            }
        }
        let prefix = match t.dtype {
            Some(ast::DType::F32) | None => "",
            Some(d) => d.name(),
        };
        format!("{prefix}[{}]", parts.join(", "))
    }

    pub fn call_fn(&mut self, r: ItemRef, args: Vec<ArgVal>, span: Span) -> Value {
        let ast::Item::Fn(f) = self.modules.item(r) else {
            return Value::Unknown;
        };
        let name = f.name.name.clone();
        self.with_item(r, &name, span, |this| {
            let Some(slots) = this.bind_decls(&name, "argument", &f.params, args, span) else {
                return Value::Unknown;
            };
            let mut env = Env::new(r.module, BodyKind::Fn);
            let mut rest = None;
            for (p, slot) in f.params.iter().zip(slots) {
                let (v, at) = this.arg_or_default(slot, p, &mut env, span);
                let v = this.check_param_type(&mut env, &name, p, v, at, &mut rest);
                this.note_binding(&p.name, &v);
                env.bind(&p.name.name, v);
            }
            this.block(&mut env, &f.body)
        })
        .unwrap_or(Value::Unknown)
    }

    pub fn call_instance(&mut self, inst: &Instance, args: Vec<ArgVal>, span: Span) -> Value {
        inst.called.set(true);
        let ast::Item::Layer(l) = self.modules.item(inst.layer) else {
            return Value::Unknown;
        };
        let name = l.name.name.clone();
        self.with_item(inst.layer, &name, span, |this| {
            let mut env = Env::new(inst.layer.module, BodyKind::Layer);
            for (n, v) in &inst.hyper {
                env.bind(n, v.clone());
            }
            let params: Vec<(String, bool)> = l
                .inputs
                .iter()
                .map(|i| (i.name.name.clone(), false))
                .collect();
            let Some(slots) = this.bind_args(&name, "input", &params, args, span) else {
                return Value::Unknown;
            };
            this.layers.push(LayerCtx {
                prefix: inst.path.clone(),
                ..Default::default()
            });
            let mut rest = None;
            for (input, slot) in l.inputs.iter().zip(slots) {
                let Some(a) = slot else { continue };
                let v = match a.value {
                    Value::Tensor(id) => {
                        let what = format!("input `{}` of `{name}`", input.name.name);
                        match this.unify(&mut env, &input.ty, id, &what, a.span, &mut rest) {
                            true => Value::Tensor(id),
                            false => Value::Unknown,
                        }
                    }
                    Value::Unknown => Value::Unknown,
                    other => this.not_tensor(&other, a.span),
                };
                this.note_binding(&input.name, &v);
                env.bind(&input.name.name, v);
            }
            let out = this.block(&mut env, &l.body);
            this.check_output(&mut env, l, &out, &mut rest);
            this.layers.pop();
            out
        })
        .unwrap_or(Value::Unknown)
    }

    /// Check a layer's or model's value against its declared `-> type`.
    fn check_output(
        &mut self,
        env: &mut Env,
        l: &ast::LayerItem,
        out: &Value,
        rest: &mut Option<Vec<Dim>>,
    ) {
        let Some(declared) = &l.output else { return };
        let parts: Vec<Value> = match out {
            Value::Tuple(p) if declared.len() > 1 => p.clone(),
            Value::Unknown => return,
            v if declared.len() == 1 => vec![v.clone()],
            other => {
                let found = other.describe(&self.m);
                let span = l.body.tail.as_ref().map_or(l.body.span, |t| t.span);
                self.report(
                    span,
                    SemaError::TypeMismatch {
                        expected: format!("a tuple of {} tensors, as declared", declared.len()),
                        found,
                        span: span.into(),
                        help: None,
                    },
                );
                return;
            }
        };
        if parts.len() != declared.len() {
            let span = l.body.span;
            self.report(
                span,
                SemaError::TypeMismatch {
                    expected: format!("a tuple of {} tensors, as declared", declared.len()),
                    found: format!("a tuple of {}", parts.len()),
                    span: span.into(),
                    help: None,
                },
            );
            return;
        }
        let span = l.body.tail.as_ref().map_or(l.body.span, |t| t.span);
        for (t, v) in declared.iter().zip(parts) {
            match v {
                Value::Tensor(id) => {
                    self.unify(
                        env,
                        t,
                        id,
                        &format!("the result of `{}`", l.name.name),
                        span,
                        rest,
                    );
                }
                Value::Unknown => {}
                other => {
                    self.not_tensor(&other, span);
                }
            }
        }
    }

    /// Elaborate a model into HIR (`None` if it had errors).
    pub fn model(&mut self, r: ItemRef) -> Option<Model> {
        let ast::Item::Layer(l) = self.modules.item(r) else {
            return None;
        };
        let errors_before = self.error_count();
        self.m = ModelBuilder::default();
        self.m.blocks.push(Block::default());
        let mut env = Env::new(r.module, BodyKind::Layer);
        self.layers.push(LayerCtx::default());
        self.used.insert(r);
        self.call_stack.push(r);
        let mut inputs = Vec::new();
        for (i, input) in l.inputs.iter().enumerate() {
            if let Some(ty) = self.signature_type(&mut env, &input.ty, true) {
                inputs.push(ModelInput {
                    name: input.name.name.clone(),
                    ty: ty.clone(),
                });
                let v = self.emit1(InstKind::Input(i), ty, input.span);
                self.note_binding(&input.name, &v);
                env.bind(&input.name.name, v);
            }
        }
        let out = self.block(&mut env, &l.body);
        let mut rest = None;
        self.check_output(&mut env, l, &out, &mut rest);
        self.call_stack.pop();
        self.pop_layer();
        let outputs: Vec<ValueId> = match &out {
            Value::Tensor(v) => vec![*v],
            Value::Tuple(parts) => parts
                .iter()
                .filter_map(|p| {
                    if let Value::Tensor(v) = p {
                        Some(*v)
                    } else {
                        None
                    }
                })
                .collect(),
            Value::Unknown => Vec::new(),
            other => {
                let found = other.describe(&self.m);
                let span = l.body.tail.as_ref().map_or(l.body.span, |t| t.span);
                self.not_tensor(&Value::Str(found), span);
                Vec::new()
            }
        };
        if self.error_count() > errors_before || inputs.len() != l.inputs.len() {
            return None;
        }
        let m = std::mem::take(&mut self.m);
        Some(Model {
            name: l.name.name.clone(),
            span: l.name.span,
            inputs,
            output_types: outputs.iter().map(|o| m.ty(*o).clone()).collect(),
            params: m.params,
            values: m.values,
            body: m.blocks.into_iter().next().unwrap_or_default(),
            outputs,
        })
    }

    /// A model's or generic layer's input type: bare unbound names become
    /// symbolic dimensions (`rigid` for a model's data dimensions).
    fn signature_type(&mut self, env: &mut Env, t: &ast::TensorType, rigid: bool) -> Option<Type> {
        let mut shape = Vec::new();
        for (i, d) in t.dims.iter().enumerate() {
            match d {
                DimSyntax::Rest(s) if i == 0 && !rigid => shape.push(Dim::sym("*", false)),
                DimSyntax::Rest(s) => {
                    let s = *s;
                    self.report(
                        s,
                        SemaError::InvalidStatement {
                            message: if rigid {
                                "a model's inputs have fixed ranks: `*` is only for layers".into()
                            } else {
                                "`*` may only stand first".into()
                            },
                            span: s.into(),
                            label: "not allowed here".into(),
                            help: None,
                        },
                    );
                    return None;
                }
                DimSyntax::Expr(e) => {
                    if let Some(name) = self.unbound_symbol(env, d) {
                        let dim = Dim::sym(&name, rigid);
                        env.bind(&name, Value::Int(dim.clone()));
                        shape.push(dim);
                    } else {
                        shape.push(self.dim_value(env, e)?);
                    }
                }
            }
        }
        Some(Type::new(t.dtype.unwrap_or(ast::DType::F32), shape))
    }

    /// Check a layer that no model uses, with abstract hyper-parameters.
    pub fn generic_layer(&mut self, r: ItemRef) {
        let ast::Item::Layer(l) = self.modules.item(r) else {
            return;
        };
        let mut env = self.begin_generic(r, BodyKind::Layer);
        for p in &l.hyper {
            let v = abstract_scalar(&p.name, p.ty.as_ref()).unwrap_or(Value::Unknown);
            self.note_binding(&p.name, &v);
            env.bind(&p.name.name, v);
        }
        self.layers.push(LayerCtx::default());
        self.call_stack.push(r);
        for (i, input) in l.inputs.iter().enumerate() {
            let v = match self.signature_type(&mut env, &input.ty, false) {
                Some(ty) => self.emit1(InstKind::Input(i), ty, input.span),
                None => Value::Unknown,
            };
            self.note_binding(&input.name, &v);
            env.bind(&input.name.name, v);
        }
        let out = self.block(&mut env, &l.body);
        let mut rest = Some(vec![Dim::sym("*", false)]);
        self.check_output(&mut env, l, &out, &mut rest);
        self.end_generic();
    }

    /// Check a fn that nothing calls, with abstract arguments.
    pub fn generic_fn(&mut self, r: ItemRef) {
        let ast::Item::Fn(f) = self.modules.item(r) else {
            return;
        };
        let mut env = self.begin_generic(r, BodyKind::Fn);
        self.layers.push(LayerCtx::default());
        self.call_stack.push(r);
        for (i, p) in f.params.iter().enumerate() {
            let v = match (abstract_scalar(&p.name, p.ty.as_ref()), &p.ty) {
                (Some(v), _) => v,
                (None, Some(ast::ParamType::Tensor(t))) => {
                    match self.signature_type(&mut env, t, false) {
                        Some(ty) => self.emit1(InstKind::Input(i), ty, p.span),
                        None => Value::Unknown,
                    }
                }
                (None, _) => Value::Unknown,
            };
            self.note_binding(&p.name, &v);
            env.bind(&p.name.name, v);
        }
        self.block(&mut env, &f.body);
        self.end_generic();
    }

    /// Start checking an item generically: a fresh model with one block,
    /// and the item's environment.
    fn begin_generic(&mut self, r: ItemRef, kind: BodyKind) -> Env {
        self.generic = true;
        self.m = ModelBuilder::default();
        self.m.blocks.push(Block::default());
        Env::new(r.module, kind)
    }

    /// Leave the item [`Self::begin_generic`] started (its layer context
    /// and call-stack entry pushed after the hyper-parameters are bound).
    fn end_generic(&mut self) {
        self.call_stack.pop();
        self.pop_layer();
        self.generic = false;
    }
}

/// The abstract value of a scalar hyper-parameter or argument in a generic
/// check (`None` for a tensor or an untyped one): an int is a symbolic
/// dimension named after it.
fn abstract_scalar(name: &ast::Ident, ty: Option<&ast::ParamType>) -> Option<Value> {
    match ty? {
        ast::ParamType::Int(_) => Some(Value::Int(Dim::sym(&name.name, false))),
        ast::ParamType::Float(_) => Some(Value::Float(None)),
        ast::ParamType::Bool(_) => Some(Value::Bool(None)),
        ast::ParamType::Tensor(_) => None,
    }
}

fn d_span(d: &DimSyntax) -> Span {
    match d {
        DimSyntax::Rest(s) => *s,
        DimSyntax::Expr(e) => e.span,
    }
}
