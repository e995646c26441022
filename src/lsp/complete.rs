//! Completion: what may be typed at the cursor.
//!
//! Owns the reading of the cursor's context from the text before it (the
//! parse tree of a half-typed file is usually missing): after `m::` the
//! items of module `m`; inside `with` the equilibrium options, after
//! `solver =` the solvers, after `backward =` the backward modes, inside
//! `anderson(` or `implicit(` their arguments; the keys of a `train` block;
//! initializers after `param ... =`; elsewhere locals in scope, the file's
//! items, `use`d modules, built-ins and keywords. Guarantees: works on any
//! text and cursor (byte offsets are clamped to character boundaries).

use lsp_types::{
    CompletionItem, CompletionItemKind, Documentation, InsertTextFormat, MarkupContent, MarkupKind,
};

use crate::lsp::analysis::{Analysis, DefKind, Role};
use crate::lsp::docs;
use crate::syntax::ast;

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The identifier that ends right before byte `end` of `text`.
fn ident_before(text: &str, end: usize) -> &str {
    let head = &text[..end];
    let start = head
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_ident(*c))
        .last()
        .map_or(end, |(i, _)| i);
    &head[start..]
}

/// Where the cursor is, as far as completion cares.
#[derive(Debug, PartialEq)]
enum Context {
    Member(String),
    WithOption,
    Value(String),
    SettingArgs(String),
    TrainKey,
    Init,
    Anywhere,
}

fn context(text: &str, word_start: usize) -> Context {
    let head = &text[..word_start];
    if let Some(before) = head.strip_suffix("::") {
        return Context::Member(ident_before(before, before.len()).to_string());
    }
    // The statement so far: from the last `;`, `{` or `}`.
    let stmt_start = head.rfind([';', '{', '}']).map_or(0, |i| i + 1);
    let stmt = &head[stmt_start..];
    // The innermost open parenthesis and the argument being written.
    let mut opens: Vec<usize> = Vec::new();
    let mut arg_start = 0;
    let mut arg_starts: Vec<usize> = Vec::new();
    for (i, c) in stmt.char_indices() {
        match c {
            '(' | '[' => {
                opens.push(i);
                arg_starts.push(arg_start);
                arg_start = i + 1;
            }
            ')' | ']' => {
                opens.pop();
                arg_start = arg_starts.pop().unwrap_or(0);
            }
            ',' => arg_start = i + 1,
            _ => {}
        }
    }
    let arg = &stmt[arg_start..];
    let key = arg.rfind('=').and_then(|eq| {
        let lhs = arg[..eq].trim_end();
        let k = ident_before(lhs, lhs.len());
        (!k.is_empty() && !arg[eq..].starts_with("==")).then(|| k.to_string())
    });
    if let Some(&open) = opens.last() {
        if stmt.as_bytes().get(open) == Some(&b'(') {
            let callee = ident_before(stmt, open).to_string();
            if docs::setting_args(&callee).is_some() {
                return match key {
                    Some(k) => Context::Value(k),
                    None => Context::SettingArgs(callee),
                };
            }
        }
    }
    let words: Vec<&str> = stmt.split(|c: char| !is_ident(c)).collect();
    let in_with = words.contains(&"with");
    if in_with && opens.is_empty() {
        // After `with`, or after a `,` that ends an option.
        let after_with = stmt.rfind("with").map_or(stmt, |i| &stmt[i + 4..]);
        let current = after_with.rsplit(',').next().unwrap_or("");
        return match key.filter(|_| current.contains('=')) {
            Some(k) => Context::Value(k),
            None => Context::WithOption,
        };
    }
    if stmt.trim_start().starts_with("param") && stmt.contains('=') && opens.is_empty() {
        return Context::Init;
    }
    if in_train_block(head) && key.is_none() && opens.is_empty() {
        return Context::TrainKey;
    }
    Context::Anywhere
}

/// Is the innermost open `{` before the cursor a `train Name {`?
fn in_train_block(head: &str) -> bool {
    let mut depth = 0i32;
    for (i, c) in head.char_indices().rev() {
        match c {
            '}' => depth += 1,
            '{' if depth > 0 => depth -= 1,
            '{' => {
                let before = head[..i].trim_end();
                let name = ident_before(before, before.len());
                let rest = before[..before.len() - name.len()].trim_end();
                return !name.is_empty() && ident_before(rest, rest.len()) == "train";
            }
            _ => {}
        }
    }
    false
}

fn item(label: &str, kind: CompletionItemKind, detail: Option<String>) -> CompletionItem {
    CompletionItem {
        label: label.to_string(),
        kind: Some(kind),
        detail,
        ..Default::default()
    }
}

fn with_doc(mut c: CompletionItem, doc: Option<String>) -> CompletionItem {
    c.documentation = doc.map(|value| {
        Documentation::MarkupContent(MarkupContent {
            kind: MarkupKind::Markdown,
            value,
        })
    });
    c
}

/// `name = ` as a snippet-free insertion.
fn key_item(name: &str, kind: CompletionItemKind, detail: Option<String>) -> CompletionItem {
    CompletionItem {
        insert_text: Some(format!("{name} = ")),
        insert_text_format: Some(InsertTextFormat::PLAIN_TEXT),
        ..item(name, kind, detail)
    }
}

/// `key = ` items for a list of keys, each with its documentation.
fn properties(keys: &[&str], doc: fn(&str) -> Option<&'static str>) -> Vec<CompletionItem> {
    keys.iter()
        .map(|k| key_item(k, CompletionItemKind::PROPERTY, doc(k).map(String::from)))
        .collect()
}

/// The completions at byte `offset` of `text`, with names from the last
/// check whose file parsed (`None`: none did yet).
pub fn complete(a: Option<&Analysis>, text: &str, offset: usize) -> Vec<CompletionItem> {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let word = ident_before(text, offset);
    let word_start = offset - word.len();
    let setting = |name: &&str| {
        with_doc(
            item(
                name,
                CompletionItemKind::ENUM_MEMBER,
                docs::setting_signature(name),
            ),
            docs::hover(name),
        )
    };
    match context(text, word_start) {
        Context::Member(m) => a.map(|a| members(a, &m)).unwrap_or_default(),
        Context::WithOption => properties(docs::eq_options(), docs::eq_option_doc),
        Context::Value(k) if k == "solver" => docs::solvers().iter().map(setting).collect(),
        Context::Value(k) if k == "backward" => {
            docs::backward_modes().iter().map(setting).collect()
        }
        Context::SettingArgs(callee) => docs::setting_args(&callee)
            .unwrap_or_default()
            .iter()
            .map(|arg| {
                let detail = match &arg.default {
                    Some(d) => format!("{} (default {d})", arg.expected),
                    None => format!("{} (required)", arg.expected),
                };
                key_item(arg.name, CompletionItemKind::FIELD, Some(detail))
            })
            .collect(),
        Context::TrainKey => properties(docs::train_keys(), docs::train_key_doc),
        Context::Init => {
            let mut out: Vec<CompletionItem> = docs::inits()
                .iter()
                .map(|i| {
                    item(
                        i,
                        CompletionItemKind::ENUM_MEMBER,
                        docs::init_doc(i).map(String::from),
                    )
                })
                .collect();
            out.extend(anywhere(a, offset));
            out
        }
        Context::Value(_) | Context::Anywhere => anywhere(a, offset),
    }
}

/// The items of the module imported as `m`.
fn members(a: &Analysis, m: &str) -> Vec<CompletionItem> {
    let Some(root) = a.root() else {
        return Vec::new();
    };
    let Some(id) = root.imports.get(m) else {
        return Vec::new();
    };
    let module = a.modules().get(*id);
    let mut names: Vec<(&String, &crate::sema::modules::ItemRef)> = module.items.iter().collect();
    names.sort_by_key(|(_, r)| r.index);
    names
        .into_iter()
        .map(|(name, r)| {
            let kind = item_kind(a.modules().item(*r));
            let hover = a.item_hover(*r);
            let detail = hover.lines().nth(1).map(String::from);
            with_doc(item(name, kind, detail), Some(hover))
        })
        .collect()
}

fn item_kind(item: &ast::Item) -> CompletionItemKind {
    match item {
        ast::Item::Const(_) => CompletionItemKind::CONSTANT,
        ast::Item::Fn(_) => CompletionItemKind::FUNCTION,
        ast::Item::Layer(_) => CompletionItemKind::CLASS,
        ast::Item::Use(_) | ast::Item::Train(_) => CompletionItemKind::TEXT,
    }
}

/// Locals in scope, the file's items, modules, built-ins and keywords.
fn anywhere(a: Option<&Analysis>, offset: usize) -> Vec<CompletionItem> {
    let mut out = Vec::new();
    if let Some(a) = a {
        out.extend(user_names(a, offset));
    }
    for b in docs::builtins() {
        out.push(with_doc(
            item(
                b,
                CompletionItemKind::FUNCTION,
                docs::builtin_doc(b).map(String::from),
            ),
            docs::hover(b),
        ));
    }
    for k in docs::KEYWORDS {
        out.push(item(k, CompletionItemKind::KEYWORD, None));
    }
    // Only the names, so a client never offers one twice.
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(c.label.clone()));
    out
}

/// Locals in scope at `offset`, the file's items and its modules.
fn user_names(a: &Analysis, offset: usize) -> Vec<CompletionItem> {
    let mut out = Vec::new();
    if let Some(item_index) = a.item_at(offset) {
        for j in a.locals_at(item_index, offset) {
            let o = &a.occs[j];
            let Role::Def(kind) = o.role else { continue };
            let ck = match kind {
                DefKind::Param => CompletionItemKind::FIELD,
                _ => CompletionItemKind::VARIABLE,
            };
            out.push(item(&o.name, ck, Some(kind.word().to_string())));
        }
    }
    if let Some(root) = a.root() {
        let mut items: Vec<_> = root.items.iter().collect();
        items.sort_by_key(|(_, r)| r.index);
        for (name, r) in items {
            let hover = a.item_hover(*r);
            let detail = hover.lines().nth(1).map(String::from);
            out.push(with_doc(
                item(name, item_kind(a.modules().item(*r)), detail),
                Some(hover),
            ));
        }
        let mut modules: Vec<_> = root.imports.keys().collect();
        modules.sort();
        for m in modules {
            out.push(item(m, CompletionItemKind::MODULE, Some("module".into())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(text: &str) -> Context {
        context(text, text.len())
    }

    #[test]
    fn contexts_from_the_text_before_the_cursor() {
        assert_eq!(ctx("let l = nn::"), Context::Member("nn".into()));
        assert_eq!(
            ctx("equilibrium z: [B, 4] = f(z) with "),
            Context::WithOption
        );
        assert_eq!(
            ctx("equilibrium z: [B, 4] = f(z) with solver = "),
            Context::Value("solver".into())
        );
        assert_eq!(
            ctx("equilibrium z: [B, 4] = f(z) with solver = anderson(m = 5), "),
            Context::WithOption
        );
        assert_eq!(
            ctx("equilibrium z: [B, 4] = f(z) with solver = anderson(m = 5, "),
            Context::SettingArgs("anderson".into())
        );
        assert_eq!(
            ctx("equilibrium z: [B, 4] = f(z) with backward = implicit(solver = "),
            Context::Value("solver".into())
        );
        assert_eq!(ctx("train M {\n  epochs = 3;\n  "), Context::TrainKey);
        assert_eq!(ctx("model M(x: [B, 4]) {\n  let y = "), Context::Anywhere);
        assert_eq!(
            ctx("layer L[](x: [B, 4]) {\n  param w: [4, 4] = "),
            Context::Init
        );
    }
}
