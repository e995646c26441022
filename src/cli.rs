//! The command line (clap): `deqc check`, `run`, `eval`, `grad`, `dump`,
//! `graph`, `gradcheck`, `bench`, `attack`, `lsp`, `fmt`, `report` (command bodies
//! live in `commands/`, `train/commands.rs`, `lsp/`, `fmt/` and `report/`).
//! `--no-fuse` (on `run`, `eval`, `grad`, `gradcheck`, `bench`) switches the
//! whole process to the plain op-by-op executor.
//!
//! Guarantees: exit code 0 on success, 1 when the program has errors (each
//! rendered with its source line), 2 on usage or I/O problems, 3 when
//! `gradcheck` could not judge some gradients (unconverged solves); diagnostics
//! go to stderr, requested output to stdout; a closed stdout (`| head -1`)
//! ends any command quietly with exit code 0 (see `output`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::source::SourceMap;

#[derive(Parser, Debug)]
#[command(
    name = "deqc",
    version,
    about = "A language and compiler for deep equilibrium models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse and check files; print a summary of each model, or diagnostics.
    Check {
        /// `.deq` files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Train a model as its `train` block says.
    Run {
        /// The `.deq` file with the model and its `train` block.
        file: PathBuf,
        /// The model to train (default: the first `train` block's).
        #[arg(long)]
        model: Option<String>,
        /// Epochs to train (overrides the train block).
        #[arg(long, value_parser = at_least_one)]
        epochs: Option<usize>,
        /// Samples per step (overrides the train block).
        #[arg(long, value_parser = at_least_one)]
        batch_size: Option<usize>,
        /// Stop after this many optimizer steps in all.
        #[arg(long)]
        max_steps: Option<usize>,
        /// Stop once training has run this long (`90s`, `10m`, `1.5h`),
        /// then evaluate on the test split as at the end of a run.
        #[arg(long, value_parser = duration)]
        max_time: Option<std::time::Duration>,
        /// `cpu` or `cuda`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Where checkpoints and metrics go (default: `runs/<model>-<time>/`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue the run in --out from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Seed of initial values, shuffles and probes (overrides the train block).
        #[arg(long)]
        seed: Option<u64>,
        /// Override a setting: epochs, batch_size, seed, clip_grad, lr.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Apply updates even when the step's solves failed (by default
        /// they are skipped and counted).
        #[arg(long)]
        keep_failed_steps: bool,
        /// CPU threads (default: the train block's `threads`, else
        /// RAYON_NUM_THREADS, else one per core).
        #[arg(long, value_parser = crate::threads::parse_count)]
        threads: Option<usize>,
        /// Run every op by itself instead of as fused compiled kernels.
        #[arg(long)]
        no_fuse: bool,
        /// Start from the parameters of another run (its folder or a
        /// safetensors file), matched by path; the rest keep their seeded
        /// initial values.
        #[arg(long, value_name = "CKPT")]
        init_from: Option<PathBuf>,
        /// Rename checkpoint paths for --init-from: a key OLD or OLD.rest
        /// loads into NEW or NEW.rest (repeatable).
        #[arg(long, value_name = "OLD=NEW", value_parser = crate::train::transfer::parse_map_entry, requires = "init_from")]
        init_map: Vec<(String, String)>,
    },
    /// Evaluate a checkpoint on the test split.
    Eval {
        file: PathBuf,
        #[arg(long)]
        model: Option<String>,
        /// A `model.safetensors` file or a run folder.
        #[arg(long)]
        weights: PathBuf,
        #[arg(long, value_parser = at_least_one)]
        batch_size: Option<usize>,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// CPU threads (default: the train block's `threads`, else
        /// RAYON_NUM_THREADS, else one per core).
        #[arg(long, value_parser = crate::threads::parse_count)]
        threads: Option<usize>,
        /// Run every op by itself instead of as fused compiled kernels.
        #[arg(long)]
        no_fuse: bool,
        /// Also report the AUROC of the model's log-density telling the
        /// test images from corrupted copies: `shuffle` (pixels in a random
        /// order), `noise` (uniform grey levels); repeat or separate by
        /// commas. Needs an output marked `log_density`.
        #[arg(long, value_delimiter = ',')]
        ood: Vec<String>,
    },
    /// One batch's loss and parameter gradients, as safetensors.
    Grad {
        file: PathBuf,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        weights: PathBuf,
        /// Tensors named after the model's inputs, plus `target`.
        #[arg(long)]
        batch: PathBuf,
        #[arg(long, default_value = "grads.safetensors")]
        out: PathBuf,
        /// CPU threads (default: the train block's `threads`, else
        /// RAYON_NUM_THREADS, else one per core).
        #[arg(long, value_parser = crate::threads::parse_count)]
        threads: Option<usize>,
        /// Run every op by itself instead of as fused compiled kernels.
        #[arg(long)]
        no_fuse: bool,
    },
    /// Print one stage of the compiler for a file.
    Dump {
        /// Which stage to print.
        #[arg(long, value_enum)]
        emit: Stage,
        file: PathBuf,
    },
    /// The graph (and with --backward its derived gradient graph) as Graphviz dot.
    Graph {
        file: PathBuf,
        /// Show the backward graph: the forward graph plus every parameter's gradient.
        #[arg(long)]
        backward: bool,
        /// Only this model.
        #[arg(long)]
        model: Option<String>,
    },
    /// Derived gradients against central finite differences, in f64.
    Gradcheck {
        file: PathBuf,
        /// Only this model.
        #[arg(long)]
        model: Option<String>,
        /// The batch size (symbolic dim `B`); other symbolic dims are 3.
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Check at a checkpoint's parameters (`model.safetensors` or a run
        /// folder) instead of the model's initial ones.
        #[arg(long, conflicts_with = "random_params")]
        weights: Option<PathBuf>,
        /// Check at random parameters (normal, std 1/sqrt(fan-in), seeded
        /// by --seed) instead of the model's initial ones.
        #[arg(long)]
        random_params: bool,
        /// Seed of the random inputs and projection (and of --random-params).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Largest acceptable relative error.
        #[arg(long, default_value_t = 1e-6)]
        tol: f64,
        /// Elements compared per tensor at most.
        #[arg(long, default_value_t = 32)]
        samples: usize,
        /// Also estimate each equilibrium's spectral radius.
        #[arg(long)]
        stability: bool,
        /// CPU threads (default: RAYON_NUM_THREADS, else one per core).
        #[arg(long, value_parser = crate::threads::parse_count)]
        threads: Option<usize>,
        /// Run every op by itself instead of as fused compiled kernels.
        #[arg(long)]
        no_fuse: bool,
    },
    /// Adversarial robustness on the test split: FGSM or PGD through the
    /// compiler-derived input gradient.
    Attack {
        file: PathBuf,
        #[command(flatten)]
        options: crate::commands::attack::Options,
    },
    /// A language server over stdio (diagnostics, hover, definitions, completion).
    Lsp,
    /// Rewrite `.deq` files in the canonical layout (comments kept).
    Fmt {
        /// Change nothing; exit 1 and name the files that would change.
        #[arg(long)]
        check: bool,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// An HTML report of a run folder (charts of its metrics, its facts).
    Report {
        /// The run folder (`metrics.jsonl`, `run.json`).
        run_dir: PathBuf,
        /// Further run folders to overlay on the charts.
        #[arg(long, num_args = 1..)]
        compare: Vec<PathBuf>,
        /// Where to write the page (default: RUN_DIR/report.html).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Time training steps: median step time, where it goes, heap traffic.
    Bench {
        /// The `.deq` file with the model and its `train` block.
        file: PathBuf,
        /// The model to time (default: the first `train` block's).
        #[arg(long)]
        model: Option<String>,
        /// Timed training steps (the first is listed but left out of the median).
        #[arg(long, default_value_t = 10, value_parser = at_least_one)]
        steps: usize,
        /// Threads of the CPU kernels (default: one per core).
        #[arg(long, value_parser = at_least_one)]
        threads: Option<usize>,
        /// Run the plain op-by-op path instead of fused kernels.
        #[arg(long)]
        no_fuse: bool,
        /// Evaluate equilibrium bodies on the whole batch at once, every op
        /// split across the threads, instead of in one part of the batch
        /// per thread (for comparing the two; the results are the same).
        #[arg(long)]
        whole_batch: bool,
        /// Override a setting: solver.max_iter, solver.tol, backward.max_iter,
        /// backward.tol, backward.steps, jacobian_reg.freq, or a `run` key
        /// (batch_size, seed, lr, clip_grad).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Also list the N ops and fused kernels that took the most time
        /// per step, with their operand shapes.
        #[arg(long, value_name = "N", value_parser = at_least_one)]
        ops: Option<usize>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The syntax tree of the file, with spans.
    Ast,
    /// The checked, elaborated program.
    Hir,
    /// The IR graph.
    Ir,
    /// The backward graph (forward plus every parameter's gradient).
    Grad,
    /// The IR graph after the optimization pipeline.
    Opt,
    /// The fusion groups (compiled kernels) and attention steps of the forward and training graphs.
    Kernels,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `--no-fuse` switches the whole process to the plain op-by-op path.
    let no_fuse = match &cli.command {
        Command::Run { no_fuse, .. }
        | Command::Eval { no_fuse, .. }
        | Command::Grad { no_fuse, .. }
        | Command::Gradcheck { no_fuse, .. }
        | Command::Bench { no_fuse, .. } => *no_fuse,
        _ => false,
    };
    crate::exec::set_fuse_default(!no_fuse);
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Fmt { check, files } => crate::fmt::command(&files, check),
        Command::Report {
            run_dir,
            compare,
            out,
        } => crate::report::command(&run_dir, &compare, out.as_deref()),
        Command::Dump { emit, file } => dump(emit, &file),
        Command::Lsp => crate::lsp::run(),
        Command::Run {
            file,
            model,
            epochs,
            batch_size,
            max_steps,
            max_time,
            device,
            out,
            resume,
            seed,
            sets,
            keep_failed_steps,
            threads,
            no_fuse: _,
            init_from,
            init_map,
        } => crate::train::commands::run(
            &file,
            model.as_deref(),
            epochs,
            batch_size,
            (max_steps, max_time),
            &device,
            out,
            resume,
            seed,
            &sets,
            keep_failed_steps,
            threads,
            init_from.map(|path| crate::train::transfer::InitFrom {
                path,
                map: init_map,
            }),
        ),
        Command::Eval {
            file,
            model,
            weights,
            batch_size,
            device,
            threads,
            no_fuse: _,
            ood,
        } => crate::train::commands::eval(
            &file,
            model.as_deref(),
            &weights,
            batch_size,
            &device,
            threads,
            &ood,
        ),
        Command::Grad {
            file,
            model,
            weights,
            batch,
            out,
            threads,
            no_fuse: _,
        } => crate::train::commands::grad(&file, model.as_deref(), &weights, &batch, &out, threads),
        Command::Attack { file, options } => crate::commands::attack::run(&file, &options),
        Command::Graph {
            file,
            backward,
            model,
        } => crate::commands::graph::run(&file, model.as_deref(), backward),
        Command::Bench {
            file,
            model,
            steps,
            threads,
            no_fuse,
            whole_batch,
            sets,
            ops,
        } => crate::commands::bench::run(
            &file,
            &crate::commands::bench::Options {
                model,
                steps,
                threads,
                no_fuse,
                whole_batch,
                sets,
                ops,
            },
        ),
        Command::Gradcheck {
            file,
            model,
            weights,
            random_params,
            batch,
            seed,
            tol,
            samples,
            stability,
            threads,
            no_fuse: _,
        } => {
            if let Err(code) = crate::train::commands::set_threads(threads) {
                return code;
            }
            crate::commands::gradcheck::run(
                &file,
                &crate::commands::gradcheck::Options {
                    model: model.as_deref(),
                    params: match (&weights, random_params) {
                        (Some(w), _) => crate::commands::gradcheck::ParamSource::Weights(w),
                        (None, true) => crate::commands::gradcheck::ParamSource::Random,
                        (None, false) => crate::commands::gradcheck::ParamSource::Init,
                    },
                    batch,
                    seed,
                    tol,
                    samples,
                    stability,
                },
            )
        }
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    for f in files {
        let (program, errors) = match crate::commands::check_rendered(f) {
            Ok(x) => x,
            Err(code) => return code,
        };
        match program {
            Some(p) => {
                outln!("{}: ok", f.display());
                out!("{}", crate::sema::print::summary(&p));
            }
            None => {
                eprintln!(
                    "{}: {errors} error{}",
                    f.display(),
                    if errors == 1 { "" } else { "s" }
                );
                code = ExitCode::from(1);
            }
        }
    }
    code
}

fn dump(stage: Stage, file: &PathBuf) -> ExitCode {
    use crate::commands::IrStage;
    let ir_stage = match stage {
        Stage::Ast | Stage::Hir => None,
        Stage::Ir => Some(IrStage::Ir),
        Stage::Grad => Some(IrStage::Grad),
        Stage::Opt => Some(IrStage::Opt),
        Stage::Kernels => Some(IrStage::Kernels),
    };
    if let Some(s) = ir_stage {
        return crate::commands::dump(s, file);
    }
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match stage {
        Stage::Ast => {
            let mut sources = SourceMap::new();
            let id = sources.add(file.display().to_string(), Some(file.clone()), &text);
            match crate::syntax::parse_file(id, &text) {
                Ok(ast) => {
                    out!("{}", crate::syntax::print::print_file(&ast));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let mut d = crate::diag::Diagnostics::default();
                    d.push(id, e);
                    crate::commands::render(d, &sources);
                    ExitCode::from(1)
                }
            }
        }
        Stage::Hir | Stage::Ir | Stage::Grad | Stage::Opt | Stage::Kernels => {
            match crate::commands::load(file) {
                Ok(p) => {
                    out!("{}", crate::sema::print::print_program(&p));
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
    }
}

/// A count that must be at least 1 (`--epochs`, `--batch-size`), as in a
/// `train` block.
pub(crate) fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected an integer >= 1, found `{text}`")),
    }
}

/// A positive duration: a number with the unit `s`, `m` or `h`
/// (`--max-time 10m`).
pub(crate) fn duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.len().saturating_sub(1));
    let seconds = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "expected a duration such as `90s`, `10m` or `1.5h`, found `{text}`"
            ))
        }
    };
    match number.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(std::time::Duration::from_secs_f64(x * seconds)),
        _ => Err(format!(
            "expected a positive duration such as `90s`, `10m` or `1.5h`, found `{text}`"
        )),
    }
}

/// A finite number >= 0 (`--eps`, `--alpha`).
pub(crate) fn non_negative(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("expected a number >= 0, found `{text}`")),
    }
}
