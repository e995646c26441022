//! `deqc attack FILE --weights W [--method fgsm|pgd] [--eps E] [--steps K]
//! [--alpha A] [--norm linf|l2] [--restarts R]
//! [--gradient implicit|unrolled|phantom] [--out DIR]`: adversarial
//! robustness of a trained classifier on its test split.
//!
//! The attack gradient is the loss's gradient with respect to the model's
//! input, derived by the compiler ([`engine::attack_graph`]) through each
//! equilibrium's implicit backward, or its unrolled or phantom lowering.
//! `eps` is in the data's own units; every attacked input stays inside the
//! data's valid range, the smallest and largest value of that field in the
//! training and test splits (MNIST pixels: 0..1).
//!
//! Guarantees: `--eps 0` reports exactly the clean accuracy (the
//! adversarial inputs are the clean ones bit for bit); clean and
//! adversarial inputs are evaluated by the same forward graph, whose solve
//! statistics give the mean iterations, residuals and failed solves
//! reported; bad options are usage errors (exit 2), failures exit 1, never
//! a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::{Device, Tensor};

use crate::deq::SolverRunner;
use crate::exec::Executor;
use crate::train::attack::{
    self as engine, classify, host, range_of, AttackSpec, Attacker, GradientMode, Method, Norm,
};
use crate::train::data::normalize::Standardization;
use crate::train::TrainError;

/// The command line of `deqc attack` after the file, as clap parses it.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    #[arg(long)]
    pub model: Option<String>,
    /// A `model.safetensors` file or a run folder.
    #[arg(long)]
    pub weights: PathBuf,
    #[arg(long, value_enum, default_value = "pgd")]
    pub method: Method,
    /// Radius of the perturbation, in the data's own units.
    #[arg(long, default_value_t = 0.1, value_parser = crate::cli::non_negative, allow_negative_numbers = true)]
    pub eps: f64,
    /// PGD steps per restart (default 10).
    #[arg(long, value_parser = crate::cli::at_least_one)]
    pub steps: Option<usize>,
    /// PGD step size (default 2.5 * eps / steps).
    #[arg(long, value_parser = crate::cli::non_negative, allow_negative_numbers = true)]
    pub alpha: Option<f64>,
    #[arg(long, value_enum, default_value = "linf")]
    pub norm: Norm,
    /// PGD restarts; the first starts at the clean input (default 1).
    #[arg(long, value_parser = crate::cli::at_least_one)]
    pub restarts: Option<usize>,
    /// How gradients pass through equilibria.
    #[arg(long, value_enum, default_value = "implicit")]
    pub gradient: GradientMode,
    /// Write adversarial.safetensors and results.safetensors here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_parser = crate::cli::at_least_one)]
    pub batch_size: Option<usize>,
    /// Attack only the first N test samples.
    #[arg(long, value_parser = crate::cli::at_least_one)]
    pub limit: Option<usize>,
    /// Seed of PGD's random restarts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads (default: the train block's `threads`, else
    /// RAYON_NUM_THREADS, else one per core).
    #[arg(long, value_parser = crate::threads::parse_count)]
    pub threads: Option<usize>,
    /// Hide the progress bar (tests).
    #[arg(skip)]
    pub quiet: bool,
}

/// PGD's defaults: 10 steps of 2.5 eps / steps (Madry et al.).
const DEFAULT_STEPS: usize = 10;

/// Check the options that clap cannot; returns the attack's settings.
pub fn spec_of(o: &Options) -> Result<AttackSpec, String> {
    if !(o.eps.is_finite() && o.eps >= 0.0) {
        return Err(format!("--eps must be a number >= 0, found {}", o.eps));
    }
    if o.method == Method::Fgsm {
        for (given, flag) in [
            (o.steps.is_some(), "--steps"),
            (o.alpha.is_some(), "--alpha"),
            (o.restarts.is_some(), "--restarts"),
        ] {
            if given {
                return Err(format!(
                    "{flag} applies to --method pgd; fgsm takes one step of size --eps"
                ));
            }
        }
    }
    let steps = o.steps.unwrap_or(DEFAULT_STEPS);
    let alpha = o.alpha.unwrap_or(2.5 * o.eps / steps as f64);
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(format!("--alpha must be a number >= 0, found {alpha}"));
    }
    Ok(AttackSpec {
        method: o.method,
        norm: o.norm,
        eps: o.eps,
        steps,
        alpha,
        restarts: o.restarts.unwrap_or(1),
        seed: o.seed,
    })
}

/// Per-sample figures of one forward evaluation.
#[derive(Default, Clone)]
struct Evaluated {
    pred: Vec<i64>,
    iterations: Vec<i64>,
    residual: Vec<f64>,
    failed: Vec<bool>,
}

/// Forward solve statistics per sample: iterations summed over the
/// top-level equilibria, the worst residual, and whether any failed.
fn solve_figures(runner: &SolverRunner, batch: usize, e: &mut Evaluated) {
    let mut iterations = vec![0i64; batch];
    let mut residual = vec![0.0f64; batch];
    let mut failed = vec![false; batch];
    for r in runner.take_records() {
        if r.backward || r.nested {
            continue;
        }
        let s = &r.stats;
        for b in 0..batch {
            // A state without a batch dimension is one sample for all.
            let k = if s.residual.len() == batch { b } else { 0 };
            let its = s.converged_at.get(k).copied().flatten();
            iterations[b] += its.unwrap_or(s.iterations) as i64;
            let res = s.residual.get(k).copied().unwrap_or(f64::NAN);
            residual[b] = if res.is_nan() {
                f64::NAN
            } else {
                residual[b].max(res)
            };
            let missed = s.sample_converged.get(k).is_some_and(|c| !c);
            failed[b] |= r.diverged || (s.solver != "unroll" && missed);
        }
    }
    e.iterations.extend(iterations);
    e.residual.extend(residual);
    e.failed.extend(failed);
}

fn evaluate(
    exec: &Executor,
    runner: &SolverRunner,
    eval: &crate::ir::Graph,
    params: &[Tensor],
    inputs: &[Tensor],
    batch: usize,
    into: &mut Evaluated,
) -> Result<(), TrainError> {
    runner.take_records();
    let (_, pred) = classify(exec, eval, params, inputs)?;
    into.pred.extend(pred);
    solve_figures(runner, batch, into);
    Ok(())
}

/// What an attack measured.
pub struct AttackSummary {
    pub samples: usize,
    pub clean_accuracy: f64,
    pub robust_accuracy: f64,
    pub clean_iterations: f64,
    pub adversarial_iterations: f64,
    pub clean_residual: f64,
    pub adversarial_residual: f64,
    pub clean_failed: usize,
    pub adversarial_failed: usize,
    /// Valid range of each attacked input, by name, in the data's units.
    pub ranges: Vec<(String, (f64, f64))>,
    /// How the model's inputs were standardized (`normalize = true`);
    /// eps, ranges, distances and written examples are in the data's own
    /// units regardless.
    pub standardization: Option<Standardization>,
}

fn mean<T: Copy + Into<f64>>(v: &[T]) -> f64 {
    let finite: Vec<f64> = v.iter().map(|x| (*x).into()).collect();
    finite.iter().sum::<f64>() / finite.len().max(1) as f64
}

/// Run an attack on a program's model; writes `--out` when given.
pub fn attack(
    model: &crate::sema::hir::Model,
    cfg: &crate::sema::spec::TrainConfig,
    o: &Options,
    spec: &AttackSpec,
    device: &Device,
) -> Result<AttackSummary, TrainError> {
    if !cfg.loss.takes_class_ids() {
        return Err(TrainError::Usage(
            "deqc attack measures classification accuracy: the train block's loss must take class ids (cross_entropy, nll, or a fn with class-id targets)".into(),
        ));
    }
    let lowered = crate::ir::lower::lower_model(model)?;
    let params: Vec<Tensor> = crate::train::trainer::load_weights(&lowered, &o.weights, device)?
        .into_iter()
        .map(|p| p.1)
        .collect();
    let pipeline = crate::passes::Pipeline::default();
    let mut eval = crate::train::program::eval_graph(&lowered, &cfg.loss)?.graph;
    pipeline.run(&mut eval)?;
    let mut grad =
        engine::attack_graph(&engine::with_gradient_mode(&lowered, o.gradient), &cfg.loss)?;
    pipeline.run(&mut grad.graph)?;
    if grad.attacked.is_empty() {
        return Err(TrainError::Usage(format!(
            "model {} has no float input to perturb",
            model.name
        )));
    }
    let splits = crate::train::data::load(&cfg.data)?;
    let test = splits
        .test
        .as_ref()
        .or(splits.valid.as_ref())
        .ok_or(TrainError::NoTestSplit)?;
    let names: Vec<String> = test.fields().iter().map(|f| f.0.clone()).collect();
    let ranges: Vec<(String, (f64, f64))> = grad
        .attacked
        .iter()
        .map(|&i| {
            let name = names.get(i).cloned().unwrap_or_default();
            let r = range_of(&name, &[&splits.train, test]);
            (name, r)
        })
        .collect();
    let bounds: Vec<(f64, f64)> = ranges.iter().map(|r| r.1).collect();
    // The attacker works in the model's (standardized) units; eps and alpha
    // are given in the data's own, so they scale by 1 / std.
    let standardization = splits.standardization;
    let scale = standardization.map_or(1.0, |st| st.std);
    let to_data = |v: f64| standardization.map_or(v, |st| st.invert(v));
    let ranges: Vec<(String, (f64, f64))> = ranges
        .into_iter()
        .map(|(name, (lo, hi))| (name, (to_data(lo), to_data(hi))))
        .collect();
    let model_spec = AttackSpec {
        eps: spec.eps / scale,
        alpha: spec.alpha / scale,
        ..spec.clone()
    };
    let runner = SolverRunner::new();
    let exec = Executor::new(device.clone()).with_runner(Box::new(runner.clone()));
    let attacker = Attacker {
        exec: &exec,
        graph: &grad,
        eval: &eval,
        params: &params,
        ranges: &bounds,
        spec: &model_spec,
    };
    let batch_size = o.batch_size.unwrap_or(cfg.batch_size).max(1);
    let total = o.limit.unwrap_or(usize::MAX).min(test.len());
    let batches = total.div_ceil(batch_size);
    let bar = crate::train::epoch::progress_bar("attack", batches, o.quiet);
    let (mut clean, mut adv) = (Evaluated::default(), Evaluated::default());
    let mut targets: Vec<i64> = Vec::new();
    let mut distances: Vec<f64> = Vec::new();
    let mut adversarial: Vec<Vec<f64>> = vec![Vec::new(); grad.attacked.len()];
    let mut seen = 0usize;
    for (index, batch) in test.batches(batch_size, device).enumerate() {
        if seen >= total {
            break;
        }
        let batch = batch?;
        let take = batch.len().min(total - seen);
        let mut inputs = Vec::new();
        for name in &names {
            let t = batch
                .get(name)
                .ok_or_else(|| TrainError::Usage(format!("the batch has no field `{name}`")))?;
            inputs.push(t.narrow(0, 0, take)?);
        }
        evaluate(&exec, &runner, &eval, &params, &inputs, take, &mut clean)?;
        let x = attacker.attack(&inputs, take, index as u64)?;
        runner.take_records();
        evaluate(&exec, &runner, &eval, &params, &x, take, &mut adv)?;
        let x0: Vec<Vec<f64>> = grad
            .attacked
            .iter()
            .map(|&i| host(&inputs[i]))
            .collect::<Result<_, _>>()?;
        let xa: Vec<Vec<f64>> = grad
            .attacked
            .iter()
            .map(|&i| host(&x[i]))
            .collect::<Result<_, _>>()?;
        let distances_in_model_units = engine::perturbation(&x0, &xa, spec.norm, take);
        distances.extend(distances_in_model_units.into_iter().map(|d| d * scale));
        for (all, values) in adversarial.iter_mut().zip(xa) {
            all.extend(values.into_iter().map(to_data));
        }
        if let Some(t) = inputs.last() {
            targets.extend(host(t)?.into_iter().map(|v| v as i64));
        }
        seen += take;
        let acc = |e: &Evaluated| {
            e.pred.iter().zip(&targets).filter(|(p, t)| p == t).count() as f64 / seen as f64
        };
        bar.set_message(format!(
            "clean {:.1}%, robust {:.1}%",
            100.0 * acc(&clean),
            100.0 * acc(&adv)
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let correct =
        |e: &Evaluated| -> Vec<bool> { e.pred.iter().zip(&targets).map(|(p, t)| p == t).collect() };
    let (clean_ok, adv_ok) = (correct(&clean), correct(&adv));
    let fraction = |v: &[bool]| v.iter().filter(|b| **b).count() as f64 / seen.max(1) as f64;
    let summary = AttackSummary {
        samples: seen,
        clean_accuracy: fraction(&clean_ok),
        robust_accuracy: fraction(&adv_ok),
        clean_iterations: mean(
            &clean
                .iterations
                .iter()
                .map(|v| *v as f64)
                .collect::<Vec<_>>(),
        ),
        adversarial_iterations: mean(&adv.iterations.iter().map(|v| *v as f64).collect::<Vec<_>>()),
        clean_residual: mean(&clean.residual),
        adversarial_residual: mean(&adv.residual),
        clean_failed: clean.failed.iter().filter(|f| **f).count(),
        adversarial_failed: adv.failed.iter().filter(|f| **f).count(),
        ranges,
        standardization,
    };
    if let Some(dir) = &o.out {
        let shapes: Vec<Vec<usize>> = grad
            .attacked
            .iter()
            .map(|&i| {
                let field = test.fields().get(i).map(|f| f.1.shape.clone());
                let mut shape = field.unwrap_or_default();
                if let Some(first) = shape.first_mut() {
                    *first = seen;
                }
                shape
            })
            .collect();
        let per_sample = PerSample {
            targets: &targets,
            clean: &clean,
            adv: &adv,
            clean_ok: &clean_ok,
            adv_ok: &adv_ok,
            distances: &distances,
        };
        write_out(dir, &summary, spec, o, &adversarial, &shapes, &per_sample)?;
    }
    Ok(summary)
}

struct PerSample<'a> {
    targets: &'a [i64],
    clean: &'a Evaluated,
    adv: &'a Evaluated,
    clean_ok: &'a [bool],
    adv_ok: &'a [bool],
    distances: &'a [f64],
}

fn write_out(
    dir: &Path,
    summary: &AttackSummary,
    spec: &AttackSpec,
    o: &Options,
    adversarial: &[Vec<f64>],
    shapes: &[Vec<usize>],
    r: &PerSample,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| TrainError::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let cpu = Device::Cpu;
    let n = summary.samples;
    let f32s = |v: Vec<f64>, shape: &[usize]| -> Result<Tensor, TrainError> {
        Ok(Tensor::from_vec(
            v.into_iter().map(|x| x as f32).collect::<Vec<f32>>(),
            shape,
            &cpu,
        )?)
    };
    let ints = |v: Vec<i64>| Tensor::from_vec(v, n, &cpu);
    let flags = |v: &[bool]| ints(v.iter().map(|b| *b as i64).collect());
    let mut meta = BTreeMap::new();
    meta.insert(
        "method".to_string(),
        format!("{:?}", spec.method).to_lowercase(),
    );
    meta.insert(
        "norm".to_string(),
        format!("{:?}", spec.norm).to_lowercase(),
    );
    meta.insert("eps".to_string(), spec.eps.to_string());
    meta.insert("steps".to_string(), spec.steps.to_string());
    meta.insert("alpha".to_string(), spec.alpha.to_string());
    meta.insert("restarts".to_string(), spec.restarts.to_string());
    meta.insert(
        "gradient".to_string(),
        format!("{:?}", o.gradient).to_lowercase(),
    );
    meta.insert("seed".to_string(), spec.seed.to_string());
    let mut examples = Vec::new();
    for (((name, range), values), shape) in summary.ranges.iter().zip(adversarial).zip(shapes) {
        examples.push((name.clone(), f32s(values.clone(), shape)?));
        meta.insert(format!("range.{name}"), format!("{} {}", range.0, range.1));
    }
    examples.push(("target".to_string(), ints(r.targets.to_vec())?));
    crate::train::checkpoint::save_tensors(&dir.join("adversarial.safetensors"), &examples, &meta)?;
    let results = vec![
        ("target".to_string(), ints(r.targets.to_vec())?),
        ("clean_pred".to_string(), ints(r.clean.pred.clone())?),
        ("adv_pred".to_string(), ints(r.adv.pred.clone())?),
        ("clean_correct".to_string(), flags(r.clean_ok)?),
        ("robust_correct".to_string(), flags(r.adv_ok)?),
        (
            "clean_iterations".to_string(),
            ints(r.clean.iterations.clone())?,
        ),
        (
            "adv_iterations".to_string(),
            ints(r.adv.iterations.clone())?,
        ),
        (
            "clean_residual".to_string(),
            f32s(r.clean.residual.clone(), &[n])?,
        ),
        (
            "adv_residual".to_string(),
            f32s(r.adv.residual.clone(), &[n])?,
        ),
        ("clean_failed".to_string(), flags(&r.clean.failed)?),
        ("adv_failed".to_string(), flags(&r.adv.failed)?),
        (
            "perturbation".to_string(),
            f32s(r.distances.to_vec(), &[n])?,
        ),
    ];
    crate::train::checkpoint::save_tensors(&dir.join("results.safetensors"), &results, &meta)?;
    Ok(())
}

/// `deqc attack`: parse-level checks, the attack, the report.
pub fn run(file: &Path, o: &Options) -> ExitCode {
    let spec = match spec_of(o) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (sources, m, cfg, device) = match crate::train::commands::load_with_data(
        file,
        o.model.as_deref(),
        "an attack",
        o.threads,
        &o.device,
    ) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match crate::threads::on_pool(|| attack(&m, &cfg, o, &spec, &device)) {
        Ok(s) => {
            print_report(&m.name, &s, &spec, o);
            ExitCode::SUCCESS
        }
        Err(e) => crate::train::commands::report(e, &sources),
    }
}

fn print_report(model: &str, s: &AttackSummary, spec: &AttackSpec, o: &Options) {
    let norm = match spec.norm {
        Norm::Linf => "L-inf",
        Norm::L2 => "L2",
    };
    let how = match spec.method {
        Method::Fgsm => "fgsm".to_string(),
        Method::Pgd => format!(
            "pgd, {} steps of {}, {} restart{}",
            spec.steps,
            spec.alpha,
            spec.restarts,
            if spec.restarts == 1 { "" } else { "s" }
        ),
    };
    outln!(
        "{model}: {how}, {norm} eps {} in the data's own units, {} gradient, {} test samples",
        spec.eps,
        format!("{:?}", o.gradient).to_lowercase(),
        s.samples
    );
    for (name, (lo, hi)) in &s.ranges {
        outln!("  `{name}` kept in [{lo}, {hi}] (its range in the training and test splits)");
    }
    if let Some(st) = &s.standardization {
        outln!("  the model sees inputs standardized with {st}; eps, ranges and the written examples are in the data's own units");
    }
    outln!(
        "  clean accuracy  {:6.2}%   robust accuracy {:6.2}%",
        100.0 * s.clean_accuracy,
        100.0 * s.robust_accuracy
    );
    outln!(
        "  forward solves: clean {:.1} iterations, residual {:.2e}; adversarial {:.1} iterations, residual {:.2e} (means per sample; residuals in each solver's stopping measure)",
        s.clean_iterations,
        s.clean_residual,
        s.adversarial_iterations,
        s.adversarial_residual
    );
    outln!(
        "  samples whose solves failed: {} clean, {} adversarial",
        s.clean_failed,
        s.adversarial_failed
    );
    if let Some(dir) = &o.out {
        outln!(
            "  adversarial examples in {}, per-sample results in {}",
            dir.join("adversarial.safetensors").display(),
            dir.join("results.safetensors").display()
        );
    }
}
