//! Elaboration: checking a model by evaluating it abstractly.
//!
//! Owns the walk that turns a model's AST into HIR: names are looked up in
//! scopes, fns are inlined and layers instantiated at each use (so every
//! call site is checked with its own types), parameters are registered under
//! their checkpoint paths, and every tensor operation is emitted with its
//! inferred type. Guarantees: an error is reported once at the offending
//! span and yields [`Value::Unknown`], which silences follow-on errors, so
//! every independent error of a file is reported; no user input panics.

pub mod expr;
mod layer;
mod loss;
mod stmt;

use std::collections::HashMap;
use std::rc::Rc;

use crate::sema::dim::{Dim, DimCmp};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::sema::modules::{ItemRef, ModuleId, Modules};
use crate::source::Span;
use crate::syntax::ast;

/// A value during elaboration.
#[derive(Debug, Clone)]
pub enum Value {
    /// The result of an error, or a value unknown in generic checking:
    /// every use of it is accepted silently.
    Unknown,
    Int(Dim),
    /// `None`: a float not known in generic checking.
    Float(Option<f64>),
    Bool(Option<bool>),
    Str(String),
    Tensor(ValueId),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Item(ItemRef),
    Module(ModuleId),
    Builtin(crate::sema::builtins::Builtin),
    Instance(Rc<Instance>),
}

/// A layer instance: a layer with its hyper-parameters and checkpoint path.
#[derive(Debug)]
pub struct Instance {
    pub layer: ItemRef,
    pub layer_name: String,
    pub hyper: Vec<(String, Value)>,
    pub path: String,
    pub span: Span,
    /// Set at the first call: an instance never called has no parameters.
    pub called: std::cell::Cell<bool>,
}

impl Value {
    /// A short form for editors: `[B, 256]` for a tensor, `int = 4`.
    pub fn summary(&self, m: &ModelBuilder) -> String {
        match self {
            Value::Tensor(v) => m.ty(*v).to_string(),
            Value::Int(d) => format!("int = {d}"),
            Value::Float(Some(x)) => format!("float = {x:?}"),
            Value::Float(None) => "float".into(),
            Value::Bool(Some(b)) => format!("bool = {b}"),
            Value::Bool(None) => "bool".into(),
            Value::Tuple(parts) => format!(
                "({})",
                parts
                    .iter()
                    .map(|p| p.summary(m))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::Instance(i) => format!("instance `{}` of layer `{}`", i.path, i.layer_name),
            other => other.describe(m),
        }
    }

    pub fn describe(&self, m: &ModelBuilder) -> String {
        match self {
            Value::Unknown => "an unknown value".into(),
            Value::Int(d) => format!("the int {d}"),
            Value::Float(Some(x)) => format!("the float {x:?}"),
            Value::Float(None) => "a float".into(),
            Value::Bool(Some(b)) => format!("the bool {b}"),
            Value::Bool(None) => "a bool".into(),
            Value::Str(s) => format!("the string {s:?}"),
            Value::Tensor(v) => format!("a tensor {}", m.ty(*v)),
            Value::Tuple(t) => format!("a tuple of {}", t.len()),
            Value::List(l) => format!("a list of {}", l.len()),
            Value::Item(_) => "a definition".into(),
            Value::Module(_) => "a module".into(),
            Value::Builtin(b) => format!("the built-in `{}`", b.name()),
            Value::Instance(i) => format!("the instance `{}` of `{}`", i.path, i.layer_name),
        }
    }
}

/// The model being built: values, parameters, and the open blocks.
#[derive(Debug, Default)]
pub struct ModelBuilder {
    pub values: Vec<ValueInfo>,
    pub params: Vec<Param>,
    pub param_index: HashMap<String, usize>,
    /// Open blocks: the model body, then nested equilibrium bodies.
    pub blocks: Vec<Block>,
}

impl ModelBuilder {
    pub fn ty(&self, v: ValueId) -> &Type {
        &self.values[v.0 as usize].ty
    }

    pub fn emit(&mut self, kind: InstKind, tys: Vec<Type>, span: Span) -> Vec<ValueId> {
        let results: Vec<ValueId> = tys
            .into_iter()
            .map(|ty| {
                self.values.push(ValueInfo { ty, span });
                ValueId(self.values.len() as u32 - 1)
            })
            .collect();
        if self.blocks.is_empty() {
            self.blocks.push(Block::default());
        }
        if let Some(b) = self.blocks.last_mut() {
            b.insts.push(Inst {
                results: results.clone(),
                kind,
                span,
            });
        }
        results
    }
}

/// What kind of body is being elaborated (decides where `param` is legal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Fn,
    Layer,
}

/// The instance context of a layer body: where its parameters live.
#[derive(Debug, Default)]
pub struct LayerCtx {
    /// Checkpoint path prefix, e.g. `block.attn` ("" for a model).
    pub prefix: String,
    /// Next index of anonymous instances, per layer snake name.
    pub anon: HashMap<String, usize>,
    /// Instance and parameter names taken in this body.
    pub names: HashMap<String, Span>,
    /// Named instances created in this body (to warn about unused ones).
    pub instances: Vec<(String, Rc<Instance>)>,
}

impl LayerCtx {
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}

/// Lexical scopes of one body.
#[derive(Debug)]
pub struct Env {
    pub module: ModuleId,
    pub kind: BodyKind,
    pub scopes: Vec<HashMap<String, Value>>,
}

impl Env {
    pub fn new(module: ModuleId, kind: BodyKind) -> Env {
        Env {
            module,
            kind,
            scopes: vec![HashMap::new()],
        }
    }

    pub fn bind(&mut self, name: &str, v: Value) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_string(), v);
        }
    }

    pub fn lookup(&self, name: &str) -> Option<&Value> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    pub fn local_names(&self) -> Vec<String> {
        self.scopes.iter().flat_map(|s| s.keys().cloned()).collect()
    }
}

/// State of a module-level `const`.
#[derive(Debug, Clone)]
enum ConstState {
    Evaluating,
    Done(Value),
}

/// The elaborator of one compilation.
pub struct Elab<'a> {
    pub modules: &'a Modules,
    pub errors: Vec<(Span, SemaError)>,
    consts: HashMap<ItemRef, ConstState>,
    pub m: ModelBuilder,
    /// Instance contexts of the layer bodies being elaborated.
    pub layers: Vec<LayerCtx>,
    /// fns and layers being inlined, to reject recursion.
    pub call_stack: Vec<ItemRef>,
    /// Items elaborated at least once (others are checked generically).
    pub used: std::collections::HashSet<ItemRef>,
    /// True while checking an unused layer or fn with abstract arguments.
    pub generic: bool,
    /// What each binding held, by the span of its name (once per call site
    /// of the body it is in): read by the language server's hover.
    pub bindings: Vec<(Span, String)>,
}

/// Upper bound on nested inlining, as a guard against runaway expansion.
const MAX_INLINE_DEPTH: usize = 64;

impl<'a> Elab<'a> {
    pub fn new(modules: &'a Modules) -> Elab<'a> {
        Elab {
            modules,
            errors: Vec::new(),
            consts: HashMap::new(),
            m: ModelBuilder::default(),
            layers: Vec::new(),
            call_stack: Vec::new(),
            used: Default::default(),
            generic: false,
            bindings: Vec::new(),
        }
    }

    /// Report an error; returns `Value::Unknown` for convenience.
    pub fn report(&mut self, at: Span, e: SemaError) -> Value {
        self.errors.push((at, e));
        Value::Unknown
    }

    pub fn ty(&self, v: ValueId) -> &Type {
        self.m.ty(v)
    }

    /// Record what the name `name` is bound to (for hover in editors).
    pub fn note_binding(&mut self, name: &ast::Ident, v: &Value) {
        let text = v.summary(&self.m);
        self.bindings.push((name.span, text));
    }

    pub fn emit1(&mut self, kind: InstKind, ty: Type, span: Span) -> Value {
        let ids = self.m.emit(kind, vec![ty], span);
        Value::Tensor(ids[0])
    }

    /// Evaluate a module-level const (once; cycles are errors).
    pub fn const_value(&mut self, r: ItemRef, use_span: Span) -> Value {
        match self.consts.get(&r) {
            Some(ConstState::Done(v)) => return v.clone(),
            Some(ConstState::Evaluating) => {
                let name = match self.modules.item(r) {
                    ast::Item::Const(c) => c.name.name.clone(),
                    _ => String::new(),
                };
                return self.report(
                    use_span,
                    SemaError::ConstCycle {
                        name,
                        span: use_span.into(),
                    },
                );
            }
            None => {}
        }
        let ast::Item::Const(c) = self.modules.item(r) else {
            return Value::Unknown;
        };
        self.consts.insert(r, ConstState::Evaluating);
        let mut env = Env::new(r.module, BodyKind::Fn);
        let v = self.expr(&mut env, &c.value);
        let v = match v {
            Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Unknown => v,
            other => {
                let found = other.describe(&self.m);
                self.report(
                    c.value.span,
                    SemaError::NotConstant {
                        message: format!("a const must be an int, float or bool, not {found}"),
                        span: c.value.span.into(),
                        help: None,
                    },
                )
            }
        };
        self.note_binding(&c.name, &v);
        self.consts.insert(r, ConstState::Done(v.clone()));
        v
    }

    /// Check that a tensor has exactly the expected type (for signatures).
    pub fn types_match(&self, expected: &Type, found: &Type) -> bool {
        expected.dtype == found.dtype
            && expected.rank() == found.rank()
            && expected
                .shape
                .iter()
                .zip(&found.shape)
                .all(|(a, b)| a.compare(b) != DimCmp::Different)
    }

    /// Run `f` with `item` on the inlining stack; reports recursion.
    pub fn with_item<T>(
        &mut self,
        item: ItemRef,
        name: &str,
        span: Span,
        f: impl FnOnce(&mut Self) -> T,
    ) -> Option<T> {
        if self.call_stack.contains(&item) || self.call_stack.len() >= MAX_INLINE_DEPTH {
            self.report(
                span,
                SemaError::Recursive {
                    name: name.to_string(),
                    span: span.into(),
                },
            );
            return None;
        }
        if !self.generic {
            self.used.insert(item);
        }
        self.call_stack.push(item);
        let out = f(self);
        self.call_stack.pop();
        Some(out)
    }

    /// Close a layer body: warn about named instances that were never
    /// called (their parameters would silently not exist).
    pub fn pop_layer(&mut self) {
        let Some(ctx) = self.layers.pop() else { return };
        if self.generic {
            return;
        }
        for (name, inst) in ctx.instances {
            if !inst.called.get() {
                self.errors.push((
                    inst.span,
                    SemaError::Unused {
                        name,
                        detail: "this instance is never called, so it has no parameters".into(),
                        span: inst.span.into(),
                    },
                ));
            }
        }
    }

    /// Every name visible from `env` (for "did you mean" hints).
    pub fn visible_names(&self, env: &Env) -> Vec<String> {
        let mut names = env.local_names();
        let module = self.modules.get(env.module);
        names.extend(module.items.keys().cloned());
        names.extend(module.imports.keys().cloned());
        names.extend(
            crate::sema::builtins::Builtin::ALL
                .iter()
                .map(|b| b.name().to_string()),
        );
        names
    }
}

/// `MultiHeadAttention` -> `multi_head_attention`, `Conv2d` -> `conv2d`.
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn snake_names() {
        assert_eq!(super::snake_case("Linear"), "linear");
        assert_eq!(
            super::snake_case("MultiHeadAttention"),
            "multi_head_attention"
        );
        assert_eq!(super::snake_case("Conv2d"), "conv2d");
        assert_eq!(super::snake_case("MLPBlock"), "mlp_block");
    }
}
