//! Layer instances: `Layer[...]` and `repeat(N, Layer[...])`.
//!
//! Owns the creation of instances (hyper-parameters bound and checked once,
//! a checkpoint path from the `let` name, `layer_k` when anonymous) and of
//! repeated instances. Guarantees: `let blocks = repeat(N, Block[d]);`
//! makes N distinct instances with paths `blocks.0` .. `blocks.{N-1}`
//! (N a compile-time int >= 1), bound as a list: `blocks[i]` is one of
//! them and `blocks(x)` applies them in order, each checked with the
//! types the previous one produced (static shapes); an error while
//! checking one element is followed by a note at the repeated element
//! naming its path.

use std::rc::Rc;

use super::expr::ArgVal;
use super::{BodyKind, Elab, Env, Instance, Value};
use crate::sema::error::SemaError;
use crate::sema::modules::ItemRef;
use crate::source::Span;
use crate::syntax::ast::{self, ExprKind};

/// Bound hyper-parameters of an instance, by name.
type Hyper = Vec<(String, Value)>;

/// The most repetitions `repeat` accepts (a guard against runaway
/// expansion: every element is inlined at each use).
const MAX_REPEAT: i64 = 1024;

impl Elab<'_> {
    /// `Layer[items]`: the layer's name and its bound hyper-parameters
    /// (`None` after an error, reported).
    fn instance_hyper(
        &mut self,
        env: &mut Env,
        r: ItemRef,
        items: &[ast::BracketItem],
        span: Span,
    ) -> Option<(String, Hyper)> {
        let ast::Item::Layer(l) = self.modules.item(r) else {
            return None;
        };
        let layer_name = l.name.name.clone();
        let mut args = Vec::new();
        for it in items {
            match it {
                ast::BracketItem::Expr(e) => args.push(ArgVal {
                    name: None,
                    value: self.expr(env, e),
                    span: e.span,
                }),
                ast::BracketItem::Named { name, value, .. } => args.push(ArgVal {
                    name: Some(name.clone()),
                    value: self.expr(env, value),
                    span: value.span,
                }),
                other => {
                    self.report(
                        other.span(),
                        SemaError::InvalidValue {
                            message: format!("a slice is not a hyper-parameter of `{layer_name}`"),
                            span: other.span().into(),
                            label: "not a value".into(),
                            help: None,
                        },
                    );
                    return None;
                }
            }
        }
        let slots = self.bind_decls(&layer_name, "hyper-parameter", &l.hyper, args, span)?;
        let mut henv = Env::new(r.module, BodyKind::Fn);
        let mut hyper = Vec::new();
        let mut ok = true;
        for (p, slot) in l.hyper.iter().zip(slots) {
            let (v, at) = self.arg_or_default(slot, p, &mut henv, span);
            if let Some(ast::ParamType::Tensor(t)) = &p.ty {
                self.report(
                    t.span,
                    SemaError::InvalidStatement {
                        message: "hyper-parameters are compile-time ints, floats or bools".into(),
                        span: t.span.into(),
                        label: "a tensor type".into(),
                        help: Some("pass tensors as inputs in `(...)`".into()),
                    },
                );
                ok = false;
                continue;
            }
            let v = self.check_param_type(&mut henv, &layer_name, p, v, at, &mut None);
            if matches!(v, Value::Tensor(_) | Value::Instance(_)) {
                self.not_constant(
                    at,
                    format!(
                        "hyper-parameter `{}` of `{layer_name}` must be a compile-time value",
                        p.name.name
                    ),
                );
                ok = false;
            }
            self.note_binding(&p.name, &v);
            henv.bind(&p.name.name, v.clone());
            hyper.push((p.name.name.clone(), v));
        }
        ok.then_some((layer_name, hyper))
    }

    /// `Layer[items]`, named after its `let` (`name`) or numbered.
    pub fn instantiate(
        &mut self,
        env: &mut Env,
        r: ItemRef,
        items: &[ast::BracketItem],
        name: Option<&ast::Ident>,
        span: Span,
    ) -> Value {
        let Some((layer_name, hyper)) = self.instance_hyper(env, r, items, span) else {
            return Value::Unknown;
        };
        let Some(ctx) = self.layers.last_mut() else {
            return Value::Unknown;
        };
        let path = match name {
            Some(n) => {
                if !self.claim_instance_name(n) {
                    return Value::Unknown;
                }
                let Some(ctx) = self.layers.last() else {
                    return Value::Unknown;
                };
                ctx.path(&n.name)
            }
            None => {
                let snake = super::snake_case(&layer_name);
                let k = *ctx.anon.get(&snake).unwrap_or(&0);
                ctx.anon.insert(snake.clone(), k + 1);
                ctx.path(&format!("{snake}_{k}"))
            }
        };
        let inst = Rc::new(Instance {
            layer: r,
            layer_name,
            hyper,
            path,
            span,
            called: Default::default(),
        });
        if let (Some(n), Some(ctx)) = (name, self.layers.last_mut()) {
            ctx.instances.push((n.name.clone(), inst.clone()));
        }
        Value::Instance(inst)
    }

    /// Take `n` as an instance or parameter name of the current body;
    /// false (reported) when it is taken.
    fn claim_instance_name(&mut self, n: &ast::Ident) -> bool {
        let Some(ctx) = self.layers.last_mut() else {
            return false;
        };
        let Some(prev) = ctx.names.insert(n.name.clone(), n.span) else {
            return true;
        };
        // The clash is the error; the earlier instance's later non-use is a
        // consequence, not a second problem.
        for (other, inst) in &ctx.instances {
            if *other == n.name || other.starts_with(&format!("{}.", n.name)) {
                inst.called.set(true);
            }
        }
        self.duplicate(n, prev);
        false
    }

    /// `let name = repeat(N, Layer[...]);`: `Some` when `value` is such a
    /// call (and `repeat` is not a name of the program's own).
    pub fn let_repeat(
        &mut self,
        env: &mut Env,
        name: &ast::Ident,
        value: &ast::Expr,
    ) -> Option<Value> {
        let ExprKind::Call { callee, args } = &value.kind else {
            return None;
        };
        let ExprKind::Path(segs) = &callee.kind else {
            return None;
        };
        let shadowed = env.lookup("repeat").is_some()
            || self.modules.get(env.module).items.contains_key("repeat");
        if segs.len() != 1 || segs[0].name != "repeat" || shadowed {
            return None;
        }
        Some(self.repeat(env, name, args, value.span))
    }

    fn repeat(&mut self, env: &mut Env, name: &ast::Ident, args: &[ast::Arg], span: Span) -> Value {
        let by_name = |a: &ast::Arg| a.name.as_ref().map(|n| n.name.clone());
        let (count_arg, layer_arg) = match args {
            [a, b]
                if by_name(a).as_deref() == Some("layer") && by_name(b).as_deref() == Some("n") =>
            {
                (b, a)
            }
            [a, b]
                if by_name(a).is_none_or(|n| n == "n")
                    && by_name(b).is_none_or(|n| n == "layer") =>
            {
                (a, b)
            }
            _ => {
                return self.report(
                    span,
                    SemaError::InvalidValue {
                        message: "`repeat` takes a count and a layer instance".into(),
                        span: span.into(),
                        label: format!("{} argument(s)", args.len()),
                        help: Some(format!("write `let {} = repeat(4, Block[d]);`", name.name)),
                    },
                )
            }
        };
        let count = match self.expr(env, &count_arg.value) {
            Value::Int(d) => d.as_const(),
            Value::Unknown => return Value::Unknown,
            _ => None,
        };
        let count = match count {
            Some(k) if (1..=MAX_REPEAT).contains(&k) => k as usize,
            Some(k) => {
                let at = count_arg.value.span;
                return self.report(
                    at,
                    SemaError::InvalidValue {
                        message: format!(
                            "`repeat` needs between 1 and {MAX_REPEAT} repetitions, not {k}"
                        ),
                        span: at.into(),
                        label: "out of range".into(),
                        help: None,
                    },
                );
            }
            None => {
                let at = count_arg.value.span;
                return self.report(
                    at,
                    SemaError::NotConstant {
                        message: "the count of `repeat` must be a compile-time int".into(),
                        span: at.into(),
                        help: Some("use an int, a `const`, or an int hyper-parameter".into()),
                    },
                );
            }
        };
        let element = &layer_arg.value;
        let modules = self.modules;
        let is_layer = |r: ItemRef| matches!(modules.item(r), ast::Item::Layer(l) if l.kind == ast::LayerKind::Layer);
        let layer = match &element.kind {
            ExprKind::Bracket { base, items } => match self.expr(env, base) {
                Value::Item(r) if is_layer(r) => Some((r, items)),
                Value::Unknown => return Value::Unknown,
                _ => None,
            },
            _ => None,
        };
        let Some((r, items)) = layer else {
            return self.report(
                element.span,
                SemaError::InvalidValue {
                    message: "`repeat` repeats a layer with its hyper-parameters".into(),
                    span: element.span.into(),
                    label: "not `Layer[...]`".into(),
                    help: Some(
                        "write e.g. `repeat(4, Block[d])` or `repeat(2, nn::Linear[d, d])`".into(),
                    ),
                },
            );
        };
        let Some((layer_name, hyper)) = self.instance_hyper(env, r, items, element.span) else {
            return Value::Unknown;
        };
        if !self.claim_instance_name(name) {
            return Value::Unknown;
        }
        let Some(ctx) = self.layers.last_mut() else {
            return Value::Unknown;
        };
        let base = ctx.path(&name.name);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let inst = Rc::new(Instance {
                layer: r,
                layer_name: layer_name.clone(),
                hyper: hyper.clone(),
                path: format!("{base}.{i}"),
                span: element.span,
                called: Default::default(),
            });
            ctx.instances
                .push((format!("{}.{i}", name.name), inst.clone()));
            out.push(Value::Instance(inst));
        }
        Value::List(out)
    }

    /// `blocks(x)` on a list of instances: each applied to the previous
    /// one's result, in order.
    pub fn call_chain(&mut self, insts: &[Rc<Instance>], args: Vec<ArgVal>, span: Span) -> Value {
        let mut current = args;
        let mut out = Value::Unknown;
        for (i, inst) in insts.iter().enumerate() {
            let errors_before = self.error_count();
            out = self.call_instance(inst, current, span);
            if self.error_count() > errors_before {
                self.errors.push((
                    inst.span,
                    SemaError::InRepetition {
                        path: inst.path.clone(),
                        index: i,
                        count: insts.len(),
                        span: inst.span.into(),
                    },
                ));
                return Value::Unknown;
            }
            // The next element reads this one's result: a mismatch is
            // labelled at the repeated element.
            current = vec![ArgVal {
                name: None,
                value: out.clone(),
                span: inst.span,
            }];
        }
        out
    }
}
