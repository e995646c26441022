//! `adversarial = pgd(eps = 0.1, steps = 5, alpha = 0.025)` or
//! `fgsm(eps = 0.1)` in a `train` block: adversarial training.
//!
//! Guarantees: the method is `fgsm` or `pgd` (else an error that suggests
//! the closest); `eps` is required and a number >= 0, `steps` an int >= 1,
//! `alpha` a number >= 0 and `norm` "linf" or "l2", each checked at its
//! span; `fgsm` takes neither `steps` nor `alpha` (one step of size eps);
//! PGD's `alpha` defaults to 2.5 * eps / steps, as in `deqc attack`.

use super::{opt, req, CVal, Kind, OptionChecker, Spanned};
use crate::sema::spec::{Adversarial, AttackMethod, AttackNorm};

/// Every method of `adversarial = ...`.
pub const ATTACKS: &[&str] = &["fgsm", "pgd"];

/// PGD's steps when `steps` is not given (as `deqc attack`).
const DEFAULT_STEPS: i64 = 10;

/// Stands for "alpha not given" among the bound values: 2.5 * eps / steps.
const ALPHA_UNSET: &str = "2.5 * eps / steps";

impl OptionChecker<'_> {
    pub(super) fn adversarial(&mut self, v: &Spanned) -> Option<Adversarial> {
        let (name, args) = self.call_parts(v, "attack", ATTACKS)?;
        let method = match name {
            "fgsm" => AttackMethod::Fgsm,
            "pgd" => AttackMethod::Pgd,
            _ => {
                self.unknown("attack", name, v.span, ATTACKS);
                return None;
            }
        };
        let mut schema = vec![
            req("eps", Kind::NonNegFloat),
            opt("norm", Kind::Str(&["linf", "l2"]), CVal::Str("linf".into())),
        ];
        if method == AttackMethod::Pgd {
            schema.push(opt("steps", Kind::Int(1), CVal::Int(DEFAULT_STEPS)));
            schema.push(opt(
                "alpha",
                Kind::NonNegFloat,
                CVal::Name(ALPHA_UNSET.into()),
            ));
        }
        let b = self.bind(name, &schema, args, v.span)?;
        let eps = b.float("eps");
        let norm = match b.str("norm").as_str() {
            "l2" => AttackNorm::L2,
            _ => AttackNorm::Linf,
        };
        let (steps, alpha) = match method {
            AttackMethod::Fgsm => (1, eps),
            AttackMethod::Pgd => {
                let steps = b.uint("steps");
                let alpha = match b.get("alpha").map(|s| &s.value) {
                    Some(CVal::Name(_)) => 2.5 * eps / steps as f64,
                    _ => b.float("alpha"),
                };
                (steps, alpha)
            }
        };
        Some(Adversarial {
            method,
            norm,
            eps,
            steps,
            alpha,
        })
    }
}
