//! `deqc gradcheck FILE [--model NAME] [--batch N] [--seed S]`: derived
//! gradients against central finite differences, in f64, at random
//! parameters and inputs of the declared shapes.
//!
//! Symbolic dims: `B` is `--batch`, every other name is 3. Parameters are
//! normal with std `1 / sqrt(fan_in)` (fan-in: the product of all but the
//! last dim), float inputs standard normal, i64 inputs uniform ids below the
//! rows of the embedding table they index (3 when they index none). At most
//! `--samples` elements of each tensor are compared.

use std::path::Path;
use std::process::ExitCode;

use rand::SeedableRng;

use crate::autodiff::check::{check_graph, id_bounds, random_tensor};
use crate::exec::{DimEnv, Executor};
use crate::ir::Graph;

use super::{load, lower_models};

pub struct Options<'a> {
    pub model: Option<&'a str>,
    pub batch: usize,
    pub seed: u64,
    pub tol: f64,
    pub samples: usize,
}

fn dims_of(g: &Graph, batch: usize) -> Result<DimEnv, String> {
    let mut env = DimEnv::new();
    for inp in &g.inputs {
        for d in &inp.ty.shape {
            for s in d.symbols() {
                let v = if s == "B" { batch as i64 } else { 3 };
                env.bind(&s, v).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(env)
}

fn check_one(g: &Graph, o: &Options) -> Result<bool, String> {
    let dims = dims_of(g, o.batch)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let params = g
        .params
        .iter()
        .map(|p| {
            let fan_in: i64 = p.ty.shape[..p.ty.rank().saturating_sub(1)]
                .iter()
                .filter_map(|d| d.as_const())
                .product();
            let std = 1.0 / (fan_in.max(1) as f64).sqrt();
            random_tensor(&p.ty, &dims, &mut rng, std, 1)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let bounds = id_bounds(g);
    let inputs = g
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            let bound = bounds.get(&i).copied().unwrap_or(3);
            random_tensor(&inp.ty, &dims, &mut rng, 1.0, bound)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let exec = Executor::cpu_f64();
    let report = check_graph(g, &params, &inputs, &exec, 1e-5, o.seed, Some(o.samples))
        .map_err(|e| e.to_string())?;
    println!("model {}:", g.name);
    let width = report.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut ok = true;
    for r in &report {
        let pass = r.max_rel_error <= o.tol;
        ok &= pass;
        println!(
            "  {:width$}  max relative error {:.3e}  {}",
            r.name,
            r.max_rel_error,
            if pass { "ok" } else { "FAILED" },
            width = width
        );
    }
    Ok(ok)
}

pub fn run(file: &Path, o: &Options) -> ExitCode {
    let program = match load(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let graphs = match lower_models(&program, o.model) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let mut code = ExitCode::SUCCESS;
    for g in &graphs {
        match check_one(g, o) {
            Ok(true) => {}
            Ok(false) => code = ExitCode::from(1),
            Err(e) => {
                eprintln!("error: model {}: {e}", g.name);
                code = ExitCode::from(1);
            }
        }
    }
    code
}
