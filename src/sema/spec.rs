//! Checked settings: solvers, backward modes, initializers, train blocks.
//!
//! Owns the typed form of everything written as `name(arg = value)` in a
//! `with` clause, a `param` initializer or a `train` block, and the
//! documented defaults of every omitted setting. Guarantees: every field is
//! filled (defaults applied) and within its valid range once sema built it.

use std::fmt;

/// How a solve decides that a sample has converged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// `||f(z) - z|| / ||f(z)||`.
    Rel,
    /// `||f(z) - z||`.
    Abs,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SolverKind {
    FixedPoint { damping: f64 },
    Anderson { m: usize, beta: f64, lam: f64 },
    Broyden { memory: usize },
    Unroll { steps: usize },
}

impl SolverKind {
    pub fn name(&self) -> &'static str {
        match self {
            SolverKind::FixedPoint { .. } => "fixed_point",
            SolverKind::Anderson { .. } => "anderson",
            SolverKind::Broyden { .. } => "broyden",
            SolverKind::Unroll { .. } => "unroll",
        }
    }

    /// `anderson(m = 5, beta = 1.0, lam = 1e-4)`.
    pub fn default_anderson() -> SolverKind {
        SolverKind::Anderson {
            m: 5,
            beta: 1.0,
            lam: 1e-4,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SolverSpec {
    pub kind: SolverKind,
    pub tol: f64,
    pub max_iter: usize,
    pub stop: Stop,
}

/// Defaults of the forward solve (documented in docs/language-notes.md).
pub const DEFAULT_TOL: f64 = 1e-4;
pub const DEFAULT_MAX_ITER: usize = 40;
/// Defaults of the implicit adjoint solve.
pub const DEFAULT_BACKWARD_TOL: f64 = 1e-6;

impl SolverSpec {
    /// `anderson(m = 5, beta = 1.0, lam = 1e-4, tol = 1e-4, max_iter = 40)`.
    pub fn default_forward() -> SolverSpec {
        SolverSpec {
            kind: SolverKind::default_anderson(),
            tol: DEFAULT_TOL,
            max_iter: DEFAULT_MAX_ITER,
            stop: Stop::Rel,
        }
    }

    /// These settings for an implicit adjoint solve that replaces an
    /// approximate backward rule: `unroll` has no iteration of its own to
    /// reuse, so it becomes the default Anderson.
    pub fn for_implicit_backward(&self) -> SolverSpec {
        let mut solver = self.clone();
        if matches!(solver.kind, SolverKind::Unroll { .. }) {
            solver.kind = SolverKind::default_anderson();
        }
        solver
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Backward {
    /// Solve `g = J^T g + dL/dz*` with its own solver.
    Implicit { solver: SolverSpec },
    /// `steps` damped unrolled steps from z*.
    Phantom { steps: usize, damping: f64 },
    /// One step, Jacobian-free.
    Jfb,
    /// Backpropagate through every forward iteration.
    Unrolled,
}

impl Backward {
    pub fn name(&self) -> &'static str {
        match self {
            Backward::Implicit { .. } => "implicit",
            Backward::Phantom { .. } => "phantom",
            Backward::Jfb => "jfb",
            Backward::Unrolled => "unrolled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Normal {
        std: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// PyTorch's `kaiming_uniform_`: bound = gain * sqrt(3 / fan_in) with
    /// gain = sqrt(2 / (1 + a^2)); the default `a = sqrt(5)` gives PyTorch's
    /// default for linear and convolution weights, bound = 1 / sqrt(fan_in).
    KaimingUniform {
        fan_in: i64,
        a: f64,
    },
    XavierUniform {
        fan_in: i64,
        fan_out: i64,
    },
    Orthogonal {
        gain: f64,
    },
    Eye,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextLevel {
    Char,
    Word,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    Mnist {
        path: String,
        flatten: bool,
        /// Standardize `x` with the training split's mean and std.
        normalize: bool,
        /// Pixels `(k + u) / 256` with `u` uniform in `[0, 1)` (grey level
        /// `k`), drawn afresh per training step (see `train::density`).
        dequantize: bool,
        subset: Subset,
    },
    Text {
        path: String,
        level: TextLevel,
        seq_len: usize,
        /// `None`: every token of the train split gets an id.
        vocab: Option<usize>,
    },
    Csv {
        path: String,
        target: String,
        subset: Subset,
    },
}

/// `classes = [..]`, `per_class = N` of a data source: which labelled
/// samples to train on. The default keeps every sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subset {
    /// Class ids to keep (empty: all).
    pub classes: Vec<i64>,
    /// Train samples per class, drawn from the seed (`None`: all).
    pub per_class: Option<usize>,
}

impl Subset {
    pub fn is_all(&self) -> bool {
        self.classes.is_empty() && self.per_class.is_none()
    }
}

impl fmt::Display for Subset {
    /// `, classes = [..], per_class = N` for the options given.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.classes.is_empty() {
            let c: Vec<String> = self.classes.iter().map(|c| c.to_string()).collect();
            write!(f, ", classes = [{}]", c.join(", "))?;
        }
        if let Some(n) = self.per_class {
            write!(f, ", per_class = {n}")?;
        }
        Ok(())
    }
}

/// What one output of a model is, as `outputs = [scores, log_density]`
/// says: it decides the metrics (accuracy and cross-entropy of class
/// scores; negative log-likelihood and bits per dimension of a
/// log-density), never the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputRole {
    /// Class scores `[B, C]` (or `[B, T, V]`) against the class-id target.
    Scores,
    /// `log p(x)` per sample, `[B]`, in nats.
    LogDensity,
    /// Any other output: no metric.
    Other,
}

impl OutputRole {
    /// The names written in `outputs = [...]`.
    pub const NAMES: &'static [&'static str] = &["scores", "log_density", "other"];

    pub fn from_name(name: &str) -> Option<OutputRole> {
        match name {
            "scores" => Some(OutputRole::Scores),
            "log_density" => Some(OutputRole::LogDensity),
            "other" => Some(OutputRole::Other),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputRole::Scores => "scores",
            OutputRole::LogDensity => "log_density",
            OutputRole::Other => "other",
        }
    }
}

/// The loss of a `train` block: a built-in, or a `fn` of the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    /// Softmax cross-entropy against class ids; the target distribution is
    /// `(1 - label_smoothing) * one_hot + label_smoothing / C`.
    CrossEntropy {
        label_smoothing: f64,
    },
    /// Negative log-likelihood of class ids, on log-probabilities.
    Nll,
    /// Binary cross-entropy on logits against float targets of the scores'
    /// shape, averaged over every element.
    BceWithLogits,
    Mse,
    /// `loss = my_loss;` with `fn my_loss(scores, target)`.
    Custom(CustomLoss),
}

impl Loss {
    /// `cross_entropy` without label smoothing (the default loss).
    pub const CROSS_ENTROPY: Loss = Loss::CrossEntropy {
        label_smoothing: 0.0,
    };

    /// Whether the targets are class ids, so that accuracy is a metric.
    pub fn takes_class_ids(&self) -> bool {
        match self {
            Loss::CrossEntropy { .. } | Loss::Nll => true,
            Loss::BceWithLogits | Loss::Mse => false,
            Loss::Custom(c) => c.target.dtype == crate::types::DType::I64,
        }
    }
}

/// A loss written in the language: the `fn`, elaborated with the model's
/// outputs then the target as its arguments (in that order, so that a model
/// with several outputs can hand them all to its loss).
#[derive(Debug, Clone)]
pub struct CustomLoss {
    /// The fn's name.
    pub name: String,
    /// Where `loss = name` is written.
    pub span: crate::source::Span,
    /// The type of the target the data gives (the fn's last argument).
    pub target: crate::types::Type,
    /// The fn inlined as a parameterless model: inputs are the model's
    /// outputs then the target; one output, a float scalar. `None` until
    /// sema has elaborated it.
    pub body: Option<std::sync::Arc<crate::sema::hir::Model>>,
}

impl PartialEq for CustomLoss {
    /// Two custom losses agree when they name the same fn with the same
    /// target type (the body follows from them and the model).
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.target == other.target
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::CrossEntropy { label_smoothing } if *label_smoothing > 0.0 => write!(
                f,
                "cross_entropy(label_smoothing = {})",
                num(*label_smoothing)
            ),
            Loss::CrossEntropy { .. } => f.write_str("cross_entropy"),
            Loss::Nll => f.write_str("nll"),
            Loss::BceWithLogits => f.write_str("bce_with_logits"),
            Loss::Mse => f.write_str("mse"),
            Loss::Custom(c) => f.write_str(&c.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Optimizer {
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        betas: (f64, f64),
        weight_decay: f64,
    },
    AdamW {
        lr: f64,
        betas: (f64, f64),
        weight_decay: f64,
    },
}

/// A learning-rate schedule: a decay shape and its warm-up
/// (`train::schedule` computes the rate per step).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub decay: Decay,
    /// Warm-up steps as written; `None` takes the decay's default (0 steps,
    /// or 30% of the run for `onecycle`).
    pub warmup: Option<usize>,
}

impl Schedule {
    /// The default schedule: the optimizer's rate throughout.
    pub fn constant() -> Schedule {
        Schedule {
            decay: Decay::Constant,
            warmup: None,
        }
    }
}

/// How a schedule's rate changes after its warm-up.
#[derive(Debug, Clone, PartialEq)]
pub enum Decay {
    Constant,
    Cosine,
    /// Straight down to 0 at the end of the run.
    Linear,
    /// `gamma^(epoch / every)`.
    Step {
        every: usize,
        gamma: f64,
    },
    /// `gamma^epoch`.
    Exponential {
        gamma: f64,
    },
    /// Up from the optimizer's rate to `max_lr` during the warm-up, then
    /// down to the optimizer's rate / 1e4, both along a cosine.
    OneCycle {
        max_lr: f64,
    },
}

/// The most threads `--threads` and `threads = N` accept.
pub const MAX_THREADS: usize = 1024;

/// FGSM (one step of size eps) or PGD (projected steps, restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttackMethod {
    Fgsm,
    Pgd,
}

/// The norm that measures a perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttackNorm {
    Linf,
    L2,
}

/// `adversarial = pgd(eps, steps, alpha, norm)` or `fgsm(eps, norm)`: every
/// training step trains on its batch attacked against the current
/// parameters (eps in the data's units).
#[derive(Debug, Clone, PartialEq)]
pub struct Adversarial {
    pub method: AttackMethod,
    pub norm: AttackNorm,
    pub eps: f64,
    /// PGD steps (1 for FGSM).
    pub steps: usize,
    /// PGD step size (eps for FGSM).
    pub alpha: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JacobianReg {
    pub weight: f64,
    pub freq: f64,
}

/// The validation split, evaluation cost, early stopping, pretraining and
/// inference-time solver of a `train` block (`train::validation`,
/// `train::pretrain`). The default: no holdout, evaluation after each epoch
/// on the whole validation split (when the data has one), no early
/// stopping, no pretraining, the equilibria's own solvers at evaluation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workflow {
    /// `valid = f`: the fraction of the train split held out, in `(0, 1)`.
    pub valid: Option<f64>,
    /// `eval_every = N`: also validate every N steps.
    pub eval_every: Option<usize>,
    /// `eval_samples = N`: validate on the first N validation samples.
    pub eval_samples: Option<usize>,
    pub early_stopping: Option<EarlyStopping>,
    pub pretrain: Option<Pretrain>,
    /// `eval_solver = ...`: the forward solver of every equilibrium when
    /// evaluating (validation, test, `deqc eval`).
    pub eval_solver: Option<SolverSpec>,
}

/// `early_stopping = patience(epochs = 3, metric = "loss")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyStopping {
    /// Epochs without a better validation figure before the run stops.
    pub epochs: usize,
    pub metric: StopMetric,
}

/// The validation figure early stopping and `best.safetensors` follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMetric {
    Loss,
    Accuracy,
    Perplexity,
}

impl StopMetric {
    pub fn name(self) -> &'static str {
        match self {
            StopMetric::Loss => "loss",
            StopMetric::Accuracy => "accuracy",
            StopMetric::Perplexity => "perplexity",
        }
    }
}

/// `pretrain = unrolled(steps = N, depth = K)`: the first N steps train a
/// weight-tied network of K unrolled iterations in place of each
/// equilibrium, then the implicit DEQ takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pretrain {
    pub steps: usize,
    pub depth: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub model: String,
    pub data: DataSpec,
    pub loss: Loss,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub jacobian_reg: Option<JacobianReg>,
    pub clip_grad: Option<f64>,
    /// CPU threads of the run (`None`: rayon's default or `RAYON_NUM_THREADS`).
    pub threads: Option<usize>,
    /// `freeze = [inject, "cell.lin"]`: parameter paths or path prefixes
    /// that receive no update, each with its span.
    pub freeze: Vec<(String, crate::source::Span)>,
    /// Adversarial training, when set.
    pub adversarial: Option<Adversarial>,
    /// Validation, early stopping, pretraining, the evaluation solver.
    pub workflow: Workflow,
    /// `outputs = [scores, log_density]`: the role of each model output,
    /// each with its span; empty when not given (see [`TrainConfig::roles`]).
    pub outputs: Vec<(OutputRole, crate::source::Span)>,
}

impl TrainConfig {
    /// The role of each of a model's `n` outputs: as `outputs` says, else
    /// the first output is the scores when the target is class ids.
    pub fn roles(&self, n: usize) -> Vec<OutputRole> {
        if !self.outputs.is_empty() {
            return self.outputs.iter().map(|o| o.0).collect();
        }
        (0..n)
            .map(|i| {
                if i == 0 && self.loss.takes_class_ids() {
                    OutputRole::Scores
                } else {
                    OutputRole::Other
                }
            })
            .collect()
    }
}

/// Floats printed so that they read back as the same value.
fn num(x: f64) -> String {
    format!("{x:?}")
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Rel => "\"rel\"",
            Stop::Abs => "\"abs\"",
        })
    }
}

impl fmt::Display for SolverSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.kind.name())?;
        match &self.kind {
            SolverKind::FixedPoint { damping } => write!(f, "damping = {}, ", num(*damping))?,
            SolverKind::Anderson { m, beta, lam } => {
                write!(f, "m = {m}, beta = {}, lam = {}, ", num(*beta), num(*lam))?
            }
            SolverKind::Broyden { memory } => write!(f, "memory = {memory}, ")?,
            SolverKind::Unroll { steps } => write!(f, "steps = {steps}, ")?,
        }
        write!(
            f,
            "tol = {}, max_iter = {}, stop = {})",
            num(self.tol),
            self.max_iter,
            self.stop
        )
    }
}

impl fmt::Display for Backward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backward::Implicit { solver } => write!(f, "implicit(solver = {solver})"),
            Backward::Phantom { steps, damping } => {
                write!(f, "phantom(steps = {steps}, damping = {})", num(*damping))
            }
            Backward::Jfb => write!(f, "jfb"),
            Backward::Unrolled => write!(f, "unrolled"),
        }
    }
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Init::Zeros => write!(f, "zeros"),
            Init::Ones => write!(f, "ones"),
            Init::Normal { std } => write!(f, "normal(std = {})", num(*std)),
            Init::Uniform { lo, hi } => write!(f, "uniform({}, {})", num(*lo), num(*hi)),
            Init::KaimingUniform { fan_in, a } => {
                write!(f, "kaiming_uniform(fan_in = {fan_in}, a = {})", num(*a))
            }
            Init::XavierUniform { fan_in, fan_out } => {
                write!(f, "xavier_uniform(fan_in = {fan_in}, fan_out = {fan_out})")
            }
            Init::Orthogonal { gain } => write!(f, "orthogonal(gain = {})", num(*gain)),
            Init::Eye => write!(f, "eye"),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Mnist {
                path,
                flatten,
                normalize,
                dequantize,
                subset,
            } => {
                let normalize = if *normalize { ", normalize = true" } else { "" };
                let dequantize = if *dequantize {
                    ", dequantize = true"
                } else {
                    ""
                };
                write!(
                    f,
                    "mnist({path:?}, flatten = {flatten}{normalize}{dequantize}{subset})"
                )
            }
            DataSpec::Text {
                path,
                level,
                seq_len,
                vocab,
            } => {
                let level = match level {
                    TextLevel::Char => "char",
                    TextLevel::Word => "word",
                };
                write!(f, "text({path:?}, level = {level:?}, seq_len = {seq_len}")?;
                match vocab {
                    Some(v) => write!(f, ", vocab = {v})"),
                    None => write!(f, ")"),
                }
            }
            DataSpec::Csv {
                path,
                target,
                subset,
            } => write!(f, "csv({path:?}, target = {target:?}{subset})"),
        }
    }
}

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Optimizer::Sgd {
                lr,
                momentum,
                weight_decay,
            } => write!(
                f,
                "sgd(lr = {}, momentum = {}, weight_decay = {})",
                num(*lr),
                num(*momentum),
                num(*weight_decay)
            ),
            Optimizer::Adam {
                lr,
                betas,
                weight_decay,
            }
            | Optimizer::AdamW {
                lr,
                betas,
                weight_decay,
            } => write!(
                f,
                "{}(lr = {}, betas = ({}, {}), weight_decay = {})",
                if matches!(self, Optimizer::Adam { .. }) {
                    "adam"
                } else {
                    "adamw"
                },
                num(*lr),
                num(betas.0),
                num(betas.1),
                num(*weight_decay)
            ),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut args = match &self.decay {
            Decay::Constant | Decay::Cosine | Decay::Linear => vec![],
            Decay::Step { every, gamma } => {
                vec![
                    format!("every = {every}"),
                    format!("gamma = {}", num(*gamma)),
                ]
            }
            Decay::Exponential { gamma } => vec![format!("gamma = {}", num(*gamma))],
            Decay::OneCycle { max_lr } => vec![format!("max_lr = {}", num(*max_lr))],
        };
        if let Some(w) = self.warmup {
            args.push(format!("warmup = {w}"));
        }
        let name = match self.decay {
            Decay::Constant => "constant",
            Decay::Cosine => "cosine",
            Decay::Linear => "linear",
            Decay::Step { .. } => "step",
            Decay::Exponential { .. } => "exponential",
            Decay::OneCycle { .. } => "onecycle",
        };
        if args.is_empty() {
            write!(f, "{name}")
        } else {
            write!(f, "{name}({})", args.join(", "))
        }
    }
}

impl fmt::Display for Adversarial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let norm = match self.norm {
            AttackNorm::Linf => "linf",
            AttackNorm::L2 => "l2",
        };
        match self.method {
            AttackMethod::Fgsm => write!(f, "fgsm(eps = {}, norm = {norm:?})", num(self.eps)),
            AttackMethod::Pgd => write!(
                f,
                "pgd(eps = {}, steps = {}, alpha = {}, norm = {norm:?})",
                num(self.eps),
                self.steps,
                num(self.alpha)
            ),
        }
    }
}

impl fmt::Display for TrainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "train {} {{", self.model)?;
        writeln!(f, "    data = {};", self.data)?;
        writeln!(f, "    loss = {};", self.loss)?;
        writeln!(f, "    optimizer = {};", self.optimizer)?;
        writeln!(f, "    schedule = {};", self.schedule)?;
        writeln!(f, "    epochs = {};", self.epochs)?;
        writeln!(f, "    batch_size = {};", self.batch_size)?;
        writeln!(f, "    seed = {};", self.seed)?;
        match &self.jacobian_reg {
            Some(j) => writeln!(
                f,
                "    jacobian_reg = jacobian(weight = {}, freq = {});",
                num(j.weight),
                num(j.freq)
            )?,
            None => writeln!(f, "    jacobian_reg = off;")?,
        }
        match self.clip_grad {
            Some(c) => writeln!(f, "    clip_grad = {};", num(c))?,
            None => writeln!(f, "    clip_grad = off;")?,
        }
        if let Some(n) = self.threads {
            writeln!(f, "    threads = {n};")?;
        }
        if !self.freeze.is_empty() {
            let paths: Vec<String> = self.freeze.iter().map(|p| format!("{:?}", p.0)).collect();
            writeln!(f, "    freeze = [{}];", paths.join(", "))?;
        }
        if let Some(a) = &self.adversarial {
            writeln!(f, "    adversarial = {a};")?;
        }
        if !self.outputs.is_empty() {
            let roles: Vec<&str> = self.outputs.iter().map(|o| o.0.name()).collect();
            writeln!(f, "    outputs = [{}];", roles.join(", "))?;
        }
        write!(f, "{}", self.workflow)?;
        write!(f, "}}")
    }
}

impl fmt::Display for Workflow {
    /// One `key = value;` line per setting given (none for the defaults).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(v) = self.valid {
            writeln!(f, "    valid = {};", num(v))?;
        }
        if let Some(n) = self.eval_every {
            writeln!(f, "    eval_every = {n};")?;
        }
        if let Some(n) = self.eval_samples {
            writeln!(f, "    eval_samples = {n};")?;
        }
        if let Some(e) = self.early_stopping {
            writeln!(
                f,
                "    early_stopping = patience(epochs = {}, metric = {:?});",
                e.epochs,
                e.metric.name()
            )?;
        }
        if let Some(p) = self.pretrain {
            writeln!(
                f,
                "    pretrain = unrolled(steps = {}, depth = {});",
                p.steps, p.depth
            )?;
        }
        if let Some(s) = &self.eval_solver {
            writeln!(f, "    eval_solver = {s};")?;
        }
        Ok(())
    }
}
