//! deqc: a language and compiler for deep equilibrium models.
//!
//! The pipeline, one module per stage, each with a printer for `deqc dump`:
//! [`syntax`] (pest grammar to AST with spans) → [`sema`] (names, layers,
//! shapes, diagnostics; elaborates each model into checked HIR) → [`ir`]
//! (lowering to the graph of one [`ir::Op`] enum, verifier, printers) →
//! [`autodiff`] (reverse mode as a graph transform, one VJP rule per op) and
//! [`deq`] (equilibrium solves and every backward mode, Jacobian
//! regularization) → [`passes`] (fold, CSE, hoist, DCE) → [`exec`] (the
//! graph on candle tensors) with [`solver`] (fixed-point, Anderson, Broyden).
//! [`train`] builds the training step and runs `deqc run`/`eval`;
//! [`cli`] and [`commands`] are the command line; [`source`] and [`diag`]
//! hold the source map and the diagnostics every stage reports into.
//!
//! The public entry points here: [`compile_path`] and [`compile_source`] run
//! the front end (parse, resolve, check) and return the checked program with
//! every diagnostic.

#[macro_use]
mod output;

pub mod autodiff;
pub mod cli;
pub mod commands;
pub mod deq;
pub mod diag;
pub mod exec;
pub mod fmt;
pub mod ir;
pub mod jit;
pub mod lsp;
pub mod passes;
pub mod profile;
pub mod report;
pub mod sema;
pub mod solver;
pub mod source;
pub mod syntax;
pub mod threads;
pub mod train;
pub mod types;

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
    /// The parsed modules and what each name held (for the language server).
    pub index: sema::Index,
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

/// Check `text` as the contents of the file at `path` (an editor's unsaved
/// buffer): imports resolve relative to `path`'s folder.
pub fn compile_text_at(path: &Path, text: &str) -> Compiled {
    let mut sources = SourceMap::new();
    let root = sources.add(path.display().to_string(), Some(path.to_path_buf()), text);
    compile(sources, root)
}

/// Check source text that is not on disk (`use "f.deq"` is then resolved
/// relative to the working directory).
pub fn compile_source(name: &str, text: &str) -> Compiled {
    let mut sources = SourceMap::new();
    let root = sources.add(name, None, text);
    compile(sources, root)
}

fn compile(mut sources: SourceMap, root: FileId) -> Compiled {
    let (program, diags, index) = sema::check_indexed(&mut sources, root);
    Compiled {
        sources,
        root,
        program,
        diags,
        index,
    }
}
