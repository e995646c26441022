//! Semantic checking: from parsed files to a checked program (HIR).
//!
//! Owns names, modules, constants, layers and instances, shapes, `with`
//! options and `train` blocks. Guarantees: [`check`] reports every
//! independent error of the program (each once), returns a [`Program`] only
//! when there is none, and never panics on any input. Layers and fns that no
//! model uses are still checked, with abstract hyper-parameters and
//! dimensions (only definite errors are reported then).

pub mod builtins;
// Moved to `crate::types`; re-exported at the old path.
pub use crate::types::dim;
pub mod elab;
pub mod error;
pub mod hir;
pub mod modules;
pub mod options;
pub mod print;
pub mod shape;
pub mod spec;
pub mod train_outputs;

use std::collections::HashSet;

use crate::diag::Diagnostics;
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::ast;
use elab::{BodyKind, Elab, Env};
use error::SemaError;
use hir::{DType, Program};
use modules::{ItemRef, ModuleId};
use options::{OptionChecker, TrainValue};
use spec::{DataSpec, Loss, TrainConfig};

/// What the front end learned about a program's names, for tools such as
/// the language server: the parsed modules with their item tables, and what
/// each binding (let, param, input, state, hyper-parameter, const) held.
#[derive(Debug, Default)]
pub struct Index {
    pub modules: modules::Modules,
    /// `(span of the name, summary)`, once per elaboration of the binding
    /// (a layer's body is elaborated at each call site).
    pub bindings: Vec<(Span, String)>,
}

/// Parse and check the file `root` (already in `sources`) and its imports.
pub fn check(sources: &mut SourceMap, root: FileId) -> (Option<Program>, Diagnostics) {
    let (program, diags, _) = check_indexed(sources, root);
    (program, diags)
}

/// [`check`], also returning the [`Index`] of the program's names.
pub fn check_indexed(
    sources: &mut SourceMap,
    root: FileId,
) -> (Option<Program>, Diagnostics, Index) {
    let mut diags = Diagnostics::default();
    let modules = modules::load(sources, root, &mut diags);
    let mut elab = Elab::new(&modules);
    let mut program = Program::default();
    let root_id = ModuleId(0);
    let root_items = &modules.get(root_id).ast.items;

    for (index, item) in root_items.iter().enumerate() {
        let r = ItemRef {
            module: root_id,
            index,
        };
        match item {
            ast::Item::Layer(l) if l.kind == ast::LayerKind::Model => {
                if let Some(m) = elab.model(r) {
                    program.models.push(m);
                }
            }
            ast::Item::Const(c) => {
                elab.const_value(r, c.name.span);
            }
            _ => {}
        }
    }
    // Layers and fns that no model used: checked generically.
    for (index, item) in root_items.iter().enumerate() {
        let r = ItemRef {
            module: root_id,
            index,
        };
        if elab.used.contains(&r) {
            continue;
        }
        match item {
            ast::Item::Layer(l) if l.kind == ast::LayerKind::Layer => elab.generic_layer(r),
            ast::Item::Fn(_) => elab.generic_fn(r),
            _ => {}
        }
    }
    for item in root_items {
        if let ast::Item::Train(t) = item {
            if let Some(cfg) = check_train(&mut elab, t, &program) {
                program.trains.push(cfg);
            }
        }
    }

    let mut seen = HashSet::new();
    for (at, e) in std::mem::take(&mut elab.errors) {
        let key = format!("{}:{e:?}", at.file.0);
        if seen.insert(key) {
            diags.push(at.file, e);
        }
    }
    let ok = !diags.has_errors();
    let bindings = std::mem::take(&mut elab.bindings);
    drop(elab);
    let index = Index { modules, bindings };
    (ok.then_some(program), diags, index)
}

fn check_train(elab: &mut Elab, t: &ast::TrainItem, program: &Program) -> Option<TrainConfig> {
    let modules = elab.modules;
    let root = modules.get(ModuleId(0));
    let target = root.items.get(&t.model.name).map(|r| modules.item(*r));
    match target {
        Some(ast::Item::Layer(l)) if l.kind == ast::LayerKind::Model => {}
        Some(_) => {
            elab.report(
                t.model.span,
                SemaError::TypeMismatch {
                    expected: "a model".into(),
                    found: format!("`{}`, which is not a model", t.model.name),
                    span: t.model.span.into(),
                    help: Some("only a `model` can be trained; a `layer` has hyper-parameters to choose first".into()),
                },
            );
            return None;
        }
        None => {
            let models: Vec<&str> = root
                .ast
                .items
                .iter()
                .filter_map(|i| match i {
                    ast::Item::Layer(l) if l.kind == ast::LayerKind::Model => {
                        Some(l.name.name.as_str())
                    }
                    _ => None,
                })
                .collect();
            elab.report(
                t.model.span,
                SemaError::UnknownName {
                    name: t.model.name.clone(),
                    span: t.model.span.into(),
                    help: options::suggest(&t.model.name, &models),
                },
            );
            return None;
        }
    }
    let mut env = Env::new(ModuleId(0), BodyKind::Fn);
    let mut values = Vec::new();
    let mut complete = true;
    for e in &t.entries {
        let value =
            match choice_name(&e.key.name, &e.value).or_else(|| path_list(&e.key.name, &e.value)) {
                Some(name) => Some(name),
                None => elab.setting(&mut env, &e.value),
            };
        match value {
            Some(value) => values.push(TrainValue {
                key: e.key.name.clone(),
                key_span: e.key.span,
                value,
            }),
            None => complete = false,
        }
    }
    let mut errs = Vec::new();
    let cfg = OptionChecker { errors: &mut errs }.train(&t.model.name, &values, t.span);
    for e in errs {
        elab.report(t.span, e);
    }
    let mut cfg = cfg.filter(|_| complete)?;
    if let Some(model) = program.model(&t.model.name) {
        cfg = elab.resolve_loss(cfg, &model.output_types)?;
        let data_span = t
            .entries
            .iter()
            .find(|e| e.key.name == "data")
            .map_or(t.span, |e| e.value.span);
        let loss_span = t
            .entries
            .iter()
            .find(|e| e.key.name == "loss")
            .map_or(t.span, |e| e.value.span);
        check_every_output_has_a_loss(elab, &cfg, model, loss_span)?;
        check_data_fits(elab, &cfg, model, data_span, loss_span)?;
        check_fixed_dims(elab, &cfg, model, data_span)?;
        check_freeze(elab, &cfg, model)?;
        let outputs_span = t
            .entries
            .iter()
            .find(|e| e.key.name == "outputs")
            .map_or(t.span, |e| e.value.span);
        train_outputs::check_outputs(elab, &cfg, model, outputs_span)?;
    }
    Some(cfg)
}

/// `freeze = [inject, "cell.lin"]`: the paths as written, never evaluated
/// (a parameter path may share its name with an item).
fn path_list(key: &str, value: &ast::Expr) -> Option<options::Spanned> {
    let ast::ExprKind::List(items) = &value.kind else {
        return None;
    };
    if key != "freeze" && key != "outputs" {
        return None;
    }
    let mut out = Vec::new();
    for i in items {
        let v = match &i.kind {
            ast::ExprKind::Path(segs) if segs.len() == 1 => {
                options::CVal::Name(segs[0].name.clone())
            }
            ast::ExprKind::Str(s) => options::CVal::Str(s.clone()),
            _ => options::CVal::Int(0),
        };
        out.push(options::Spanned {
            value: v,
            span: i.span,
        });
    }
    Some(options::Spanned {
        value: options::CVal::Tuple(out),
        span: value.span,
    })
}

/// Every `freeze` path names a parameter of `model` or a prefix of one
/// (`cell` covers `cell.lin.w`).
fn check_freeze(elab: &mut Elab, cfg: &TrainConfig, model: &hir::Model) -> Option<()> {
    let mut ok = true;
    for (path, span) in &cfg.freeze {
        if model.params.iter().any(|p| freeze_covers(path, &p.path)) {
            continue;
        }
        let valid: Vec<&str> = model.params.iter().map(|p| p.path.as_str()).collect();
        elab.report(
            *span,
            SemaError::UnknownOption {
                what: format!("parameter path of model `{}`", model.name),
                name: path.clone(),
                span: (*span).into(),
                help: options::suggest(path, &valid),
            },
        );
        ok = false;
    }
    ok.then_some(())
}

/// Whether the `freeze` entry `entry` covers the parameter `param`: the
/// same path, or a prefix of it ending at a `.`.
pub fn freeze_covers(entry: &str, param: &str) -> bool {
    param
        .strip_prefix(entry)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// A bare name given to a train key that names a choice (`loss = mse;`,
/// `loss = my_loss;`): the name of the choice, never the value of a
/// definition that happens to share it, so that a fn given as the loss gets
/// one "unknown loss" diagnostic listing the losses that exist.
fn choice_name(key: &str, value: &ast::Expr) -> Option<options::Spanned> {
    const CHOICE_KEYS: &[&str] = &[
        "data",
        "loss",
        "optimizer",
        "schedule",
        "jacobian_reg",
        "outputs",
    ];
    match &value.kind {
        ast::ExprKind::Path(segs) if segs.len() == 1 && CHOICE_KEYS.contains(&key) => {
            Some(options::Spanned {
                value: options::CVal::Name(segs[0].name.clone()),
                span: value.span,
            })
        }
        _ => None,
    }
}

/// The named dims of the model's input that the data source fixes (all
/// but the batch): `T` of `x: i64[B, T]` is `seq_len` for text; the image
/// dims for MNIST. `(name, value)`.
fn fixed_dims(cfg: &TrainConfig, model: &hir::Model) -> Vec<(String, i64)> {
    let sizes: Vec<i64> = match &cfg.data {
        DataSpec::Text { seq_len, .. } => vec![*seq_len as i64],
        DataSpec::Mnist { flatten: true, .. } => vec![784],
        DataSpec::Mnist { flatten: false, .. } => vec![1, 28, 28],
        DataSpec::Csv { .. } => return Vec::new(),
    };
    let Some(input) = model.inputs.first() else {
        return Vec::new();
    };
    input
        .ty
        .shape
        .iter()
        .skip(1)
        .zip(sizes)
        .filter_map(|(d, v)| d.as_symbol().map(|n| (n.to_string(), v)))
        .collect()
}

/// With the dims the train block fixes bound, is every division in the
/// model's shapes exact? (`reshape(e(x), [B, 4, T / 4, 16])` with
/// `seq_len = 30` is not: reported at the reshape, not at run time.)
fn check_fixed_dims(
    elab: &mut Elab,
    cfg: &TrainConfig,
    model: &hir::Model,
    data_span: Span,
) -> Option<()> {
    let fixed = fixed_dims(cfg, model);
    if fixed.is_empty() {
        return Some(());
    }
    let lookup = |name: &str| {
        fixed
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| dim::Dim::konst(*v))
    };
    for info in &model.values {
        for d in &info.ty.shape {
            let Some((division, num, den)) = d.inexact_division(&lookup) else {
                continue;
            };
            let names = d.symbols();
            let fixed_text = fixed
                .iter()
                .filter(|(n, _)| names.contains(n))
                .map(|(n, v)| format!("{n} = {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            elab.report(
                info.span,
                SemaError::InexactDivision {
                    division,
                    fixed: fixed_text,
                    num,
                    den,
                    rem: num.rem_euclid(den),
                    span: info.span.into(),
                    setting: (data_span.file == info.span.file).then(|| data_span.into()),
                },
            );
            return None;
        }
    }
    Some(())
}

/// A model with several outputs needs a loss that reads them all: a
/// built-in loss would read the first and silently leave the others out of
/// training.
fn check_every_output_has_a_loss(
    elab: &mut elab::Elab,
    cfg: &TrainConfig,
    model: &hir::Model,
    loss_span: Span,
) -> Option<()> {
    let n = model.output_types.len();
    if n <= 1 || matches!(cfg.loss, Loss::Custom(_)) {
        return Some(());
    }
    let outputs: Vec<String> = model.output_types.iter().map(|t| t.to_string()).collect();
    elab.report(
        loss_span,
        SemaError::BadLoss {
            name: cfg.loss.to_string(),
            detail: format!(
                "`{}` returns {n} outputs ({}) and a built-in loss reads only the first",
                model.name,
                outputs.join(", ")
            ),
            span: loss_span.into(),
            label: format!("one loss for {n} outputs"),
            used: None,
            help: Some(
                "write the loss as a fn of every output, then the target: `fn my_loss(scores, logp, target) = ...;` and `loss = my_loss;`".into(),
            ),
        },
    );
    None
}

/// Does the data source feed the model's inputs, and its target the loss?
fn check_data_fits(
    elab: &mut Elab,
    cfg: &TrainConfig,
    model: &hir::Model,
    data_span: Span,
    loss_span: Span,
) -> Option<()> {
    let mismatch = |elab: &mut Elab, span: Span, detail: String, help: Option<String>| {
        elab.report(
            span,
            SemaError::DataMismatch {
                model: model.name.clone(),
                detail,
                span: span.into(),
                help,
            },
        );
        None
    };
    let (x_dtype, x_dims, classes): (DType, Vec<i64>, Option<usize>) = match &cfg.data {
        DataSpec::Mnist { flatten: true, .. } => (DType::F32, vec![784], Some(10)),
        DataSpec::Mnist { flatten: false, .. } => (DType::F32, vec![1, 28, 28], Some(10)),
        DataSpec::Text { vocab, .. } => (DType::I64, vec![-1], *vocab),
        DataSpec::Csv { .. } => return Some(()),
    };
    if model.inputs.len() != 1 {
        return mismatch(
            elab,
            data_span,
            format!(
                "the data gives one input, but the model takes {}",
                model.inputs.len()
            ),
            None,
        );
    }
    let x = &model.inputs[0].ty;
    let dims_ok = x.rank() == x_dims.len() + 1
        && x_dims
            .iter()
            .zip(&x.shape[1..])
            .all(|(want, got)| *want < 0 || got.as_const().is_none_or(|g| g == *want));
    if x.dtype != x_dtype || !dims_ok {
        let want = match &cfg.data {
            DataSpec::Mnist { flatten: true, .. } => "[B, 784]",
            DataSpec::Mnist { .. } => "[B, 1, 28, 28]",
            _ => "i64[B, T]",
        };
        let help = match &cfg.data {
            DataSpec::Mnist { flatten: false, .. } if x.rank() == 2 => {
                Some("add `flatten = true` to mnist(...) for [B, 784] inputs".to_string())
            }
            DataSpec::Mnist { flatten: true, .. } if x.rank() == 4 => {
                Some("remove `flatten = true` for [B, 1, 28, 28] inputs".to_string())
            }
            _ => None,
        };
        return mismatch(
            elab,
            data_span,
            format!(
                "the data gives inputs {want}, but `{}` is {x}",
                model.inputs[0].name
            ),
            help,
        );
    }
    let Some(out) = model.output_types.first() else {
        return Some(());
    };
    let want_rank = if matches!(cfg.data, DataSpec::Text { .. }) {
        3
    } else {
        2
    };
    let loss_name = cfg.loss.to_string();
    match &cfg.loss {
        Loss::CrossEntropy { .. } | Loss::Nll => {
            let last = out.shape.last().and_then(|d| d.as_const());
            if out.rank() != want_rank || !out.dtype.is_float() {
                let want = if want_rank == 3 {
                    "[B, T, V] scores"
                } else {
                    "[B, C] class scores"
                };
                return mismatch(
                    elab,
                    loss_span,
                    format!("{loss_name} needs {want}, but the model gives {out}"),
                    None,
                );
            }
            if let (Some(c), Some(n)) = (classes, last) {
                let too_few = if want_rank == 3 {
                    n as usize != c
                } else {
                    (n as usize) < c
                };
                if too_few {
                    return mismatch(
                        elab,
                        loss_span,
                        format!(
                            "the data has {c} classes, but the model gives {n} scores per sample"
                        ),
                        None,
                    );
                }
            }
        }
        Loss::Mse | Loss::BceWithLogits => {
            return mismatch(
                elab,
                loss_span,
                format!("{loss_name} needs float targets, but this data source gives class ids"),
                Some("use `loss = cross_entropy;`".into()),
            );
        }
        // Its arguments were checked against the fn when it was elaborated.
        Loss::Custom(_) => {}
    }
    Some(())
}
