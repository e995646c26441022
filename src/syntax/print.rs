//! A stable, readable printer of the AST (`deqc dump --emit=ast`, snapshot
//! tests).
//!
//! Owns the textual form of a parsed file: one node per line, indented two
//! spaces per level, each with its kind, its essential data and its span as
//! `@start..end`; a child's role is written before it (`callee:`, `init:`).
//! Guarantees: the output depends only on the AST (no `Debug` output, no
//! addresses, no hash order), so equal trees print equally. Tensor types
//! whose dimensions are all single names, integers or `*` print on one line
//! (`[B, 784]`); other dimensions print as expression trees.

use std::fmt::Write;

use super::ast::*;
use crate::source::Span;

/// Print a whole file.
pub fn print_file(file: &File) -> String {
    let mut p = Printer::default();
    p.line("File", None);
    p.indent += 1;
    for item in &file.items {
        p.item(item);
    }
    p.out
}

#[derive(Default)]
struct Printer {
    out: String,
    indent: usize,
}

fn at(span: Span) -> String {
    format!("@{}..{}", span.start, span.end)
}

impl Printer {
    fn line(&mut self, text: &str, span: Option<Span>) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        if let Some(s) = span {
            // Writing to a String cannot fail.
            let _ = write!(self.out, " {}", at(s));
        }
        self.out.push('\n');
    }

    fn nested(&mut self, f: impl FnOnce(&mut Printer)) {
        self.indent += 1;
        f(self);
        self.indent -= 1;
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Use(u) => match &u.target {
                UseTarget::Module(m) => self.line(&format!("Use module {}", m.name), Some(u.span)),
                UseTarget::File { path, span } => {
                    self.line(&format!("Use file {path:?} {}", at(*span)), Some(u.span))
                }
            },
            Item::Const(c) => {
                self.line(&format!("Const {}", c.name.name), Some(c.span));
                self.nested(|p| p.expr("value: ", &c.value));
            }
            Item::Fn(f) => {
                self.line(&format!("Fn {}", f.name.name), Some(f.span));
                self.nested(|p| {
                    for param in &f.params {
                        p.fn_param("Param", param);
                    }
                    p.block("body: ", &f.body);
                });
            }
            Item::Layer(l) => {
                let kind = match l.kind {
                    LayerKind::Layer => "Layer",
                    LayerKind::Model => "Model",
                };
                self.line(&format!("{kind} {}", l.name.name), Some(l.span));
                self.nested(|p| {
                    for h in &l.hyper {
                        p.fn_param("Hyper", h);
                    }
                    for i in &l.inputs {
                        p.line(&format!("Input {}", i.name.name), Some(i.span));
                        p.nested(|p| p.tensor_type("type: ", &i.ty));
                    }
                    match &l.output {
                        None => p.line("output: inferred", None),
                        Some(tys) => {
                            for t in tys {
                                p.tensor_type("output: ", t);
                            }
                        }
                    }
                    p.block("body: ", &l.body);
                });
            }
            Item::Train(t) => {
                self.line(&format!("Train {}", t.model.name), Some(t.span));
                self.nested(|p| {
                    for e in &t.entries {
                        p.line(&format!("Entry {}", e.key.name), Some(e.span));
                        p.nested(|p| p.expr("value: ", &e.value));
                    }
                });
            }
        }
    }

    fn fn_param(&mut self, what: &str, param: &FnParam) {
        self.line(&format!("{what} {}", param.name.name), Some(param.span));
        self.nested(|p| {
            match &param.ty {
                None => {}
                Some(ParamType::Int(s)) => p.line("type: int", Some(*s)),
                Some(ParamType::Float(s)) => p.line("type: float", Some(*s)),
                Some(ParamType::Bool(s)) => p.line("type: bool", Some(*s)),
                Some(ParamType::Tensor(t)) => p.tensor_type("type: ", t),
            }
            if let Some(d) = &param.default {
                p.expr("default: ", d);
            }
        });
    }

    /// `label[B, 784] @s..e`, or a `Type` node with one child per dimension.
    fn tensor_type(&mut self, label: &str, t: &TensorType) {
        let dtype = t.dtype.map_or(String::new(), |d| d.name().to_string());
        let simple: Option<Vec<String>> = t
            .dims
            .iter()
            .map(|d| match d {
                DimSyntax::Rest(_) => Some("*".to_string()),
                DimSyntax::Expr(e) => match &e.kind {
                    ExprKind::Int(v) => Some(v.to_string()),
                    ExprKind::Path(p) if p.len() == 1 => Some(p[0].name.clone()),
                    _ => None,
                },
            })
            .collect();
        match simple {
            Some(dims) => {
                let text = format!("{label}{dtype}[{}]", dims.join(", "));
                self.line(&text, Some(t.span));
            }
            None => {
                self.line(&format!("{label}Type {dtype}[..]"), Some(t.span));
                self.nested(|p| {
                    for d in &t.dims {
                        match d {
                            DimSyntax::Rest(s) => p.line("dim: *", Some(*s)),
                            DimSyntax::Expr(e) => p.expr("dim: ", e),
                        }
                    }
                });
            }
        }
    }

    fn block(&mut self, label: &str, b: &Block) {
        self.line(&format!("{label}Block"), Some(b.span));
        self.nested(|p| {
            for s in &b.stmts {
                p.stmt(s);
            }
            if let Some(t) = &b.tail {
                p.expr("tail: ", t);
            }
        });
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Let { name, value, span } => {
                self.line(&format!("Let {}", name.name), Some(*span));
                self.nested(|p| p.expr("value: ", value));
            }
            Stmt::LetTuple { names, value, span } => {
                let names: Vec<&str> = names.iter().map(|n| n.name.as_str()).collect();
                self.line(&format!("LetTuple ({})", names.join(", ")), Some(*span));
                self.nested(|p| p.expr("value: ", value));
            }
            Stmt::Param {
                name,
                ty,
                init,
                span,
            } => {
                self.line(&format!("Param {}", name.name), Some(*span));
                self.nested(|p| {
                    p.tensor_type("type: ", ty);
                    p.expr("init: ", init);
                });
            }
            Stmt::Equilibrium {
                states,
                tuple,
                body,
                options,
                span,
            } => {
                let what = if *tuple {
                    "Equilibrium tuple"
                } else {
                    "Equilibrium"
                };
                self.line(what, Some(*span));
                self.nested(|p| {
                    for st in states {
                        p.line(&format!("State {}", st.name.name), Some(st.span));
                        p.nested(|p| p.tensor_type("type: ", &st.ty));
                    }
                    p.expr("body: ", body);
                    for o in options {
                        p.line(&format!("With {}", o.name.name), Some(o.span));
                        p.nested(|p| p.expr("value: ", &o.value));
                    }
                });
            }
            Stmt::Return { value, span } => {
                self.line("Return", Some(*span));
                self.nested(|p| p.expr("value: ", value));
            }
        }
    }

    fn expr(&mut self, label: &str, e: &Expr) {
        let span = Some(e.span);
        match &e.kind {
            ExprKind::Int(v) => self.line(&format!("{label}Int {v}"), span),
            // `{:?}` of an f64 is deterministic and reads back to the same value.
            ExprKind::Float(v) => self.line(&format!("{label}Float {v:?}"), span),
            ExprKind::Bool(v) => self.line(&format!("{label}Bool {v}"), span),
            ExprKind::Str(s) => self.line(&format!("{label}Str {s:?}"), span),
            ExprKind::Path(parts) => {
                let names: Vec<&str> = parts.iter().map(|i| i.name.as_str()).collect();
                self.line(&format!("{label}Path {}", names.join("::")), span);
            }
            ExprKind::Tuple(elems) => {
                self.line(&format!("{label}Tuple"), span);
                self.nested(|p| elems.iter().for_each(|x| p.expr("", x)));
            }
            ExprKind::List(elems) => {
                self.line(&format!("{label}List"), span);
                self.nested(|p| elems.iter().for_each(|x| p.expr("", x)));
            }
            ExprKind::Unary(UnOp::Neg, x) => {
                self.line(&format!("{label}Neg"), span);
                self.nested(|p| p.expr("", x));
            }
            ExprKind::Binary(op, l, r) => {
                self.line(&format!("{label}Binary {}", op.symbol()), span);
                self.nested(|p| {
                    p.expr("", l);
                    p.expr("", r);
                });
            }
            ExprKind::Call { callee, args } => {
                self.line(&format!("{label}Call"), span);
                self.nested(|p| {
                    p.expr("callee: ", callee);
                    for a in args {
                        match &a.name {
                            Some(n) => p.line(&format!("Arg {}", n.name), Some(a.span)),
                            None => p.line("Arg", Some(a.span)),
                        }
                        p.nested(|p| p.expr("", &a.value));
                    }
                });
            }
            ExprKind::Bracket { base, items } => {
                self.line(&format!("{label}Bracket"), span);
                self.nested(|p| {
                    p.expr("base: ", base);
                    for it in items {
                        p.bracket_item(it);
                    }
                });
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                self.line(&format!("{label}If"), span);
                self.nested(|p| {
                    p.expr("cond: ", cond);
                    p.block("then: ", then);
                    p.block("else: ", otherwise);
                });
            }
        }
    }

    fn bracket_item(&mut self, it: &BracketItem) {
        match it {
            BracketItem::Expr(e) => self.expr("item: ", e),
            BracketItem::Named { name, value, span } => {
                self.line(&format!("Named {}", name.name), Some(*span));
                self.nested(|p| p.expr("", value));
            }
            BracketItem::Slice {
                start,
                end,
                step,
                span,
            } => {
                self.line("Slice", Some(*span));
                self.nested(|p| {
                    for (label, part) in [("start: ", start), ("end: ", end), ("step: ", step)] {
                        if let Some(x) = part {
                            p.expr(label, x);
                        }
                    }
                });
            }
            BracketItem::Ellipsis(s) => self.line("Ellipsis", Some(*s)),
        }
    }
}
