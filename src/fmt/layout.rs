//! The canonical layout: where line breaks, indentation and spaces go
//! between the tokens of a `.deq` file.
//!
//! The rules (documented for users in README.md, `deqc fmt`):
//! - indentation is 4 spaces per open bracket level (brackets opened on one
//!   line count as one level), plus one level for a line that continues a
//!   statement (e.g. a `with` clause or an operator chain broken over lines);
//! - the line breaks the author wrote are kept, with at most one blank line
//!   in a row and none just inside brackets; a `;` ends its line, a block
//!   holding statements puts each on its own line with `{` and `}` closing
//!   their lines, and a top-level item starts on a new line;
//! - spaces: one around binary operators and `=`, after `,`, `:` (in types)
//!   and keywords, inside `{ }` when on one line; none inside `( )` and
//!   `[ ]`, before `,` `;` `:`, around `::`, after a unary `-`, between a
//!   name and its `(` or `[`, and around a slice's `:`;
//! - comments keep their text exactly and stay on the line they were on
//!   (a trailing line comment, or a block comment after `;` or `,`, gets
//!   one space before it; another block comment inside a line keeps whether
//!   it was separated by whitespace).
//!
//! Guarantees: only whitespace between tokens changes, and the layout
//! depends on the tokens and the author's line breaks alone, so it is a
//! fixed point (`layout(layout(x)) == layout(x)`).

use super::lexer::{Kind, Token};

use crate::syntax::KEYWORDS;

fn is_keyword(t: &Token) -> bool {
    t.kind == Kind::Word && KEYWORDS.contains(&t.text)
}

fn is_opener(t: &Token) -> bool {
    t.is("(") || t.is("[") || t.is("{")
}

fn is_closer(t: &Token) -> bool {
    t.is(")") || t.is("]") || t.is("}")
}

/// Whether `t` ends an operand, so that a `-` or `*` after it is binary.
fn ends_operand(t: &Token) -> bool {
    match t.kind {
        Kind::Word => !is_keyword(t) || t.text == "true" || t.text == "false",
        Kind::Number | Kind::Str => true,
        Kind::Punct => is_closer(t),
        Kind::LineComment | Kind::BlockComment => false,
    }
}

/// For each `{`, whether it directly holds a `;` (a block of statements).
fn blocks_with_statements(tokens: &[Token]) -> Vec<bool> {
    let mut holds = vec![false; tokens.len()];
    let mut open: Vec<usize> = Vec::new();
    for (k, t) in tokens.iter().enumerate() {
        if is_opener(t) {
            open.push(k);
        } else if is_closer(t) {
            open.pop();
        } else if t.is(";") {
            if let Some(&o) = open.last() {
                if tokens[o].is("{") {
                    holds[o] = true;
                }
            }
        }
    }
    holds
}

/// An open bracket while laying out.
struct Open {
    /// The indentation level of the lines inside it.
    inner_level: usize,
    /// A `[` whose `:` are slices (not the hyper-parameters of a layer).
    slice: bool,
    /// A `{` (not `(` or `[`).
    brace: bool,
    /// A `{` whose statements go on their own lines.
    statements: bool,
}

/// Lay out `tokens` (the whole file) canonically.
pub fn layout(tokens: &[Token]) -> String {
    let statements = blocks_with_statements(tokens);
    let mut out = String::new();
    let mut stack: Vec<Open> = Vec::new();
    // Per token: a unary `-` or a `*` standing for "any dims".
    let mut unary = vec![false; tokens.len()];
    let mut line_level = 0usize;
    let mut prev: Option<usize> = None;
    let mut prev_code: Option<usize> = None;
    let mut pending_break = false;
    for (k, t) in tokens.iter().enumerate() {
        let p = prev.map(|i| &tokens[i]);
        let pc = prev_code.map(|i| &tokens[i]);
        if !t.is_comment() && (t.is("-") || t.is("*")) {
            unary[k] = !pc.is_some_and(ends_operand);
        }
        let mut newlines = match p {
            None => 0,
            Some(_) => t.newlines_before.min(2),
        };
        if let Some(p) = p {
            if p.kind == Kind::LineComment || (pending_break && !t.is_comment()) {
                newlines = newlines.max(1);
            }
            if t.is("}") && stack.last().is_some_and(|o| o.statements) {
                newlines = newlines.max(1);
            }
            if is_opener(p) || is_closer(t) {
                newlines = newlines.min(1);
            }
        }
        if newlines > 0 {
            pending_break = false;
            for _ in 0..newlines {
                out.push('\n');
            }
            let top = stack.last();
            line_level = if is_closer(t) {
                top.map_or(0, |o| o.inner_level.saturating_sub(1))
            } else {
                top.map_or(0, |o| o.inner_level) + usize::from(continues(pc, top))
            };
            for _ in 0..line_level {
                out.push_str("    ");
            }
        } else if let Some(p) = p {
            let space =
                if t.kind == Kind::LineComment || (t.is_comment() && (p.is(";") || p.is(","))) {
                    true
                } else if t.is_comment() || p.is_comment() {
                    t.space_before
                } else {
                    space_between(p, t, prev.is_some_and(|i| unary[i]), stack.last())
                };
            if space {
                out.push(' ');
            }
        }
        out.push_str(t.text);
        if t.is_comment() {
            prev = Some(k);
            continue;
        }
        if is_opener(t) {
            let hyper = k >= 2 && tokens[k - 2].kind == Kind::Word && tokens[k - 2].text == "layer";
            stack.push(Open {
                inner_level: line_level + 1,
                slice: t.is("[") && !hyper,
                brace: t.is("{"),
                statements: t.is("{") && statements[k],
            });
            if t.is("{") && statements[k] {
                pending_break = true;
            }
        } else if is_closer(t) {
            stack.pop();
            if t.is("}") && stack.is_empty() {
                pending_break = true;
            }
        } else if t.is(";") {
            pending_break = true;
        }
        prev = Some(k);
        prev_code = Some(k);
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Whether a line after `prev` (the last token that is not a comment)
/// continues a statement, and so takes one more level of indentation.
fn continues(prev: Option<&Token>, top: Option<&Open>) -> bool {
    let Some(p) = prev else { return false };
    if p.is(";") || is_opener(p) || p.is("}") {
        return false;
    }
    if p.is(",") {
        // A `,` inside `( )` or `[ ]` separates items; at block level it
        // only separates `with` options.
        return top.is_none_or(|o| o.brace);
    }
    true
}

/// Whether one space goes between `p` and `t` on one line; `p_unary` says
/// that `p` is a unary `-` or a `*` standing for dims.
fn space_between(p: &Token, t: &Token, p_unary: bool, top: Option<&Open>) -> bool {
    if t.is(",") || t.is(";") || t.is(")") || t.is("]") {
        return false;
    }
    if t.is(":") {
        // `x[:, ::2]`: a slice after a comma is spaced like any item.
        return p.is(",");
    }
    if t.is("::") || p.is("::") || p.is("(") || p.is("[") {
        return false;
    }
    if t.is("}") {
        return !p.is("{");
    }
    if p.is("{") || t.is("{") {
        return true;
    }
    if p.is(":") {
        return !top.is_some_and(|o| o.slice);
    }
    if t.is("(") || t.is("[") {
        let name = p.kind == Kind::Word && !is_keyword(p);
        return !(name || p.is(")") || p.is("]") || p_unary);
    }
    if p_unary {
        return false;
    }
    true
}
