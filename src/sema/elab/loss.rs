//! Losses written in the language: `loss = my_loss;` with
//! `fn my_loss(scores, target)`.
//!
//! Owns the resolution of a custom loss name to a `fn` of the root file and
//! its elaboration at the types a train block gives it: the model's outputs
//! (all of them, in order) then the target. Guarantees: a resolved
//! [`CustomLoss`] holds the fn inlined as a parameterless HIR model whose
//! one output is a float scalar; a name that is no fn, a fn of the wrong
//! arity, one with parameters, or one that returns anything but a float
//! scalar is an error at the fn (with the `loss = ...` entry labelled).

use std::sync::Arc;

use super::expr::ArgVal;
use super::{Elab, LayerCtx, ModelBuilder, Value};
use crate::sema::error::SemaError;
use crate::sema::hir::{Block, InstKind, Model, ModelInput};
use crate::sema::modules::ModuleId;
use crate::sema::options::{suggest, LOSSES};
use crate::sema::spec::{CustomLoss, DataSpec, Loss, TrainConfig};
use crate::source::Span;
use crate::syntax::ast;
use crate::types::{DType, Type};

/// The target the data gives for a model's first output: class ids (the
/// scores without their last axis) for MNIST and text; for a CSV, class
/// ids when the fn declares its target `i64`, else floats of the scores'
/// shape.
fn target_for(data: &DataSpec, scores: &Type, declared: Option<DType>) -> Type {
    let ids = Type::new(
        DType::I64,
        scores.shape[..scores.rank().saturating_sub(1)].to_vec(),
    );
    match data {
        DataSpec::Mnist { .. } | DataSpec::Text { .. } => ids,
        DataSpec::Csv { .. } if declared == Some(DType::I64) => ids,
        DataSpec::Csv { .. } => scores.clone(),
    }
}

/// The output the target's class ids go with: the one `outputs = [...]`
/// marks `scores`, else the first; a model with a role list but no scores
/// (a density alone), or whose `scores` are not of rank 2 or more, takes
/// one id per sample, as if that output were `[B, 1]` scores.
fn scores_for(cfg: &TrainConfig, outputs: &[Type], first: &Type) -> Type {
    use crate::sema::spec::OutputRole;
    if cfg.outputs.is_empty() {
        return first.clone();
    }
    let per_sample = |t: &Type| {
        let batch = t.shape.first().cloned().into_iter();
        Type::new(
            t.dtype,
            batch.chain([crate::types::dim::Dim::konst(1)]).collect(),
        )
    };
    match cfg.outputs.iter().position(|o| o.0 == OutputRole::Scores) {
        // Scores that are not scores are reported by the role check.
        Some(i) => match outputs.get(i) {
            Some(t) if t.rank() >= 2 => t.clone(),
            Some(t) => per_sample(t),
            None => first.clone(),
        },
        None => per_sample(first),
    }
}

fn declared_dtype(p: &ast::FnParam) -> Option<DType> {
    match &p.ty {
        Some(ast::ParamType::Tensor(t)) => Some(match t.dtype {
            Some(ast::DType::I64) => DType::I64,
            Some(ast::DType::F64) => DType::F64,
            Some(ast::DType::F32) | None => DType::F32,
        }),
        _ => None,
    }
}

impl Elab<'_> {
    /// Resolve and elaborate `cfg`'s loss when it names a fn; other losses
    /// pass through. `outputs` are the model's output types.
    pub fn resolve_loss(&mut self, mut cfg: TrainConfig, outputs: &[Type]) -> Option<TrainConfig> {
        let Loss::Custom(custom) = &cfg.loss else {
            return Some(cfg);
        };
        let (name, span) = (custom.name.clone(), custom.span);
        let root = self.modules.get(ModuleId(0));
        let Some(r) = root.items.get(&name).copied() else {
            let mut valid: Vec<&str> = LOSSES.to_vec();
            valid.extend(root.ast.items.iter().filter_map(|i| match i {
                ast::Item::Fn(f) => Some(f.name.name.as_str()),
                _ => None,
            }));
            self.report(
                span,
                SemaError::UnknownOption {
                    what: "loss".into(),
                    name: name.clone(),
                    span: span.into(),
                    help: Some(format!(
                        "{}; a custom loss is a `fn(scores, target)` of this file",
                        suggest(&name, &valid).unwrap_or_default()
                    )),
                },
            );
            return None;
        };
        let ast::Item::Fn(f) = self.modules.item(r) else {
            self.report(
                span,
                SemaError::TypeMismatch {
                    expected: "a loss (a built-in, or a `fn(scores, target)`)".into(),
                    found: format!("`{name}`, which is not a fn"),
                    span: span.into(),
                    help: suggest(&name, LOSSES),
                },
            );
            return None;
        };
        let scores = outputs.first()?;
        let bad =
            |detail: String, at: Span, label: String, help: Option<String>| SemaError::BadLoss {
                name: name.clone(),
                detail,
                span: at.into(),
                label,
                used: (at.file == span.file).then(|| span.into()),
                help,
            };
        let wanted = outputs.len() + 1;
        if f.params.len() != wanted {
            let outs = if outputs.len() == 1 {
                "output (the scores)".to_string()
            } else {
                format!("{} outputs", outputs.len())
            };
            let e = bad(
                format!(
                    "it takes {} argument{}, but a loss takes the model's {outs} then the target",
                    f.params.len(),
                    if f.params.len() == 1 { "" } else { "s" }
                ),
                f.name.span,
                format!("should take {wanted} arguments"),
                Some(format!("write `fn {name}(scores, target)`")),
            );
            self.report(f.name.span, e);
            return None;
        }
        let declared = f.params.last().and_then(declared_dtype);
        let target = target_for(&cfg.data, &scores_for(&cfg, outputs, scores), declared);
        let mut types = outputs.to_vec();
        types.push(target.clone());
        let body = self.loss_body(f, r, &types, span, &bad)?;
        cfg.loss = Loss::Custom(CustomLoss {
            name,
            span,
            target,
            body: Some(Arc::new(body)),
        });
        Some(cfg)
    }

    /// Inline the loss fn `f` at the argument `types`: a model whose inputs
    /// are its arguments and whose output is its (float scalar) result.
    fn loss_body(
        &mut self,
        f: &ast::FnItem,
        r: crate::sema::modules::ItemRef,
        types: &[Type],
        use_span: Span,
        bad: &dyn Fn(String, Span, String, Option<String>) -> SemaError,
    ) -> Option<Model> {
        let errors_before = self.error_count();
        self.m = ModelBuilder::default();
        self.m.blocks.push(Block::default());
        self.layers.push(LayerCtx::default());
        let mut args = Vec::new();
        let mut inputs = Vec::new();
        for (i, (ty, p)) in types.iter().zip(&f.params).enumerate() {
            let value = self.emit1(InstKind::Input(i), ty.clone(), use_span);
            inputs.push(ModelInput {
                name: p.name.name.clone(),
                ty: ty.clone(),
            });
            args.push(ArgVal {
                name: None,
                value,
                span: use_span,
            });
        }
        let out = self.call_fn(r, args, use_span);
        self.pop_layer();
        if self.error_count() > errors_before {
            // The errors sit in the fn's body: say what it was given.
            let args: Vec<String> = f
                .params
                .iter()
                .zip(types)
                .map(|(p, t)| format!("{}: {t}", p.name.name))
                .collect();
            self.errors.push((
                use_span,
                SemaError::InLoss {
                    name: f.name.name.clone(),
                    args: args.join(", "),
                    span: use_span.into(),
                },
            ));
            return None;
        }
        let m = std::mem::take(&mut self.m);
        let result_span = f.body.tail.as_ref().map_or(f.body.span, |t| t.span);
        let scalar = match &out {
            Value::Tensor(v) => {
                let ty = m.ty(*v);
                (ty.rank() == 0 && ty.dtype.is_float()).then_some(*v)
            }
            _ => None,
        };
        let Some(v) = scalar else {
            let found = out.describe(&m);
            let e = bad(
                format!("it returns {found}, but a loss is a float scalar"),
                result_span,
                format!("this is {found}"),
                Some("reduce it to one number, e.g. with `mean(...)` or `sum(...)`".into()),
            );
            self.report(result_span, e);
            return None;
        };
        if !m.params.is_empty() {
            let e = bad(
                "a loss fn may not create parameters".into(),
                f.name.span,
                format!("creates `{}`", m.params[0].path),
                Some("put trainable parts in the model".into()),
            );
            self.report(f.name.span, e);
            return None;
        }
        Some(Model {
            name: f.name.name.clone(),
            span: f.name.span,
            inputs,
            output_types: vec![m.ty(v).clone()],
            params: Vec::new(),
            values: m.values,
            body: m.blocks.into_iter().next().unwrap_or_default(),
            outputs: vec![v],
        })
    }
}
