//! Bodies of the CLI subcommands that work on the IR (`deqc graph`,
//! `deqc dump --emit=ir|grad|opt`, `deqc gradcheck`, `deqc bench`, `deqc attack`);
//! `cli.rs` only parses arguments and dispatches here.
//!
//! Guarantees: exit code 0 on success, 1 when the program has errors or a
//! check fails, 2 on I/O problems; diagnostics and errors go to stderr,
//! requested output to stdout.

pub mod attack;
pub mod bench;
pub mod gradcheck;
pub mod graph;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

use crate::ir::{lower::lower_model, Graph};
use crate::sema::hir::Program;

/// Check a file and render its diagnostics to stderr: the program (`Some`
/// exactly when there were no errors) and the error count; a file that
/// cannot be read is exit code 2.
pub fn check_rendered(file: &Path) -> Result<(Option<Program>, usize), ExitCode> {
    let compiled = match crate::compile_path(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return Err(ExitCode::from(2));
        }
    };
    let errors = compiled.diags.error_count();
    render(compiled.diags, &compiled.sources);
    Ok((compiled.program, errors))
}

/// Diagnostics to stderr, in colour on a terminal.
pub fn render(diags: crate::diag::Diagnostics, sources: &crate::source::SourceMap) {
    let color = std::io::stderr().is_terminal();
    eprint!("{}", crate::diag::render(diags, sources, 100, color));
}

/// Check a file; on errors render them and return the exit code.
pub fn load(file: &Path) -> Result<Program, ExitCode> {
    check_rendered(file)?.0.ok_or(ExitCode::from(1))
}

/// [`load`] and [`lower_models`].
pub fn load_lowered(file: &Path, model: Option<&str>) -> Result<(Program, Vec<Graph>), ExitCode> {
    let program = load(file)?;
    let graphs = lower_models(&program, model)?;
    Ok((program, graphs))
}

/// Lower the model named `name` (or every model) of a program.
pub fn lower_models(program: &Program, name: Option<&str>) -> Result<Vec<Graph>, ExitCode> {
    let models: Vec<_> = program
        .models
        .iter()
        .filter(|m| name.is_none_or(|n| m.name == n))
        .collect();
    if models.is_empty() {
        let names: Vec<&str> = program.models.iter().map(|m| m.name.as_str()).collect();
        eprintln!(
            "error: no model {}; the file defines: {}",
            name.unwrap_or("at all"),
            names.join(", ")
        );
        return Err(ExitCode::from(1));
    }
    models
        .into_iter()
        .map(|m| {
            lower_model(m).map_err(|e| {
                eprintln!("error: {e}");
                ExitCode::from(1)
            })
        })
        .collect()
}

/// Which graph `deqc dump` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrStage {
    Ir,
    Grad,
    Opt,
    /// The fusion groups of the forward and training graphs.
    Kernels,
}

/// `deqc dump --emit=ir|grad|opt|kernels FILE`.
pub fn dump(stage: IrStage, file: &Path) -> ExitCode {
    let (program, graphs) = match load_lowered(file, None) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if stage == IrStage::Kernels {
        return dump_kernels(&program, graphs);
    }
    for g in graphs {
        let g = match stage {
            IrStage::Kernels => Ok(g),
            IrStage::Ir => Ok(g),
            IrStage::Grad => graph::backward(&g),
            IrStage::Opt => graph::optimized(&g),
        };
        match g {
            Ok(g) => out!("{}", crate::ir::print::to_text(&g)),
            Err(code) => return code,
        }
    }
    ExitCode::SUCCESS
}

/// `deqc dump --emit=kernels`: the fusion groups of each model's optimized
/// forward graph and of its training step graph (its `train` block's loss
/// and parameter gradients; without a `train` block, the backward graph).
fn dump_kernels(program: &Program, graphs: Vec<Graph>) -> ExitCode {
    for g in graphs {
        let forward = match graph::optimized(&g) {
            Ok(f) => f,
            Err(code) => return code,
        };
        println!("model {}: forward graph", g.name);
        print!("{}", crate::passes::fuse::print_plan(&forward));
        let cfg = program.trains.iter().find(|t| t.model == g.name);
        let model = program.model(&g.name);
        let training = match (cfg, model) {
            (Some(cfg), Some(m)) => match crate::train::trainer::compile(m, cfg) {
                Ok(c) => c.step.graph,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            },
            _ => match graph::backward(&g).and_then(|b| graph::optimized(&b)) {
                Ok(b) => b,
                Err(code) => return code,
            },
        };
        println!("model {}: training graph", g.name);
        print!("{}", crate::passes::fuse::print_plan(&training));
    }
    ExitCode::SUCCESS
}
