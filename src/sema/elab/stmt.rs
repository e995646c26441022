//! Statements and blocks: `let`, `param`, `equilibrium`, `return`.
//!
//! Guarantees: a block's value is its tail or a final `return`; parameters
//! get one checkpoint path each and the same shape at every use; an
//! equilibrium's body has exactly its states' types, and its `with` options
//! are all known and valid.

use super::{Elab, Env, Value};
use crate::sema::error::SemaError;
use crate::sema::hir::*;
use crate::sema::options::{suggest, OptionChecker, EQ_OPTIONS};
use crate::sema::spec::SolverSpec;
use crate::source::Span;
use crate::syntax::ast::{self, ExprKind, Stmt};

impl Elab<'_> {
    /// Evaluate a block in a new scope.
    pub fn block(&mut self, env: &mut Env, b: &ast::Block) -> Value {
        env.scopes.push(Default::default());
        let mut result = None;
        for (i, s) in b.stmts.iter().enumerate() {
            if let Stmt::Return { value, span } = s {
                let last = i + 1 == b.stmts.len() && b.tail.is_none();
                if !last {
                    self.report(
                        *span,
                        SemaError::InvalidStatement {
                            message: "`return` must be the last statement of its block".into(),
                            span: (*span).into(),
                            label: "code follows this return".into(),
                            help: None,
                        },
                    );
                }
                result = Some(self.expr(env, value));
                break;
            }
            self.stmt(env, s);
        }
        let value = match (&b.tail, result) {
            (_, Some(v)) => v,
            (Some(t), None) => self.expr(env, t),
            (None, None) => self.report(
                b.span,
                SemaError::InvalidStatement {
                    message: "this block has no value".into(),
                    span: Span {
                        start: b.span.end.saturating_sub(1),
                        ..b.span
                    }
                    .into(),
                    label: "expected a final expression (without `;`) or `return` before this"
                        .into(),
                    help: Some(
                        "a block's value is its last expression, written without `;`".into(),
                    ),
                },
            ),
        };
        env.scopes.pop();
        value
    }

    fn stmt(&mut self, env: &mut Env, s: &Stmt) {
        match s {
            Stmt::Let { name, value, .. } => {
                let v = match &value.kind {
                    ExprKind::Bracket { base, items } => {
                        let b = self.expr(env, base);
                        self.bracket(env, b, items, Some(name), value.span)
                    }
                    _ => self.expr(env, value),
                };
                self.note_binding(name, &v);
                env.bind(&name.name, v);
            }
            Stmt::LetTuple { names, value, span } => {
                let v = self.expr(env, value);
                let parts = match v {
                    Value::Tuple(parts) if parts.len() == names.len() => parts,
                    Value::Unknown => vec![Value::Unknown; names.len()],
                    other => {
                        let found = other.describe(&self.m);
                        self.report(
                            value.span,
                            SemaError::TypeMismatch {
                                expected: format!("a tuple of {}", names.len()),
                                found,
                                span: value.span.into(),
                                help: Some(format!("`let (...)` at {} binds exactly as many names as the tuple has parts", span.start)),
                            },
                        );
                        vec![Value::Unknown; names.len()]
                    }
                };
                for (n, p) in names.iter().zip(parts) {
                    self.note_binding(n, &p);
                    env.bind(&n.name, p);
                }
            }
            Stmt::Param {
                name,
                ty,
                init,
                span,
            } => {
                let v = self.param(env, name, ty, init, *span);
                self.note_binding(name, &v);
                env.bind(&name.name, v);
            }
            Stmt::Equilibrium {
                states,
                tuple,
                body,
                options,
                span,
            } => self.equilibrium(env, states, *tuple, body, options, *span),
            Stmt::Return { .. } => {}
        }
    }

    fn param(
        &mut self,
        env: &mut Env,
        name: &ast::Ident,
        ty: &ast::TensorType,
        init: &ast::Expr,
        span: Span,
    ) -> Value {
        if !self.in_layer(env) {
            return self.report(
                span,
                SemaError::InvalidStatement {
                    message: "`param` is only allowed in a layer or model body".into(),
                    span: span.into(),
                    label: "not inside a layer".into(),
                    help: Some("fns are parameter-free; declare the parameter in the layer that calls the fn and pass it in".into()),
                },
            );
        }
        let ty = self.eval_type(env, ty);
        let init = match self.setting(env, init) {
            Some(v) => {
                let mut errs = Vec::new();
                let checked = OptionChecker { errors: &mut errs }.init(&v);
                for e in errs {
                    self.report(span, e);
                }
                match checked {
                    Some(i) => i,
                    None => return Value::Unknown,
                }
            }
            None => crate::sema::spec::Init::Zeros,
        };
        let Some(ty) = ty else { return Value::Unknown };
        if !self.generic && ty.numel().is_none() {
            return self.report(
                span,
                SemaError::InvalidStatement {
                    message: format!("the shape of parameter `{}` is {ty}, which is not known at compile time", name.name),
                    span: span.into(),
                    label: "symbolic parameter shape".into(),
                    help: Some("a parameter's dimensions must be constants or hyper-parameters, not data dimensions such as B".into()),
                },
            );
        }
        let Some(ctx) = self.layers.last_mut() else {
            return Value::Unknown;
        };
        if let Some(prev) = ctx.names.insert(name.name.clone(), name.span) {
            return self.report(
                name.span,
                SemaError::Duplicate {
                    name: name.name.clone(),
                    span: name.span.into(),
                    first: (prev.file == name.span.file).then(|| prev.into()),
                },
            );
        }
        let path = ctx.path(&name.name);
        let index = match self.m.param_index.get(&path) {
            Some(&i) => {
                let first = self.m.params[i].ty.clone();
                if first != ty {
                    return self.report(
                        span,
                        SemaError::ParameterConflict {
                            path,
                            first: first.to_string(),
                            second: ty.to_string(),
                            span: span.into(),
                        },
                    );
                }
                i
            }
            None => {
                self.m.params.push(Param {
                    path: path.clone(),
                    ty: ty.clone(),
                    init,
                    span,
                    role: crate::sema::hir::ParamRole::Plain,
                });
                self.m.param_index.insert(path, self.m.params.len() - 1);
                self.m.params.len() - 1
            }
        };
        self.emit1(InstKind::Param(index), ty, span)
    }

    fn equilibrium(
        &mut self,
        env: &mut Env,
        states: &[ast::EqState],
        tuple: bool,
        body: &ast::Expr,
        options: &[ast::WithOption],
        span: Span,
    ) {
        let types: Vec<Option<Type>> = states.iter().map(|s| self.eval_type(env, &s.ty)).collect();
        // Solvers iterate, mix and difference states: only floats qualify.
        for (s, t) in states.iter().zip(&types) {
            if let Some(t) = t.as_ref().filter(|t| t.dtype == DType::I64) {
                self.report(
                    s.ty.span,
                    SemaError::IntegerState {
                        state: s.name.name.clone(),
                        dtype: t.dtype.name().into(),
                        span: s.ty.span.into(),
                    },
                );
            }
        }
        // Options: solver first, since backward's defaults depend on it.
        let mut seen: Vec<&str> = Vec::new();
        let (mut solver_opt, mut backward_opt, mut init_opt) = (None, None, None);
        for o in options {
            match EQ_OPTIONS.iter().find(|k| **k == o.name.name) {
                Some(k) if seen.contains(k) => {
                    self.report(
                        o.name.span,
                        SemaError::DuplicateArgument {
                            callee: "equilibrium".into(),
                            kind: "option".into(),
                            name: o.name.name.clone(),
                            span: o.name.span.into(),
                        },
                    );
                }
                Some(k) => {
                    seen.push(k);
                    match *k {
                        "solver" => solver_opt = Some(o),
                        "backward" => backward_opt = Some(o),
                        _ => init_opt = Some(o),
                    }
                }
                None => {
                    self.report(
                        o.name.span,
                        SemaError::UnknownOption {
                            what: "equilibrium option".into(),
                            name: o.name.name.clone(),
                            span: o.name.span.into(),
                            help: suggest(&o.name.name, EQ_OPTIONS),
                        },
                    );
                }
            }
        }
        let mut errs = Vec::new();
        let solver = match solver_opt.and_then(|o| self.setting(env, &o.value)) {
            Some(v) => OptionChecker { errors: &mut errs }.solver(&v),
            None => Some(SolverSpec::default_forward()),
        };
        let backward = match (
            &solver,
            backward_opt.and_then(|o| self.setting(env, &o.value)),
        ) {
            (Some(s), Some(v)) => OptionChecker { errors: &mut errs }.backward(&v, s),
            (Some(s), None) => Some(OptionChecker::default_backward(s)),
            (None, _) => None,
        };
        for e in errs {
            self.report(span, e);
        }
        let init = self.eq_init(env, init_opt, states, &types);

        // The body, with each state bound to its iterate.
        self.m.blocks.push(Block::default());
        env.scopes.push(Default::default());
        for (i, (s, t)) in states.iter().zip(&types).enumerate() {
            let v = match t {
                Some(t) => self.emit1(InstKind::State(i), t.clone(), s.span),
                None => Value::Unknown,
            };
            env.bind(&s.name.name, v);
        }
        let value = self.expr(env, body);
        env.scopes.pop();
        let parts = match (value, tuple) {
            (Value::Tuple(parts), true) if parts.len() == states.len() => parts,
            (Value::Unknown, _) => vec![Value::Unknown; states.len()],
            (v, false) if !matches!(v, Value::Tuple(_)) => vec![v],
            (other, _) => {
                let found = other.describe(&self.m);
                self.report(
                    body.span,
                    SemaError::TypeMismatch {
                        expected: format!("a tuple of {} tensors, one per state", states.len()),
                        found,
                        span: body.span.into(),
                        help: None,
                    },
                );
                vec![Value::Unknown; states.len()]
            }
        };
        let mut outputs = Vec::new();
        for ((s, t), part) in states.iter().zip(&types).zip(parts) {
            match (t, part) {
                (Some(t), Value::Tensor(v)) => {
                    let found = self.ty(v).clone();
                    if !self.types_match(t, &found) {
                        self.report(
                            body.span,
                            SemaError::EquilibriumType {
                                state: s.name.name.clone(),
                                expected: t.to_string(),
                                found: found.to_string(),
                                span: body.span.into(),
                                declared: s.ty.span.into(),
                            },
                        );
                    }
                    outputs.push(v);
                }
                (_, Value::Unknown) | (None, _) => {}
                (Some(_), other) => {
                    let found = other.describe(&self.m);
                    self.report(
                        body.span,
                        SemaError::TypeMismatch {
                            expected: format!("a tensor for state `{}`", s.name.name),
                            found,
                            span: body.span.into(),
                            help: None,
                        },
                    );
                }
            }
        }
        let body_block = self.m.blocks.pop().unwrap_or_default();
        let complete = outputs.len() == states.len() && types.iter().all(Option::is_some);
        let (Some(solver), Some(backward), Some(init), true) = (solver, backward, init, complete)
        else {
            for s in states {
                env.bind(&s.name.name, Value::Unknown);
            }
            return;
        };
        let eq = Equilibrium {
            state_names: states.iter().map(|s| s.name.name.clone()).collect(),
            body: body_block,
            outputs,
            init,
            solver,
            backward,
        };
        let tys: Vec<Type> = types.into_iter().flatten().collect();
        let results = self.m.emit(InstKind::Equilibrium(Box::new(eq)), tys, span);
        for (s, r) in states.iter().zip(results) {
            self.note_binding(&s.name, &Value::Tensor(r));
            env.bind(&s.name.name, Value::Tensor(r));
        }
    }

    fn eq_init(
        &mut self,
        env: &mut Env,
        opt: Option<&ast::WithOption>,
        states: &[ast::EqState],
        types: &[Option<Type>],
    ) -> Option<EqInit> {
        let Some(o) = opt else {
            return Some(EqInit::Zeros);
        };
        if let ExprKind::Path(p) = &o.value.kind {
            if p.len() == 1 && p[0].name == "zeros" && env.lookup("zeros").is_none() {
                return Some(EqInit::Zeros);
            }
        }
        let v = self.expr(env, &o.value);
        let parts = match (v, states.len()) {
            (Value::Tuple(parts), n) if parts.len() == n && n > 1 => parts,
            (v @ Value::Tensor(_), 1) => vec![v],
            (Value::Unknown, _) => return None,
            (other, n) => {
                let found = other.describe(&self.m);
                self.report(
                    o.value.span,
                    SemaError::TypeMismatch {
                        expected: if n == 1 {
                            "`zeros` or a tensor of the state's type".into()
                        } else {
                            format!("`zeros` or a tuple of {n} tensors")
                        },
                        found,
                        span: o.value.span.into(),
                        help: None,
                    },
                );
                return None;
            }
        };
        let mut ids = Vec::new();
        for ((p, t), s) in parts.into_iter().zip(types).zip(states) {
            let Value::Tensor(id) = p else {
                self.not_tensor(&p, o.value.span);
                return None;
            };
            let found = self.ty(id).clone();
            if let Some(t) = t {
                if !self.types_match(t, &found) {
                    self.report(
                        o.value.span,
                        SemaError::Signature {
                            what: format!("the initial value of `{}`", s.name.name),
                            expected: t.to_string(),
                            found: found.to_string(),
                            span: o.value.span.into(),
                            declared: Some(s.ty.span.into()),
                            help: None,
                        },
                    );
                    return None;
                }
            }
            ids.push(id);
        }
        Some(EqInit::Values(ids))
    }
}
