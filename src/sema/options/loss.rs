//! `loss = ...` of a `train` block: the built-in losses and their
//! arguments, or the name of a `fn` written in the file.
//!
//! Guarantees: a built-in comes back with its arguments checked
//! (`cross_entropy(label_smoothing = e)`, `e` in `[0, 1)`); any other bare
//! name comes back as a [`CustomLoss`] still to be elaborated, which
//! `sema::loss` resolves to a `fn` (or reports as an unknown loss).

use super::{opt, CVal, Kind, OptionChecker, Spanned};
use crate::sema::error::SemaError;
use crate::sema::spec::{CustomLoss, Loss};
use crate::types::{DType, Type};

/// Every built-in loss.
pub const LOSSES: &[&str] = &["cross_entropy", "nll", "bce_with_logits", "mse"];

impl OptionChecker<'_> {
    pub(super) fn loss(&mut self, v: &Spanned) -> Option<Loss> {
        let (name, args) = self.call_parts(v, "loss", LOSSES)?;
        let loss = match name {
            "cross_entropy" => {
                let schema = [opt("label_smoothing", Kind::Prob, CVal::Float(0.0))];
                let b = self.bind(name, &schema, args, v.span)?;
                return Some(Loss::CrossEntropy {
                    label_smoothing: b.float("label_smoothing"),
                });
            }
            "nll" => Loss::Nll,
            "bce_with_logits" => Loss::BceWithLogits,
            "mse" => Loss::Mse,
            _ if args.is_empty() && matches!(v.value, CVal::Name(_)) => {
                // A fn of the file, or an unknown loss: sema decides, as it
                // knows the file's items.
                return Some(Loss::Custom(CustomLoss {
                    name: name.to_string(),
                    span: v.span,
                    target: Type::new(DType::F32, Vec::new()),
                    body: None,
                }));
            }
            _ => {
                self.errors.push(SemaError::UnknownOption {
                    what: "loss".into(),
                    name: name.to_string(),
                    span: v.span.into(),
                    help: Some(format!(
                        "{}, or the name of a `fn(scores, target)` of this file (written without arguments)",
                        super::suggest(name, LOSSES).unwrap_or_default()
                    )),
                });
                return None;
            }
        };
        self.bind(name, &[], args, v.span)?;
        Some(loss)
    }
}
