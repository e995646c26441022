//! Syntax: `.deq` text to an AST with spans (grammar in `grammar/deq.pest`).
//!
//! Owns the front of the compiler up to the AST: the grammar, the parser,
//! the parse errors and the AST printer. Guarantees: [`parse_file`] never
//! panics and either returns the whole file's AST or one [`ParseError`].
pub mod ast;
pub mod error;
mod lower;
pub mod parser;
pub mod print;

pub use error::ParseError;

/// Every reserved word of the grammar (`keyword` in `grammar/deq.pest`;
/// `tests/editor_grammar.rs` checks that the two agree). The formatter and
/// the language server both read this list.
pub const KEYWORDS: &[&str] = &[
    "use",
    "const",
    "fn",
    "layer",
    "model",
    "train",
    "let",
    "param",
    "equilibrium",
    "with",
    "return",
    "true",
    "false",
    "if",
    "else",
];

pub use parser::parse_file;
