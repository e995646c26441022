//! Syntax: `.deq` text to an AST with spans (grammar in `grammar/deq.pest`).
pub mod ast;
