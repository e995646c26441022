//! `outputs = [scores, log_density]`: what each output of a trained model
//! is, checked against the model.
//!
//! Owns the check that the roles a train block gives fit its model: one
//! role per output, at most one `scores` and one `log_density`, class
//! scores of rank 2 or more against a class-id target, and a log-density
//! that is one float per sample (`[B]`). Guarantees: each misfit is one
//! `deq::sema::bad_outputs` error at the role (or at the list, for a
//! count that differs), naming the model's output types.

use super::elab::Elab;
use super::error::SemaError;
use super::hir;
use super::spec::{OutputRole, TrainConfig};
use crate::source::Span;

/// Check `cfg.outputs` against `model`'s outputs (nothing to check when
/// the train block has no `outputs`).
pub fn check_outputs(
    elab: &mut Elab,
    cfg: &TrainConfig,
    model: &hir::Model,
    list_span: Span,
) -> Option<()> {
    if cfg.outputs.is_empty() {
        return Some(());
    }
    let types = &model.output_types;
    let listed: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    let listed = listed.join(", ");
    let report = |elab: &mut Elab, span: Span, detail: String, label: &str, help: String| {
        elab.report(
            span,
            SemaError::BadOutputs {
                model: model.name.clone(),
                detail,
                span: span.into(),
                label: label.to_string(),
                help: Some(help),
            },
        );
        None
    };
    if cfg.outputs.len() != types.len() {
        return report(
            elab,
            list_span,
            format!(
                "it names {} role{} but `{}` returns {} output{} ({listed})",
                cfg.outputs.len(),
                if cfg.outputs.len() == 1 { "" } else { "s" },
                model.name,
                types.len(),
                if types.len() == 1 { "" } else { "s" },
            ),
            "one role per output",
            "give one of `scores`, `log_density`, `other` for each output, in order".into(),
        );
    }
    let mut ok = true;
    for (i, ((role, span), ty)) in cfg.outputs.iter().zip(types).enumerate() {
        let earlier = cfg.outputs[..i].iter().any(|(r, _)| r == role);
        if earlier && *role != OutputRole::Other {
            report(
                elab,
                *span,
                format!("`{}` is given to more than one output", role.name()),
                "given again here",
                "a model has at most one output of class scores and one log-density; mark the others `other`".into(),
            );
            ok = false;
            continue;
        }
        match role {
            OutputRole::Scores => {
                if !cfg.loss.takes_class_ids() {
                    report(
                        elab,
                        *span,
                        "class scores are judged against class ids, but this train block's target is not class ids".into(),
                        "no class-id target",
                        "mark the output `other`".into(),
                    );
                    ok = false;
                } else if ty.rank() < 2 || !ty.dtype.is_float() {
                    report(
                        elab,
                        *span,
                        format!("output {i} is {ty}, not class scores ([B, C] floats)"),
                        "not class scores",
                        format!("the outputs are {listed}"),
                    );
                    ok = false;
                }
            }
            OutputRole::LogDensity => {
                if ty.rank() != 1 || !ty.dtype.is_float() {
                    report(
                        elab,
                        *span,
                        format!(
                            "output {i} is {ty}, not a log-density (one float per sample, [B])"
                        ),
                        "not a log-density",
                        format!(
                            "the outputs are {listed}; a log-density of a [B, d] value `z` is e.g. `flow::normal_log_density(z)`"
                        ),
                    );
                    ok = false;
                }
            }
            OutputRole::Other => {}
        }
    }
    ok.then_some(())
}
