//! The `train` block: keys, data sources, losses, optimizers, schedules.
//!
//! Guarantees: every key is known (else a "did you mean" error), given at
//! most once, and of the right kind; `data` and `loss` are present; the
//! result has every default of LANGUAGE.md section 8 applied.

use super::workflow::WORKFLOW_KEYS;
use super::{opt, req, suggest, Arg, Bound, CVal, Kind, OptionChecker, Spanned};
use crate::sema::error::SemaError;
use crate::sema::spec::*;
use crate::source::Span;

/// Every key a `train` block accepts: this file's, then the workflow keys.
pub const TRAIN_KEYS: &[&str] =
    &concat_keys::<{ OWN_KEYS.len() + WORKFLOW_KEYS.len() }>(OWN_KEYS, WORKFLOW_KEYS);

/// The keys this file reads itself.
const OWN_KEYS: &[&str] = &[
    "data",
    "loss",
    "optimizer",
    "schedule",
    "epochs",
    "batch_size",
    "seed",
    "jacobian_reg",
    "clip_grad",
    "threads",
    "freeze",
    "adversarial",
    "outputs",
];

/// `a` then `b`, in a constant (`N` is their total length).
const fn concat_keys<const N: usize>(a: &[&'static str], b: &[&'static str]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = if i < a.len() { a[i] } else { b[i - a.len()] };
        i += 1;
    }
    out
}

/// Every schedule of `schedule = ...`.
pub const SCHEDULES: &[&str] = &[
    "constant",
    "cosine",
    "linear",
    "step",
    "exponential",
    "onecycle",
];

/// `classes = [..]` and `per_class = N` of a labelled data source; class
/// ids up to `max_class` when the source knows its classes.
fn subset_args(max_class: Option<i64>) -> [Arg; 2] {
    [
        // The empty list and 0 stand for "not given": every sample.
        opt("classes", Kind::Classes(max_class), CVal::Tuple(Vec::new())),
        opt("per_class", Kind::Int(1), CVal::Int(0)),
    ]
}

fn subset_of(b: &Bound) -> Subset {
    Subset {
        classes: b.ints("classes"),
        per_class: Some(b.uint("per_class")).filter(|n| *n > 0),
    }
}

/// One `key = value;` of a train block, value already evaluated.
pub struct TrainValue {
    pub key: String,
    pub key_span: Span,
    pub value: Spanned,
}

impl OptionChecker<'_> {
    pub fn train(
        &mut self,
        model: &str,
        entries: &[TrainValue],
        block_span: Span,
    ) -> Option<TrainConfig> {
        let mut seen: Vec<&str> = Vec::new();
        let mut ok = true;
        let mut cfg = TrainConfig {
            model: model.to_string(),
            data: DataSpec::Csv {
                path: String::new(),
                target: String::new(),
                subset: Subset::default(),
            },
            loss: Loss::CROSS_ENTROPY,
            optimizer: Optimizer::Adam {
                lr: 1e-3,
                betas: (0.9, 0.999),
                weight_decay: 0.0,
            },
            schedule: Schedule::constant(),
            epochs: 1,
            batch_size: 64,
            seed: 0,
            jacobian_reg: None,
            clip_grad: None,
            threads: None,
            freeze: Vec::new(),
            adversarial: None,
            workflow: Workflow::default(),
            outputs: Vec::new(),
        };
        let mut workflow_spans = super::workflow::WorkflowSpans::default();
        let mut schedule_span = block_span;
        for e in entries {
            let Some(key) = TRAIN_KEYS.iter().find(|k| **k == e.key) else {
                self.errors.push(SemaError::UnknownOption {
                    what: "train key".into(),
                    name: e.key.clone(),
                    span: e.key_span.into(),
                    help: suggest(&e.key, TRAIN_KEYS),
                });
                ok = false;
                continue;
            };
            if seen.contains(key) {
                self.errors.push(SemaError::DuplicateArgument {
                    callee: format!("train {model}"),
                    kind: "key".into(),
                    name: e.key.clone(),
                    span: e.key_span.into(),
                });
                ok = false;
                continue;
            }
            seen.push(key);
            let v = &e.value;
            let applied = match *key {
                "data" => self.data(v).map(|d| cfg.data = d),
                "loss" => self.loss(v).map(|l| cfg.loss = l),
                "optimizer" => self.optimizer(v).map(|o| cfg.optimizer = o),
                "schedule" => self.schedule(v).map(|s| {
                    cfg.schedule = s;
                    schedule_span = v.span;
                }),
                "epochs" => self.count(key, v, 1).map(|n| cfg.epochs = n as usize),
                "batch_size" => self.count(key, v, 1).map(|n| cfg.batch_size = n as usize),
                "seed" => self.count(key, v, 0).map(|n| cfg.seed = n as u64),
                "jacobian_reg" => self.jacobian(v).map(|j| cfg.jacobian_reg = Some(j)),
                "threads" => self.threads(v).map(|n| cfg.threads = Some(n)),
                "freeze" => self.freeze(v).map(|f| cfg.freeze = f),
                "adversarial" => self.adversarial(v).map(|a| cfg.adversarial = Some(a)),
                k if WORKFLOW_KEYS.contains(&k) => {
                    self.workflow_key(k, v, &mut cfg.workflow, &mut workflow_spans)
                }
                "outputs" => self.outputs(v).map(|o| cfg.outputs = o),
                _ => self.positive(key, v).map(|c| cfg.clip_grad = Some(c)),
            };
            ok &= applied.is_some();
        }
        for required in ["data", "loss"] {
            if !seen.contains(&required) {
                self.errors.push(SemaError::MissingTrainKey {
                    name: required.into(),
                    model: model.to_string(),
                    span: block_span.into(),
                    help: Some(match required {
                        "data" => "e.g. `data = mnist(\"data/mnist-10k\", flatten = true);`".into(),
                        _ => "e.g. `loss = cross_entropy;`".into(),
                    }),
                });
                ok = false;
            }
        }
        ok &= self.check_onecycle(&cfg, schedule_span);
        // Across keys, once each key read well.
        if ok {
            ok = self.check_workflow(&cfg, &workflow_spans);
        }
        ok.then_some(cfg)
    }

    fn count(&mut self, key: &str, v: &Spanned, min: i64) -> Option<i64> {
        self.kind_ok("train", key, Kind::Int(min), v)
            .then_some(match v.value {
                CVal::Int(i) => i,
                _ => 0,
            })
    }

    fn positive(&mut self, key: &str, v: &Spanned) -> Option<f64> {
        self.kind_ok("train", key, Kind::PosFloat, v)
            .then(|| super::as_float(&v.value).unwrap_or(0.0))
    }

    fn data(&mut self, v: &Spanned) -> Option<DataSpec> {
        const SOURCES: &[&str] = &["mnist", "text", "csv"];
        let (name, args) = self.call_parts(v, "data source", SOURCES)?;
        let path = req("path", Kind::Str(&[]));
        match name {
            "mnist" => {
                let [classes, per_class] = subset_args(Some(9));
                let b = self.bind(
                    name,
                    &[
                        path,
                        opt("flatten", Kind::Bool, CVal::Bool(false)),
                        opt("normalize", Kind::Bool, CVal::Bool(false)),
                        opt("dequantize", Kind::Bool, CVal::Bool(false)),
                        classes,
                        per_class,
                    ],
                    args,
                    v.span,
                )?;
                let (normalize, dequantize) = (b.bool("normalize"), b.bool("dequantize"));
                if normalize && dequantize {
                    self.errors.push(SemaError::InvalidValue {
                        message: "`normalize` and `dequantize` cannot both be on".into(),
                        span: v.span.into(),
                        label: "a density of dequantized pixels is taken in [0, 1]".into(),
                        help: Some(
                            "drop `normalize = true`: dequantized pixels are (k + u) / 256, and bits per dimension are measured on that scale"
                                .into(),
                        ),
                    });
                    return None;
                }
                Some(DataSpec::Mnist {
                    path: b.str("path"),
                    flatten: b.bool("flatten"),
                    normalize,
                    dequantize,
                    subset: subset_of(&b),
                })
            }
            "text" => {
                let schema = [
                    path,
                    opt(
                        "level",
                        Kind::Str(&["char", "word"]),
                        CVal::Str("char".into()),
                    ),
                    opt("seq_len", Kind::Int(1), CVal::Int(128)),
                    // 0 stands for "not given": every token gets an id.
                    opt("vocab", Kind::Int(2), CVal::Int(0)),
                ];
                let b = self.bind(name, &schema, args, v.span)?;
                Some(DataSpec::Text {
                    path: b.str("path"),
                    level: if b.str("level") == "word" {
                        TextLevel::Word
                    } else {
                        TextLevel::Char
                    },
                    seq_len: b.uint("seq_len"),
                    vocab: Some(b.uint("vocab")).filter(|n| *n > 0),
                })
            }
            "csv" => {
                let [classes, per_class] = subset_args(None);
                let schema = [path, req("target", Kind::Str(&[])), classes, per_class];
                let b = self.bind(name, &schema, args, v.span)?;
                Some(DataSpec::Csv {
                    path: b.str("path"),
                    target: b.str("target"),
                    subset: subset_of(&b),
                })
            }
            _ => {
                self.unknown("data source", name, v.span, SOURCES);
                None
            }
        }
    }

    fn optimizer(&mut self, v: &Spanned) -> Option<Optimizer> {
        const OPTIMIZERS: &[&str] = &["sgd", "adam", "adamw"];
        let (name, args) = self.call_parts(v, "optimizer", OPTIMIZERS)?;
        let lr = req("lr", Kind::PosFloat);
        let wd_default = if name == "adamw" { 0.01 } else { 0.0 };
        let wd = opt("weight_decay", Kind::NonNegFloat, CVal::Float(wd_default));
        let betas = || {
            opt(
                "betas",
                Kind::Betas,
                CVal::Tuple(vec![
                    Spanned {
                        value: CVal::Float(0.9),
                        span: v.span,
                    },
                    Spanned {
                        value: CVal::Float(0.999),
                        span: v.span,
                    },
                ]),
            )
        };
        match name {
            "sgd" => {
                let schema = [lr, opt("momentum", Kind::Prob, CVal::Float(0.0)), wd];
                let b = self.bind(name, &schema, args, v.span)?;
                Some(Optimizer::Sgd {
                    lr: b.float("lr"),
                    momentum: b.float("momentum"),
                    weight_decay: b.float("weight_decay"),
                })
            }
            "adam" | "adamw" => {
                let b = self.bind(name, &[lr, betas(), wd], args, v.span)?;
                let pair = match b.get("betas").map(|s| &s.value) {
                    Some(CVal::Tuple(t)) if t.len() == 2 => (
                        super::as_float(&t[0].value).unwrap_or(0.9),
                        super::as_float(&t[1].value).unwrap_or(0.999),
                    ),
                    _ => (0.9, 0.999),
                };
                let (lr, weight_decay) = (b.float("lr"), b.float("weight_decay"));
                Some(if name == "adam" {
                    Optimizer::Adam {
                        lr,
                        betas: pair,
                        weight_decay,
                    }
                } else {
                    Optimizer::AdamW {
                        lr,
                        betas: pair,
                        weight_decay,
                    }
                })
            }
            _ => {
                self.unknown("optimizer", name, v.span, OPTIMIZERS);
                None
            }
        }
    }

    fn schedule(&mut self, v: &Spanned) -> Option<Schedule> {
        let (name, args) = self.call_parts(v, "schedule", SCHEDULES)?;
        let mut schema = match name {
            "constant" | "cosine" | "linear" => vec![],
            "step" => vec![
                req("every", Kind::Int(1)),
                opt("gamma", Kind::Fraction, CVal::Float(0.1)),
            ],
            "exponential" => vec![req("gamma", Kind::Fraction)],
            "onecycle" => vec![req("max_lr", Kind::PosFloat)],
            _ => {
                self.unknown("schedule", name, v.span, SCHEDULES);
                return None;
            }
        };
        // -1 stands for "not given": the decay's own default.
        schema.push(opt("warmup", Kind::Int(0), CVal::Int(-1)));
        let b = self.bind(name, &schema, args, v.span)?;
        let decay = match name {
            "constant" => Decay::Constant,
            "cosine" => Decay::Cosine,
            "linear" => Decay::Linear,
            "step" => Decay::Step {
                every: b.uint("every"),
                gamma: b.float("gamma"),
            },
            "exponential" => Decay::Exponential {
                gamma: b.float("gamma"),
            },
            _ => Decay::OneCycle {
                max_lr: b.float("max_lr"),
            },
        };
        let warmup = usize::try_from(b.int("warmup")).ok();
        Some(Schedule { decay, warmup })
    }

    /// `onecycle(max_lr)` must rise: its peak above the optimizer's rate.
    fn check_onecycle(&mut self, cfg: &TrainConfig, span: Span) -> bool {
        let Decay::OneCycle { max_lr } = cfg.schedule.decay else {
            return true;
        };
        let lr = match cfg.optimizer {
            Optimizer::Sgd { lr, .. }
            | Optimizer::Adam { lr, .. }
            | Optimizer::AdamW { lr, .. } => lr,
        };
        if max_lr > lr {
            return true;
        }
        self.errors.push(SemaError::InvalidValue {
            message: format!(
                "onecycle's max_lr {max_lr:?} is not above the optimizer's lr {lr:?}"
            ),
            span: span.into(),
            label: "max_lr must exceed lr".into(),
            help: Some(
                "onecycle rises from the optimizer's lr to max_lr, then falls to lr / 1e4; e.g. `optimizer = adam(lr = 4e-4); schedule = onecycle(max_lr = 1e-2);`"
                    .into(),
            ),
        });
        false
    }

    /// `freeze = [a, "b.c"]`: a list of parameter paths (bare names or
    /// strings); whether each names a parameter is checked against the
    /// model afterwards.
    fn freeze(&mut self, v: &Spanned) -> Option<Vec<(String, Span)>> {
        let items = match &v.value {
            CVal::Tuple(items) => items.as_slice(),
            CVal::Name(_) | CVal::Str(_) => std::slice::from_ref(v),
            _ => &[],
        };
        let paths: Vec<(String, Span)> = items
            .iter()
            .filter_map(|i| match &i.value {
                CVal::Name(n) | CVal::Str(n) => Some((n.clone(), i.span)),
                _ => None,
            })
            .collect();
        if paths.len() == items.len() && !items.is_empty() {
            return Some(paths);
        }
        self.errors.push(SemaError::ArgumentType {
            callee: "train".into(),
            name: "freeze".into(),
            expected: "a list of parameter paths, e.g. `[inject, \"cell.lin\"]`".into(),
            found: v.value.describe(),
            span: v.span.into(),
            help: None,
        });
        None
    }

    /// `outputs = [scores, log_density]`: one role per model output (bare
    /// names or strings); whether they fit the model is checked against
    /// it afterwards.
    fn outputs(&mut self, v: &Spanned) -> Option<Vec<(OutputRole, Span)>> {
        let items = match &v.value {
            CVal::Tuple(items) if !items.is_empty() => items.as_slice(),
            _ => {
                self.errors.push(SemaError::ArgumentType {
                    callee: "train".into(),
                    name: "outputs".into(),
                    expected: "a list of output roles, e.g. `[scores, log_density]`".into(),
                    found: v.value.describe(),
                    span: v.span.into(),
                    help: None,
                });
                return None;
            }
        };
        let mut roles = Vec::new();
        for i in items {
            let role = match &i.value {
                CVal::Name(n) | CVal::Str(n) => OutputRole::from_name(n).ok_or(n.clone()),
                other => Err(other.describe()),
            };
            match role {
                Ok(r) => roles.push((r, i.span)),
                Err(name) => self.errors.push(SemaError::UnknownOption {
                    what: "output role".into(),
                    name: name.clone(),
                    span: i.span.into(),
                    help: suggest(&name, OutputRole::NAMES),
                }),
            }
        }
        (roles.len() == items.len()).then_some(roles)
    }

    /// `threads = N`: a positive count of at most [`MAX_THREADS`].
    fn threads(&mut self, v: &Spanned) -> Option<usize> {
        let n = self.count("threads", v, 1)? as usize;
        if n > MAX_THREADS {
            self.errors.push(SemaError::InvalidValue {
                message: format!("threads = {n} is more than {MAX_THREADS}"),
                span: v.span.into(),
                label: "too many threads".into(),
                help: Some("use about as many threads as the machine has cores".into()),
            });
            return None;
        }
        Some(n)
    }

    fn jacobian(&mut self, v: &Spanned) -> Option<JacobianReg> {
        let args = self.call_of(v, "regularizer", "jacobian")?;
        let schema = [
            req("weight", Kind::NonNegFloat),
            opt("freq", Kind::Fraction, CVal::Float(1.0)),
        ];
        let b = self.bind("jacobian", &schema, args, v.span)?;
        Some(JacobianReg {
            weight: b.float("weight"),
            freq: b.float("freq"),
        })
    }
}
