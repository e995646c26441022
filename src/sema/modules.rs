//! Modules: loading `use`d files and stdlib modules, and item tables.
//!
//! Owns the set of parsed files of one compilation and the names each one
//! defines. Guarantees: each file is parsed once; `use nn;` reads the stdlib
//! embedded in the binary (so `deqc` works from any folder); `use "f.deq";`
//! is resolved relative to the importing file; a missing file, an import
//! cycle or a name defined twice is a diagnostic, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::diag::Diagnostics;
use crate::sema::error::SemaError;
use crate::sema::options::suggest;
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::ast;

/// The stdlib modules, embedded at build time.
pub const STDLIB: &[(&str, &str)] = &[
    ("nn", include_str!("../../stdlib/nn.deq")),
    ("flow", include_str!("../../stdlib/flow.deq")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub usize);

/// A top-level definition: which module, which item of its AST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ItemRef {
    pub module: ModuleId,
    pub index: usize,
}

#[derive(Debug)]
pub struct Module {
    /// `nn`, or a file's stem.
    pub name: String,
    pub file: FileId,
    pub ast: ast::File,
    /// const, fn, layer and model names.
    pub items: HashMap<String, ItemRef>,
    /// Names brought in by `use`.
    pub imports: HashMap<String, ModuleId>,
}

/// Every module of a compilation; module 0 is the root file.
#[derive(Debug, Default)]
pub struct Modules {
    pub list: Vec<Module>,
}

impl Modules {
    pub fn get(&self, id: ModuleId) -> &Module {
        &self.list[id.0]
    }

    pub fn item(&self, r: ItemRef) -> &ast::Item {
        &self.list[r.module.0].ast.items[r.index]
    }
}

struct Loader<'a> {
    sources: &'a mut SourceMap,
    diags: &'a mut Diagnostics,
    modules: Modules,
    /// Module ids by canonical path or `<stdlib>/name`.
    by_key: HashMap<String, ModuleId>,
    /// Keys of the files being loaded (for cycle detection).
    stack: Vec<String>,
}

/// Parse `root` and everything it imports. Parse errors are reported and
/// the file is treated as empty, so other files are still checked.
pub fn load(sources: &mut SourceMap, root: FileId, diags: &mut Diagnostics) -> Modules {
    let key = module_key(sources, root);
    let mut loader = Loader {
        sources,
        diags,
        modules: Modules::default(),
        by_key: HashMap::new(),
        stack: Vec::new(),
    };
    let name = loader.sources.file(root).name.clone();
    let stem = Path::new(&name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or(name);
    loader.load_file(root, key, stem);
    loader.modules
}

fn module_key(sources: &SourceMap, file: FileId) -> String {
    let f = sources.file(file);
    match &f.path {
        Some(p) => std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.clone())
            .to_string_lossy()
            .into_owned(),
        None => f.name.clone(),
    }
}

impl Loader<'_> {
    fn load_file(&mut self, file: FileId, key: String, name: String) -> ModuleId {
        let text = self.sources.file(file).text.clone();
        let ast = match crate::syntax::parse_file(file, &text) {
            Ok(ast) => ast,
            Err(e) => {
                self.diags.push(file, e);
                ast::File { items: Vec::new() }
            }
        };
        let id = ModuleId(self.modules.list.len());
        self.by_key.insert(key.clone(), id);
        self.stack.push(key);
        self.modules.list.push(Module {
            name,
            file,
            ast,
            items: HashMap::new(),
            imports: HashMap::new(),
        });
        self.collect_items(id);
        self.stack.pop();
        id
    }

    fn collect_items(&mut self, id: ModuleId) {
        let file = self.modules.list[id.0].file;
        let items = std::mem::take(&mut self.modules.list[id.0].ast.items);
        let mut first: HashMap<String, Span> = HashMap::new();
        for (index, item) in items.iter().enumerate() {
            let (name, span) = match item {
                ast::Item::Use(u) => {
                    if let Some((name, target)) = self.load_use(u, file) {
                        let span = u.span;
                        if self.define(&mut first, &name, span, file) {
                            self.modules.list[id.0].imports.insert(name, target);
                        }
                    }
                    continue;
                }
                ast::Item::Const(c) => (&c.name.name, c.name.span),
                ast::Item::Fn(f) => (&f.name.name, f.name.span),
                ast::Item::Layer(l) => (&l.name.name, l.name.span),
                ast::Item::Train(_) => continue,
            };
            if self.define(&mut first, name, span, file) {
                self.modules.list[id.0]
                    .items
                    .insert(name.clone(), ItemRef { module: id, index });
            }
        }
        self.modules.list[id.0].ast.items = items;
    }

    /// Record a definition; report and return false when the name is taken.
    fn define(
        &mut self,
        first: &mut HashMap<String, Span>,
        name: &str,
        span: Span,
        file: FileId,
    ) -> bool {
        if let Some(prev) = first.get(name) {
            self.diags.push(
                file,
                SemaError::Duplicate {
                    name: name.to_string(),
                    span: span.into(),
                    first: Some((*prev).into()),
                },
            );
            return false;
        }
        first.insert(name.to_string(), span);
        true
    }

    /// Load the target of a `use`; returns the name it binds.
    fn load_use(&mut self, u: &ast::UseItem, from: FileId) -> Option<(String, ModuleId)> {
        match &u.target {
            ast::UseTarget::Module(m) => {
                let key = format!("<stdlib>/{}.deq", m.name);
                if let Some(id) = self.by_key.get(&key) {
                    return Some((m.name.clone(), *id));
                }
                let Some((_, text)) = STDLIB.iter().find(|(n, _)| *n == m.name) else {
                    let names: Vec<&str> = STDLIB.iter().map(|(n, _)| *n).collect();
                    self.diags.push(
                        from,
                        SemaError::UnknownModule {
                            name: m.name.clone(),
                            span: m.span.into(),
                            help: suggest(&m.name, &names).map(|h| {
                                format!("{h}; to import a file, write `use \"{}.deq\";`", m.name)
                            }),
                        },
                    );
                    return None;
                };
                let file = self.sources.add(key.clone(), None, text);
                Some((m.name.clone(), self.load_file(file, key, m.name.clone())))
            }
            ast::UseTarget::File { path, span } => {
                let base = self
                    .sources
                    .file(from)
                    .path
                    .as_ref()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or_default();
                let full: PathBuf = base.join(path);
                let key = std::fs::canonicalize(&full)
                    .unwrap_or_else(|_| full.clone())
                    .to_string_lossy()
                    .into_owned();
                let stem = Path::new(path)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if self.stack.contains(&key) {
                    let start = self.stack.iter().position(|k| *k == key).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        self.stack[start..].iter().map(|k| short_name(k)).collect();
                    cycle.push(short_name(&key));
                    self.diags.push(
                        from,
                        SemaError::ImportCycle {
                            cycle: cycle.join(" -> "),
                            span: (*span).into(),
                        },
                    );
                    return None;
                }
                if let Some(id) = self.by_key.get(&key) {
                    return Some((stem, *id));
                }
                let text = match std::fs::read_to_string(&full) {
                    Ok(t) => t,
                    Err(e) => {
                        self.diags.push(
                            from,
                            SemaError::MissingFile {
                                path: full.display().to_string(),
                                reason: e.to_string(),
                                span: (*span).into(),
                            },
                        );
                        return None;
                    }
                };
                let file = self
                    .sources
                    .add(full.display().to_string(), Some(full.clone()), &text);
                Some((stem.clone(), self.load_file(file, key, stem)))
            }
        }
    }
}

fn short_name(key: &str) -> String {
    Path::new(key)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| key.to_string())
}
