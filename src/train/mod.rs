//! Training: the loop of `deqc run` and everything around the model.
//!
//! Owns data sets and their batches ([`data`]), optimizers and gradient
//! clipping ([`optim`]), learning-rate schedules ([`schedule`]), parameter
//! initializers ([`init`]), checkpoints ([`checkpoint`]), metrics
//! ([`metrics`]), per-equilibrium solver reports ([`solve_report`]), the
//! failed-solve guard ([`guard`]), the compiled training step ([`program`]:
//! loss and derived gradients) with the typed layout of each graph's inputs
//! and outputs ([`layout`]), and the loop itself ([`trainer`]: a
//! `Trainer` whose phases are resume, step, record, checkpoint, evaluate). Guarantees: nothing here
//! panics on user data or files; every failure is a [`TrainError`] naming
//! the file, parameter or source line.

pub mod checkpoint;
pub mod commands;
pub mod compiled;
pub mod data;
pub mod epoch;
pub mod evaluate;
pub mod guard;
pub mod init;
pub mod layout;
pub mod metrics;
pub mod optim;
pub mod program;
pub mod schedule;
pub mod solve_report;
pub mod trainer;
pub mod transfer;

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
    /// Other problems with the run's files and settings (see `trainer`).
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
    /// The failed-solve guard skipped most recent updates (see `guard`).
    #[error("{0}")]
    Stalled(String),
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
