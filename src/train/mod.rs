//! Training: the loop of `deqc run` and everything around the model.
//!
//! Owns data sets and their batches ([`data`]), optimizers and gradient
//! clipping ([`optim`]), learning-rate schedules ([`schedule`]), parameter
//! initializers ([`init`]), the tensors of weight and spectral
//! normalization and the per-step update of the latter's state
//! ([`normalize`]), checkpoints ([`checkpoint`]), metrics
//! ([`metrics`]), per-equilibrium solver reports ([`solve_report`]), the
//! failed-solve guard ([`guard`]), the compiled training step ([`program`]:
//! loss and derived gradients) with the typed layout of each graph's inputs
//! and outputs ([`layout`]), and the loop itself ([`trainer`]: a
//! `Trainer` whose phases are resume, step, record, checkpoint, validate and
//! test ([`validation`]), with unrolled pretraining and the evaluation
//! solver in [`pretrain`]). Guarantees: nothing here
//! panics on user data or files; every failure is a [`TrainError`] naming
//! the file, parameter or source line.

pub mod adversarial;
pub mod attack;
pub mod checkpoint;
pub mod commands;
pub mod compiled;
pub mod data;
pub mod density;
pub mod epoch;
pub mod evaluate;
pub mod guard;
pub mod init;
pub mod layout;
pub mod loss;
pub mod metrics;
pub mod normalize;
pub mod ood;
pub mod optim;
pub mod pretrain;
pub mod program;
pub mod resume_check;
pub mod rng;
pub mod run_state;
pub mod schedule;
pub mod solve_report;
pub mod trainer;
pub mod transfer;
pub mod validation;

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    #[error("deriving the training step: {0}")]
    Autodiff(#[from] crate::autodiff::AdError),
    #[error("lowering the model: {0}")]
    Ir(#[from] crate::ir::IrError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error(transparent)]
    Optim(#[from] optim::OptimError),
    #[error(transparent)]
    Init(#[from] init::InitError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// `deqc eval` on a data set with neither a test nor a validation split.
    #[error("the data set has no test split (and no validation split) to evaluate on")]
    NoTestSplit,
    /// `deqc grad`: the batch file lacks a tensor the model needs.
    #[error("{file} has no tensor `{name}`; it needs one per model input ({inputs}) and `target`")]
    MissingBatchTensor {
        file: std::path::PathBuf,
        name: String,
        inputs: String,
    },
    /// The run folder or its metrics could not be written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// `--resume` found a model and a training state from different steps.
    #[error("{}: model.safetensors is from step {model_step} but train_state.safetensors from step {state_step} (interrupted while checkpointing?); delete one run's files or start afresh", dir.display())]
    CheckpointSteps {
        dir: std::path::PathBuf,
        model_step: String,
        state_step: u64,
    },
    /// The failed-solve guard's saved history does not decode.
    #[error("{}: the failed-solve guard's history is unreadable: {message}", path.display())]
    GuardState {
        path: std::path::PathBuf,
        message: String,
    },
    /// A batch lacks a field the model's graph reads.
    #[error("the batch has no field `{name}`")]
    MissingBatchField { name: String },
    /// `--init-map OLD=NEW` names a path the checkpoint does not have.
    #[error("--init-map {old}={new}: no tensor of {} has the path `{old}` or a path under it", file.display())]
    InitMapUnmatched {
        old: String,
        new: String,
        file: std::path::PathBuf,
    },
    /// `--init-from`: a parameter's shape differs from the checkpoint's.
    #[error("--init-from {}: parameter `{param}` has shape {want:?} in the model but {found:?} in the checkpoint{renamed}; leave it out with a different --init-map, or change the model", file.display())]
    InitShape {
        file: std::path::PathBuf,
        param: String,
        want: Vec<usize>,
        found: Vec<usize>,
        /// ` (renamed from `key`)` when `--init-map` renamed it, else empty.
        renamed: String,
    },
    /// Command-line usage problems of `deqc attack` and `deqc bench`.
    #[error("{0}")]
    Usage(String),
    /// A graph's inputs or outputs do not match its layout: a bug in the
    /// compiler, never the user's.
    #[error("internal error: the {graph} graph has {got} {what} where its layout says {want}")]
    Layout {
        graph: &'static str,
        what: &'static str,
        got: usize,
        want: usize,
    },
    /// `early_stopping` or `eval_every` on data without a validation split.
    #[error("`{key}` needs a validation split, and this data set has none; hold one out with `valid = 0.1;` (text data: add a `*.valid.txt` file)")]
    NoValidationSplit { key: &'static str },
    /// The saved validation or early-stopping state does not decode.
    #[error("{}: the validation state `{key}` is unreadable: {message}", path.display())]
    ValidationState {
        path: std::path::PathBuf,
        key: &'static str,
        message: String,
    },
}

impl TrainError {
    /// The source span an error points at, when it has one.
    pub fn span(&self) -> Option<crate::source::Span> {
        match self {
            TrainError::Exec(e) => e.span(),
            _ => None,
        }
    }
}
