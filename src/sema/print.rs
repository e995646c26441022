//! The stable text printer of the checked program (`deqc dump --emit=hir`)
//! and the `deqc check` summary.
//!
//! Guarantees: output depends only on the program (no addresses, no hash
//! order), so it can be snapshot-tested.

use std::fmt::Write;

use crate::sema::hir::*;
use crate::sema::spec::Init;
use crate::syntax::ast::{self, ExprKind};

/// Source-like text of a (small) expression, for messages.
pub fn expr_text(e: &ast::Expr) -> String {
    match &e.kind {
        ExprKind::Int(i) => i.to_string(),
        ExprKind::Float(x) => format!("{x:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Path(p) => p
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join("::"),
        ExprKind::Tuple(items) => format!(
            "({})",
            items.iter().map(expr_text).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::List(items) => format!(
            "[{}]",
            items.iter().map(expr_text).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Unary(_, x) => format!("-{}", expr_text(x)),
        ExprKind::Binary(op, a, b) => format!("{} {} {}", expr_text(a), op.symbol(), expr_text(b)),
        ExprKind::Call { callee, .. } => format!("{}(...)", expr_text(callee)),
        ExprKind::Bracket { base, .. } => format!("{}[...]", expr_text(base)),
        ExprKind::If { .. } => "if ...".into(),
    }
}

fn ids(v: &[ValueId]) -> String {
    v.iter()
        .map(|i| format!("%{}", i.0))
        .collect::<Vec<_>>()
        .join(", ")
}

use crate::types::shape_text as dims;

/// A primitive as `name[attributes]`, with the IR printer's attribute text
/// (a bracketed list is not bracketed twice: `reshape[4, 6]`).
fn prim(p: &Prim) -> String {
    match p {
        Prim::Op(op) => {
            let a = op.attrs();
            if a.is_empty() {
                op.name().to_string()
            } else if a.starts_with('[') {
                format!("{}{a}", op.name())
            } else {
                format!("{}[{a}]", op.name())
            }
        }
        Prim::Split { axis, sizes } => format!("split[axis = {axis}, sizes = {}]", dims(sizes)),
        Prim::Dropout { p } => format!("dropout[p = {p:?}]"),
        Prim::Vjp => "vjp".into(),
        Prim::Jvp => "jvp".into(),
    }
}

fn block(out: &mut String, m: &Model, b: &Block, indent: usize) {
    let pad = " ".repeat(indent);
    for inst in &b.insts {
        let results: Vec<String> = inst
            .results
            .iter()
            .map(|r| format!("%{}: {}", r.0, m.ty(*r)))
            .collect();
        let lhs = results.join(", ");
        let rhs = match &inst.kind {
            InstKind::Input(i) => format!("input {}", m.inputs[*i].name),
            InstKind::Param(i) => format!("param {}", m.params[*i].path),
            InstKind::Const(x) => format!("const {x:?}"),
            InstKind::State(i) => format!("state {i}"),
            InstKind::Prim(p, args) => format!("{} {}", prim(p), ids(args)),
            InstKind::Equilibrium(e) => {
                let init = match &e.init {
                    EqInit::Zeros => "zeros".to_string(),
                    EqInit::Values(v) => ids(v),
                };
                let _ = writeln!(
                    out,
                    "{pad}{lhs} = equilibrium ({}) init = {init}\n{pad}    solver = {}\n{pad}    backward = {}\n{pad}{{",
                    e.state_names.join(", "),
                    e.solver,
                    e.backward
                );
                block(out, m, &e.body, indent + 4);
                let _ = writeln!(out, "{pad}    yield {}\n{pad}}}", ids(&e.outputs));
                continue;
            }
        };
        let _ = writeln!(out, "{pad}{lhs} = {rhs}");
    }
}

/// `model Name(x: [B, 784]) -> [B, 10]`.
fn signature(m: &Model) -> String {
    let inputs: Vec<String> = m
        .inputs
        .iter()
        .map(|i| format!("{}: {}", i.name, i.ty))
        .collect();
    let outs: Vec<String> = m.output_types.iter().map(|t| t.to_string()).collect();
    format!(
        "model {}({}) -> {}",
        m.name,
        inputs.join(", "),
        outs.join(", ")
    )
}

/// A parameter as the printers show it: the HIR's [`Param`] and the IR's
/// `GraphParam` carry the same four parts.
pub trait PrintedParam {
    /// Path, type, initializer and role.
    fn parts(&self) -> (&str, &Type, &Init, ParamRole);
}

impl PrintedParam for Param {
    fn parts(&self) -> (&str, &Type, &Init, ParamRole) {
        (&self.path, &self.ty, &self.init, self.role)
    }
}

/// The parameters as the HIR and the IR printers write them:
/// `    param PATH: TYPE = INIT` a line, with `  // NOTE` for a derived one
/// (which names its weight by path).
pub fn write_params(out: &mut String, params: &[impl PrintedParam]) {
    let path_of = |i: usize| params.get(i).map(|q| q.parts().0.to_string());
    for p in params {
        let (path, ty, init, role) = p.parts();
        let note = role.note(|i| path_of(i).unwrap_or_default());
        let note = note.map(|n| format!("  // {n}")).unwrap_or_default();
        let _ = writeln!(out, "    param {path}: {ty} = {init}{note}");
    }
}

/// The whole checked program as text.
pub fn print_program(p: &Program) -> String {
    let mut out = String::new();
    for m in &p.models {
        let _ = writeln!(out, "{} {{", signature(m));
        write_params(&mut out, &m.params);
        block(&mut out, m, &m.body, 4);
        let _ = writeln!(out, "    return {}\n}}", ids(&m.outputs));
    }
    for t in &p.trains {
        let _ = writeln!(out, "{t}");
    }
    out
}

/// The `deqc check` summary of a checked program.
pub fn summary(p: &Program) -> String {
    let mut out = String::new();
    for m in &p.models {
        let _ = writeln!(out, "{}", signature(m));
        let width = m.params.iter().map(|p| p.path.len()).max().unwrap_or(0);
        let _ = writeln!(out, "  parameters:");
        for p in &m.params {
            let note = p
                .role
                .note(|i| m.params.get(i).map(|q| q.path.clone()).unwrap_or_default());
            let note = note.map(|n| format!("  ({n})")).unwrap_or_default();
            let _ = writeln!(out, "    {:width$}  {}{note}", p.path, p.ty, width = width);
        }
        let states = m.params.iter().filter(|p| p.role.is_state()).count();
        let _ = writeln!(
            out,
            "  total: {} parameters in {} tensors{}",
            group_digits(m.param_count()),
            m.params.len() - states,
            if states > 0 {
                format!(", and {states} state tensors (not trained)")
            } else {
                String::new()
            }
        );
        let eqs = m.equilibria();
        if eqs.is_empty() {
            let _ = writeln!(out, "  equilibria: none");
        }
        for (e, _) in eqs {
            let states: Vec<String> = e
                .state_names
                .iter()
                .zip(&e.outputs)
                .map(|(n, v)| format!("{n}: {}", m.ty(*v)))
                .collect();
            let _ = writeln!(out, "  equilibrium ({})", states.join(", "));
            let _ = writeln!(out, "    solver   = {}", e.solver);
            let _ = writeln!(out, "    backward = {}", e.backward);
        }
    }
    for t in &p.trains {
        let _ = writeln!(
            out,
            "train {}: {}, {} epochs of batch {}",
            t.model, t.data, t.epochs, t.batch_size
        );
    }
    out
}

fn group_digits(n: i64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
