//! THE operation enum of the IR graph.
//!
//! Owns every primitive a graph node can compute, with its static attributes,
//! and one row of facts per variant ([`Op::info`]: name, arity, class,
//! which operands carry gradients) that the verifier, the printers, autodiff
//! and the passes read. Every stage that needs code per op (shape rules in
//! `ir::shape`, kernels in `exec::kernels`, VJP rules in `autodiff::vjp`)
//! matches on [`Op`] exhaustively, so a new op does not compile until every
//! stage handles it.
//!
//! Besides the language's primitives (LANGUAGE.md section 7; `hir::Prim`
//! carries these ops as they stand), the enum holds the ops that derived gradients need
//! (`SumTo`, `SliceBackward`, `ConvInputGrad`, pooling backward, ...), each of
//! which has its own VJP so that gradient graphs can be differentiated again.

use crate::sema::spec::{Backward, SolverSpec};
use crate::types::dim::Dim;
use crate::types::{DType, SliceAxis, Type};

use super::graph::Graph;
use super::op_groups::{binary_math_ops, unary_math_ops};

/// The distribution of a random probe vector (`probe(shape, kind)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Standard normal entries.
    Gaussian,
    /// Entries +1 or -1 with equal probability.
    Rademacher,
}

impl ProbeKind {
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Gaussian => "gaussian",
            ProbeKind::Rademacher => "rademacher",
        }
    }
}

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

impl ConvAttrs {
    /// `(padding, stride, dilation, groups)` as sizes, for the kernels (the
    /// checker keeps them positive, padding non-negative).
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.padding as usize,
            self.stride as usize,
            self.dilation as usize,
            self.groups as usize,
        )
    }
}

/// How an equilibrium's solver starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EqInitKind {
    Zeros,
    /// The last `states` operands of the node are the initial iterates.
    Values,
}

/// What an equilibrium node solves for: the model's own fixed point, or the
/// adjoint of another equilibrium (built by `deq::adjoint`). Solve
/// statistics use it to tell forward from backward solves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolveRole {
    Forward,
    Adjoint,
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
    /// The states' names as the source wrote them (an adjoint solve keeps
    /// its forward equilibrium's; see [`EqNode::state_labels`]).
    pub state_names: Vec<String>,
    pub state_types: Vec<Type>,
    pub capture_types: Vec<Type>,
    pub body: Graph,
    pub init: EqInitKind,
    pub solver: SolverSpec,
    pub backward: Backward,
    pub role: SolveRole,
}

impl EqNode {
    /// The states' names as printed: an adjoint solve's read `adjoint:z`.
    pub fn state_labels(&self) -> Vec<String> {
        match self.role {
            SolveRole::Forward => self.state_names.clone(),
            SolveRole::Adjoint => self
                .state_names
                .iter()
                .map(|s| format!("adjoint:{s}"))
                .collect(),
        }
    }

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
    /// A random probe (Hutchinson's estimators): drawn from the run's seed
    /// and step (`ExecOptions::seed`) and the node, so it is the same in
    /// every evaluation of one step's graph. No operands: lowering makes it
    /// in the top graph and captures it into bodies, so an adjoint body sees
    /// the forward body's probe.
    Probe {
        kind: ProbeKind,
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

/// What kind of computation an op is (read by the printers and passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpClass {
    /// A value fed from outside the graph: input, parameter, state, capture.
    Source,
    /// Made from attributes alone (constants, masks, ranges).
    Constructor,
    /// Elementwise with NumPy broadcasting: candidates for fusion.
    Elementwise,
    /// Reductions and normalizers along axes.
    Reduction,
    /// Moves or copies elements without arithmetic.
    Layout,
    /// Matrix products, convolutions, pooling, lookups.
    Network,
    /// An equilibrium node and the projections of its results.
    Equilibrium,
    /// Made only by autodiff, as the adjoint of another op.
    Gradient,
}

/// Through which operands a gradient flows (masks, ids and random draws are
/// piecewise constant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradFlow {
    None,
    All,
    Only(usize),
    AllBut(usize),
}

impl GradFlow {
    pub fn through(self, slot: usize) -> bool {
        match self {
            GradFlow::None => false,
            GradFlow::All => true,
            GradFlow::Only(k) => slot == k,
            GradFlow::AllBut(k) => slot != k,
        }
    }
}

/// The facts about an op that do not depend on its operands, one row per
/// variant in [`Op::info`]. Shape rules, VJP rules and kernels stay in their
/// own stages (each one exhaustive `match`), since each needs code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// The printed name (without attributes).
    pub name: &'static str,
    pub arity: Arity,
    pub class: OpClass,
    pub grad: GradFlow,
    /// Its kernel is a matrix product (matmul, convolutions and their
    /// gradients, all gemm calls): `deqc bench` counts its time as gemm.
    pub gemm: bool,
}

impl Op {
    /// This op's row of facts.
    pub fn info(&self) -> OpInfo {
        use GradFlow::{All, AllBut, Only};
        use OpClass::*;
        const NO: GradFlow = GradFlow::None;
        let row = |name, arity, class, grad| OpInfo {
            name,
            arity: Arity::Exactly(arity),
            class,
            grad,
            gemm: false,
        };
        let gemm = |info: OpInfo| OpInfo { gemm: true, ..info };
        match self {
            Op::Input(_) => row("input", 0, Source, NO),
            Op::Param(_) => row("param", 0, Source, NO),
            Op::State(_) => row("state", 0, Source, NO),
            Op::Capture(_) => row("capture", 0, Source, NO),
            Op::Const(_) => row("const", 0, Constructor, NO),
            Op::Neg => row("neg", 1, Elementwise, All),
            Op::Exp => row("exp", 1, Elementwise, All),
            Op::Log => row("log", 1, Elementwise, All),
            Op::Sqrt => row("sqrt", 1, Elementwise, All),
            Op::Abs => row("abs", 1, Elementwise, All),
            Op::Tanh => row("tanh", 1, Elementwise, All),
            Op::Sigmoid => row("sigmoid", 1, Elementwise, All),
            Op::Relu => row("relu", 1, Elementwise, All),
            Op::Gelu => row("gelu", 1, Elementwise, All),
            Op::Softplus => row("softplus", 1, Elementwise, All),
            Op::Sin => row("sin", 1, Elementwise, All),
            Op::Cos => row("cos", 1, Elementwise, All),
            Op::LeakyRelu { .. } => row("leaky_relu", 1, Elementwise, All),
            Op::Clamp { .. } => row("clamp", 1, Elementwise, All),
            Op::Cast { .. } => row("cast", 1, Elementwise, All),
            Op::Add => row("add", 2, Elementwise, All),
            Op::Sub => row("sub", 2, Elementwise, All),
            Op::Mul => row("mul", 2, Elementwise, All),
            Op::Div => row("div", 2, Elementwise, All),
            Op::Pow => row("pow", 2, Elementwise, All),
            Op::Maximum => row("maximum", 2, Elementwise, All),
            Op::Minimum => row("minimum", 2, Elementwise, All),
            Op::Compare(c) => row(c.name(), 2, Elementwise, NO),
            Op::Where => row("where", 3, Elementwise, AllBut(0)),
            Op::Reduce { op, .. } => row(op.name(), 1, Reduction, All),
            Op::Softmax { .. } => row("softmax", 1, Reduction, All),
            Op::LogSoftmax { .. } => row("log_softmax", 1, Reduction, All),
            Op::Reshape { .. } => row("reshape", 1, Layout, All),
            Op::Permute { .. } => row("permute", 1, Layout, All),
            Op::Concat { .. } => OpInfo {
                arity: Arity::AtLeast(1),
                ..row("concat", 0, Layout, All)
            },
            Op::BroadcastTo { .. } => row("broadcast", 1, Layout, All),
            Op::Slice { .. } => row("slice", 1, Layout, All),
            Op::Eye { .. } => row("eye", 0, Constructor, NO),
            Op::Fill { .. } => row("fill", 0, Constructor, NO),
            Op::Arange { .. } => row("arange", 0, Constructor, NO),
            Op::CausalMask { .. } => row("causal_mask", 0, Constructor, NO),
            Op::DropoutMask { .. } => row("dropout_mask", 0, Constructor, NO),
            Op::Probe { .. } => row("probe", 0, Constructor, NO),
            Op::MatMul => gemm(row("matmul", 2, Network, All)),
            Op::Conv(a) if a.spatial == 1 => gemm(row("conv1d", 2, Network, All)),
            Op::Conv(_) => gemm(row("conv2d", 2, Network, All)),
            Op::AvgPool2d { .. } => row("avg_pool2d", 1, Network, All),
            Op::MaxPool2d { .. } => row("max_pool2d", 1, Network, All),
            Op::UpsampleNearest2d { .. } => row("upsample_nearest2d", 1, Network, All),
            Op::Embedding => row("embedding", 2, Network, Only(1)),
            Op::Equilibrium(eq) => row("equilibrium", eq.num_operands(), Equilibrium, All),
            Op::Project(_) => row("project", 1, Equilibrium, All),
            Op::SumTo { .. } => row("sum_to", 1, Gradient, All),
            Op::Count { .. } => row("count", 0, Gradient, NO),
            Op::SliceBackward { .. } => row("slice_backward", 1, Gradient, All),
            Op::ConvInputGrad { .. } => gemm(row("conv_input_grad", 2, Gradient, All)),
            Op::ConvWeightGrad { .. } => gemm(row("conv_weight_grad", 2, Gradient, All)),
            Op::AvgPool2dBackward { .. } => row("avg_pool2d_backward", 1, Gradient, All),
            Op::MaxPool2dBackward { .. } => row("max_pool2d_backward", 2, Gradient, Only(1)),
            Op::MaxPool2dSelect { .. } => row("max_pool2d_select", 2, Gradient, Only(1)),
            Op::EmbeddingBackward { .. } => row("embedding_backward", 2, Gradient, Only(1)),
        }
    }

    /// The printed name (without attributes).
    pub fn name(&self) -> &'static str {
        self.info().name
    }

    /// How many operands the op takes.
    pub fn arity(&self) -> Arity {
        self.info().arity
    }

    /// Elementwise ops (with broadcasting): candidates for fusion.
    pub fn is_elementwise(&self) -> bool {
        self.info().class == OpClass::Elementwise
    }

    /// Whether a gradient can flow through operand `slot` of this op.
    pub fn is_differentiable_in(&self, slot: usize) -> bool {
        self.info().grad.through(slot)
    }

    /// A short text of the attributes (empty when there are none), used by
    /// the printers.
    pub fn attrs(&self) -> String {
        use crate::types::shape_text as dims;
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
            Op::Probe { kind, shape } => format!("{}, {}", kind.name(), dims(shape)),
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
                eq.state_labels().join(", "),
                match eq.init {
                    EqInitKind::Zeros => "zeros",
                    EqInitKind::Values => "values",
                }
            ),
            unary_math_ops!() | binary_math_ops!() | Op::Where | Op::MatMul | Op::Embedding => {
                String::new()
            }
        }
    }
}
