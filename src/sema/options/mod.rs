//! Settings written as `name(arg = value)`: solvers, backward modes, `param`
//! initializers and the values of a `train` block.
//!
//! Owns the schemas of these settings (names, argument kinds, ranges and
//! defaults) and their binding. Guarantees: an unknown name, option or
//! argument is an error that lists the valid ones and suggests the closest;
//! a value of the wrong kind or out of range is an error at its span;
//! nothing is silently ignored.

use std::collections::HashMap;

use crate::sema::error::SemaError;
use crate::sema::spec::*;
use crate::source::Span;

/// A compile-time value as written in a setting.
#[derive(Debug, Clone, PartialEq)]
pub enum CVal {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Tuple(Vec<Spanned>),
    /// A bare name that is not a constant, e.g. `zeros` or `jfb`.
    Name(String),
    /// `name(args)`.
    Call(String, Vec<CArg>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Spanned {
    pub value: CVal,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CArg {
    pub name: Option<(String, Span)>,
    pub value: Spanned,
}

impl CVal {
    pub fn describe(&self) -> String {
        match self {
            CVal::Int(i) => format!("the int {i}"),
            CVal::Float(x) => format!("the float {x:?}"),
            CVal::Bool(b) => format!("the bool {b}"),
            CVal::Str(s) => format!("the string {s:?}"),
            CVal::Tuple(t) => format!("a tuple of {}", t.len()),
            CVal::Name(n) => format!("`{n}`"),
            CVal::Call(n, _) => format!("`{n}(...)`"),
        }
    }
}

/// The closest of `valid` to `name`, as a "did you mean" hint that also
/// lists every valid choice.
pub fn suggest(name: &str, valid: &[&str]) -> Option<String> {
    if valid.is_empty() {
        return None;
    }
    let best = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(name, v), *v))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let list = valid
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ");
    Some(match best {
        Some((_, b)) => format!("did you mean `{b}`? valid: {list}"),
        None => format!("valid: {list}"),
    })
}

/// Every solver of `with solver = ...`.
pub const SOLVERS: &[&str] = &["fixed_point", "anderson", "broyden", "unroll"];
/// Every mode of `with backward = ...`.
pub const BACKWARD_MODES: &[&str] = &["implicit", "phantom", "jfb", "unrolled"];
/// Every option of an `equilibrium`'s `with` clause.
pub const EQ_OPTIONS: &[&str] = &["solver", "backward", "init"];
/// Every `param` initializer.
pub const INITS: &[&str] = &[
    "zeros",
    "ones",
    "normal",
    "uniform",
    "kaiming_uniform",
    "xavier_uniform",
    "orthogonal",
    "eye",
];

/// The arguments of a solver, `None` for an unknown solver.
fn solver_schema(name: &str) -> Option<Vec<Arg>> {
    let mut schema = match name {
        "fixed_point" => vec![opt("damping", Kind::Fraction, CVal::Float(1.0))],
        "anderson" => vec![
            opt("m", Kind::Int(1), CVal::Int(5)),
            opt("beta", Kind::PosFloat, CVal::Float(1.0)),
            opt("lam", Kind::NonNegFloat, CVal::Float(1e-4)),
        ],
        "broyden" => vec![opt(
            "memory",
            Kind::Int(1),
            CVal::Int(DEFAULT_MAX_ITER as i64),
        )],
        "unroll" => vec![req("steps", Kind::Int(1))],
        _ => return None,
    };
    schema.extend([
        opt("tol", Kind::PosFloat, CVal::Float(DEFAULT_TOL)),
        opt("max_iter", Kind::Int(1), CVal::Int(DEFAULT_MAX_ITER as i64)),
        opt("stop", Kind::Str(&["rel", "abs"]), CVal::Str("rel".into())),
    ]);
    Some(schema)
}

/// The arguments of a backward mode, `None` for an unknown mode.
fn backward_schema(name: &str) -> Option<Vec<Arg>> {
    Some(match name {
        "implicit" => vec![
            opt("solver", Kind::Solver, CVal::Name(String::new())),
            opt("tol", Kind::PosFloat, CVal::Float(DEFAULT_BACKWARD_TOL)),
            opt("max_iter", Kind::Int(1), CVal::Int(DEFAULT_MAX_ITER as i64)),
        ],
        "phantom" => vec![
            opt("steps", Kind::Int(1), CVal::Int(5)),
            opt("damping", Kind::Fraction, CVal::Float(0.8)),
        ],
        "jfb" | "unrolled" => vec![],
        _ => return None,
    })
}

/// One argument of a solver or backward mode, for tools: its name, what it
/// must be, and its default (`None`: required).
pub struct ArgInfo {
    pub name: &'static str,
    pub expected: String,
    pub default: Option<String>,
}

fn arg_infos(schema: Vec<Arg>) -> Vec<ArgInfo> {
    schema
        .into_iter()
        .map(|Arg(name, kind, default)| ArgInfo {
            name,
            expected: kind.describe(),
            default: default.map(|d| match d {
                CVal::Int(i) => i.to_string(),
                CVal::Float(x) => format!("{x:?}"),
                CVal::Bool(b) => b.to_string(),
                CVal::Str(s) => format!("{s:?}"),
                CVal::Name(n) if n.is_empty() => "the forward solver".into(),
                other => other.describe(),
            }),
        })
        .collect()
}

/// The arguments `solver(...)` takes (for the language server).
pub fn solver_args(name: &str) -> Option<Vec<ArgInfo>> {
    solver_schema(name).map(arg_infos)
}

/// The arguments `backward(...)` mode `name` takes (for the language server).
pub fn backward_args(name: &str) -> Option<Vec<ArgInfo>> {
    backward_schema(name).map(arg_infos)
}

/// The kind and range an argument must have.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// An int of at least the given value.
    Int(i64),
    /// A float (ints accepted) strictly above 0.
    PosFloat,
    /// A float (ints accepted) of at least 0.
    NonNegFloat,
    /// A float in `(0, 1]`.
    Fraction,
    /// A float in `[0, 1)`.
    Prob,
    Bool,
    /// One of the listed strings (any string when the list is empty).
    Str(&'static [&'static str]),
    /// A pair of floats in `[0, 1)`, e.g. Adam's betas.
    Betas,
    /// A solver setting, e.g. `anderson(m = 5)`.
    Solver,
    /// A list of distinct class ids in `0..=max` (any id >= 0 when `max`
    /// is `None`), e.g. `[5, 6, 7]`.
    Classes(Option<i64>),
}

impl Kind {
    fn describe(self) -> String {
        match self {
            Kind::Int(0) => "a non-negative int".into(),
            Kind::Int(1) => "a positive int".into(),
            Kind::Int(n) => format!("an int of at least {n}"),
            Kind::PosFloat => "a positive number".into(),
            Kind::NonNegFloat => "a non-negative number".into(),
            Kind::Fraction => "a number in (0, 1]".into(),
            Kind::Prob => "a number in [0, 1)".into(),
            Kind::Bool => "a bool".into(),
            Kind::Str([]) => "a string".into(),
            Kind::Str(choices) => format!(
                "one of {}",
                choices
                    .iter()
                    .map(|c| format!("{c:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Kind::Betas => "a pair of numbers in [0, 1), e.g. (0.9, 0.999)".into(),
            Kind::Solver => "a solver, e.g. anderson(m = 5)".into(),
            Kind::Classes(Some(max)) => {
                format!("a non-empty list of distinct class ids in 0..={max}, e.g. [5, 6, 7]")
            }
            Kind::Classes(None) => {
                "a non-empty list of distinct class ids (ints >= 0), e.g. [5, 6, 7]".into()
            }
        }
    }
}

/// An argument of a setting: name, kind, default (`None`: required).
struct Arg(&'static str, Kind, Option<CVal>);

fn req(name: &'static str, kind: Kind) -> Arg {
    Arg(name, kind, None)
}
fn opt(name: &'static str, kind: Kind, default: CVal) -> Arg {
    Arg(name, kind, Some(default))
}

/// Bound arguments of one setting, defaults applied.
struct Bound {
    values: HashMap<&'static str, Spanned>,
}

impl Bound {
    fn int(&self, name: &str) -> i64 {
        match self.values.get(name).map(|s| &s.value) {
            Some(CVal::Int(i)) => *i,
            _ => 0,
        }
    }
    fn uint(&self, name: &str) -> usize {
        self.int(name).max(0) as usize
    }
    fn float(&self, name: &str) -> f64 {
        match self.values.get(name).map(|s| &s.value) {
            Some(CVal::Int(i)) => *i as f64,
            Some(CVal::Float(x)) => *x,
            _ => 0.0,
        }
    }
    fn bool(&self, name: &str) -> bool {
        matches!(
            self.values.get(name).map(|s| &s.value),
            Some(CVal::Bool(true))
        )
    }
    fn str(&self, name: &str) -> String {
        match self.values.get(name).map(|s| &s.value) {
            Some(CVal::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }
    fn get(&self, name: &str) -> Option<&Spanned> {
        self.values.get(name)
    }
    /// The ints of a list argument (empty when not given).
    fn ints(&self, name: &str) -> Vec<i64> {
        match self.values.get(name).map(|s| &s.value) {
            Some(CVal::Tuple(t)) => t
                .iter()
                .filter_map(|e| match e.value {
                    CVal::Int(i) => Some(i),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Checks settings and collects the errors found.
pub struct OptionChecker<'e> {
    pub errors: &'e mut Vec<SemaError>,
}

fn as_float(v: &CVal) -> Option<f64> {
    match v {
        CVal::Int(i) => Some(*i as f64),
        CVal::Float(x) => Some(*x),
        _ => None,
    }
}

impl OptionChecker<'_> {
    fn kind_ok(&mut self, callee: &str, name: &str, kind: Kind, v: &Spanned) -> bool {
        let fits = match (kind, &v.value) {
            (Kind::Int(min), CVal::Int(i)) => *i >= min,
            (Kind::Int(_), _) => false,
            (Kind::PosFloat, x) => as_float(x).is_some_and(|x| x > 0.0 && x.is_finite()),
            (Kind::NonNegFloat, x) => as_float(x).is_some_and(|x| x >= 0.0 && x.is_finite()),
            (Kind::Fraction, x) => as_float(x).is_some_and(|x| x > 0.0 && x <= 1.0),
            (Kind::Prob, x) => as_float(x).is_some_and(|x| (0.0..1.0).contains(&x)),
            (Kind::Bool, CVal::Bool(_)) => true,
            (Kind::Str(choices), CVal::Str(s)) => {
                choices.is_empty() || choices.contains(&s.as_str())
            }
            (Kind::Betas, CVal::Tuple(t)) => {
                t.len() == 2
                    && t.iter()
                        .all(|e| as_float(&e.value).is_some_and(|x| (0.0..1.0).contains(&x)))
            }
            (Kind::Solver, CVal::Call(..) | CVal::Name(_)) => true,
            (Kind::Classes(max), CVal::Tuple(t)) => {
                let ids: Vec<i64> = t
                    .iter()
                    .filter_map(|e| match e.value {
                        CVal::Int(i) if i >= 0 && max.is_none_or(|m| i <= m) => Some(i),
                        _ => None,
                    })
                    .collect();
                let mut distinct = ids.clone();
                distinct.sort_unstable();
                distinct.dedup();
                !t.is_empty() && ids.len() == t.len() && distinct.len() == ids.len()
            }
            _ => false,
        };
        if !fits {
            let help = match (kind, &v.value) {
                (Kind::Int(_), CVal::Float(x)) if x.fract() == 0.0 => {
                    Some(format!("write it as an int: `{}`", *x as i64))
                }
                (Kind::Str(choices), CVal::Str(s)) if !choices.is_empty() => suggest(s, choices),
                _ => None,
            };
            self.errors.push(SemaError::ArgumentType {
                callee: callee.to_string(),
                name: name.to_string(),
                expected: kind.describe(),
                found: v.value.describe(),
                span: v.span.into(),
                help,
            });
        }
        fits
    }

    /// Bind `args` of the setting `callee` against its schema.
    fn bind(
        &mut self,
        callee: &str,
        schema: &[Arg],
        args: &[CArg],
        call_span: Span,
    ) -> Option<Bound> {
        let mut values: HashMap<&'static str, Spanned> = HashMap::new();
        let mut ok = true;
        let mut next_positional = 0;
        for a in args {
            let slot = match &a.name {
                Some((n, nspan)) => match schema.iter().find(|s| s.0 == n) {
                    Some(s) => s,
                    None => {
                        let valid: Vec<&str> = schema.iter().map(|s| s.0).collect();
                        self.errors.push(SemaError::UnknownArgument {
                            callee: callee.to_string(),
                            kind: "argument".into(),
                            name: n.clone(),
                            span: (*nspan).into(),
                            help: suggest(n, &valid)
                                .or(Some(format!("`{callee}` takes no arguments"))),
                        });
                        ok = false;
                        continue;
                    }
                },
                None => {
                    if next_positional >= schema.len() {
                        self.errors.push(SemaError::ArgumentCount {
                            callee: callee.to_string(),
                            kind: "argument".into(),
                            expected: format!("at most {}", schema.len()),
                            found: args.len(),
                            span: a.value.span.into(),
                            help: None,
                        });
                        ok = false;
                        continue;
                    }
                    next_positional += 1;
                    &schema[next_positional - 1]
                }
            };
            if values.contains_key(slot.0) {
                self.errors.push(SemaError::DuplicateArgument {
                    callee: callee.to_string(),
                    kind: "argument".into(),
                    name: slot.0.to_string(),
                    span: a.value.span.into(),
                });
                ok = false;
                continue;
            }
            ok &= self.kind_ok(callee, slot.0, slot.1, &a.value);
            values.insert(slot.0, a.value.clone());
        }
        for s in schema {
            if values.contains_key(s.0) {
                continue;
            }
            match &s.2 {
                Some(d) => {
                    values.insert(
                        s.0,
                        Spanned {
                            value: d.clone(),
                            span: call_span,
                        },
                    );
                }
                None => {
                    self.errors.push(SemaError::MissingArgument {
                        callee: callee.to_string(),
                        kind: "argument".into(),
                        name: s.0.to_string(),
                        span: call_span.into(),
                        help: Some(format!("write `{callee}({} = ...)`", s.0)),
                    });
                    ok = false;
                }
            }
        }
        ok.then_some(Bound { values })
    }

    /// Split a setting into its name and arguments (`zeros` is `zeros()`).
    fn call_parts<'v>(
        &mut self,
        v: &'v Spanned,
        what: &str,
        valid: &[&str],
    ) -> Option<(&'v str, &'v [CArg])> {
        match &v.value {
            CVal::Name(n) => Some((n.as_str(), &[])),
            CVal::Call(n, args) => Some((n.as_str(), args.as_slice())),
            other => {
                self.errors.push(SemaError::TypeMismatch {
                    expected: format!("a {what} ({})", valid.join(", ")),
                    found: other.describe(),
                    span: v.span.into(),
                    help: None,
                });
                None
            }
        }
    }

    fn unknown(&mut self, what: &str, name: &str, span: Span, valid: &[&str]) {
        self.errors.push(SemaError::UnknownOption {
            what: what.to_string(),
            name: name.to_string(),
            span: span.into(),
            help: suggest(name, valid),
        });
    }

    pub fn solver(&mut self, v: &Spanned) -> Option<SolverSpec> {
        let (name, args) = self.call_parts(v, "solver", SOLVERS)?;
        let Some(schema) = solver_schema(name) else {
            self.unknown("solver", name, v.span, SOLVERS);
            return None;
        };
        let b = self.bind(name, &schema, args, v.span)?;
        let kind = match name {
            "fixed_point" => SolverKind::FixedPoint {
                damping: b.float("damping"),
            },
            "anderson" => SolverKind::Anderson {
                m: b.uint("m"),
                beta: b.float("beta"),
                lam: b.float("lam"),
            },
            "broyden" => SolverKind::Broyden {
                memory: b.uint("memory"),
            },
            _ => SolverKind::Unroll {
                steps: b.uint("steps"),
            },
        };
        let stop = if b.str("stop") == "abs" {
            Stop::Abs
        } else {
            Stop::Rel
        };
        Some(SolverSpec {
            kind,
            tol: b.float("tol"),
            max_iter: b.uint("max_iter"),
            stop,
        })
    }

    /// The default backward mode for a forward solver: `unrolled` for
    /// `unroll` (an explicit weight-tied network), else `implicit` with the
    /// forward solver's kind at the adjoint's tolerance.
    pub fn default_backward(forward: &SolverSpec) -> Backward {
        match forward.kind {
            SolverKind::Unroll { .. } => Backward::Unrolled,
            _ => Backward::Implicit {
                solver: SolverSpec {
                    tol: DEFAULT_BACKWARD_TOL,
                    ..forward.clone()
                },
            },
        }
    }

    pub fn backward(&mut self, v: &Spanned, forward: &SolverSpec) -> Option<Backward> {
        let (name, args) = self.call_parts(v, "backward mode", BACKWARD_MODES)?;
        match name {
            "implicit" => {
                let mut schema = backward_schema(name).unwrap_or_default();
                // The adjoint's iteration budget defaults to the forward solver's.
                for a in &mut schema {
                    if a.0 == "max_iter" {
                        a.2 = Some(CVal::Int(forward.max_iter as i64));
                    }
                }
                let b = self.bind(name, &schema, args, v.span)?;
                let solver_arg = b.get("solver")?;
                let mut solver = match &solver_arg.value {
                    CVal::Name(n) if n.is_empty() => match OptionChecker::default_backward(forward)
                    {
                        Backward::Implicit { solver } => solver,
                        _ => SolverSpec::default_forward(),
                    },
                    _ => self.solver(solver_arg)?,
                };
                if matches!(solver.kind, SolverKind::Unroll { .. }) {
                    self.errors.push(SemaError::InvalidValue {
                        message: "`unroll` cannot solve the implicit adjoint".into(),
                        span: solver_arg.span.into(),
                        label: "not a root solver".into(),
                        help: Some(
                            "use fixed_point, anderson or broyden here, or `backward = unrolled`"
                                .into(),
                        ),
                    });
                    return None;
                }
                solver.tol = b.float("tol");
                solver.max_iter = b.uint("max_iter");
                Some(Backward::Implicit { solver })
            }
            "phantom" => {
                let schema = backward_schema(name).unwrap_or_default();
                let b = self.bind(name, &schema, args, v.span)?;
                Some(Backward::Phantom {
                    steps: b.uint("steps"),
                    damping: b.float("damping"),
                })
            }
            "jfb" | "unrolled" => {
                self.bind(name, &[], args, v.span)?;
                if name == "unrolled"
                    && !matches!(
                        forward.kind,
                        SolverKind::Unroll { .. } | SolverKind::FixedPoint { .. }
                    )
                {
                    self.errors.push(SemaError::InvalidValue {
                        message: format!(
                            "`backward = unrolled` needs the `unroll` or `fixed_point` solver, not `{}`",
                            forward.kind.name()
                        ),
                        span: v.span.into(),
                        label: "unrolled backward".into(),
                        help: Some("backpropagating through a quasi-Newton solver is not supported; use `implicit`".into()),
                    });
                    return None;
                }
                Some(if name == "jfb" {
                    Backward::Jfb
                } else {
                    Backward::Unrolled
                })
            }
            _ => {
                self.unknown("backward mode", name, v.span, BACKWARD_MODES);
                None
            }
        }
    }

    pub fn init(&mut self, v: &Spanned) -> Option<Init> {
        let (name, args) = self.call_parts(v, "initializer", INITS)?;
        if name == "uniform" {
            // `uniform(lo, hi)` takes a signed range: checked on its own.
            return self.uniform(args, v.span);
        }
        let schema = match name {
            "zeros" | "ones" | "eye" => vec![],
            "normal" => vec![opt("std", Kind::PosFloat, CVal::Float(1.0))],
            "kaiming_uniform" => vec![
                req("fan_in", Kind::Int(1)),
                opt("a", Kind::NonNegFloat, CVal::Float(5f64.sqrt())),
            ],
            "xavier_uniform" => vec![req("fan_in", Kind::Int(1)), req("fan_out", Kind::Int(1))],
            "orthogonal" => vec![opt("gain", Kind::PosFloat, CVal::Float(1.0))],
            _ => {
                self.unknown("initializer", name, v.span, INITS);
                return None;
            }
        };
        let b = self.bind(name, &schema, args, v.span)?;
        Some(match name {
            "zeros" => Init::Zeros,
            "ones" => Init::Ones,
            "eye" => Init::Eye,
            "normal" => Init::Normal {
                std: b.float("std"),
            },
            "kaiming_uniform" => Init::KaimingUniform {
                fan_in: b.int("fan_in"),
                a: b.float("a"),
            },
            "xavier_uniform" => Init::XavierUniform {
                fan_in: b.int("fan_in"),
                fan_out: b.int("fan_out"),
            },
            _ => Init::Orthogonal {
                gain: b.float("gain"),
            },
        })
    }

    fn uniform(&mut self, args: &[CArg], span: Span) -> Option<Init> {
        let mut lo_hi = [-0.0f64; 2];
        let names = ["lo", "hi"];
        let mut seen = [false; 2];
        for (i, a) in args.iter().enumerate() {
            let slot = match &a.name {
                Some((n, nspan)) => match names.iter().position(|x| x == n) {
                    Some(k) => k,
                    None => {
                        self.errors.push(SemaError::UnknownArgument {
                            callee: "uniform".into(),
                            kind: "argument".into(),
                            name: n.clone(),
                            span: (*nspan).into(),
                            help: suggest(n, &names),
                        });
                        return None;
                    }
                },
                None if i < 2 => i,
                None => {
                    self.errors.push(SemaError::ArgumentCount {
                        callee: "uniform".into(),
                        kind: "argument".into(),
                        expected: "2".into(),
                        found: args.len(),
                        span: a.value.span.into(),
                        help: None,
                    });
                    return None;
                }
            };
            match as_float(&a.value.value) {
                Some(x) if x.is_finite() => {
                    lo_hi[slot] = x;
                    seen[slot] = true;
                }
                _ => {
                    self.errors.push(SemaError::ArgumentType {
                        callee: "uniform".into(),
                        name: names[slot].into(),
                        expected: "a number".into(),
                        found: a.value.value.describe(),
                        span: a.value.span.into(),
                        help: None,
                    });
                    return None;
                }
            }
        }
        if let Some(k) = seen.iter().position(|s| !s) {
            self.errors.push(SemaError::MissingArgument {
                callee: "uniform".into(),
                kind: "argument".into(),
                name: names[k].into(),
                span: span.into(),
                help: Some("write `uniform(lo, hi)`, e.g. `uniform(-0.1, 0.1)`".into()),
            });
            return None;
        }
        if lo_hi[0] >= lo_hi[1] {
            self.errors.push(SemaError::InvalidValue {
                message: format!("uniform({}, {}) is an empty range", lo_hi[0], lo_hi[1]),
                span: span.into(),
                label: "lo must be below hi".into(),
                help: None,
            });
            return None;
        }
        Some(Init::Uniform {
            lo: lo_hi[0],
            hi: lo_hi[1],
        })
    }
}

pub mod loss;
pub mod train;
pub use loss::LOSSES;
pub use train::{TrainValue, SCHEDULES, TRAIN_KEYS};
