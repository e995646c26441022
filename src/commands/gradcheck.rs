//! `deqc gradcheck FILE [--model NAME] [--batch N] [--seed S]
//! [--weights CKPT | --random-params]`: derived gradients against central
//! finite differences, in f64, at the model's parameters and at random
//! inputs of the declared shapes.
//!
//! Parameters: by default the model's own initial values (its initializers,
//! seeded by its `train` block's `seed`, else 0), the point training starts
//! from; `--weights` checks at a checkpoint's; `--random-params` at normal
//! values with std `1 / sqrt(fan_in)` (fan-in: the product of all but the
//! last dim), seeded by `--seed`. Symbolic dims: `B` is `--batch`, every
//! other name is 3. Float inputs are standard normal, i64 inputs uniform
//! ids below the rows of the embedding table they index (3 when they index
//! none). At most `--samples` elements of each tensor are compared.
//!
//! Equilibria: every solve is tightened (absolute tol 1e-13, at least 500
//! iterations) so that finite differences see the converged map. Models
//! whose equilibria use `implicit` or `unrolled` gradients are checked
//! against finite differences; for `phantom` and `jfb`, which approximate
//! the gradient on purpose, the error against the implicit gradient is
//! reported instead of failing. An element also passes when its absolute
//! error is at most 1e-8 (the noise of differencing a converged solve).
//! Where forward solves did not converge at the point checked, an implicit
//! gradient is not the gradient of anything: a comparison that does not
//! pass is then *inconclusive* (with the residual the solves reached), not
//! FAILED. Exit codes: 0 every comparison passed, 1 one failed (or an
//! error), 3 none failed but some were inconclusive. `--stability` also
//! prints each equilibrium's spectral radius estimate (power iteration on
//! J^T at z*; a state of fixed shape is one sample).

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

/// Where the parameters checked at come from.
pub enum ParamSource<'a> {
    /// The model's initializers, seeded by its train block (else 0).
    Init,
    /// A checkpoint (`model.safetensors` or a run folder).
    Weights(&'a Path),
    /// Normal with std `1 / sqrt(fan_in)`, seeded by `--seed`.
    Random,
}

/// The exit code of a check that found nothing wrong but could not judge
/// some gradients (forward solves that did not converge).
pub const INCONCLUSIVE_EXIT: u8 = 3;

pub struct Options<'a> {
    pub model: Option<&'a str>,
    pub params: ParamSource<'a>,
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
                        let mut solver = eq.solver.for_implicit_backward();
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

/// The worst residual reached by forward solves that missed their
/// (tightened) tolerance, and how many of how many did: at a point that is
/// not a fixed point, implicit gradients do not match differences.
/// `unroll` solves are a fixed-depth network, never "unconverged".
fn unconverged(runner: &SolverRunner) -> Option<(usize, usize, f64)> {
    let records = runner.take_records();
    let forward: Vec<_> = records.iter().filter(|r| !r.backward).collect();
    let missed: Vec<_> = forward
        .iter()
        .filter(|r| !r.stats.converged && r.stats.solver != "unroll")
        .collect();
    let worst = missed
        .iter()
        .map(|r| r.stats.max_residual())
        .fold(
            0.0,
            |a: f64, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
        );
    (!missed.is_empty()).then_some((missed.len(), forward.len(), worst))
}

/// How one model's check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed,
    Inconclusive,
}

impl Outcome {
    /// The verdict of one comparison: where the solves did not converge, a
    /// mismatch is inconclusive rather than a failure.
    fn of(pass: bool, unconverged: bool) -> Outcome {
        match (pass, unconverged) {
            (true, _) => Outcome::Passed,
            (false, false) => Outcome::Failed,
            (false, true) => Outcome::Inconclusive,
        }
    }

    fn label(self, residual: f64) -> String {
        match self {
            Outcome::Passed => "ok".into(),
            Outcome::Failed => "FAILED".into(),
            Outcome::Inconclusive => {
                format!("inconclusive (solves reached residual {residual:.1e})")
            }
        }
    }

    /// The worse of two outcomes: a failure outweighs an inconclusive one.
    fn and(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
            (Outcome::Inconclusive, _) | (_, Outcome::Inconclusive) => Outcome::Inconclusive,
            _ => Outcome::Passed,
        }
    }
}

/// The parameters to check at, in f64 (see [`ParamSource`]).
fn parameters(
    g: &Graph,
    o: &Options,
    seed: u64,
    dims: &DimEnv,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<candle_core::Tensor>, String> {
    let device = candle_core::Device::Cpu;
    let named = match o.params {
        ParamSource::Init => crate::train::trainer::init_params(g, seed, &device),
        ParamSource::Weights(path) => crate::train::trainer::load_weights(g, path, &device),
        ParamSource::Random => {
            return g
                .params
                .iter()
                .map(|p| {
                    let fan_in: i64 = p.ty.shape[..p.ty.rank().saturating_sub(1)]
                        .iter()
                        .filter_map(|d| d.as_const())
                        .product();
                    let std = 1.0 / (fan_in.max(1) as f64).sqrt();
                    random_tensor(&p.ty, dims, rng, std, 1)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string());
        }
    }
    .map_err(|e| e.to_string())?;
    named
        .into_iter()
        .map(|(_, t)| {
            t.to_dtype(candle_core::DType::F64)
                .map_err(|e| e.to_string())
        })
        .collect()
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

/// Check one model; `seed` seeds its initializers (the train block's).
fn check_one(model: &Graph, o: &Options, seed: u64) -> Result<Outcome, String> {
    let mut g = model.clone();
    let approximate = tighten(&mut g, false);
    let g = &g;
    let dims = dims_of(g, o.batch)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let params = parameters(g, o, seed, &dims, &mut rng)?;
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
    outln!("model {}:", g.name);
    let missed = unconverged(&runner);
    if let Some((n, of, worst)) = missed {
        outln!(
            "  warning: {n} of {of} forward solves did not converge at these parameters (worst residual {worst:.1e}; the map may not be contractive): a mismatch there is inconclusive"
        );
    }
    let residual = missed.map_or(0.0, |m| m.2);
    if approximate {
        return report_against_implicit(model, &report, &params, &inputs, o, missed.is_some());
    }
    let width = report.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut outcome = Outcome::Passed;
    for r in &report {
        let verdict = Outcome::of(passes(r, o.tol), missed.is_some());
        outcome = outcome.and(verdict);
        outln!(
            "  {:width$}  max relative error {:.3e}  {}",
            r.name,
            r.max_rel_error,
            verdict.label(residual),
            width = width
        );
    }
    if o.stability {
        stability(g, &params, &inputs, o.seed)?;
    }
    Ok(outcome)
}

/// phantom/jfb: report the distance to the implicit gradient; never fail.
fn report_against_implicit(
    model: &Graph,
    approx: &[crate::autodiff::check::GradCheck],
    params: &[candle_core::Tensor],
    inputs: &[candle_core::Tensor],
    o: &Options,
    unconverged_before: bool,
) -> Result<Outcome, String> {
    let mut g = model.clone();
    tighten(&mut g, true);
    let runner = SolverRunner::new();
    let exec = executor_with(runner.clone());
    let exact = check_graph(&g, params, inputs, &exec, 1e-5, o.seed, Some(o.samples))
        .map_err(|e| e.to_string())?;
    let missed = unconverged(&runner);
    let residual = missed.map_or(0.0, |m| m.2);
    let unconverged = unconverged_before || missed.is_some();
    outln!("  (phantom/jfb gradients approximate the implicit one on purpose: errors below are against it)");
    let width = exact.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut outcome = Outcome::Passed;
    for (a, e) in approx.iter().zip(&exact) {
        let scale = e.derived.iter().fold(1e-3f64, |m, x| m.max(x.abs()));
        let err = a
            .derived
            .iter()
            .zip(&e.derived)
            .map(|(x, y)| (x - y).abs() / scale)
            .fold(0.0, f64::max);
        let verdict = Outcome::of(passes(e, o.tol), unconverged);
        outcome = outcome.and(verdict);
        outln!(
            "  {:width$}  vs implicit {:.3e}  (implicit vs finite differences {:.3e} {})",
            a.name,
            err,
            e.max_rel_error,
            verdict.label(residual),
            width = width
        );
    }
    if o.stability {
        stability(&g, params, inputs, o.seed)?;
    }
    Ok(outcome)
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
        outln!(
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
    let mut outcome = Outcome::Passed;
    for g in &graphs {
        let seed = program
            .trains
            .iter()
            .find(|t| t.model == g.name)
            .map_or(0, |t| t.seed);
        match check_one(g, o, seed) {
            Ok(v) => outcome = outcome.and(v),
            Err(e) => {
                eprintln!("error: model {}: {e}", g.name);
                outcome = Outcome::Failed;
            }
        }
    }
    match outcome {
        Outcome::Passed => ExitCode::SUCCESS,
        Outcome::Failed => ExitCode::from(1),
        Outcome::Inconclusive => {
            eprintln!("gradcheck: inconclusive where forward solves did not converge; check at other parameters (--weights CKPT, or the train block's seed) or give the solver more iterations");
            ExitCode::from(INCONCLUSIVE_EXIT)
        }
    }
}
