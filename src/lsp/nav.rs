//! Navigation: go to definition and the document's symbol outline.
//!
//! Owns the mapping from spans to protocol locations, including spans in
//! the embedded standard library, which editors can only open from a file:
//! `stdlib/*.deq` is written once to a folder under the temporary directory
//! (named after the deqc version) and locations point there. Guarantees:
//! a span whose file has no place on disk gives no location rather than a
//! wrong one.

use std::path::{Path, PathBuf};

use lsp_types::{DocumentSymbol, Location, SymbolKind, Uri};

use crate::lsp::analysis::{Analysis, DefKind, Role};
use crate::lsp::position::{path_to_uri, LineIndex};
use crate::sema::modules::STDLIB;
use crate::source::Span;
use crate::syntax::ast;

/// Where the embedded stdlib module `name` (e.g. `nn`) is written for editors.
pub fn stdlib_path(name: &str) -> Option<PathBuf> {
    let (_, text) = STDLIB.iter().find(|(n, _)| *n == name)?;
    let dir = std::env::temp_dir().join(format!("deqc-{}-stdlib", env!("CARGO_PKG_VERSION")));
    let path = dir.join(format!("{name}.deq"));
    let current = std::fs::read_to_string(&path).ok();
    if current.as_deref() != Some(*text) {
        // Written aside and renamed, so a reader never sees half a file.
        std::fs::create_dir_all(&dir).ok()?;
        let partial = dir.join(format!("{name}.deq.{}", std::process::id()));
        std::fs::write(&partial, text).ok()?;
        std::fs::rename(&partial, &path).ok()?;
    }
    Some(path)
}

/// The document `uri` stands for the root file; other files get their own.
pub fn location(a: &Analysis, span: Span, root_uri: &Uri) -> Option<Location> {
    let file = a.sources().file(span.file);
    let index = LineIndex::new(&file.text);
    let range = index.range(span.start as usize, span.end as usize);
    if span.file == a.root_file() {
        return Some(Location {
            uri: root_uri.clone(),
            range,
        });
    }
    let path = match &file.path {
        Some(p) => absolute(p),
        None => {
            let stem = file.name.strip_prefix("<stdlib>/")?.strip_suffix(".deq")?;
            stdlib_path(stem)?
        }
    };
    Some(Location {
        uri: path_to_uri(&path)?,
        range,
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

/// Where the name under `offset` is defined.
pub fn definition(a: &Analysis, offset: usize, root_uri: &Uri) -> Option<Location> {
    let i = a.occ_at(offset)?;
    let target = a.resolve(i)?;
    location(a, a.target_span(target), root_uri)
}

/// The outline: items, and inside layers and models their instances,
/// parameters and equilibrium states.
#[allow(deprecated)] // `DocumentSymbol::deprecated` must still be written.
pub fn symbols(a: &Analysis) -> Vec<DocumentSymbol> {
    let Some(root) = a.root() else {
        return Vec::new();
    };
    let index = LineIndex::new(a.root_text());
    let range = |s: Span| index.range(s.start as usize, s.end as usize);
    let mut out = Vec::new();
    for (i, item) in root.ast.items.iter().enumerate() {
        let (name, kind, detail) = match item {
            ast::Item::Use(_) => continue,
            ast::Item::Train(t) => (&t.model, SymbolKind::EVENT, "train"),
            ast::Item::Const(c) => (&c.name, SymbolKind::CONSTANT, "const"),
            ast::Item::Fn(f) => (&f.name, SymbolKind::FUNCTION, "fn"),
            ast::Item::Layer(l) if l.kind == ast::LayerKind::Model => {
                (&l.name, SymbolKind::MODULE, "model")
            }
            ast::Item::Layer(l) => (&l.name, SymbolKind::CLASS, "layer"),
        };
        let children: Vec<DocumentSymbol> = a
            .occs
            .iter()
            .filter(|o| o.item == i)
            .filter_map(|o| {
                let (kind, detail) = match o.role {
                    Role::Def(DefKind::Let) => {
                        let (q, n) = o.instance_of.as_ref()?;
                        let layer = a.resolve_path(q.as_deref(), n);
                        if !a.is_layer(layer) {
                            return None;
                        }
                        let what = match q {
                            Some(q) => format!("instance of {q}::{n}"),
                            None => format!("instance of {n}"),
                        };
                        (SymbolKind::OBJECT, what)
                    }
                    Role::Def(DefKind::Param) => (SymbolKind::FIELD, "param".to_string()),
                    Role::Def(DefKind::State) => {
                        (SymbolKind::VARIABLE, "equilibrium state".to_string())
                    }
                    _ => return None,
                };
                Some(DocumentSymbol {
                    name: o.name.clone(),
                    detail: Some(detail),
                    kind,
                    tags: None,
                    deprecated: None,
                    range: range(o.span),
                    selection_range: range(o.span),
                    children: None,
                })
            })
            .collect();
        out.push(DocumentSymbol {
            name: name.name.clone(),
            detail: Some(detail.to_string()),
            kind,
            tags: None,
            deprecated: None,
            range: range(item.span()),
            selection_range: range(name.span),
            children: (!children.is_empty()).then_some(children),
        });
    }
    out
}
