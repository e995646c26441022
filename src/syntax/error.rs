//! The errors of the parsing phase: one enum, [`ParseError`].
//!
//! Owns what can go wrong between text and AST: syntax errors (converted
//! from pest's errors into "expected `;` or an operator, found `let`"),
//! literals that do not fit, bad escapes, unterminated strings and comments,
//! and nesting too deep to parse safely. Guarantees: every variant carries a
//! label span (a byte range into the file that was parsed; the caller knows
//! which file that is) and a stable `deq::parse::*` code.

use miette::{Diagnostic, SourceSpan};
use thiserror::Error;

use super::parser::Rule;

/// Everything that can go wrong while parsing one file.
#[derive(Debug, Clone, PartialEq, Eq, Error, Diagnostic)]
pub enum ParseError {
    /// The text does not follow the grammar.
    #[error("expected {expected}, found {found}")]
    #[diagnostic(code(deq::parse::syntax))]
    Syntax {
        /// What would have been accepted, in words: "`;` or an operator".
        expected: String,
        /// What was there: "`let`", "end of input".
        found: String,
        #[label("expected {expected}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    /// A syntax error that pest reports without a list of expectations.
    #[error("{message}")]
    #[diagnostic(code(deq::parse::syntax))]
    Other {
        message: String,
        #[label("here")]
        span: SourceSpan,
    },

    #[error("integer literal `{text}` does not fit in 64 bits")]
    #[diagnostic(
        code(deq::parse::int_overflow),
        help("integers are signed 64-bit (at most 9223372036854775807); write `{text}.0` or use an exponent for a float")
    )]
    IntOverflow {
        text: String,
        #[label("too large")]
        span: SourceSpan,
    },

    #[error("float literal `{text}` is out of range")]
    #[diagnostic(
        code(deq::parse::float_overflow),
        help("floats are 64-bit: their magnitude must stay below about 1.8e308")
    )]
    FloatOverflow {
        text: String,
        #[label("not a finite number")]
        span: SourceSpan,
    },

    #[error("unknown escape `{escape}` in a string")]
    #[diagnostic(
        code(deq::parse::bad_escape),
        help("the escapes are `\\\"`, `\\\\`, `\\n` and `\\t`; write `\\\\` for a backslash")
    )]
    BadEscape {
        escape: String,
        #[label("unknown escape")]
        span: SourceSpan,
    },

    #[error("unterminated string")]
    #[diagnostic(
        code(deq::parse::unterminated_string),
        help("close the string with `\"` on the same line; write `\\\"` for a quote inside it")
    )]
    UnterminatedString {
        #[label("this string is not closed before the end of its line")]
        span: SourceSpan,
    },

    #[error("unterminated block comment")]
    #[diagnostic(
        code(deq::parse::unterminated_comment),
        help("close it with `*/` (block comments do not nest)")
    )]
    UnterminatedComment {
        #[label("this comment is never closed")]
        span: SourceSpan,
    },

    #[error("nesting too deep: more than {limit} levels")]
    #[diagnostic(
        code(deq::parse::too_deep),
        help("split the expression into several `let` bindings")
    )]
    TooDeep {
        limit: usize,
        #[label("nesting passes {limit} levels here")]
        span: SourceSpan,
    },

    #[error("file too large: {size} bytes")]
    #[diagnostic(code(deq::parse::too_large), help("source files are limited to 4 GiB"))]
    TooLarge {
        size: usize,
        #[label("in this file")]
        span: SourceSpan,
    },
}

impl ParseError {
    /// The byte range the error's label points at.
    pub fn span(&self) -> SourceSpan {
        match self {
            ParseError::Syntax { span, .. }
            | ParseError::Other { span, .. }
            | ParseError::IntOverflow { span, .. }
            | ParseError::FloatOverflow { span, .. }
            | ParseError::BadEscape { span, .. }
            | ParseError::UnterminatedString { span }
            | ParseError::UnterminatedComment { span }
            | ParseError::TooDeep { span, .. }
            | ParseError::TooLarge { span, .. } => *span,
        }
    }

    /// The stable diagnostic code, e.g. `deq::parse::syntax`.
    pub fn code_str(&self) -> &'static str {
        match self {
            ParseError::Syntax { .. } | ParseError::Other { .. } => "deq::parse::syntax",
            ParseError::IntOverflow { .. } => "deq::parse::int_overflow",
            ParseError::FloatOverflow { .. } => "deq::parse::float_overflow",
            ParseError::BadEscape { .. } => "deq::parse::bad_escape",
            ParseError::UnterminatedString { .. } => "deq::parse::unterminated_string",
            ParseError::UnterminatedComment { .. } => "deq::parse::unterminated_comment",
            ParseError::TooDeep { .. } => "deq::parse::too_deep",
            ParseError::TooLarge { .. } => "deq::parse::too_large",
        }
    }
}

/// A miette span from a byte range (`end` before `start` is read as empty).
pub(crate) fn byte_span(start: usize, end: usize) -> SourceSpan {
    SourceSpan::new(start.into(), end.saturating_sub(start))
}

// ------------------------------------------------ from pest errors

/// How a grammar rule reads in "expected ..." messages, and where it sorts.
fn describe(rule: Rule) -> (u8, &'static str) {
    use Rule::*;
    match rule {
        semi => (0, "`;`"),
        comma => (1, "`,`"),
        colon => (1, "`:`"),
        assign => (1, "`=`"),
        arrow => (1, "`->`"),
        lparen => (2, "`(`"),
        rparen => (2, "`)`"),
        lbracket => (2, "`[`"),
        rbracket => (2, "`]`"),
        lbrace => (2, "`{`"),
        rbrace => (2, "`}`"),
        ellipsis => (2, "`..`"),
        kw_use | use_item => (3, "`use`"),
        kw_const | const_item => (3, "`const`"),
        kw_fn | fn_item => (3, "`fn`"),
        kw_layer | layer_item => (3, "`layer`"),
        kw_model | model_item => (3, "`model`"),
        kw_train | train_item => (3, "`train`"),
        kw_let | let_stmt | let_tuple_stmt => (4, "`let`"),
        kw_param | param_stmt => (4, "`param`"),
        kw_equilibrium | eq_stmt => (4, "`equilibrium`"),
        kw_return | return_stmt => (4, "`return`"),
        kw_with | with_clause => (5, "`with`"),
        kw_else | else_if => (5, "`else`"),
        kw_if => (5, "`if`"),
        hyper_params => (5, "`[`"),
        output | output_tuple => (5, "`->`"),
        fn_eq_body => (5, "`=`"),
        ty_int | ty_float | ty_bool | param_type => (6, "a type"),
        tensor_type | dtype => (6, "a tensor type"),
        rest_dim => (2, "`*`"),
        // `file` fails as a whole only when nothing at all parsed.
        file => (3, "an item"),
        ident | path => (7, "an identifier"),
        le | ge | eq | ne | lt | gt | add | sub | mul | div | matmul | pow | call | index => {
            (9, "an operator")
        }
        EOI => (10, "end of input"),
        _ => (8, "an expression"),
    }
}

const ITEM_WORDS: [&str; 6] = ["`use`", "`const`", "`fn`", "`layer`", "`model`", "`train`"];
const STMT_WORDS: [&str; 4] = ["`let`", "`param`", "`equilibrium`", "`return`"];

/// "`;` or an operator" from pest's list of rules tried at the error.
fn expected_words(rules: &[Rule]) -> String {
    let operators = rules.iter().any(|r| describe(*r).1 == "an operator");
    let mut words: Vec<(u8, &str)> = rules
        .iter()
        .map(|r| describe(*r))
        // After a complete operand, `(` and `[` continue it like operators.
        .map(|(k, w)| match w {
            "`(`" | "`[`" if operators => describe(Rule::add),
            _ => (k, w),
        })
        // ... and an `=` there (a named argument's) reads as noise.
        .filter(|(_, w)| !(operators && *w == "`=`"))
        .collect();
    words.sort();
    words.dedup();
    let mut words: Vec<&str> = words.into_iter().map(|(_, w)| w).collect();
    if ITEM_WORDS.iter().all(|w| words.contains(w)) {
        words.retain(|w| !ITEM_WORDS.contains(w));
        words.insert(0, "an item");
    }
    if STMT_WORDS.iter().filter(|w| words.contains(w)).count() >= 3 {
        words.retain(|w| !STMT_WORDS.contains(w));
        words.insert(0, "a statement");
    }
    match words.split_last() {
        None => "something else".to_string(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// What the text holds at byte `pos`, in words: "`let`", "end of input".
fn found_at(text: &str, pos: usize) -> String {
    let rest = text.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return "end of input".to_string();
    };
    let word_len = |f: fn(char) -> bool| rest.find(|c: char| !f(c)).unwrap_or(rest.len());
    if c.is_ascii_alphabetic() || c == '_' {
        let n = word_len(|c| c.is_ascii_alphanumeric() || c == '_');
        format!("`{}`", &rest[..n])
    } else if c.is_ascii_digit() {
        let n = word_len(|c| c.is_ascii_alphanumeric() || c == '.');
        format!("`{}`", &rest[..n])
    } else if c == '"' {
        "a string".to_string()
    } else if c.is_whitespace() || c.is_control() {
        format!("{c:?}")
    } else {
        format!("`{c}`")
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "use"
            | "const"
            | "fn"
            | "layer"
            | "model"
            | "train"
            | "let"
            | "param"
            | "equilibrium"
            | "with"
            | "return"
            | "true"
            | "false"
            | "if"
            | "else"
    )
}

/// The offset just after the last token before `pos`, skipping whitespace
/// and `//` comments.
fn end_of_previous_token(text: &str, pos: usize) -> usize {
    let mut before = text.get(..pos.min(text.len())).unwrap_or("").trim_end();
    loop {
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        match before[line_start..].find("//") {
            Some(c) => before = before[..line_start + c].trim_end(),
            None => return before.len(),
        }
    }
}

pub(crate) fn syntax_error(err: pest::error::Error<Rule>, text: &str) -> ParseError {
    use pest::error::{ErrorVariant, InputLocation};
    let (start, len) = match err.location {
        InputLocation::Pos(p) => (p, 0),
        InputLocation::Span((s, e)) => (s, e.saturating_sub(s)),
    };
    let err_pos = start;
    // At the end of input, point just after the last token rather than past
    // trailing blank lines, where no label can be drawn; with no trailing
    // whitespace at all, point at the last character.
    let start = if start >= text.len() && len == 0 {
        let trimmed = text.trim_end();
        match trimmed.chars().next_back() {
            Some(c) if trimmed.len() == text.len() => trimmed.len() - c.len_utf8(),
            _ => trimmed.len(),
        }
    } else {
        start
    };
    let mut span = miette::SourceSpan::new(start.into(), len);
    if let ErrorVariant::ParsingError { positives, .. } = &err.variant {
        if expected_words(positives).starts_with("`;`") {
            // A missing `;` at a line end belongs after the last token of that
            // line, not on the next line.
            let prev = end_of_previous_token(text, err_pos);
            if text
                .get(prev..err_pos)
                .is_some_and(|gap| gap.contains('\n'))
            {
                span = miette::SourceSpan::new(prev.into(), 0);
            }
        }
    }
    match err.variant {
        ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let expected = expected_words(&positives);
            let found = found_at(text, err_pos);
            let word = found.trim_matches('`');
            let help = if is_keyword(word) && expected.contains("an identifier") {
                Some(format!(
                    "`{word}` is a keyword and cannot be used as a name"
                ))
            } else if expected.starts_with("`;`") {
                Some("statements and items end with `;`".to_string())
            } else if expected.starts_with("an item") {
                Some(
                    "a file holds items: `use`, `const`, `fn`, `layer`, `model` and `train`".into(),
                )
            } else {
                None
            };
            ParseError::Syntax {
                expected,
                found,
                span,
                help,
            }
        }
        ErrorVariant::ParsingError { .. } => ParseError::Other {
            message: format!("unexpected {}", found_at(text, err_pos)),
            span,
        },
        ErrorVariant::CustomError { message } => ParseError::Other { message, span },
    }
}
