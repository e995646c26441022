//! THE operation enum of the IR graph.
//!
//! Owns every primitive a graph node can compute, with its static attributes,
//! and the categories beside it (`arity`, `is_elementwise`,
//! `is_differentiable`, `name`). Every later stage (shape rules in
//! `ir::shape`, kernels in `exec::kernels`, VJP rules in `autodiff::vjp`,
//! printers) matches on [`Op`] exhaustively, so a new op does not compile
//! until every stage handles it.
//!
//! Besides the language's primitives (LANGUAGE.md section 7, one variant per
//! `hir::Prim`), the enum holds the ops that derived gradients need
//! (`SumTo`, `SliceBackward`, `ConvInputGrad`, pooling backward, ...), each of
//! which has its own VJP so that gradient graphs can be differentiated again.

use crate::sema::dim::Dim;
use crate::sema::hir::{DType, SliceAxis, Type};
use crate::sema::spec::{Backward, SolverSpec};

use super::graph::Graph;

/// Comparison of two tensors, yielding a 0/1 mask of the operands' dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Cmp {
    pub fn name(self) -> &'static str {
        match self {
            Cmp::Lt => "lt",
            Cmp::Le => "le",
            Cmp::Gt => "gt",
            Cmp::Ge => "ge",
            Cmp::Eq => "eq",
            Cmp::Ne => "ne",
        }
    }
}

/// What a reduction computes over its axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    LogSumExp,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::LogSumExp => "logsumexp",
        }
    }
}

/// Settings of a 1-d (`spatial = 1`) or 2-d (`spatial = 2`) convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvAttrs {
    pub spatial: usize,
    pub stride: i64,
    pub padding: i64,
    pub dilation: i64,
    pub groups: i64,
}

/// How an equilibrium's solver starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EqInitKind {
    Zeros,
    /// The last `states` operands of the node are the initial iterates.
    Values,
}

/// An equilibrium: the joint fixed point `z* = body(z*, captures)`.
///
/// The body is a graph whose sources are `State(i)` (the current iterate of
/// state i), `Capture(j)` (the node's j-th operand: a value computed outside,
/// parameters included) and constants; its outputs are the next iterate of
/// each state, in state order. The node's operands are the captures, then
/// (with [`EqInitKind::Values`]) one initial value per state. The node's
/// results are read through `Project(i)` nodes.
#[derive(Debug, Clone)]
pub struct EqNode {
    pub state_names: Vec<String>,
    pub state_types: Vec<Type>,
    pub capture_types: Vec<Type>,
    pub body: Graph,
    pub init: EqInitKind,
    pub solver: SolverSpec,
    pub backward: Backward,
}

impl EqNode {
    pub fn num_states(&self) -> usize {
        self.state_types.len()
    }
    pub fn num_captures(&self) -> usize {
        self.capture_types.len()
    }
    /// Operand count: captures, then the initial values when given.
    pub fn num_operands(&self) -> usize {
        self.num_captures()
            + match self.init {
                EqInitKind::Zeros => 0,
                EqInitKind::Values => self.num_states(),
            }
    }
}

/// How many operands an op takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

/// One operation. Attribute dims may be symbolic (`B`); the executor binds
/// them from the actual input shapes.
#[derive(Debug, Clone)]
pub enum Op {
    // ---- sources -------------------------------------------------------
    /// The graph's i-th input.
    Input(usize),
    /// The graph's i-th parameter (one node shared by every use).
    Param(usize),
    /// A scalar constant of the node's dtype.
    Const(f64),
    /// Inside an equilibrium body: the current iterate of state i.
    State(usize),
    /// Inside an equilibrium body: the enclosing node's j-th operand.
    Capture(usize),

    // ---- elementwise unary ----------------------------------------------
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    Tanh,
    Sigmoid,
    Relu,
    /// GELU, tanh form.
    Gelu,
    Softplus,
    Sin,
    Cos,
    LeakyRelu {
        slope: f64,
    },
    Clamp {
        lo: f64,
        hi: f64,
    },

    // ---- elementwise binary, NumPy broadcasting --------------------------
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Compare(Cmp),
    /// `where(mask, a, b)`: `a` where the mask is nonzero; broadcasts all three.
    Where,

    // ---- reductions and normalizers ------------------------------------
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keepdim: bool,
    },
    Softmax {
        axis: usize,
    },
    LogSoftmax {
        axis: usize,
    },

    // ---- linear algebra and shapes --------------------------------------
    /// Matrix product over the last two axes, broadcasting the leading ones.
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
    BroadcastTo {
        shape: Vec<Dim>,
    },
    Slice {
        axes: Vec<SliceAxis>,
    },

    // ---- constructors ------------------------------------------------------
    Eye {
        n: Dim,
    },
    Fill {
        value: f64,
        shape: Vec<Dim>,
    },
    /// `0, 1, ..., n - 1` as i64.
    Arange {
        n: Dim,
    },
    /// `[t, t]`, 1 where column <= row (the positions a token may attend to).
    CausalMask {
        t: Dim,
    },

    // ---- networks ------------------------------------------------------------
    /// Operands: input `[B, C, *spatial]`, weight `[C_out, C / groups, *k]`.
    Conv(ConvAttrs),
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
    /// Operands: i64 ids, table `[n, d]`.
    Embedding,
    /// A random keep-mask scaled by `1 / (1 - p)` (all ones when not
    /// training); `dropout(x, p)` lowers to `x * mask`. No operands, so that
    /// a mask used inside an equilibrium is drawn once per solve.
    DropoutMask {
        p: f64,
        shape: Vec<Dim>,
    },
    Cast {
        to: DType,
    },

    // ---- equilibrium -----------------------------------------------------
    Equilibrium(Box<EqNode>),
    /// The i-th result of the operand (an equilibrium).
    Project(usize),

    // ---- derived-gradient ops ---------------------------------------------
    /// Sum a broadcast result back to `shape` (leading axes summed away, axes
    /// of size 1 in `shape` summed with keepdim).
    SumTo {
        shape: Vec<Dim>,
    },
    /// A scalar: the product of `dims` (the count a mean divides by).
    Count {
        dims: Vec<Dim>,
    },
    /// The adjoint of `Slice`: place the operand into zeros of `shape`.
    SliceBackward {
        axes: Vec<SliceAxis>,
        shape: Vec<Dim>,
    },
    /// The gradient of a convolution with respect to its input.
    /// Operands: output cotangent `g`, weight `w`; result: the input's `shape`.
    ConvInputGrad {
        attrs: ConvAttrs,
        shape: Vec<Dim>,
    },
    /// The gradient of a convolution with respect to its weight.
    /// Operands: input `x`, output cotangent `g`; result: the weight's `shape`.
    ConvWeightGrad {
        attrs: ConvAttrs,
        shape: Vec<Dim>,
    },
    /// The adjoint of `AvgPool2d`: operand `g`, result of the input's `shape`.
    AvgPool2dBackward {
        kernel: i64,
        stride: i64,
        shape: Vec<Dim>,
    },
    /// Operands: pooled input `x`, cotangent `g` of the pooled result; each
    /// window's `g` goes to its first maximum.
    MaxPool2dBackward {
        kernel: i64,
        stride: i64,
    },
    /// Operands: input `x`, a tensor `h` of `x`'s shape; picks `h` at each
    /// window's first maximum of `x` (the adjoint of `MaxPool2dBackward`).
    MaxPool2dSelect {
        kernel: i64,
        stride: i64,
    },
    /// Operands: ids, cotangent `[*ids, d]`; scatter-adds rows into a
    /// `[rows, d]` table gradient.
    EmbeddingBackward {
        rows: Dim,
    },
}

impl Op {
    /// The printed name (without attributes).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Param(_) => "param",
            Op::Const(_) => "const",
            Op::State(_) => "state",
            Op::Capture(_) => "capture",
            Op::Neg => "neg",
            Op::Exp => "exp",
            Op::Log => "log",
            Op::Sqrt => "sqrt",
            Op::Abs => "abs",
            Op::Tanh => "tanh",
            Op::Sigmoid => "sigmoid",
            Op::Relu => "relu",
            Op::Gelu => "gelu",
            Op::Softplus => "softplus",
            Op::Sin => "sin",
            Op::Cos => "cos",
            Op::LeakyRelu { .. } => "leaky_relu",
            Op::Clamp { .. } => "clamp",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Pow => "pow",
            Op::Maximum => "maximum",
            Op::Minimum => "minimum",
            Op::Compare(c) => c.name(),
            Op::Where => "where",
            Op::Reduce { op, .. } => op.name(),
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::MatMul => "matmul",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Concat { .. } => "concat",
            Op::BroadcastTo { .. } => "broadcast",
            Op::Slice { .. } => "slice",
            Op::Eye { .. } => "eye",
            Op::Fill { .. } => "fill",
            Op::Arange { .. } => "arange",
            Op::CausalMask { .. } => "causal_mask",
            Op::Conv(a) => {
                if a.spatial == 1 {
                    "conv1d"
                } else {
                    "conv2d"
                }
            }
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::UpsampleNearest2d { .. } => "upsample_nearest2d",
            Op::Embedding => "embedding",
            Op::DropoutMask { .. } => "dropout_mask",
            Op::Cast { .. } => "cast",
            Op::Equilibrium(_) => "equilibrium",
            Op::Project(_) => "project",
            Op::SumTo { .. } => "sum_to",
            Op::Count { .. } => "count",
            Op::SliceBackward { .. } => "slice_backward",
            Op::ConvInputGrad { .. } => "conv_input_grad",
            Op::ConvWeightGrad { .. } => "conv_weight_grad",
            Op::AvgPool2dBackward { .. } => "avg_pool2d_backward",
            Op::MaxPool2dBackward { .. } => "max_pool2d_backward",
            Op::MaxPool2dSelect { .. } => "max_pool2d_select",
            Op::EmbeddingBackward { .. } => "embedding_backward",
        }
    }

    /// How many operands the op takes.
    pub fn arity(&self) -> Arity {
        use Arity::*;
        match self {
            Op::Input(_)
            | Op::Param(_)
            | Op::Const(_)
            | Op::State(_)
            | Op::Capture(_)
            | Op::Eye { .. }
            | Op::Fill { .. }
            | Op::Arange { .. }
            | Op::CausalMask { .. }
            | Op::DropoutMask { .. }
            | Op::Count { .. } => Exactly(0),
            Op::Neg
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Abs
            | Op::Tanh
            | Op::Sigmoid
            | Op::Relu
            | Op::Gelu
            | Op::Softplus
            | Op::Sin
            | Op::Cos
            | Op::LeakyRelu { .. }
            | Op::Clamp { .. }
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::BroadcastTo { .. }
            | Op::Slice { .. }
            | Op::AvgPool2d { .. }
            | Op::MaxPool2d { .. }
            | Op::UpsampleNearest2d { .. }
            | Op::Cast { .. }
            | Op::Project(_)
            | Op::SumTo { .. }
            | Op::SliceBackward { .. }
            | Op::AvgPool2dBackward { .. } => Exactly(1),
            Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Maximum
            | Op::Minimum
            | Op::Compare(_)
            | Op::MatMul
            | Op::Conv(_)
            | Op::Embedding
            | Op::ConvInputGrad { .. }
            | Op::ConvWeightGrad { .. }
            | Op::MaxPool2dBackward { .. }
            | Op::MaxPool2dSelect { .. }
            | Op::EmbeddingBackward { .. } => Exactly(2),
            Op::Where => Exactly(3),
            Op::Concat { .. } => AtLeast(1),
            Op::Equilibrium(eq) => Exactly(eq.num_operands()),
        }
    }

    /// Elementwise ops (with broadcasting): candidates for fusion.
    pub fn is_elementwise(&self) -> bool {
        match self {
            Op::Neg
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Abs
            | Op::Tanh
            | Op::Sigmoid
            | Op::Relu
            | Op::Gelu
            | Op::Softplus
            | Op::Sin
            | Op::Cos
            | Op::LeakyRelu { .. }
            | Op::Clamp { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Maximum
            | Op::Minimum
            | Op::Compare(_)
            | Op::Where
            | Op::Cast { .. } => true,
            Op::Input(_)
            | Op::Param(_)
            | Op::Const(_)
            | Op::State(_)
            | Op::Capture(_)
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::MatMul
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Concat { .. }
            | Op::BroadcastTo { .. }
            | Op::Slice { .. }
            | Op::Eye { .. }
            | Op::Fill { .. }
            | Op::Arange { .. }
            | Op::CausalMask { .. }
            | Op::Conv(_)
            | Op::AvgPool2d { .. }
            | Op::MaxPool2d { .. }
            | Op::UpsampleNearest2d { .. }
            | Op::Embedding
            | Op::DropoutMask { .. }
            | Op::Equilibrium(_)
            | Op::Project(_)
            | Op::SumTo { .. }
            | Op::Count { .. }
            | Op::SliceBackward { .. }
            | Op::ConvInputGrad { .. }
            | Op::ConvWeightGrad { .. }
            | Op::AvgPool2dBackward { .. }
            | Op::MaxPool2dBackward { .. }
            | Op::MaxPool2dSelect { .. }
            | Op::EmbeddingBackward { .. } => false,
        }
    }

    /// Whether a gradient can flow through operand `slot` of this op
    /// (masks, ids and random draws are piecewise constant).
    pub fn is_differentiable_in(&self, slot: usize) -> bool {
        match self {
            Op::Compare(_) => false,
            Op::Where => slot != 0,
            Op::Embedding | Op::EmbeddingBackward { .. } => slot == 1,
            Op::MaxPool2dBackward { .. } | Op::MaxPool2dSelect { .. } => slot == 1,
            Op::Input(_)
            | Op::Param(_)
            | Op::Const(_)
            | Op::State(_)
            | Op::Capture(_)
            | Op::Eye { .. }
            | Op::Fill { .. }
            | Op::Arange { .. }
            | Op::CausalMask { .. }
            | Op::DropoutMask { .. }
            | Op::Count { .. } => false,
            Op::Neg
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Abs
            | Op::Tanh
            | Op::Sigmoid
            | Op::Relu
            | Op::Gelu
            | Op::Softplus
            | Op::Sin
            | Op::Cos
            | Op::LeakyRelu { .. }
            | Op::Clamp { .. }
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Maximum
            | Op::Minimum
            | Op::Reduce { .. }
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::MatMul
            | Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Concat { .. }
            | Op::BroadcastTo { .. }
            | Op::Slice { .. }
            | Op::Conv(_)
            | Op::AvgPool2d { .. }
            | Op::MaxPool2d { .. }
            | Op::UpsampleNearest2d { .. }
            | Op::Cast { .. }
            | Op::Equilibrium(_)
            | Op::Project(_)
            | Op::SumTo { .. }
            | Op::SliceBackward { .. }
            | Op::ConvInputGrad { .. }
            | Op::ConvWeightGrad { .. }
            | Op::AvgPool2dBackward { .. } => true,
        }
    }

    /// A short text of the attributes (empty when there are none), used by
    /// the printers.
    pub fn attrs(&self) -> String {
        fn dims(d: &[Dim]) -> String {
            let parts: Vec<String> = d.iter().map(|x| x.to_string()).collect();
            format!("[{}]", parts.join(", "))
        }
        fn slice(axes: &[SliceAxis]) -> String {
            let parts: Vec<String> = axes
                .iter()
                .map(|a| match a {
                    SliceAxis::Full => ":".into(),
                    SliceAxis::Range {
                        start,
                        end,
                        step: 1,
                    } => format!("{start}:{end}"),
                    SliceAxis::Range { start, end, step } => format!("{start}:{end}:{step}"),
                    SliceAxis::Index(i) => i.to_string(),
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
        fn conv(a: &ConvAttrs) -> String {
            format!(
                "stride = {}, padding = {}, dilation = {}, groups = {}",
                a.stride, a.padding, a.dilation, a.groups
            )
        }
        match self {
            Op::Input(i) | Op::Param(i) | Op::State(i) | Op::Capture(i) | Op::Project(i) => {
                i.to_string()
            }
            Op::Const(v) => format!("{v:?}"),
            Op::LeakyRelu { slope } => format!("slope = {slope:?}"),
            Op::Clamp { lo, hi } => format!("{lo:?}, {hi:?}"),
            Op::Reduce { axes, keepdim, .. } => format!("axes = {axes:?}, keepdim = {keepdim}"),
            Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Concat { axis } => {
                format!("axis = {axis}")
            }
            Op::Reshape { shape }
            | Op::BroadcastTo { shape }
            | Op::SumTo { shape }
            | Op::Count { dims: shape } => dims(shape),
            Op::Permute { axes } => format!("{axes:?}"),
            Op::Slice { axes } => slice(axes),
            Op::Eye { n } | Op::Arange { n } | Op::CausalMask { t: n } => n.to_string(),
            Op::Fill { value, shape } => format!("{value:?}, {}", dims(shape)),
            Op::Conv(a) => conv(a),
            Op::AvgPool2d { kernel, stride }
            | Op::MaxPool2d { kernel, stride }
            | Op::MaxPool2dBackward { kernel, stride }
            | Op::MaxPool2dSelect { kernel, stride } => format!("{kernel}, stride = {stride}"),
            Op::UpsampleNearest2d { scale } => scale.to_string(),
            Op::DropoutMask { p, shape } => format!("p = {p:?}, {}", dims(shape)),
            Op::Cast { to } => to.name().to_string(),
            Op::SliceBackward { axes, shape } => format!("{} of {}", slice(axes), dims(shape)),
            Op::ConvInputGrad { attrs, shape } | Op::ConvWeightGrad { attrs, shape } => {
                format!("conv{}d, {}, {}", attrs.spatial, conv(attrs), dims(shape))
            }
            Op::AvgPool2dBackward {
                kernel,
                stride,
                shape,
            } => format!("{kernel}, stride = {stride}, {}", dims(shape)),
            Op::EmbeddingBackward { rows } => format!("rows = {rows}"),
            Op::Equilibrium(eq) => format!(
                "states = ({}), init = {}",
                eq.state_names.join(", "),
                match eq.init {
                    EqInitKind::Zeros => "zeros",
                    EqInitKind::Values => "values",
                }
            ),
            Op::Neg
            | Op::Exp
            | Op::Log
            | Op::Sqrt
            | Op::Abs
            | Op::Tanh
            | Op::Sigmoid
            | Op::Relu
            | Op::Gelu
            | Op::Softplus
            | Op::Sin
            | Op::Cos
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Pow
            | Op::Maximum
            | Op::Minimum
            | Op::Compare(_)
            | Op::Where
            | Op::MatMul
            | Op::Embedding => String::new(),
        }
    }
}
