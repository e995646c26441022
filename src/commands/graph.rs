//! `deqc graph FILE [--backward]`: the graph as Graphviz dot.

use std::path::Path;
use std::process::ExitCode;

use crate::autodiff::backward_graph;
use crate::deq::DeqVjp;
use crate::ir::Graph;

use super::load_lowered;

/// The backward graph of a model, or the error printed.
pub fn backward(g: &Graph) -> Result<Graph, ExitCode> {
    backward_graph(g, &DeqVjp).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

/// The graph after the default optimization pipeline, or the error printed.
pub fn optimized(g: &Graph) -> Result<Graph, ExitCode> {
    let mut g = g.clone();
    crate::passes::Pipeline::default()
        .run(&mut g)
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(1)
        })?;
    Ok(g)
}

pub fn run(file: &Path, model: Option<&str>, with_backward: bool) -> ExitCode {
    let graphs = match load_lowered(file, model) {
        Ok(x) => x.1,
        Err(code) => return code,
    };
    for g in graphs {
        let g = if with_backward {
            match backward(&g) {
                Ok(b) => b,
                Err(code) => return code,
            }
        } else {
            g
        };
        out!("{}", crate::ir::print::to_dot(&g));
    }
    ExitCode::SUCCESS
}
