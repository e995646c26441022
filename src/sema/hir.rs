//! The checked program (HIR): what the rest of the compiler consumes.
//!
//! Owns the fully elaborated form of each model: every `fn` and layer call is
//! inlined, every instance's parameters are resolved to checkpoint paths
//! (`cell.w`, `outer.inner.w`, `linear_0.w`), and every value carries its
//! element type and symbolic shape. A model body is straight-line SSA; an
//! `equilibrium` is one instruction holding its body block. Guarantees: every
//! value is defined before use, every instruction has the span of the source
//! that produced it, and all shapes satisfy the rules of LANGUAGE.md section 7.
//!
//! Why elaborated (not a resolved tree of fns and layers): the language
//! checks fns and layers per call site anyway, so elaboration is where the
//! types are known; lowering to the IR graph is then a direct translation.

use crate::ir::Op;
use crate::sema::spec::{Backward, Init, SolverSpec, TrainConfig};
use crate::source::Span;
use crate::types::dim::Dim;
// Re-exported so that the old paths (`sema::hir::Type`) keep working.
pub use crate::types::{DType, SliceAxis, Type};

/// Index of a value in [`Model::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub ty: Type,
    pub span: Span,
}

/// A primitive operation. Where it is one IR op as it stands it carries
/// that [`Op`], attributes included, so lowering copies it and its result
/// type comes from the IR's shape rule (`ir::shape::infer`); the built-ins
/// that lower to several nodes keep their own variants.
#[derive(Debug, Clone)]
pub enum Prim {
    Op(Op),
    /// `split`: one result per size, each a slice along `axis`.
    Split {
        axis: usize,
        sizes: Vec<Dim>,
    },
    /// `dropout(x, p)`: `x` times a mask drawn once per solve.
    Dropout {
        p: f64,
    },
    /// `vjp(f, x, v)`, operands `[f(x), x, v]`: the row vector `v^T J_f(x)`
    /// (of `x`'s type). Lowering builds it with the reverse sweep, so it is
    /// ordinary IR and can be differentiated again.
    Vjp,
    /// `jvp(f, x, u)`, operands `[f(x), x, u]`: `J_f(x) u` (of `f(x)`'s
    /// type), built at lowering as the VJP of a VJP.
    Jvp,
}

#[derive(Debug, Clone)]
pub enum InstKind {
    /// The model's i-th input.
    Input(usize),
    /// The model's i-th parameter (one instruction per use site).
    Param(usize),
    /// A scalar constant of the result's type.
    Const(f64),
    Prim(Prim, Vec<ValueId>),
    Equilibrium(Box<Equilibrium>),
    /// Inside an equilibrium body: the current iterate of state i.
    State(usize),
}

#[derive(Debug, Clone)]
pub struct Inst {
    pub results: Vec<ValueId>,
    pub kind: InstKind,
    pub span: Span,
}

#[derive(Debug, Clone, Default)]
pub struct Block {
    pub insts: Vec<Inst>,
}

/// How the solver starts.
#[derive(Debug, Clone)]
pub enum EqInit {
    Zeros,
    /// One value per state, computed before the equilibrium.
    Values(Vec<ValueId>),
}

/// A joint fixed point of one or more states. The body block computes
/// `outputs` from the `State` instructions and values defined outside it.
#[derive(Debug, Clone)]
pub struct Equilibrium {
    pub state_names: Vec<String>,
    pub body: Block,
    pub outputs: Vec<ValueId>,
    pub init: EqInit,
    pub solver: SolverSpec,
    pub backward: Backward,
}

#[derive(Debug, Clone)]
pub struct Param {
    /// Checkpoint key, e.g. `cell.w`.
    pub path: String,
    pub ty: Type,
    pub init: Init,
    pub span: Span,
    /// What the parameter is to training (trained, or non-trainable state).
    pub role: ParamRole,
}

/// What a parameter is to training. Made by `weight_norm` and
/// `spectral_norm` (`src/sema/builtins/normalize.rs`) for the tensors they
/// add beside a weight; every `param` statement is [`ParamRole::Plain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    /// Trained, initialized by its `init`.
    Plain,
    /// Weight normalization's gain: trained, initialized to the norms of
    /// parameter `weight` over every axis but `axis` (so the normalized
    /// weight starts equal to the plain one).
    NormGain { weight: usize, axis: usize },
    /// Spectral normalization's power-iteration vector (one entry per index
    /// of `weight`'s `axis`): non-trainable state. It starts as a seeded unit
    /// vector refined by power iterations on the initial weight, advances one
    /// power iteration per training step, is saved in checkpoints, and gets
    /// no gradient and no optimizer update.
    PowerVector { weight: usize, axis: usize },
}

impl ParamRole {
    /// Non-trainable state (no gradient, no optimizer update).
    pub fn is_state(self) -> bool {
        matches!(self, ParamRole::PowerVector { .. })
    }

    /// The parameter this one is derived from, if any.
    pub fn weight(self) -> Option<usize> {
        match self {
            ParamRole::Plain => None,
            ParamRole::NormGain { weight, .. } | ParamRole::PowerVector { weight, .. } => {
                Some(weight)
            }
        }
    }

    /// A note for printers, e.g. `state: power-iteration vector of cell.w`
    /// (`None` for a plain parameter); `path_of` names a parameter index.
    pub fn note(self, path_of: impl Fn(usize) -> String) -> Option<String> {
        match self {
            ParamRole::Plain => None,
            ParamRole::NormGain { weight, axis } => Some(format!(
                "weight-norm gain of {} (axis {axis})",
                path_of(weight)
            )),
            ParamRole::PowerVector { weight, axis } => Some(format!(
                "state: power-iteration vector of {} (axis {axis})",
                path_of(weight)
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ModelInput {
    pub name: String,
    pub ty: Type,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub span: Span,
    pub inputs: Vec<ModelInput>,
    pub output_types: Vec<Type>,
    pub params: Vec<Param>,
    pub values: Vec<ValueInfo>,
    pub body: Block,
    pub outputs: Vec<ValueId>,
}

impl Model {
    pub fn ty(&self, v: ValueId) -> &Type {
        &self.values[v.0 as usize].ty
    }

    /// Trainable scalars (non-trainable state is not counted).
    pub fn param_count(&self) -> i64 {
        self.params
            .iter()
            .filter(|p| !p.role.is_state())
            .filter_map(|p| p.ty.numel())
            .sum()
    }

    /// Every equilibrium instruction, outer ones first.
    pub fn equilibria(&self) -> Vec<(&Equilibrium, Span)> {
        fn walk<'a>(b: &'a Block, out: &mut Vec<(&'a Equilibrium, Span)>) {
            for i in &b.insts {
                if let InstKind::Equilibrium(e) = &i.kind {
                    out.push((e, i.span));
                    walk(&e.body, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.body, &mut out);
        out
    }
}

/// A checked program: the models of the root file (and of its imports'
/// layers, inlined), and the train blocks of the root file.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub models: Vec<Model>,
    pub trains: Vec<TrainConfig>,
}

impl Program {
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }
}
