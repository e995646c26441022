//! Syntax: `.deq` text to an AST with spans (grammar in `grammar/deq.pest`).
pub mod ast;
mod stub_parser;
pub use stub_parser::{parse_file, ParseError};
