//! One checked document and the questions editors ask about it: which name
//! is under the cursor, where it is defined, what it holds.
//!
//! Owns the occurrence table of the root file (every identifier, as a
//! definition, a use or a key such as `tol =`) and name resolution over it:
//! locals of the enclosing item (the last definition visible before the
//! use), then the file's items, then `use`d modules (`nn::Linear`).
//! Guarantees: built from whatever the front end produced, so a file with
//! errors still answers for the parts that parsed; lookups never panic.

use crate::lsp::docs;
use crate::sema::modules::{ItemRef, ModuleId, Modules};
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::ast::{self, Expr, ExprKind};
use crate::Compiled;

/// What kind of name a definition introduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefKind {
    Const,
    Fn,
    Layer,
    Model,
    Let,
    Param,
    State,
    Input,
    Hyper,
    FnArg,
}

impl DefKind {
    pub fn word(self) -> &'static str {
        match self {
            DefKind::Const => "const",
            DefKind::Fn => "fn",
            DefKind::Layer => "layer",
            DefKind::Model => "model",
            DefKind::Let => "let",
            DefKind::Param => "param",
            DefKind::State => "equilibrium state",
            DefKind::Input => "input",
            DefKind::Hyper => "hyper-parameter",
            DefKind::FnArg => "argument",
        }
    }

    fn is_local(self) -> bool {
        !matches!(
            self,
            DefKind::Const | DefKind::Fn | DefKind::Layer | DefKind::Model
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Def(DefKind),
    Use,
    /// A name before `=` that names an option or argument, not a value:
    /// `tol = 1e-3`, `solver = ...`, `epochs = 3`.
    Key,
}

/// One identifier of the root file.
#[derive(Debug, Clone)]
pub struct Occ {
    pub name: String,
    pub span: Span,
    pub role: Role,
    /// `nn` for the `Linear` of `nn::Linear`; for a key, the callee
    /// (`anderson` for the `m` of `anderson(m = 5)`).
    pub qualifier: Option<String>,
    /// Index of the top-level item it is in.
    pub item: usize,
    /// Where a local definition comes into scope.
    pub visible_from: u32,
    /// For `let x = Path[...]`: the path, to tell layer instances apart.
    pub instance_of: Option<(Option<String>, String)>,
}

/// What a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A local definition: index into [`Analysis::occs`].
    Local(usize),
    Item(ItemRef),
    Module(ModuleId),
}

/// A checked document.
pub struct Analysis {
    pub compiled: Compiled,
    pub occs: Vec<Occ>,
}

impl Analysis {
    pub fn new(compiled: Compiled) -> Analysis {
        let mut walker = Walker::default();
        if let Some(root) = compiled.index.modules.list.first() {
            for (i, item) in root.ast.items.iter().enumerate() {
                walker.item = i;
                walker.visit_item(item);
            }
        }
        Analysis {
            compiled,
            occs: walker.out,
        }
    }

    /// Did the root file fail to parse (so its items are missing)?
    pub fn root_parse_failed(&self) -> bool {
        self.compiled
            .diags
            .items
            .iter()
            .any(|d| d.file == self.compiled.root && d.code().starts_with("deq::parse"))
    }

    pub fn modules(&self) -> &Modules {
        &self.compiled.index.modules
    }

    pub fn sources(&self) -> &SourceMap {
        &self.compiled.sources
    }

    pub fn root_file(&self) -> FileId {
        self.compiled.root
    }

    pub fn root_text(&self) -> &str {
        &self.sources().file(self.root_file()).text
    }

    /// The root module, if the loader created one.
    pub fn root(&self) -> Option<&crate::sema::modules::Module> {
        self.modules().list.first()
    }

    /// The occurrence under byte `offset` (touching its end counts).
    pub fn occ_at(&self, offset: usize) -> Option<usize> {
        let offset = offset as u32;
        self.occs
            .iter()
            .position(|o| o.span.start <= offset && offset <= o.span.end)
    }

    /// The top-level item around byte `offset`.
    pub fn item_at(&self, offset: usize) -> Option<usize> {
        let offset = offset as u32;
        self.root()?
            .ast
            .items
            .iter()
            .position(|i| i.span().start <= offset && offset <= i.span().end)
    }

    /// Local definitions of item `item` visible at `offset`, last one of
    /// each name only.
    pub fn locals_at(&self, item: usize, offset: usize) -> Vec<usize> {
        let mut found: Vec<usize> = Vec::new();
        for (i, o) in self.occs.iter().enumerate() {
            let Role::Def(kind) = o.role else { continue };
            if o.item != item || !kind.is_local() || o.visible_from as usize > offset {
                continue;
            }
            found.retain(|j| self.occs[*j].name != o.name);
            found.push(i);
        }
        found
    }

    /// What occurrence `i` refers to.
    pub fn resolve(&self, i: usize) -> Option<Target> {
        let o = self.occs.get(i)?;
        let root = self.root()?;
        match o.role {
            Role::Def(kind) if kind.is_local() => return Some(Target::Local(i)),
            Role::Def(_) => return root.items.get(&o.name).copied().map(Target::Item),
            Role::Key => return None,
            Role::Use => {}
        }
        if let Some(q) = &o.qualifier {
            let m = *root.imports.get(q)?;
            return self
                .modules()
                .get(m)
                .items
                .get(&o.name)
                .map(|r| Target::Item(*r));
        }
        let local = self
            .locals_at(o.item, o.span.start as usize)
            .into_iter()
            .find(|j| self.occs[*j].name == o.name);
        if let Some(j) = local {
            return Some(Target::Local(j));
        }
        if let Some(r) = root.items.get(&o.name) {
            return Some(Target::Item(*r));
        }
        root.imports.get(&o.name).map(|m| Target::Module(*m))
    }

    /// The span a target is defined at (a module: its file's start).
    pub fn target_span(&self, t: Target) -> Span {
        match t {
            Target::Local(j) => self.occs[j].span,
            Target::Item(r) => item_name(self.modules().item(r))
                .map_or_else(|| self.modules().item(r).span(), |n| n.span),
            Target::Module(m) => Span::new(self.modules().get(m).file, 0, 0),
        }
    }

    /// Markdown for the occurrence under `offset`.
    pub fn hover(&self, offset: usize) -> Option<(String, Span)> {
        let i = self.occ_at(offset)?;
        let o = &self.occs[i];
        let text = match (o.role, self.resolve(i)) {
            (_, Some(Target::Local(j))) => self.local_hover(j),
            (_, Some(Target::Item(r))) => self.item_hover(r),
            (_, Some(Target::Module(m))) => {
                let module = self.modules().get(m);
                let file = &self.sources().file(module.file).name;
                format!("module `{}` ({file})", module.name)
            }
            (Role::Key, None) => match &o.qualifier {
                Some(callee) => docs::argument_hover(callee, &o.name)?,
                None => docs::key_hover(&o.name)?,
            },
            (_, None) => docs::hover(&o.name)?,
        };
        Some((text, o.span))
    }

    fn local_hover(&self, j: usize) -> String {
        let d = &self.occs[j];
        let Role::Def(kind) = d.role else {
            return String::new();
        };
        let mut seen: Vec<&str> = Vec::new();
        for (span, summary) in &self.compiled.index.bindings {
            if *span == d.span && !seen.contains(&summary.as_str()) {
                seen.push(summary);
            }
        }
        match seen.as_slice() {
            [] => format!(
                "```deq\n{} {}\n```\n(not checked: an error comes first)",
                kind.word(),
                d.name
            ),
            [one] => format!("```deq\n{} {}: {one}\n```", kind.word(), d.name),
            many => {
                let list: Vec<String> = many.iter().map(|s| format!("- `{s}`")).collect();
                format!(
                    "```deq\n{} {}\n```\nat each use of its layer or fn:\n{}",
                    kind.word(),
                    d.name,
                    list.join("\n")
                )
            }
        }
    }

    /// Signature and doc comment of a top-level definition.
    pub fn item_hover(&self, r: ItemRef) -> String {
        let item = self.modules().item(r);
        let file = self.modules().get(r.module).file;
        let text = &self.sources().file(file).text;
        let span = item.span();
        let head_end = (match item {
            ast::Item::Fn(f) => f.body.span.start,
            ast::Item::Layer(l) => l.body.span.start,
            _ => span.end,
        }) as usize;
        let head = text
            .get(span.start as usize..head_end.max(span.start as usize))
            .unwrap_or("");
        let head = head.trim().trim_end_matches([';', '=']).trim_end();
        let head = head.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut out = format!("```deq\n{head}\n```");
        if let ast::Item::Const(c) = item {
            let value = self
                .compiled
                .index
                .bindings
                .iter()
                .find(|(s, _)| *s == c.name.span);
            if let Some((_, v)) = value {
                out.push_str(&format!("\n`{v}`"));
            }
        }
        let doc = doc_comment(text, span.start as usize);
        if !doc.is_empty() {
            out.push_str("\n\n");
            out.push_str(&doc);
        }
        let module = self.modules().get(r.module);
        if r.module != ModuleId(0) {
            out.push_str(&format!("\n\n(from `{}`)", module.name));
        }
        out
    }

    /// Is this target a layer (so `let x = it[...]` is an instance)?
    pub fn is_layer(&self, t: Option<Target>) -> bool {
        match t {
            Some(Target::Item(r)) => matches!(
                self.modules().item(r),
                ast::Item::Layer(l) if l.kind == ast::LayerKind::Layer
            ),
            _ => false,
        }
    }

    /// Resolve a path written as `qualifier::name` (or `name`) at the top level.
    pub fn resolve_path(&self, qualifier: Option<&str>, name: &str) -> Option<Target> {
        let root = self.root()?;
        match qualifier {
            Some(q) => {
                let m = *root.imports.get(q)?;
                self.modules()
                    .get(m)
                    .items
                    .get(name)
                    .map(|r| Target::Item(*r))
            }
            None => root.items.get(name).map(|r| Target::Item(*r)),
        }
    }
}

/// The name of a top-level item (`None` for `use` and `train`).
pub fn item_name(item: &ast::Item) -> Option<&ast::Ident> {
    match item {
        ast::Item::Const(c) => Some(&c.name),
        ast::Item::Fn(f) => Some(&f.name),
        ast::Item::Layer(l) => Some(&l.name),
        ast::Item::Use(_) | ast::Item::Train(_) => None,
    }
}

/// The `//` comment lines directly above byte `start`, without the slashes.
fn doc_comment(text: &str, start: usize) -> String {
    let before = text.get(..start).unwrap_or("");
    let mut lines: Vec<&str> = Vec::new();
    // The item's own line is the last piece; walk the lines above it.
    for line in before
        .lines()
        .rev()
        .skip(usize::from(!before.ends_with('\n')))
    {
        match line.trim_start().strip_prefix("//") {
            Some(c) => lines.push(c.trim()),
            None => break,
        }
    }
    lines.reverse();
    lines.join("\n")
}

/// Collects the occurrences of one file's AST.
#[derive(Default)]
struct Walker {
    item: usize,
    out: Vec<Occ>,
}

impl Walker {
    fn push(&mut self, id: &ast::Ident, role: Role, qualifier: Option<String>, from: u32) {
        self.out.push(Occ {
            name: id.name.clone(),
            span: id.span,
            role,
            qualifier,
            item: self.item,
            visible_from: from,
            instance_of: None,
        });
    }

    fn def(&mut self, id: &ast::Ident, kind: DefKind, from: u32) {
        self.push(id, Role::Def(kind), None, from);
    }

    fn visit_item(&mut self, item: &ast::Item) {
        match item {
            ast::Item::Use(u) => {
                if let ast::UseTarget::Module(m) = &u.target {
                    self.push(m, Role::Use, None, 0);
                }
            }
            ast::Item::Const(c) => {
                self.def(&c.name, DefKind::Const, 0);
                self.expr(&c.value);
            }
            ast::Item::Fn(f) => {
                self.def(&f.name, DefKind::Fn, 0);
                self.params(&f.params, DefKind::FnArg);
                self.block(&f.body);
            }
            ast::Item::Layer(l) => {
                let kind = match l.kind {
                    ast::LayerKind::Layer => DefKind::Layer,
                    ast::LayerKind::Model => DefKind::Model,
                };
                self.def(&l.name, kind, 0);
                self.params(&l.hyper, DefKind::Hyper);
                for input in &l.inputs {
                    self.def(&input.name, DefKind::Input, input.name.span.start);
                    self.tensor_type(&input.ty);
                }
                for t in l.output.iter().flatten() {
                    self.tensor_type(t);
                }
                self.block(&l.body);
            }
            ast::Item::Train(t) => {
                self.push(&t.model, Role::Use, None, 0);
                for e in &t.entries {
                    self.push(&e.key, Role::Key, None, 0);
                    self.expr(&e.value);
                }
            }
        }
    }

    fn params(&mut self, params: &[ast::FnParam], kind: DefKind) {
        for p in params {
            self.def(&p.name, kind, p.name.span.start);
            if let Some(ast::ParamType::Tensor(t)) = &p.ty {
                self.tensor_type(t);
            }
            if let Some(d) = &p.default {
                self.expr(d);
            }
        }
    }

    fn tensor_type(&mut self, t: &ast::TensorType) {
        for d in &t.dims {
            if let ast::DimSyntax::Expr(e) = d {
                self.expr(e);
            }
        }
    }

    fn block(&mut self, b: &ast::Block) {
        for s in &b.stmts {
            self.stmt(s);
        }
        if let Some(t) = &b.tail {
            self.expr(t);
        }
    }

    fn stmt(&mut self, s: &ast::Stmt) {
        match s {
            ast::Stmt::Let { name, value, span } => {
                self.expr(value);
                self.def(name, DefKind::Let, span.end);
                if let ExprKind::Bracket { base, .. } = &value.kind {
                    if let ExprKind::Path(p) = &base.kind {
                        let n = p.len();
                        let qualifier = (n >= 2).then(|| p[n - 2].name.clone());
                        if let (Some(last), Some(occ)) = (p.last(), self.out.last_mut()) {
                            occ.instance_of = Some((qualifier, last.name.clone()));
                        }
                    }
                }
            }
            ast::Stmt::LetTuple { names, value, span } => {
                self.expr(value);
                for n in names {
                    self.def(n, DefKind::Let, span.end);
                }
            }
            ast::Stmt::Param {
                name,
                ty,
                init,
                span,
            } => {
                self.tensor_type(ty);
                self.expr(init);
                self.def(name, DefKind::Param, span.end);
            }
            ast::Stmt::Equilibrium {
                states,
                body,
                options,
                ..
            } => {
                for st in states {
                    self.def(&st.name, DefKind::State, st.name.span.start);
                    self.tensor_type(&st.ty);
                }
                self.expr(body);
                for o in options {
                    self.push(&o.name, Role::Key, None, 0);
                    self.expr(&o.value);
                }
            }
            ast::Stmt::Return { value, .. } => self.expr(value),
        }
    }

    fn expr(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Int(_) | ExprKind::Float(_) | ExprKind::Bool(_) | ExprKind::Str(_) => {}
            ExprKind::Path(segs) => {
                for (k, s) in segs.iter().enumerate() {
                    let qualifier = (k > 0).then(|| segs[k - 1].name.clone());
                    self.push(s, Role::Use, qualifier, 0);
                }
            }
            ExprKind::Tuple(items) | ExprKind::List(items) => {
                for x in items {
                    self.expr(x);
                }
            }
            ExprKind::Unary(_, x) => self.expr(x),
            ExprKind::Binary(_, a, b) => {
                self.expr(a);
                self.expr(b);
            }
            ExprKind::Call { callee, args } => {
                self.expr(callee);
                // A key's qualifier is the callee: `m` of `anderson(m = 5)`.
                let callee_name = match &callee.kind {
                    ExprKind::Path(p) => p.last().map(|i| i.name.clone()),
                    _ => None,
                };
                for a in args {
                    if let Some(n) = &a.name {
                        self.push(n, Role::Key, callee_name.clone(), 0);
                    }
                    self.expr(&a.value);
                }
            }
            ExprKind::Bracket { base, items } => {
                self.expr(base);
                for it in items {
                    match it {
                        ast::BracketItem::Expr(x) => self.expr(x),
                        ast::BracketItem::Named { name, value, .. } => {
                            self.push(name, Role::Key, None, 0);
                            self.expr(value);
                        }
                        ast::BracketItem::Slice {
                            start, end, step, ..
                        } => {
                            for x in [start, end, step].into_iter().flatten() {
                                self.expr(x);
                            }
                        }
                        ast::BracketItem::Ellipsis(_) => {}
                    }
                }
            }
            ExprKind::If {
                cond,
                then,
                otherwise,
            } => {
                self.expr(cond);
                self.block(then);
                self.block(otherwise);
            }
        }
    }
}
