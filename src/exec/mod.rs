//! The executor: runs an IR [`Graph`] on a candle [`Device`].
//!
//! Owns evaluation order, the binding of symbolic dims (`B`, `T`) to the
//! actual input sizes, dtype selection, value lifetimes and the equilibrium
//! call-out. Guarantees:
//! - nodes run in the graph's deterministic topological order, each through
//!   the one exhaustive `match` in [`kernels`];
//! - every value is dropped right after its last use (graph outputs are
//!   kept), and [`ExecStats::peak_live_bytes`] reports the peak of the bytes
//!   held by live values (every node value counts, inputs and parameters
//!   included; views are counted as if they owned their elements, so this is
//!   an upper bound of the real footprint);
//! - IR `f32` values run in [`ExecOptions::float`] (f32 by default; f64 for
//!   gradient checks): parameters and inputs are converted on entry;
//! - a shape problem, an unbound dim or a kernel failure is an [`ExecError`]
//!   carrying the node's span, never a panic;
//! - equilibrium nodes are handed to an [`EquilibriumRunner`]; the default
//!   one is `crate::deq::SolverRunner` (the solvers of `crate::solver`),
//!   and [`NoSolver`] refuses them (for graphs that must not solve).
//!
//! - each graph is scheduled once per set of dim values
//!   ([`schedule::Schedule`], cached process-wide by the graph's stamp and
//!   the dims): step order, liveness and resolved shapes are computed then
//!   and replayed by every run;
//! - on the CPU with [`ExecOptions::fuse`] (the default), fusion groups run
//!   as compiled kernels (`crate::jit`), writing the outputs that nothing
//!   keeps into buffers reused from run to run, and every other node as
//!   above; on other devices, without the `jit` feature, or with
//!   `fuse = false`, every node runs op by op;
//! - an equilibrium body that computes each sample on its own is evaluated
//!   in parts of its batch, one per thread ([`parts`]), with the same bits.
//!
//! Only device-generic candle APIs are used, so the same code runs on
//! `Device::Cuda` with the `cuda` feature.

pub mod attention;
pub mod fused;
pub mod kernels;
pub mod parts;
pub mod schedule;
pub mod slices;

pub use parts::BatchSplit;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType as CDType, Device, Tensor};

use crate::ir::{EqNode, Graph, NodeId, Op};
use crate::passes::fuse::Step;
use crate::source::Span;
use crate::types::dim::Dim;
use crate::types::{DType, Type};

/// A runtime failure of the execution phase.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ExecError {
    #[error("`{op}` failed: {message}")]
    #[diagnostic(code(deq::exec::kernel))]
    Kernel {
        op: String,
        message: String,
        span: Option<Span>,
    },
    /// The kernel library refused an op; said in deqc's words, with the
    /// library's message only as a detail.
    #[error("{0}")]
    #[diagnostic(code(deq::exec::kernel))]
    KernelLibrary(Box<LibraryFailure>),
    #[error("input `{name}` should be {expected}, got shape {found:?}")]
    #[diagnostic(code(deq::exec::input_shape))]
    InputShape {
        name: String,
        expected: String,
        found: Vec<usize>,
    },
    #[error("dimension {dim} is {first} in one place and {second} in another")]
    #[diagnostic(code(deq::exec::dim_conflict))]
    DimConflict {
        dim: String,
        first: i64,
        second: i64,
    },
    #[error("dimension {dim} is not bound by the inputs")]
    #[diagnostic(code(deq::exec::unbound_dim))]
    UnboundDim { dim: String, span: Option<Span> },
    #[error("expected {expected} {what}, got {found}")]
    #[diagnostic(code(deq::exec::arguments))]
    ArgumentCount {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("this executor solves no equilibria (it was built with `NoSolver`)")]
    #[diagnostic(code(deq::exec::equilibrium_unsupported))]
    EquilibriumUnsupported { span: Option<Span> },
    #[error("{message}")]
    #[diagnostic(code(deq::exec::equilibrium))]
    Equilibrium { message: String, span: Option<Span> },
    #[error("internal error: {0}")]
    #[diagnostic(code(deq::internal))]
    Internal(String),
}

impl ExecError {
    /// The span of the node that failed, when known.
    pub fn span(&self) -> Option<Span> {
        match self {
            ExecError::Kernel { span, .. }
            | ExecError::UnboundDim { span, .. }
            | ExecError::EquilibriumUnsupported { span }
            | ExecError::Equilibrium { span, .. } => *span,
            ExecError::KernelLibrary(f) => f.span,
            ExecError::InputShape { .. }
            | ExecError::DimConflict { .. }
            | ExecError::ArgumentCount { .. }
            | ExecError::Internal(_) => None,
        }
    }
}

/// What the kernel library refused, for [`ExecError::KernelLibrary`].
#[derive(Debug, Clone)]
pub struct LibraryFailure {
    pub op: String,
    pub operands: Vec<Vec<usize>>,
    /// The result's declared (symbolic) shape, when known.
    pub declared: Option<String>,
    pub resolved: Vec<usize>,
    /// The library's own message: a detail, never the whole error.
    pub library: String,
    pub span: Option<Span>,
}

impl std::fmt::Display for LibraryFailure {
    /// `` `reshape` of [64, 30, 16] cannot give the declared shape
    /// [B, 4, (T / 4), 16] (here [64, 4, 7, 16]); a division ... (kernel
    /// library: ...)``
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resolved = format!("{:?}", self.resolved);
        let result = match &self.declared {
            Some(d) if *d != resolved => format!("{d} (here {resolved})"),
            _ => resolved,
        };
        let operands = if self.operands.is_empty() {
            "no operands".to_string()
        } else {
            let shapes: Vec<String> = self.operands.iter().map(|s| format!("{s:?}")).collect();
            shapes.join(" and ")
        };
        let hint = if self.declared.as_ref().is_some_and(|d| d.contains(" / ")) {
            "; a division in the declared shape may not be exact at these sizes"
        } else {
            ""
        };
        write!(
            f,
            "`{}` of {operands} cannot give the declared shape {result}{hint} (kernel library: {})",
            self.op, self.library
        )
    }
}

pub type Result<T> = std::result::Result<T, ExecError>;

/// Concrete values of the symbolic dims of one run.
#[derive(Debug, Clone, Default)]
pub struct DimEnv {
    values: BTreeMap<String, i64>,
}

impl DimEnv {
    pub fn new() -> DimEnv {
        DimEnv::default()
    }

    pub fn bind(&mut self, name: &str, value: i64) -> Result<()> {
        match self.values.get(name) {
            Some(v) if *v != value => Err(ExecError::DimConflict {
                dim: name.to_string(),
                first: *v,
                second: value,
            }),
            _ => {
                self.values.insert(name.to_string(), value);
                Ok(())
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<i64> {
        self.values.get(name).copied()
    }

    /// These bindings with `name` bound to `value` instead (a part of the
    /// batch, `parts`).
    pub fn rebound(&self, name: &str, value: i64) -> DimEnv {
        let mut out = self.clone();
        out.values.insert(name.to_string(), value);
        out
    }

    /// Every binding, sorted by name (a cache key).
    pub fn bindings(&self) -> Vec<(&str, i64)> {
        self.values.iter().map(|(k, v)| (k.as_str(), *v)).collect()
    }

    /// Whether the bindings are exactly `sorted` (sorted by name), without
    /// allocating.
    pub fn same_bindings(&self, sorted: &[(String, i64)]) -> bool {
        self.values.len() == sorted.len()
            && self
                .values
                .iter()
                .zip(sorted)
                .all(|((k, v), (k2, v2))| k == k2 && v == v2)
    }

    /// The value of a dim, when every symbol in it is bound.
    pub fn eval(&self, d: &Dim) -> Option<i64> {
        d.substitute(&|n| self.values.get(n).map(|v| Dim::konst(*v)))?
            .as_const()
    }

    /// A shape as sizes; `span` is the node's, for the error.
    pub fn shape(&self, dims: &[Dim], span: Option<Span>) -> Result<Vec<usize>> {
        dims.iter()
            .map(|d| match self.eval(d) {
                Some(v) if v >= 0 => Ok(v as usize),
                _ => Err(ExecError::UnboundDim {
                    dim: d.to_string(),
                    span,
                }),
            })
            .collect()
    }

    /// Bind the bare symbols of `ty` from `shape`, then check every dim.
    pub fn bind_type(&mut self, name: &str, ty: &Type, shape: &[usize]) -> Result<()> {
        let mismatch = || ExecError::InputShape {
            name: name.to_string(),
            expected: ty.to_string(),
            found: shape.to_vec(),
        };
        if ty.rank() != shape.len() {
            return Err(mismatch());
        }
        for (d, s) in ty.shape.iter().zip(shape) {
            if let Some(sym) = d.as_symbol() {
                self.bind(sym, *s as i64)?;
            }
        }
        for (d, s) in ty.shape.iter().zip(shape) {
            if self.eval(d) != Some(*s as i64) {
                return Err(mismatch());
            }
        }
        Ok(())
    }
}

/// Execution settings.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The dtype that IR `f32` values run in (f32, or f64 for checks).
    pub float: CDType,
    /// Dropout draws masks only when training.
    pub training: bool,
    /// Seed of the dropout masks of one run.
    pub seed: u64,
    /// Run fusion groups as compiled kernels (CPU only); `false` runs every
    /// node op by op (`--no-fuse`). Defaults to [`fuse_default`].
    pub fuse: bool,
    /// Whether equilibrium bodies run in parts of their batch, one per
    /// thread ([`parts`]); [`BatchSplit::Auto`] by default.
    pub batch_split: BatchSplit,
}

static FUSE_DEFAULT: AtomicBool = AtomicBool::new(true);

/// Whether new [`ExecOptions`] fuse (true unless [`set_fuse_default`] said
/// otherwise; the CLI's `--no-fuse` does).
pub fn fuse_default() -> bool {
    FUSE_DEFAULT.load(Ordering::Relaxed)
}

/// Set whether new [`ExecOptions`] fuse, for the whole process.
pub fn set_fuse_default(fuse: bool) {
    FUSE_DEFAULT.store(fuse, Ordering::Relaxed);
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            float: CDType::F32,
            training: false,
            seed: 0,
            fuse: fuse_default(),
            batch_split: BatchSplit::Auto,
        }
    }
}

/// Measurements of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// The most bytes held by live values at any point of the run.
    pub peak_live_bytes: usize,
    /// Nodes evaluated.
    pub nodes_run: usize,
    /// Kernel-output buffers this run allocated in its arena (none once
    /// the schedule's buffers exist, from the second run on).
    pub buffers_allocated: usize,
    /// Kernel outputs written into a buffer that already existed.
    pub buffers_reused: usize,
}

/// The outputs of one run and its measurements.
#[derive(Debug)]
pub struct ExecResult {
    pub outputs: Vec<Tensor>,
    pub stats: ExecStats,
}

/// What a graph's sources read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Feeds<'a> {
    pub params: &'a [Tensor],
    pub inputs: &'a [Tensor],
    pub states: &'a [Tensor],
    pub captures: &'a [Tensor],
}

/// Everything an [`EquilibriumRunner`] needs to evaluate a body.
pub struct EqContext<'a> {
    pub exec: &'a Executor,
    pub dims: &'a DimEnv,
    pub span: Option<Span>,
}

impl EqContext<'_> {
    /// Evaluate the body once: the next iterate of every state.
    pub fn eval_body(
        &self,
        node: &EqNode,
        states: &[Tensor],
        captures: &[Tensor],
    ) -> Result<Vec<Tensor>> {
        if let Some(plan) = parts::plan(self, node, states) {
            return parts::eval(self, node, states, captures, &plan);
        }
        let feeds = Feeds {
            states,
            captures,
            ..Feeds::default()
        };
        Ok(self.exec.run_with(&node.body, &feeds, self.dims)?.outputs)
    }
}

/// The solver hook: computes the fixed point of an equilibrium node.
pub trait EquilibriumRunner: Send + Sync {
    /// `captures` are the node's captured values; `init` the initial
    /// iterates when the node has them. Returns one tensor per state.
    fn forward(
        &self,
        node: &EqNode,
        captures: &[Tensor],
        init: Option<&[Tensor]>,
        ctx: &EqContext,
    ) -> Result<Vec<Tensor>>;
}

/// The stand-in runner until solvers are plugged in.
pub struct NoSolver;

impl EquilibriumRunner for NoSolver {
    fn forward(
        &self,
        _node: &EqNode,
        _captures: &[Tensor],
        _init: Option<&[Tensor]>,
        ctx: &EqContext,
    ) -> Result<Vec<Tensor>> {
        Err(ExecError::EquilibriumUnsupported { span: ctx.span })
    }
}

/// Runs graphs on one device.
pub struct Executor {
    pub device: Device,
    pub options: ExecOptions,
    runner: Box<dyn EquilibriumRunner>,
}

/// The value of one node while it is live.
enum Slot {
    One(Tensor),
    Many(Vec<Tensor>),
}

impl Slot {
    fn bytes(&self) -> usize {
        match self {
            Slot::One(t) => tensor_bytes(t),
            Slot::Many(ts) => ts.iter().map(tensor_bytes).sum(),
        }
    }
}

/// An equilibrium's captures, each strided view copied into its own
/// layout once per solve: the body reads them on every iteration, and a
/// view would be read through its strides by every product (gemm takes
/// 30% longer on the transposed `w^T` that the DEQ-MLP's adjoint body
/// hoists) or copied by every kernel that reads it.
fn laid_out_once(captures: &[Tensor]) -> candle_core::Result<Vec<Tensor>> {
    captures
        .iter()
        .map(|t| {
            if t.is_contiguous() {
                Ok(t.clone())
            } else {
                t.contiguous()
            }
        })
        .collect()
}

pub fn tensor_bytes(t: &Tensor) -> usize {
    t.elem_count() * t.dtype().size_in_bytes()
}

impl Executor {
    pub fn new(device: Device) -> Executor {
        Executor {
            device,
            options: ExecOptions::default(),
            runner: Box::new(crate::deq::SolverRunner::new()),
        }
    }

    /// A CPU executor computing in f64 (for gradient checks).
    pub fn cpu_f64() -> Executor {
        let mut e = Executor::new(Device::Cpu);
        e.options.float = CDType::F64;
        e
    }

    pub fn with_options(mut self, options: ExecOptions) -> Executor {
        self.options = options;
        self
    }

    pub fn with_runner(mut self, runner: Box<dyn EquilibriumRunner>) -> Executor {
        self.runner = runner;
        self
    }

    /// The candle dtype an IR dtype runs in.
    pub fn dtype(&self, d: DType) -> CDType {
        match d {
            DType::F32 => self.options.float,
            DType::F64 => CDType::F64,
            DType::I64 => CDType::I64,
        }
    }

    /// Bind the graph's symbolic dims from the actual input shapes.
    pub fn bind_inputs(&self, graph: &Graph, inputs: &[Tensor]) -> Result<DimEnv> {
        if inputs.len() != graph.inputs.len() {
            return Err(ExecError::ArgumentCount {
                what: "inputs",
                expected: graph.inputs.len(),
                found: inputs.len(),
            });
        }
        let mut env = DimEnv::new();
        for (inp, t) in graph.inputs.iter().zip(inputs) {
            env.bind_type(&inp.name, &inp.ty, t.dims())?;
        }
        Ok(env)
    }

    /// Run a top-level graph with its parameters and inputs.
    pub fn run(&self, graph: &Graph, params: &[Tensor], inputs: &[Tensor]) -> Result<ExecResult> {
        if params.len() != graph.params.len() {
            return Err(ExecError::ArgumentCount {
                what: "parameters",
                expected: graph.params.len(),
                found: params.len(),
            });
        }
        let env = self.bind_inputs(graph, inputs)?;
        for (p, t) in graph.params.iter().zip(params) {
            let mut check = env.clone();
            check.bind_type(&p.path, &p.ty, t.dims())?;
        }
        let feeds = Feeds {
            params,
            inputs,
            ..Feeds::default()
        };
        self.run_with(graph, &feeds, &env)
    }

    /// Run any graph (a body too) with explicit feeds and dim bindings.
    pub fn run_with(&self, graph: &Graph, feeds: &Feeds, dims: &DimEnv) -> Result<ExecResult> {
        let sched = schedule::schedule_for(graph, dims, self.options.float, self.fuses())?;
        let mut arena = sched.checkout();
        let mut values: Vec<Option<Slot>> = (0..graph.id_bound()).map(|_| None).collect();
        let mut live = 0usize;
        let mut stats = ExecStats::default();
        for (k, step) in sched.steps.iter().enumerate() {
            match step {
                Step::Node(id) => {
                    let slot = {
                        let args: Vec<&Slot> = sched.reads[k]
                            .iter()
                            .map(|o| {
                                values[o.index()].as_ref().ok_or_else(|| {
                                    ExecError::Internal(format!("operand {o} of {id} is not live"))
                                })
                            })
                            .collect::<Result<_>>()?;
                        let shape = sched.shapes.get(id.index()).and_then(|s| s.as_deref());
                        let order = sched.out_orders.get(id).map(Vec::as_slice);
                        self.eval_node(graph, *id, &args, feeds, dims, shape, order)?
                    };
                    stats.nodes_run += 1;
                    live += slot.bytes();
                    values[id.index()] = Some(slot);
                }
                Step::Group(gi) => {
                    let g = sched.group(*gi)?;
                    let lookup = |n: NodeId| tensor_of(&values, n);
                    let _timer = crate::profile::scope(crate::profile::Category::Fused);
                    let started = crate::profile::op_timing().then(std::time::Instant::now);
                    let outs =
                        g.run(&lookup, &mut arena.arena)
                            .map_err(|message| ExecError::Kernel {
                                op: "fused kernel".into(),
                                message,
                                span: g.span(graph),
                            })?;
                    if let Some(t) = started {
                        crate::profile::record_op(describe_group(graph, g, &sched), t.elapsed());
                    }
                    stats.nodes_run += g.members;
                    store(&mut values, &mut live, outs);
                }
                Step::AttentionBackward(bi) => {
                    let b = sched.attention_backward(*bi)?;
                    let lookup = |n: NodeId| tensor_of(&values, n);
                    let _timer = crate::profile::scope(crate::profile::Category::Gemm);
                    let started = crate::profile::op_timing().then(std::time::Instant::now);
                    let order = |n: NodeId| sched.out_orders.get(&n).map(Vec::as_slice);
                    let p = &b.plan;
                    let orders = [order(p.d_values), order(p.d_queries), order(p.d_keys_t)];
                    let outs = b
                        .run(&lookup, orders)
                        .map_err(|message| ExecError::Kernel {
                            op: "fused attention backward".into(),
                            message,
                            span: graph.span(p.d_queries),
                        })?;
                    if let Some(t) = started {
                        crate::profile::record_op(b.describe(), t.elapsed());
                    }
                    stats.nodes_run += 5;
                    store(&mut values, &mut live, outs);
                }
                Step::Attention(ai) => {
                    let a = sched.attention(*ai)?;
                    let lookup = |n: NodeId| tensor_of(&values, n);
                    let _timer = crate::profile::scope(crate::profile::Category::Gemm);
                    let started = crate::profile::op_timing().then(std::time::Instant::now);
                    let order = sched.out_orders.get(&a.plan.mixed).map(Vec::as_slice);
                    let outs = a.run(&lookup, order).map_err(|message| ExecError::Kernel {
                        op: "fused attention".into(),
                        message,
                        span: graph.span(a.plan.mixed),
                    })?;
                    if let Some(t) = started {
                        crate::profile::record_op(a.describe(), t.elapsed());
                    }
                    stats.nodes_run += 3;
                    store(&mut values, &mut live, outs);
                }
            }
            stats.peak_live_bytes = stats.peak_live_bytes.max(live);
            for o in &sched.frees[k] {
                if let Some(v) = values[o.index()].take() {
                    live -= v.bytes();
                }
            }
        }
        stats.buffers_allocated = arena.arena.allocated;
        stats.buffers_reused = arena.arena.reused;
        let outputs = graph
            .outputs()
            .iter()
            .map(|o| match &values[o.index()] {
                Some(Slot::One(t)) => Ok(t.clone()),
                _ => Err(ExecError::Internal(format!("output {o} has no tensor"))),
            })
            .collect::<Result<_>>()?;
        Ok(ExecResult { outputs, stats })
    }

    /// Whether this executor runs fusion groups as compiled kernels.
    fn fuses(&self) -> bool {
        self.options.fuse
            && crate::jit::available()
            && matches!(self.device, Device::Cpu)
            && matches!(self.options.float, CDType::F32 | CDType::F64)
    }

    /// `out_order`: the permutation the node's users apply to its result
    /// ([`schedule::Schedule`]'s `out_orders`), for a matrix product.
    #[allow(clippy::too_many_arguments)]
    fn eval_node<'s>(
        &self,
        graph: &Graph,
        id: NodeId,
        args: &[&Slot],
        feeds: &Feeds,
        dims: &DimEnv,
        shape: Option<&'s [usize]>,
        out_order: Option<&[usize]>,
    ) -> Result<Slot> {
        let node = graph.node(id);
        let span = graph.span(id);
        let tensors = |k: usize| -> Result<&Tensor> {
            match args.get(k) {
                Some(Slot::One(t)) => Ok(t),
                _ => Err(ExecError::Internal(format!(
                    "operand {k} of {id} is a tuple"
                ))),
            }
        };
        // The schedule resolved the shape; when it could not, say why.
        let resolved = |s: Option<&'s [usize]>| -> Result<std::borrow::Cow<'s, [usize]>> {
            match s {
                Some(s) => Ok(std::borrow::Cow::Borrowed(s)),
                None => Ok(std::borrow::Cow::Owned(dims.shape(&node.ty.shape, span)?)),
            }
        };
        let kernel_err = |e: candle_core::Error| ExecError::Kernel {
            op: node.op.name().to_string(),
            message: e.to_string(),
            span,
        };
        let feed = |list: &[Tensor], i: usize, what: &'static str| -> Result<Slot> {
            let t = list.get(i).ok_or(ExecError::ArgumentCount {
                what,
                expected: i + 1,
                found: list.len(),
            })?;
            let want = resolved(shape)?;
            if t.dims() != &*want {
                return Err(ExecError::Kernel {
                    op: node.op.name().to_string(),
                    message: format!("expected shape {want:?}, got {:?}", t.dims()),
                    span,
                });
            }
            let t = t
                .to_device(&self.device)
                .and_then(|t| t.to_dtype(self.dtype(node.ty.dtype)))
                .map_err(kernel_err)?;
            Ok(Slot::One(t))
        };
        // Sources and equilibria are evaluated here; every other op by the
        // kernels' exhaustive match.
        if let Op::Input(i) = &node.op {
            return feed(feeds.inputs, *i, "inputs");
        }
        if let Op::Param(i) = &node.op {
            return feed(feeds.params, *i, "parameters");
        }
        if let Op::State(i) = &node.op {
            return feed(feeds.states, *i, "states");
        }
        if let Op::Capture(i) = &node.op {
            return feed(feeds.captures, *i, "captures");
        }
        if let Op::Equilibrium(eq) = &node.op {
            let all: Vec<Tensor> = (0..args.len())
                .map(|k| tensors(k).cloned())
                .collect::<Result<_>>()?;
            let (caps, init) = all.split_at(eq.num_captures().min(all.len()));
            let caps = laid_out_once(caps).map_err(kernel_err)?;
            let caps = caps.as_slice();
            let ctx = EqContext {
                exec: self,
                dims,
                span,
            };
            let init = (!init.is_empty()).then_some(init);
            let out = self.runner.forward(eq, caps, init, &ctx)?;
            if out.len() != eq.num_states() {
                return Err(ExecError::Equilibrium {
                    message: format!(
                        "the solver returned {} tensors for {} states",
                        out.len(),
                        eq.num_states()
                    ),
                    span,
                });
            }
            return Ok(Slot::Many(out));
        }
        if let Op::Project(i) = &node.op {
            return match args.first() {
                Some(Slot::Many(ts)) => ts
                    .get(*i)
                    .cloned()
                    .map(Slot::One)
                    .ok_or_else(|| ExecError::Internal("project out of range".into())),
                _ => Err(ExecError::Internal("project of a non-tuple".into())),
            };
        }
        let ts: Vec<&Tensor> = (0..args.len()).map(tensors).collect::<Result<_>>()?;
        let out_shape = resolved(shape)?;
        let ctx = kernels::KernelCtx {
            device: &self.device,
            dtype: self.dtype(node.ty.dtype),
            out_shape: &out_shape,
            dims,
            span,
            options: &self.options,
            node_index: id.index(),
            out_order,
        };
        let t = kernels::eval(&node.op, &ts, &ctx).map_err(|e| match e {
            ExecError::KernelLibrary(mut f) => {
                f.declared.get_or_insert_with(|| node.ty.to_string());
                ExecError::KernelLibrary(f)
            }
            other => other,
        })?;
        if t.dims() != &*out_shape {
            return Err(ExecError::Kernel {
                op: node.op.name().to_string(),
                message: format!(
                    "produced shape {:?} where {out_shape:?} was expected",
                    t.dims()
                ),
                span,
            });
        }
        Ok(Slot::One(t))
    }
}

/// The tensor of a live single value.
fn tensor_of(values: &[Option<Slot>], n: NodeId) -> Option<Tensor> {
    match &values[n.index()] {
        Some(Slot::One(t)) => Some(t.clone()),
        _ => None,
    }
}

/// Keep the outputs of a fused step (a kernel, an attention) as values,
/// counting their bytes as live.
fn store(values: &mut [Option<Slot>], live: &mut usize, outs: Vec<(NodeId, Tensor)>) {
    for (n, t) in outs {
        let slot = Slot::One(t);
        *live += slot.bytes();
        values[n.index()] = Some(slot);
    }
}

/// A fused kernel for `deqc bench --ops`: its outputs' ops and the shape of
/// the first.
fn describe_group(graph: &Graph, g: &fused::BoundGroup, sched: &schedule::Schedule) -> String {
    let outputs = g.output_levels();
    let names: Vec<&str> = outputs.iter().map(|(n, _)| graph.op(*n).name()).collect();
    let shape = outputs
        .first()
        .and_then(|(n, _)| sched.shapes.get(n.index()).cloned().flatten())
        .map(|s| format!("{s:?}"))
        .unwrap_or_default();
    format!("kernel ({}) {shape}", names.join(", "))
}
