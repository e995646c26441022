//! deqc: a language and compiler for deep equilibrium models.
pub mod diag;
pub mod sema;
pub mod source;
pub mod syntax;
