//! deqc: a language and compiler for deep equilibrium models.
//!
//! The public entry points: [`compile_path`] and [`compile_source`] run the
//! front end (parse, resolve, check) and return the checked program with
//! every diagnostic; the stages themselves live in their own modules
//! (`syntax`, `sema`), each with a printer for `deqc dump`.

pub mod autodiff;
pub mod cli;
pub mod commands;
pub mod deq;
pub mod diag;
pub mod exec;
pub mod ir;
pub mod passes;
pub mod profile;
pub mod sema;
pub mod solver;
pub mod source;
pub mod syntax;
pub mod train;

use std::path::Path;

use diag::Diagnostics;
use sema::hir::Program;
use source::{FileId, SourceMap};

/// The result of running the front end on one file.
pub struct Compiled {
    pub sources: SourceMap,
    pub root: FileId,
    /// `Some` exactly when there were no errors.
    pub program: Option<Program>,
    pub diags: Diagnostics,
}

impl Compiled {
    /// Diagnostics rendered as plain text of the given width (stable).
    pub fn render_plain(self, width: usize) -> String {
        diag::render(self.diags, &self.sources, width, false)
    }
}

/// Check the file at `path` and everything it imports.
pub fn compile_path(path: &Path) -> std::io::Result<Compiled> {
    let text = std::fs::read_to_string(path)?;
    let mut sources = SourceMap::new();
    let root = sources.add(path.display().to_string(), Some(path.to_path_buf()), &text);
    Ok(compile(sources, root))
}

/// Check source text that is not on disk (`use "f.deq"` is then resolved
/// relative to the working directory).
pub fn compile_source(name: &str, text: &str) -> Compiled {
    let mut sources = SourceMap::new();
    let root = sources.add(name, None, text);
    compile(sources, root)
}

fn compile(mut sources: SourceMap, root: FileId) -> Compiled {
    let (program, diags) = sema::check(&mut sources, root);
    Compiled {
        sources,
        root,
        program,
        diags,
    }
}
