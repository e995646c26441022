//! The training step graphs of every example and test model, and small
//! random feeds for them: what the fused-against-plain and parts-against-
//! whole comparisons run.

use candle_core::Tensor;
use deqc::autodiff::backward_graph;
use deqc::deq::DeqVjp;
use deqc::ir::Graph;
use deqc::passes::Pipeline;

/// The training step graphs of every train block of every example and
/// test model.
/// Every example's and test model's step graph (or backward graph), with
/// the outputs not to compare: gradients with respect to non-trainable
/// state (spectral normalization's power-iteration vector), which nothing
/// uses and which cancel to near zero, so their relative error is noise.
pub fn step_graphs() -> Vec<(String, Graph, Vec<usize>)> {
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["examples", "tests/models"] {
        for e in std::fs::read_dir(dir).expect("directory") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "deq") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let compiled = deqc::compile_path(&f).expect("readable");
        let program = compiled.program.expect("checks");
        for m in &program.models {
            let name = format!("{}:{}", f.display(), m.name);
            match program.trains.iter().find(|t| t.model == m.name) {
                Some(cfg) => {
                    let c = deqc::train::trainer::compile(m, cfg).expect("compiles");
                    out.push((name, c.step.graph, Vec::new()));
                }
                // Without a train block: the backward graph (outputs and
                // every parameter's gradient, cotangents as inputs).
                None => {
                    let g = deqc::ir::lower::lower_model(m).expect("lowers");
                    let mut b = backward_graph(&g, &DeqVjp).expect("backward");
                    Pipeline::default().run(&mut b).expect("pipeline");
                    // Outputs: the model's, then one gradient per parameter.
                    let first_grad = g.outputs().len();
                    let state_grads = (g.params.iter().enumerate())
                        .filter(|(_, p)| p.role.is_state())
                        .map(|(i, _)| first_grad + i)
                        .collect();
                    out.push((name, b, state_grads));
                }
            }
        }
    }
    assert!(out.len() >= 5, "expected every example and test model");
    out
}

/// Small random feeds: `B` = `batch`, other symbols 4; parameters scaled by
/// `1 / sqrt(fan_in)` so that the equilibria are contractive-ish.
pub fn feeds(g: &Graph, seed: u64, batch: i64) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut symbols: Vec<String> = g
        .inputs
        .iter()
        .flat_map(|inp| deqc::train::program::symbols(&inp.ty))
        .collect();
    symbols.sort();
    symbols.dedup();
    let dims: Vec<(&str, i64)> = symbols
        .iter()
        .map(|s| (s.as_str(), if s == "B" { batch } else { 4 }))
        .collect();
    let (params, inputs) = super::random_feeds(g, &dims, seed);
    let params = params
        .into_iter()
        .map(|t| {
            let dims = t.dims().to_vec();
            let fan_in: usize = dims[..dims.len().saturating_sub(1)].iter().product();
            (t * (0.5 / (fan_in.max(1) as f64).sqrt())).expect("scale")
        })
        .collect();
    (params, inputs)
}
