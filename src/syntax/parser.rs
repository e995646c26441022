//! The parser: `.deq` text to [`ast::File`], via the pest grammar in
//! `grammar/deq.pest`.
//!
//! Owns the entry point [`parse_file`], the grammar's [`Rule`]s, operator
//! precedence (a Pratt parser over the grammar's flat operator chains) and
//! the lexical pre-scan; the lowering from pest pairs to AST nodes lives in
//! `lower.rs` (one `lower_<rule>` function per grammar rule) and the
//! conversion of pest's errors in `error.rs`.
//!
//! Guarantees:
//! - never panics on any input: the only panicking paths are
//!   `unreachable!`s on shapes that the grammar guarantees (see `next`);
//! - bounded recursion: a scan before parsing rejects more than
//!   [`MAX_NESTING`] nested brackets (pest recurses on them), and lowering
//!   rejects expression trees deeper than [`MAX_NESTING`] (operator chains,
//!   calls, `else if` chains), so later passes may recurse over the AST;
//! - texts nested deeper than a few levels are parsed on a thread of their
//!   own with a stack sized for [`MAX_NESTING`] levels, whatever the
//!   caller's stack;
//! - texts over 4 GiB are rejected (spans are 32-bit);
//! - every node's span is the byte range of the text it came from.

use std::sync::OnceLock;

use pest::iterators::Pair;
use pest::pratt_parser::{Assoc, Op, PrattParser};
use pest::Parser;

use super::ast;
use super::error::{byte_span, syntax_error, ParseError};
use super::lower::Lower;
use crate::source::FileId;

#[derive(pest_derive::Parser)]
#[grammar = "grammar/deq.pest"]
struct DeqParser;

/// The deepest nesting accepted: brackets of any kind, and the depth of an
/// expression tree (so `a + b + ... ` may have at most this many operators).
pub const MAX_NESTING: usize = 256;

type PResult<T> = Result<T, ParseError>;

/// Bracket depth up to which parsing runs on the caller's thread.
const INLINE_DEPTH: usize = 24;

/// Stack for parsing deeper texts: pest and the lowering use up to about
/// 32 KiB per bracket level in unoptimized builds, so [`MAX_NESTING`] levels
/// need about 8 MiB; this leaves a wide margin (the memory is reserved, and
/// only touched as used).
const PARSE_STACK: usize = 64 << 20;

/// Parse one file. `file` is stamped into every span of the result.
pub fn parse_file(file: FileId, text: &str) -> Result<ast::File, ParseError> {
    if u32::try_from(text.len()).is_err() {
        return Err(ParseError::TooLarge {
            size: text.len(),
            span: byte_span(0, 0),
        });
    }
    let depth = prescan(text)?;
    if depth <= INLINE_DEPTH {
        return parse_checked(file, text);
    }
    // Deep nesting: parse on a thread whose stack is known to suffice,
    // whatever the caller's stack is.
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("deqc-parse".to_string())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || parse_checked(file, text));
        match worker {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: try on this one.
            Err(_) => parse_checked(file, text),
        }
    })
}

/// Parse a text that [`prescan`] accepted.
fn parse_checked(file: FileId, text: &str) -> Result<ast::File, ParseError> {
    let mut pairs = DeqParser::parse(Rule::file, text).map_err(|e| syntax_error(e, text))?;
    // `file` succeeded, so it produced exactly one `file` pair.
    let root = next(&mut pairs, "file");
    Lower::new(file).lower_file(root)
}

/// The next meaningful child. Callers name the grammar rule that guarantees
/// the child exists; `None` there is a bug in this file, never bad input.
pub(super) fn next<'i>(
    it: &mut impl Iterator<Item = Pair<'i, Rule>>,
    rule: &str,
) -> Pair<'i, Rule> {
    it.next()
        .unwrap_or_else(|| unreachable!("the grammar rule `{rule}` guarantees this child"))
}

/// Punctuation and keywords: matched, but carrying nothing for the AST.
pub(super) fn is_token(rule: Rule) -> bool {
    use Rule::*;
    matches!(
        rule,
        semi | comma
            | colon
            | assign
            | arrow
            | lparen
            | rparen
            | lbracket
            | rbracket
            | lbrace
            | rbrace
            | kw_use
            | kw_const
            | kw_fn
            | kw_layer
            | kw_model
            | kw_train
            | kw_let
            | kw_param
            | kw_equilibrium
            | kw_with
            | kw_return
            | kw_if
            | kw_else
            | else_if
            | EOI
    )
}

/// The children of a pair that carry AST content.
pub(super) fn children(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| !is_token(p.as_rule()))
}

pub(super) fn pratt() -> &'static PrattParser<Rule> {
    static PRATT: OnceLock<PrattParser<Rule>> = OnceLock::new();
    PRATT.get_or_init(|| {
        use Rule::*;
        // Lowest precedence first (LANGUAGE.md section 7).
        PrattParser::new()
            .op(Op::infix(lt, Assoc::Left)
                | Op::infix(le, Assoc::Left)
                | Op::infix(gt, Assoc::Left)
                | Op::infix(ge, Assoc::Left)
                | Op::infix(eq, Assoc::Left)
                | Op::infix(ne, Assoc::Left))
            .op(Op::infix(add, Assoc::Left) | Op::infix(sub, Assoc::Left))
            .op(Op::infix(mul, Assoc::Left)
                | Op::infix(div, Assoc::Left)
                | Op::infix(matmul, Assoc::Left))
            .op(Op::prefix(neg))
            .op(Op::infix(pow, Assoc::Right))
            .op(Op::postfix(call) | Op::postfix(index))
    })
}

// ------------------------------------------------------------ pre-scan

/// Reject what pest cannot report well or safely: brackets nested deeper
/// than [`MAX_NESTING`] (pest's recursion would exhaust the stack),
/// unterminated strings and block comments. Strings and comments are
/// skipped exactly as the grammar's `string` and `COMMENT` rules do.
/// Returns the deepest bracket nesting.
fn prescan(text: &str) -> PResult<usize> {
    let b = text.as_bytes();
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut i = 0usize;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match text[i + 2..].find("*/") {
                Some(k) => i += 2 + k + 1,
                None => {
                    return Err(ParseError::UnterminatedComment {
                        span: byte_span(i, i + 2),
                    })
                }
            },
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => {
                            return Err(ParseError::UnterminatedString {
                                span: byte_span(start, i),
                            })
                        }
                        Some(b'"') => break,
                        Some(b'\\') if !matches!(b.get(i + 1), None | Some(b'\n')) => i += 2,
                        Some(_) => i += 1,
                    }
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if depth > MAX_NESTING {
                    return Err(ParseError::TooDeep {
                        limit: MAX_NESTING,
                        span: byte_span(i, i + 1),
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(deepest)
}
