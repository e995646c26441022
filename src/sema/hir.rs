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

use crate::sema::dim::Dim;
use crate::sema::spec::{Backward, Init, SolverSpec, TrainConfig};
use crate::source::Span;
pub use crate::syntax::ast::DType;

/// An element type and a (possibly symbolic) shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Type {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl Type {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Type {
        Type { dtype, shape }
    }

    pub fn scalar(dtype: DType) -> Type {
        Type {
            dtype,
            shape: Vec::new(),
        }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements, when every dimension is known.
    pub fn numel(&self) -> Option<i64> {
        self.shape
            .iter()
            .try_fold(1i64, |acc, d| acc.checked_mul(d.as_const()?))
    }
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dtype != DType::F32 {
            write!(f, "{}", self.dtype.name())?;
        }
        write!(f, "[")?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

/// Index of a value in [`Model::values`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

#[derive(Debug, Clone)]
pub struct ValueInfo {
    pub ty: Type,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryFn {
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    Tanh,
    Sigmoid,
    Relu,
    Gelu,
    Softplus,
    Sin,
    Cos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceFn {
    Sum,
    Mean,
    Max,
    Min,
    LogSumExp,
}

/// What a slice does to one axis of its operand.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceAxis {
    /// The whole axis.
    Full,
    /// Elements `start, start + step, ...` below `end` (bounds normalized to
    /// be non-negative).
    Range { start: Dim, end: Dim, step: i64 },
    /// One element; the axis is removed.
    Index(Dim),
}

/// A primitive operation with its static attributes (LANGUAGE.md section 7;
/// composite built-ins are expressed through these).
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    Unary(UnaryFn),
    LeakyRelu {
        slope: f64,
    },
    Binary(BinaryFn),
    Where,
    Clamp {
        lo: f64,
        hi: f64,
    },
    Reduce {
        op: ReduceFn,
        axes: Vec<usize>,
        keepdim: bool,
    },
    Softmax {
        axis: usize,
    },
    LogSoftmax {
        axis: usize,
    },
    MatMul,
    Reshape {
        shape: Vec<Dim>,
    },
    Permute {
        axes: Vec<usize>,
    },
    Concat {
        axis: usize,
    },
    /// Produces one result per size.
    Split {
        axis: usize,
        sizes: Vec<Dim>,
    },
    Broadcast {
        shape: Vec<Dim>,
    },
    Slice {
        axes: Vec<SliceAxis>,
    },
    Eye {
        n: Dim,
    },
    Fill {
        value: f64,
        shape: Vec<Dim>,
    },
    Arange {
        n: Dim,
    },
    CausalMask {
        t: Dim,
    },
    /// conv1d (`spatial = 1`) or conv2d (`spatial = 2`).
    Conv {
        spatial: usize,
        stride: i64,
        padding: i64,
        dilation: i64,
        groups: i64,
    },
    AvgPool2d {
        kernel: i64,
        stride: i64,
    },
    MaxPool2d {
        kernel: i64,
        stride: i64,
    },
    UpsampleNearest2d {
        scale: i64,
    },
    Embedding,
    Dropout {
        p: f64,
    },
    Cast {
        to: DType,
    },
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

    pub fn param_count(&self) -> i64 {
        self.params.iter().filter_map(|p| p.ty.numel()).sum()
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
