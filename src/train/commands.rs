//! The training commands: `deqc run`, `deqc eval`, `deqc grad`.
//!
//! Guarantees: exit code 0 on success, 1 when the program does not check or
//! a run fails (a failure inside an equilibrium is shown at its source
//! line), 2 on usage errors; `--set` overrides only known keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::{DType as CDType, Device, Tensor};
use miette::Diagnostic;

use super::evaluate::{evaluate_split, EvalSetup};
use super::ood::Corruption;
use super::trainer::{self, RunOptions};
use super::TrainError;
use crate::exec::Executor;
use crate::sema::hir::{Model, Program};
use crate::sema::options::suggest;
use crate::sema::spec::{Optimizer, OutputRole, TrainConfig};
use crate::source::SourceMap;

/// A run-time failure, shown at the source line it comes from.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
#[diagnostic(code(deq::run::failed))]
struct RunFailure {
    message: String,
    #[label("here")]
    span: miette::SourceSpan,
}

pub(crate) fn report(e: TrainError, sources: &SourceMap) -> ExitCode {
    match e.span() {
        Some(span) => {
            let mut d = crate::diag::Diagnostics::default();
            d.push(
                span.file,
                RunFailure {
                    message: e.to_string(),
                    span: span.into(),
                },
            );
            eprint!("{}", crate::diag::render(d, sources, 100, false));
        }
        None => eprintln!("error: {e}"),
    }
    ExitCode::from(1)
}

/// Parse a device name.
pub fn device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| match e {
            candle_core::Error::NotCompiledWithCudaSupport => {
                "this deqc was built without CUDA support; rebuild it with `cargo build --release --features cuda` (needs the CUDA toolkit's nvcc)".to_string()
            }
            other => format!("cannot open the CUDA device: {other}"),
        }),
        other => Err(format!("unknown device `{other}`: use `cpu` or `cuda`")),
    }
}

/// Size the CPU pool when a count is given (`--threads` or `threads = N`);
/// a failure is a usage error (exit 2).
pub fn set_threads(threads: Option<usize>) -> Result<(), ExitCode> {
    match threads.map(crate::threads::configure) {
        Some(Err(e)) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(2))
        }
        _ => Ok(()),
    }
}

/// `deqc run` also checkpoints mid-epoch this often.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

pub const SET_KEYS: &[&str] = &["epochs", "batch_size", "seed", "clip_grad", "lr"];

/// Apply one `--set key=value`.
pub fn apply_set(cfg: &mut TrainConfig, assignment: &str) -> Result<(), String> {
    let (key, value) = assignment
        .split_once('=')
        .ok_or_else(|| format!("`--set {assignment}`: expected KEY=VALUE"))?;
    let (key, value) = (key.trim(), value.trim());
    let int = || {
        value
            .parse::<usize>()
            .map_err(|_| format!("`--set {key}`: `{value}` is not a non-negative int"))
    };
    let count = || match int()? {
        0 => Err(format!(
            "`--set {key}`: expected an integer >= 1, found `0`"
        )),
        n => Ok(n),
    };
    let float = || match value.parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("`--set {key}`: `{value}` is not a positive number")),
    };
    match key {
        "epochs" => cfg.epochs = count()?,
        "batch_size" => cfg.batch_size = count()?,
        "seed" => cfg.seed = int()? as u64,
        "clip_grad" => cfg.clip_grad = Some(float()?),
        "lr" => {
            let x = float()?;
            match &mut cfg.optimizer {
                Optimizer::Sgd { lr, .. }
                | Optimizer::Adam { lr, .. }
                | Optimizer::AdamW { lr, .. } => *lr = x,
            }
        }
        other => {
            return Err(format!(
                "`--set {other}`: unknown key; {}",
                suggest(other, SET_KEYS).unwrap_or_default()
            ))
        }
    }
    Ok(())
}

/// Read and check a file: its program, or the exit code after printing why
/// there is none (2: unreadable, 1: diagnostics).
pub(crate) fn checked_program(file: &Path) -> Result<(Program, SourceMap), ExitCode> {
    let compiled = crate::compile_path(file).map_err(|e| {
        eprintln!("error: cannot read {}: {e}", file.display());
        ExitCode::from(2)
    })?;
    let sources = compiled.sources.clone();
    let Some(program) = compiled.program.clone() else {
        eprint!("{}", compiled.render_plain(100));
        return Err(ExitCode::from(1));
    };
    Ok((program, sources))
}

/// The train block of `model`, or the first one when no model is named.
pub(crate) fn train_block(program: &Program, model: Option<&str>) -> Option<TrainConfig> {
    match model {
        Some(m) => program.trains.iter().find(|t| t.model == m).cloned(),
        None => program.trains.first().cloned(),
    }
}

/// Check a file and pick the model and train block to use.
pub(crate) fn load(
    file: &Path,
    model: Option<&str>,
) -> Result<(Program, SourceMap, Model, Option<TrainConfig>), ExitCode> {
    let (program, sources) = checked_program(file)?;
    let train = train_block(&program, model);
    let name = model
        .map(str::to_string)
        .or_else(|| train.as_ref().map(|t| t.model.clone()))
        .or_else(|| program.models.first().map(|m| m.name.clone()));
    let Some(m) = name.and_then(|n| program.model(&n).cloned()) else {
        eprintln!(
            "error: {} has no model{}",
            file.display(),
            model.map(|m| format!(" named `{m}`")).unwrap_or_default()
        );
        return Err(ExitCode::from(2));
    };
    Ok((program, sources, m, train))
}

/// [`load`] for a command that needs the train block's data and loss
/// (`what`: "evaluation", "an attack"): the CPU threads set (`threads`, or
/// the block's) and the device opened.
pub(crate) fn load_with_data(
    file: &Path,
    model: Option<&str>,
    what: &str,
    threads: Option<usize>,
    device_name: &str,
) -> Result<(SourceMap, Model, TrainConfig, Device), ExitCode> {
    let (_, sources, m, train) = load(file, model)?;
    let Some(cfg) = train else {
        eprintln!(
            "error: {what} needs the `train` block's data and loss; {} has none for `{}`",
            file.display(),
            m.name
        );
        return Err(ExitCode::from(2));
    };
    set_threads(threads.or(cfg.threads))?;
    Ok((sources, m, cfg, open_device(device_name)?))
}

/// [`device`], its error printed as a usage error.
fn open_device(name: &str) -> Result<Device, ExitCode> {
    device(name).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    file: &Path,
    model: Option<&str>,
    epochs: Option<usize>,
    batch_size: Option<usize>,
    (max_steps, max_time): (Option<usize>, Option<std::time::Duration>),
    device_name: &str,
    out: Option<PathBuf>,
    resume: bool,
    seed: Option<u64>,
    sets: &[String],
    keep_failed_steps: bool,
    threads: Option<usize>,
    init_from: Option<super::transfer::InitFrom>,
) -> ExitCode {
    let (_, sources, m, train) = match load(file, model) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let Some(mut cfg) = train else {
        eprintln!("error: {} has no `train` block for `{}`: write one (LANGUAGE.md section 8) to say how to train it", file.display(), m.name);
        return ExitCode::from(2);
    };
    for s in sets {
        if let Err(e) = apply_set(&mut cfg, s) {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(e) = epochs {
        cfg.epochs = e;
    }
    if let Some(b) = batch_size {
        cfg.batch_size = b;
    }
    if let Some(s) = seed {
        cfg.seed = s;
    }
    if let Some(n) = threads {
        cfg.threads = Some(n);
    }
    if let Err(code) = set_threads(cfg.threads) {
        return code;
    }
    if resume && out.is_none() {
        eprintln!("error: --resume needs --out DIR, the folder of the run to continue");
        return ExitCode::from(2);
    }
    if resume && init_from.is_some() {
        eprintln!("error: --resume continues a run from its own checkpoint; --init-from starts a new one: give one of them");
        return ExitCode::from(2);
    }
    let device = match open_device(device_name) {
        Ok(d) => d,
        Err(code) => return code,
    };
    let opts = RunOptions {
        max_steps,
        max_time,
        device: Some(device),
        out,
        resume,
        quiet: false,
        max_eval_batches: None,
        skip_failed_solves: !keep_failed_steps,
        checkpoint_every: Some(CHECKPOINT_EVERY),
        init_from,
    };
    let pool = crate::threads::in_use();
    eprintln!(
        "training {} on {} for {} epochs (batch {}, {pool} thread{})",
        m.name,
        cfg.data,
        cfg.epochs,
        cfg.batch_size,
        if pool == 1 { "" } else { "s" }
    );
    match crate::threads::on_pool(|| trainer::train(&m, &cfg, &sources, &opts)) {
        Ok(s) => {
            let result = match (s.test_perplexity, s.test_accuracy, s.test_loss) {
                (Some(p), Some(a), Some(l)) => format!(
                    "test perplexity {p:.2} (loss {l:.4}, accuracy {:.2}%)",
                    100.0 * a
                ),
                (None, Some(a), Some(l)) => match s.test_bits_per_dim {
                    Some(b) => format!(
                        "test accuracy {:.2}%, bits/dim {b:.4} (loss {l:.4})",
                        100.0 * a
                    ),
                    None => format!("test accuracy {:.2}% (loss {l:.4})", 100.0 * a),
                },
                (Some(p), None, Some(l)) => format!("test perplexity {p:.2} (loss {l:.4})"),
                (None, None, Some(l)) if s.test_bits_per_dim.is_some() => format!(
                    "test bits/dim {:.4} (loss {l:.4})",
                    s.test_bits_per_dim.unwrap_or(f64::NAN)
                ),
                (_, _, Some(l)) => format!("test loss {l:.4}"),
                _ if s.epochs_run > 0 => "no test split".into(),
                _ => "not evaluated (no epoch ran)".into(),
            };
            outln!(
                "{}: {} steps in {:.1} min; {result}; checkpoints and metrics in {}",
                m.name,
                s.steps,
                s.seconds / 60.0,
                s.out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => report(e, &sources),
    }
}

/// What `deqc eval` measured: the test figures, and per corruption the
/// AUROC of the log-density.
struct EvalReport {
    figures: super::evaluate::EvalFigures,
    scale: super::density::BitsScale,
    ood: Vec<(Corruption, f64)>,
}

impl EvalReport {
    /// The line `deqc eval` prints.
    fn line(&self, model: &str) -> String {
        let f = &self.figures;
        let mut line = format!("{model}: test loss {:.4}", f.loss);
        if let Some(a) = f.figures.accuracy() {
            line.push_str(&format!(", accuracy {:.2}%", 100.0 * a));
        }
        let extra = f.figures.extra(&self.scale);
        if let Some((_, b)) = extra.iter().find(|(k, _)| k == "bits_per_dim") {
            line.push_str(&format!(", bits/dim {b:.4}"));
        }
        let parts: Vec<String> = extra
            .iter()
            .filter(|(k, _)| k != "bits_per_dim")
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        if !parts.is_empty() {
            line.push_str(&format!(" ({})", parts.join(", ")));
        }
        line.push_str(&format!(" on {} samples", f.samples));
        for (c, a) in &self.ood {
            line.push_str(&format!(
                "\n{model}: AUROC of log p(x), test images vs {}: {a:.4}",
                c.describe()
            ));
        }
        line
    }
}

pub fn eval(
    file: &Path,
    model: Option<&str>,
    weights: &Path,
    batch_size: Option<usize>,
    device_name: &str,
    threads: Option<usize>,
    ood: &[String],
) -> ExitCode {
    let (sources, m, cfg, device) =
        match load_with_data(file, model, "evaluation", threads, device_name) {
            Ok(x) => x,
            Err(code) => return code,
        };
    let corruptions = match ood
        .iter()
        .map(|c| Corruption::parse(c.trim()))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let roles = cfg.roles(m.output_types.len());
    if !corruptions.is_empty() && !roles.contains(&OutputRole::LogDensity) {
        eprintln!(
            "error: --ood needs a log-density: mark one output of `{}` as `log_density` in its train block (`outputs = [scores, log_density];`)",
            m.name
        );
        return ExitCode::from(2);
    }
    let result = crate::threads::on_pool(|| -> Result<EvalReport, TrainError> {
        let compiled = trainer::compile(&m, &cfg)?;
        let params = trainer::load_weights(&compiled.graph, weights, &device)?;
        let splits = super::validation::load_splits(&cfg)?;
        let test = splits
            .test
            .as_ref()
            .or(splits.valid.as_ref())
            .ok_or(TrainError::NoTestSplit)?;
        let runner = crate::deq::SolverRunner::new();
        let exec = Executor::new(device.clone()).with_runner(Box::new(runner));
        let values: Vec<Tensor> = params.into_iter().map(|p| p.1).collect();
        let dims = test.fields().first().map_or(1, |(_, a)| a.sample_size());
        let std = splits.standardization.as_ref().map(|s| s.std);
        let setup = EvalSetup {
            batch_size: batch_size.unwrap_or(cfg.batch_size),
            device: &device,
            roles,
            parts: super::density::reports_parts(&cfg),
            dequantize: super::density::dequantizes(&cfg.data).then_some(cfg.seed),
            max_batches: None,
            keep_log_densities: !corruptions.is_empty(),
        };
        let figures = evaluate_split(&exec, &compiled.eval, &values, test, &setup)?;
        let mut ood = Vec::new();
        for c in corruptions {
            let bad = super::ood::corrupt(test, c, cfg.seed).map_err(TrainError::Usage)?;
            let other = evaluate_split(&exec, &compiled.eval, &values, &bad, &setup)?;
            let a = super::ood::auroc(&figures.log_densities, &other.log_densities);
            ood.push((c, a));
        }
        Ok(EvalReport {
            figures,
            scale: super::density::BitsScale::for_data(&cfg.data, dims, std),
            ood,
        })
    });
    match result {
        Ok(r) => {
            outln!("{}", r.line(&m.name));
            ExitCode::SUCCESS
        }
        Err(e) => report(e, &sources),
    }
}

/// One batch's loss and parameter gradients, written as safetensors.
pub fn grad(
    file: &Path,
    model: Option<&str>,
    weights: &Path,
    batch: &Path,
    out: &Path,
    threads: Option<usize>,
) -> ExitCode {
    let (_, sources, m, train) = match load(file, model) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if let Err(code) = set_threads(threads.or(train.as_ref().and_then(|t| t.threads))) {
        return code;
    }
    let loss = train
        .as_ref()
        .map_or(crate::sema::spec::Loss::CROSS_ENTROPY, |t| t.loss.clone());
    let result = crate::threads::on_pool(|| -> Result<Vec<(String, Tensor)>, TrainError> {
        let device = Device::Cpu;
        let graph = crate::ir::lower::lower_model(&m)?;
        let step = super::program::step_graph(&graph, &loss)?;
        let params = trainer::load_weights(&graph, weights, &device)?;
        let (tensors, _) = super::checkpoint::read_tensors(batch, &device)?;
        let mut inputs = Vec::new();
        for name in m.inputs.iter().map(|i| i.name.as_str()).chain(["target"]) {
            let t = tensors
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| TrainError::MissingBatchTensor {
                    file: batch.to_path_buf(),
                    name: name.to_string(),
                    inputs: m
                        .inputs
                        .iter()
                        .map(|i| i.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            inputs.push(t);
        }
        let exec =
            Executor::new(device.clone()).with_runner(Box::new(crate::deq::SolverRunner::new()));
        let values: Vec<Tensor> = params.iter().map(|p| p.1.clone()).collect();
        let r = exec.run(&step.graph, &values, &inputs)?;
        let results = step.layout.read(&r.outputs)?;
        let mut out = vec![("loss".to_string(), results.loss().reshape(1)?)];
        for (((path, _), g), p) in params.iter().zip(results.grads()).zip(&graph.params) {
            // Non-trainable state has no gradient to report.
            if !p.role.is_state() {
                out.push((path.clone(), g.clone()));
            }
        }
        Ok(out)
    });
    match result {
        Ok(tensors) => {
            if let Err(e) = super::checkpoint::save_tensors(out, &tensors, &BTreeMap::new()) {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
            let loss = tensors[0]
                .1
                .flatten_all()
                .and_then(|t| t.to_dtype(CDType::F64))
                .and_then(|t| t.to_vec1::<f64>())
                .map(|v| v[0])
                .unwrap_or(f64::NAN);
            outln!(
                "loss {loss:.6}; {} parameter gradients written to {}",
                tensors.len() - 1,
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => report(e, &sources),
    }
}
