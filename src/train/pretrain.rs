//! Unrolled pretraining (`pretrain = unrolled(steps = N, depth = K)`) and
//! the evaluation solver (`eval_solver = ...`): the same model with other
//! solvers on its equilibria.
//!
//! Owns rewriting a checked model's equilibria and the phase rule. During
//! pretraining every equilibrium (nested ones included) becomes `K`
//! weight-tied iterations from its initial value, `unroll(steps = K)` with
//! `backward = unrolled`: a shallow explicit network with the same
//! parameters, as in locuslab/deq's `pretrain_steps`. Guarantees: the
//! rewritten model has the same parameters (paths, shapes, initializers) and
//! graph inputs as the original, so parameters and optimizer state carry
//! over the switch unchanged; the phase of a step is a pure function of the
//! step (`step < N`), so `--resume` lands in the right phase.

use super::compiled::Compiled;
use crate::sema::hir::{Block, Equilibrium, InstKind, Model};
use crate::sema::options::OptionChecker;
use crate::sema::spec::{Backward, Pretrain, SolverKind, SolverSpec, TrainConfig};

/// The phase a step (0-based) or an evaluation after `step` steps runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The unrolled weight-tied network.
    Pretrain,
    /// The implicit model as written.
    Deq,
}

impl Phase {
    /// Steps `0..N` pretrain; an evaluation after `N` steps sees the DEQ.
    pub fn at(pretrain: Option<Pretrain>, step: u64) -> Phase {
        match pretrain {
            Some(p) if step < p.steps as u64 => Phase::Pretrain,
            _ => Phase::Deq,
        }
    }

    /// The `phase` field of a metrics record.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pretrain => "pretrain",
            Phase::Deq => "deq",
        }
    }
}

/// The graphs of step `step`'s phase: `pretrain`'s while pretraining.
pub fn in_phase<'c>(
    compiled: &'c Compiled,
    pretrain: &'c Option<Compiled>,
    cfg: &TrainConfig,
    step: u64,
) -> &'c Compiled {
    match (pretrain, Phase::at(cfg.workflow.pretrain, step)) {
        (Some(unrolled), Phase::Pretrain) => unrolled,
        _ => compiled,
    }
}

/// `model` with `change` applied to each equilibrium, outer ones first.
fn rewrite(model: &Model, change: &dyn Fn(&mut Equilibrium)) -> Model {
    fn walk(block: &mut Block, change: &dyn Fn(&mut Equilibrium)) {
        for inst in &mut block.insts {
            if let InstKind::Equilibrium(eq) = &mut inst.kind {
                change(eq);
                walk(&mut eq.body, change);
            }
        }
    }
    let mut m = model.clone();
    walk(&mut m.body, change);
    m
}

/// `model` with each equilibrium unrolled `depth` times and trained by
/// backpropagating through the iterations.
pub fn unrolled(model: &Model, depth: usize) -> Model {
    rewrite(model, &|eq| {
        eq.solver = SolverSpec {
            kind: SolverKind::Unroll { steps: depth },
            max_iter: depth,
            ..eq.solver.clone()
        };
        eq.backward = Backward::Unrolled;
    })
}

/// `model` with `solver` as every equilibrium's forward solver (for the
/// evaluation graph; the backward mode follows the solver, as when written).
pub fn with_solver(model: &Model, solver: &SolverSpec) -> Model {
    rewrite(model, &|eq| {
        eq.solver = solver.clone();
        eq.backward = OptionChecker::default_backward(solver);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let src = "use nn;\nmodel M(x: [B, 4]) -> [B, 4] {\n    let cell = nn::Linear[4, 4];\n    equilibrium z: [B, 4] = tanh(cell(z) + x) with solver = anderson(m = 3, tol = 1e-5);\n    z\n}\n";
        let c = crate::compile_source("m.deq", src);
        let p = c.program.expect("checks");
        p.models[0].clone()
    }

    #[test]
    fn unrolling_changes_only_the_solvers() {
        let m = model();
        let u = unrolled(&m, 4);
        let (eq, _) = u.equilibria()[0];
        assert_eq!(eq.solver.kind, SolverKind::Unroll { steps: 4 });
        assert_eq!((eq.solver.max_iter, eq.solver.tol), (4, 1e-5));
        assert_eq!(eq.backward, Backward::Unrolled);
        let paths = |m: &Model| m.params.iter().map(|p| p.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&u), paths(&m));
        // The original is untouched.
        assert!(matches!(
            m.equilibria()[0].0.solver.kind,
            SolverKind::Anderson { .. }
        ));
    }

    #[test]
    fn phases_switch_at_the_step_count() {
        let p = Some(Pretrain { steps: 3, depth: 2 });
        let phases: Vec<Phase> = (0..5).map(|s| Phase::at(p, s)).collect();
        let (pre, deq) = (Phase::Pretrain, Phase::Deq);
        assert_eq!(phases, [pre, pre, pre, deq, deq]);
        assert_eq!(Phase::at(None, 0), deq);
    }
}
