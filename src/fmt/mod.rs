//! `deqc fmt`: the one canonical layout of `.deq` files.
//!
//! Owns formatting: [`format_source`] lexes a file that parses (comments
//! included, see [`lexer`]) and lays its tokens out again ([`layout`]).
//! Guarantees: the output has exactly the input's tokens and comments in the
//! same order (checked on every call, so a layout bug is an error, never a
//! changed program), it parses, and formatting it again changes nothing. A
//! file that does not parse is refused with its parse error.

pub mod layout;
pub mod lexer;

use miette::Diagnostic;
use thiserror::Error;

use crate::source::FileId;
use crate::syntax::ParseError;

/// Why a file could not be formatted.
#[derive(Debug, Clone, PartialEq, Eq, Error, Diagnostic)]
pub enum FmtError {
    /// The file does not parse: the formatter only lays out valid syntax.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Syntax(#[from] ParseError),

    /// The layout changed the tokens (a bug in the formatter, which then
    /// leaves the file alone).
    #[error("the formatter would change the program near byte {offset} (a bug in deqc fmt; the file was left as it is)")]
    #[diagnostic(
        code(deq::fmt::tokens_changed),
        help("please report this file; `deqc fmt --check` still works on the others")
    )]
    TokensChanged { offset: usize },
}

/// The canonical layout of `text`, a whole `.deq` file.
pub fn format_source(text: &str) -> Result<String, FmtError> {
    crate::syntax::parse_file(FileId(0), text)?;
    let tokens = lexer::lex(text);
    let out = layout::layout(&tokens);
    let again = lexer::lex(&out);
    let same = |a: &lexer::Token, b: &lexer::Token| a.kind == b.kind && a.text == b.text;
    if let Some(k) = (0..tokens.len().max(again.len()))
        .find(|&k| !matches!((tokens.get(k), again.get(k)), (Some(a), Some(b)) if same(a, b)))
    {
        let offset = tokens.get(k).map_or(text.len(), |t| {
            t.text.as_ptr() as usize - text.as_ptr() as usize
        });
        return Err(FmtError::TokensChanged { offset });
    }
    crate::syntax::parse_file(FileId(0), &out)?;
    Ok(out)
}

/// `deqc fmt [--check] FILE...`: rewrite each file that is not in the
/// canonical layout, or with `check` only name them. Exit code 0 when all
/// are (now) formatted, 1 when `--check` found some that are not or a file
/// does not parse, 2 when a file cannot be read or written.
pub fn command(files: &[std::path::PathBuf], check: bool) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut code = ExitCode::SUCCESS;
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let formatted = match format_source(&text) {
            Ok(f) => f,
            Err(e) => {
                let mut sources = crate::source::SourceMap::new();
                let id = sources.add(path.display().to_string(), Some(path.clone()), &text);
                let mut diags = crate::diag::Diagnostics::default();
                diags.push(id, e);
                let color = std::io::IsTerminal::is_terminal(&std::io::stderr());
                eprint!("{}", crate::diag::render(diags, &sources, 100, color));
                code = ExitCode::from(1);
                continue;
            }
        };
        if formatted == text {
            continue;
        }
        if check {
            println!("would reformat {}", path.display());
            code = ExitCode::from(1);
        } else if let Err(e) = std::fs::write(path, formatted) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    code
}
