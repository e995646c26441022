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
            | ParseError::TooDeep { span, .. } => *span,
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
        }
    }
}

/// A miette span from a byte range (`end` before `start` is read as empty).
pub(crate) fn byte_span(start: usize, end: usize) -> SourceSpan {
    SourceSpan::new(start.into(), end.saturating_sub(start))
}
