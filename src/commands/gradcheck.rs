//! `deqc gradcheck FILE [--model NAME] [--batch N] [--seed S]`: derived
//! gradients against central finite differences, in f64, at random
//! parameters and inputs of the declared shapes.
//!
//! Symbolic dims: `B` is `--batch`, every other name is 3. Parameters are
//! normal with std `1 / sqrt(fan_in)` (fan-in: the product of all but the
//! last dim), float inputs standard normal, i64 inputs uniform ids below the
//! rows of the embedding table they index (3 when they index none). At most
//! `--samples` elements of each tensor are compared.
//!
//! Equilibria: every solve is tightened (absolute tol 1e-13, at least 500
//! iterations) so that finite differences see the converged map. Models
//! whose equilibria use `implicit` or `unrolled` gradients are checked
//! against finite differences; for `phantom` and `jfb`, which approximate
//! the gradient on purpose, the error against the implicit gradient is
//! reported instead of failing. An element also passes when its absolute
//! error is at most 1e-8 (the noise of differencing a converged solve). `--stability` also prints each
//! equilibrium's spectral radius estimate (power iteration on J^T at z*).

use std::path::Path;
use std::process::ExitCode;

use rand::SeedableRng;

use crate::autodiff::check::{check_graph, id_bounds, random_tensor};
use crate::deq::SolverRunner;
use crate::exec::{DimEnv, Executor};
use crate::ir::{Graph, Op};
use crate::sema::spec::{Backward, SolverKind, Stop};

/// The absolute residual every solve reaches before finite differences
/// (f64): far below the differences' own error.
const TIGHT_TOL: f64 = 1e-13;

use super::{load, lower_models};

pub struct Options<'a> {
    pub model: Option<&'a str>,
    pub batch: usize,
    pub seed: u64,
    pub tol: f64,
    pub samples: usize,
    pub stability: bool,
}

/// Tighten every solve of a graph (bodies included); with `implicit`, also
/// replace approximate backward modes by the implicit one.
fn tighten(g: &mut Graph, implicit: bool) -> bool {
    let mut approximate = false;
    for id in g.node_ids() {
        if let Op::Equilibrium(eq) = &mut g.node_mut(id).op {
            approximate |= tighten(&mut eq.body, implicit);
            if !matches!(eq.solver.kind, SolverKind::Unroll { .. }) {
                eq.solver.tol = TIGHT_TOL;
                eq.solver.stop = Stop::Abs;
                eq.solver.max_iter = eq.solver.max_iter.max(500);
            }
            match &mut eq.backward {
                Backward::Implicit { solver } => {
                    solver.tol = TIGHT_TOL;
                    solver.stop = Stop::Abs;
                    solver.max_iter = solver.max_iter.max(500);
                }
                Backward::Phantom { .. } | Backward::Jfb => {
                    approximate = true;
                    if implicit {
                        let mut solver = eq.solver.clone();
                        if matches!(solver.kind, SolverKind::Unroll { .. }) {
                            solver.kind = SolverKind::Anderson {
                                m: 5,
                                beta: 1.0,
                                lam: 1e-4,
                            };
                        }
                        solver.tol = TIGHT_TOL;
                        solver.stop = Stop::Abs;
                        solver.max_iter = 500;
                        eq.backward = Backward::Implicit { solver };
                    }
                }
                Backward::Unrolled => {}
            }
        }
    }
    approximate
}

/// Absolute error below which a gradient element passes whatever its
/// relative error: finite differences of a converged solve carry noise of
/// about this size, which only matters where the gradient is zero (such as
/// the key bias of attention, which softmax ignores).
const ABS_TOL: f64 = 1e-8;

fn passes(r: &crate::autodiff::check::GradCheck, tol: f64) -> bool {
    r.max_rel_error <= tol
        || r.derived
            .iter()
            .zip(&r.numeric)
            .all(|(d, n)| (d - n).abs() <= ABS_TOL)
}

fn executor() -> Executor {
    executor_with(SolverRunner::new())
}

fn executor_with(runner: SolverRunner) -> Executor {
    Executor::cpu_f64().with_runner(Box::new(runner))
}

/// Say so when some solves missed their (tightened) tolerance: at a point
/// that is not a fixed point, implicit gradients do not match differences.
fn warn_unconverged(runner: &SolverRunner) {
    let records = runner.take_records();
    let missed = records
        .iter()
        .filter(|r| !r.backward && !r.stats.converged)
        .count();
    if missed > 0 {
        println!(
            "  warning: {missed} of {} forward solves did not converge at these parameters (the map may not be contractive); gradients there are not meaningful",
            records.iter().filter(|r| !r.backward).count()
        );
    }
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

fn check_one(model: &Graph, o: &Options) -> Result<bool, String> {
    let mut g = model.clone();
    let approximate = tighten(&mut g, false);
    let g = &g;
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
    let runner = SolverRunner::new();
    let exec = executor_with(runner.clone());
    let report = check_graph(g, &params, &inputs, &exec, 1e-5, o.seed, Some(o.samples))
        .map_err(|e| e.to_string())?;
    println!("model {}:", g.name);
    warn_unconverged(&runner);
    if approximate {
        return report_against_implicit(model, &report, &params, &inputs, o);
    }
    let width = report.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut ok = true;
    for r in &report {
        let pass = passes(r, o.tol);
        ok &= pass;
        println!(
            "  {:width$}  max relative error {:.3e}  {}",
            r.name,
            r.max_rel_error,
            if pass { "ok" } else { "FAILED" },
            width = width
        );
    }
    if o.stability {
        stability(g, &params, &inputs, o.seed)?;
    }
    Ok(ok)
}

/// phantom/jfb: report the distance to the implicit gradient; never fail.
fn report_against_implicit(
    model: &Graph,
    approx: &[crate::autodiff::check::GradCheck],
    params: &[candle_core::Tensor],
    inputs: &[candle_core::Tensor],
    o: &Options,
) -> Result<bool, String> {
    let mut g = model.clone();
    tighten(&mut g, true);
    let exec = executor();
    let exact = check_graph(&g, params, inputs, &exec, 1e-5, o.seed, Some(o.samples))
        .map_err(|e| e.to_string())?;
    println!("  (phantom/jfb gradients approximate the implicit one on purpose: errors below are against it)");
    let width = exact.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut ok = true;
    for (a, e) in approx.iter().zip(&exact) {
        let scale = e.derived.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
        let err = a
            .derived
            .iter()
            .zip(&e.derived)
            .map(|(x, y)| (x - y).abs() / scale)
            .fold(0.0, f64::max);
        let pass = passes(e, o.tol);
        ok &= pass;
        println!(
            "  {:width$}  vs implicit {:.3e}  (implicit vs finite differences {:.3e} {})",
            a.name,
            err,
            e.max_rel_error,
            if pass { "ok" } else { "FAILED" },
            width = width
        );
    }
    if o.stability {
        stability(&g, params, inputs, o.seed)?;
    }
    Ok(ok)
}

/// Print the spectral radius estimate of each top-level equilibrium.
fn stability(
    g: &Graph,
    params: &[candle_core::Tensor],
    inputs: &[candle_core::Tensor],
    seed: u64,
) -> Result<(), String> {
    let exec = executor();
    for eq in crate::deq::jacobian::top_level_equilibria(g) {
        let Op::Equilibrium(node) = g.op(eq).clone() else {
            continue;
        };
        let mut probe = g.clone();
        let mut outs: Vec<crate::ir::NodeId> = (0..node.num_states())
            .map(|i| probe.add(Op::Project(i), node.state_types[i].clone(), &[eq], None))
            .collect();
        outs.extend(probe.operands(eq)[..node.num_captures()].iter().copied());
        probe.set_outputs(outs);
        let values = exec
            .run(&probe, params, inputs)
            .map_err(|e| e.to_string())?
            .outputs;
        let (zstar, captures) = values.split_at(node.num_states());
        let radius =
            crate::deq::jacobian::spectral_radius(&exec, &node, zstar, captures, 100, seed)
                .map_err(|e| e.to_string())?;
        let max = radius.iter().cloned().fold(0.0, f64::max);
        let mean = radius.iter().sum::<f64>() / radius.len().max(1) as f64;
        println!(
            "  equilibrium ({}): spectral radius of J_f(z*) max {max:.4}, mean {mean:.4}{}",
            node.state_names.join(", "),
            if max >= 1.0 {
                "  (not contractive: solves may be slow or diverge)"
            } else {
                ""
            }
        );
    }
    Ok(())
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
