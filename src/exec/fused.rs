//! Fused execution: fusion groups bound to concrete shapes and run as
//! compiled kernels on the CPU.
//!
//! Owns [`BoundPlan`] (a graph's [`fuse::Plan`] for one set of dim values:
//! each group lowered to a [`Kernel`], compiled, with per-row offsets of its
//! inputs) and [`BoundGroup::run`] (in `run`). Guarantees:
//! - a group that cannot be lowered or compiled runs as plain nodes, never
//!   fails the run;
//! - inputs are read in place when contiguous; an input broadcast in a way a
//!   row cannot express (mixed broadcast and dense axes inside the row) is
//!   materialized first;
//! - rows are split over threads (rayon's pool, the one candle computes on)
//!   only when the kernel is large enough to pay for it
//!   ([`PARALLEL_ELEMENTS`]), one split per kernel; a group without
//!   reductions and with one long row is split along the row instead;
//! - an output given a buffer by the schedule ([`BoundGroup::set_buffer`])
//!   is written into that buffer of the run's
//!   [`Arena`](super::schedule::Arena) (allocated on first
//!   use, then reused), under candle's write lock of its storage; the others
//!   get new storage.

use std::collections::HashSet;

use candle_core::DType as CDType;

use crate::ir::{Cmp, Graph, NodeId, Op, ReduceOp};
use crate::jit::strip::{Func, RowFunc};
use crate::jit::{
    self, Binary, Compiled, InputKind, Inst, KType, KValue, Kernel, Level, RowReduce,
};
use crate::passes::fuse::{self, Role, Step};

use super::attention::{BoundAttention, BoundBackward};
use super::DimEnv;

/// Elements (rows × row length) from which a kernel runs on several threads.
pub const PARALLEL_ELEMENTS: usize = 1 << 15;

/// How one kernel input is read.
#[derive(Debug)]
struct BoundInput {
    node: NodeId,
    /// The node's shape.
    shape: Vec<usize>,
    /// The shape it is broadcast to (materialized first when `expand`).
    target: Vec<usize>,
    expand: bool,
    kind: InputKind,
    /// Element offset of each row's start.
    offsets: Vec<usize>,
}

/// One group, ready to run.
#[derive(Debug)]
pub struct BoundGroup {
    compiled: CompiledRef,
    ty: KType,
    rows: usize,
    len: usize,
    inputs: Vec<BoundInput>,
    /// Kernel outputs: node, shape, level.
    outputs: Vec<(NodeId, Vec<usize>, Level)>,
    /// Distinct input nodes (for liveness).
    pub input_nodes: Vec<NodeId>,
    pub members: usize,
    /// The transcendental (strip) functions the kernel calls, in order.
    pub strips: Vec<Func>,
    /// The arena buffer of each output, when the schedule gave it one.
    buffers: Vec<Option<usize>>,
}

impl BoundGroup {
    /// The span of the group's first output (for errors).
    pub fn span(&self, g: &Graph) -> Option<crate::source::Span> {
        self.outputs.first().and_then(|(n, _, _)| g.span(*n))
    }

    /// Each output node and its level.
    pub fn output_levels(&self) -> Vec<(NodeId, Level)> {
        self.outputs.iter().map(|(n, _, lv)| (*n, *lv)).collect()
    }

    /// Elements of a full-level output, and of a row-level one.
    pub fn elements(&self) -> (usize, usize) {
        (self.rows * self.len, self.rows)
    }

    pub fn ty(&self) -> KType {
        self.ty
    }

    /// Write output `j` into arena buffer `b` (the schedule's choice).
    pub fn set_buffer(&mut self, j: usize, b: usize) {
        if let Some(slot) = self.buffers.get_mut(j) {
            *slot = Some(b);
        }
    }
}

#[derive(Clone, Copy)]
struct CompiledRef(Compiled);

impl std::fmt::Debug for CompiledRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "compiled kernel")
    }
}

/// A graph's fused schedule for one set of dims.
#[derive(Debug)]
pub struct BoundPlan {
    pub steps: Vec<Step>,
    pub groups: Vec<Option<BoundGroup>>,
    /// The attentions that bound (the others run as their three steps).
    pub attentions: Vec<Option<BoundAttention>>,
    /// Their backward passes that bound (the others run as their five).
    pub backwards: Vec<Option<BoundBackward>>,
}

impl BoundPlan {
    /// Plan `g`, bind every group to `dims`, and compile the kernels;
    /// `float` is the runtime type of IR f32 values.
    pub fn new(g: &Graph, dims: &DimEnv, float: CDType) -> BoundPlan {
        let plan = fuse::plan(g);
        let mut groups = Vec::new();
        for grp in &plan.groups {
            groups.push(bind(g, grp, dims, float).ok());
        }
        let attentions: Vec<Option<BoundAttention>> = plan
            .attentions
            .iter()
            .map(|a| BoundAttention::new(g, a, dims, float).ok())
            .collect();
        let backwards: Vec<Option<BoundBackward>> = plan
            .backwards
            .iter()
            .map(|b| {
                let a = &plan.attentions[b.forward];
                let ty = super::attention::kind(g.ty(a.weights).dtype, float)?;
                BoundBackward::new(g, b, a, dims, ty).ok()
            })
            .collect();
        // Attentions that did not bind run as their steps, and groups that
        // did not bind as their members, in order.
        let mut unfused = Vec::with_capacity(plan.steps.len());
        for s in plan.steps {
            match s {
                Step::Attention(ai) if attentions[ai].is_none() => {
                    unfused.extend(plan.attentions[ai].unfused());
                }
                Step::AttentionBackward(bi) if backwards[bi].is_none() => {
                    unfused.extend(plan.backwards[bi].unfused.iter().copied());
                }
                other => unfused.push(other),
            }
        }
        let mut steps = Vec::with_capacity(unfused.len());
        for s in unfused {
            match s {
                Step::Group(gi) if groups[gi].is_none() => {
                    steps.extend(plan.groups[gi].members.iter().map(|(m, _)| Step::Node(*m)));
                }
                other => steps.push(other),
            }
        }
        BoundPlan {
            steps,
            groups,
            attentions,
            backwards,
        }
    }

    /// Kernels that bound (for reports and tests).
    pub fn kernel_count(&self) -> usize {
        self.groups.iter().filter(|g| g.is_some()).count()
    }
}

fn ktype(g: &Graph, id: NodeId, float: CDType) -> Option<KType> {
    let t = match g.ty(id).dtype {
        crate::sema::hir::DType::F32 => float,
        crate::sema::hir::DType::F64 => CDType::F64,
        crate::sema::hir::DType::I64 => return None,
    };
    match t {
        CDType::F32 => Some(KType::F32),
        CDType::F64 => Some(KType::F64),
        _ => None,
    }
}

/// Lowers members to kernel instructions.
struct Lowering<'a> {
    g: &'a Graph,
    dims: &'a DimEnv,
    insts: Vec<Inst>,
    value: std::collections::HashMap<NodeId, KValue>,
    input_value: std::collections::HashMap<(NodeId, Vec<usize>), KValue>,
    inputs: Vec<(NodeId, Vec<usize>, Level)>,
    /// Read a broadcast made outside the group from its source.
    through_broadcasts: bool,
    /// Every instruction pushed so far, by its text: an instruction that is
    /// already there is not computed twice (instructions are pure).
    pushed: std::collections::HashMap<String, KValue>,
}

impl Lowering<'_> {
    fn push(&mut self, i: Inst) -> KValue {
        let key = format!("{i:?}");
        if let Some(v) = self.pushed.get(&key) {
            return *v;
        }
        self.insts.push(i);
        let v = self.insts.len() - 1;
        self.pushed.insert(key, v);
        v
    }

    /// Whether every step of [`Self::gelu`] up to its `sigmoid` is already
    /// there (the group computes GELU's derivative at `x`).
    fn gelu_derivative_present(&self, x: KValue) -> bool {
        gelu_sigmoid(x, &mut |i| self.pushed.get(&format!("{i:?}")).copied()).is_some()
    }

    /// `x σ(2c (x + k x³))` built with the steps, in the order, of GELU's
    /// derivative in `autodiff::vjp`: in a kernel that also computes the
    /// derivative, [`Self::push`] finds every step already there, and the
    /// kernel calls one transcendental (`sigmoid`) where it called two
    /// (`gelu` and `sigmoid`).
    fn gelu(&mut self, x: KValue) -> Result<KValue, String> {
        let mut push = |i| Some(self.push(i));
        let s = gelu_sigmoid(x, &mut push).ok_or("GELU's steps")?;
        Ok(self.push(Inst::Binary(Binary::Mul, x, s)))
    }

    /// The value of operand `o` read by a member of shape `target`.
    fn operand(&mut self, o: NodeId, target: &[usize], level: Level) -> Result<KValue, String> {
        if let Some(v) = self.value.get(&o) {
            return Ok(*v);
        }
        if let Op::Const(c) = self.g.op(o) {
            return Ok(self.push(Inst::Const(*c)));
        }
        // A broadcast made outside the group is read from its source: the
        // kernel broadcasts as it reads, where the view would be copied
        // whole first (one thread, a full-size write and read). Broadcasts
        // compose, so the source broadcasts to `target` as the view did.
        if let (true, Op::BroadcastTo { .. }) = (self.through_broadcasts, self.g.op(o)) {
            if let [source] = self.g.operands(o)[..] {
                return self.operand(source, target, level);
            }
        }
        let key = (o, target.to_vec());
        if let Some(v) = self.input_value.get(&key) {
            return Ok(*v);
        }
        let idx = self.inputs.len();
        self.inputs.push((o, target.to_vec(), level));
        let v = self.push(Inst::Input(idx));
        self.input_value.insert(key, v);
        Ok(v)
    }

    /// Whether `v` has a value per element (not one per row).
    fn is_full(&self, v: KValue) -> bool {
        let levels = jit::levels_of(&self.insts, |i| {
            self.inputs.get(i).map_or(Level::Row, |x| x.2)
        });
        levels.get(v) == Some(&Level::Full)
    }

    fn shape(&self, id: NodeId) -> Result<Vec<usize>, String> {
        self.dims
            .shape(&self.g.ty(id).shape, None)
            .map_err(|e| e.to_string())
    }
}

/// `σ(2c (x + k x³))`, GELU's inner `sigmoid`, as the steps of its
/// derivative in `autodiff::vjp` take it, each instruction given to `step`
/// (which pushes it, or looks it up); `None` once a step gives none.
fn gelu_sigmoid(x: KValue, step: &mut dyn FnMut(Inst) -> Option<KValue>) -> Option<KValue> {
    use crate::autodiff::vjp::{GELU_C, GELU_K};
    let x2 = step(Inst::Binary(Binary::Mul, x, x))?;
    let x3 = step(Inst::Binary(Binary::Mul, x2, x))?;
    let k = step(Inst::Const(GELU_K))?;
    let kx3 = step(Inst::Binary(Binary::Mul, x3, k))?;
    let inner = step(Inst::Binary(Binary::Add, x, kx3))?;
    let c = step(Inst::Const(2.0 * GELU_C))?;
    let two_u = step(Inst::Binary(Binary::Mul, inner, c))?;
    step(Inst::Unary(jit::Unary::Strip(Func::Sigmoid), two_u))
}

/// `m = max(x)`, then the sum of `exp(x - m')` where `m'` is `m`, or 0 for
/// an all `-inf` row when `guard`: (m', sum, x - m').
fn exp_sum(l: &mut Lowering, x: KValue, guard: bool) -> (KValue, KValue, KValue, KValue) {
    let m = l.push(Inst::Reduce(RowReduce::Max, x));
    let m = if guard {
        let ninf = l.push(Inst::Const(f64::NEG_INFINITY));
        let finite = l.push(Inst::Binary(Binary::Cmp(Cmp::Ne), m, ninf));
        let zero = l.push(Inst::Const(0.0));
        l.push(Inst::Select(finite, m, zero))
    } else {
        m
    };
    let d = l.push(Inst::Binary(Binary::Sub, x, m));
    let e = l.push(Inst::Unary(jit::Unary::Strip(Func::Exp), d));
    let s = l.push(Inst::Reduce(RowReduce::Sum, e));
    (m, s, d, e)
}

/// Bind reading broadcasts from their sources, or, where that leaves an
/// output or a reduction without a value per element (every operand of a
/// full-shape member was such a source), reading the broadcast views. A
/// group that reads no broadcast binds once.
fn bind(g: &Graph, grp: &fuse::Group, dims: &DimEnv, float: CDType) -> Result<BoundGroup, String> {
    let reads_broadcast = grp.members.iter().any(|(m, _)| {
        g.operands(*m)
            .iter()
            .any(|o| matches!(g.op(*o), Op::BroadcastTo { .. }))
    });
    if !reads_broadcast {
        return bind_with(g, grp, dims, float, false);
    }
    bind_with(g, grp, dims, float, true).or_else(|_| bind_with(g, grp, dims, float, false))
}

/// The group's members lowered to kernel instructions, with the GELUs
/// in `expand` in their tanh form; also each GELU lowered as a strip call,
/// with its operand.
fn lower_members<'a>(
    g: &'a Graph,
    grp: &fuse::Group,
    dims: &'a DimEnv,
    full: &[usize],
    len: usize,
    through_broadcasts: bool,
    expand: &HashSet<NodeId>,
) -> Result<(Lowering<'a>, Vec<(NodeId, KValue)>), String> {
    let mut l = Lowering {
        g,
        dims,
        insts: Vec::new(),
        value: Default::default(),
        input_value: Default::default(),
        inputs: Vec::new(),
        through_broadcasts,
        pushed: Default::default(),
    };
    let mut gelu_sites = Vec::new();
    for (m, level) in &grp.members {
        let ops = g.operands(*m);
        let shape = l.shape(*m)?;
        let arg = |l: &mut Lowering, k: usize, lv: Level| -> Result<KValue, String> {
            let o = *ops.get(k).ok_or("missing operand")?;
            let target = if lv == Level::Full {
                full.to_vec()
            } else {
                shape.clone()
            };
            l.operand(o, &target, lv)
        };
        let v = match fuse::role(g.op(*m)) {
            Role::Unary(jit::Unary::Strip(Func::Gelu)) if expand.contains(m) => {
                let a = arg(&mut l, 0, *level)?;
                l.gelu(a)?
            }
            Role::Unary(jit::Unary::Strip(Func::Gelu)) => {
                let a = arg(&mut l, 0, *level)?;
                gelu_sites.push((*m, a));
                l.push(Inst::Unary(jit::Unary::Strip(Func::Gelu), a))
            }
            Role::Unary(u) => {
                let a = arg(&mut l, 0, *level)?;
                l.push(Inst::Unary(u, a))
            }
            Role::Binary(b) => {
                let a = arg(&mut l, 0, *level)?;
                let c = arg(&mut l, 1, *level)?;
                let per_row = |n: NodeId| grp.members.contains(&(n, Level::Row));
                match (b, &l.insts[c]) {
                    // A division by a per-row square root (LayerNorm's
                    // standard deviation): one division per row, then a
                    // product per element. The reciprocal of a square
                    // root is never subnormal nor overflows, so this is
                    // the quotient to rounding, and 0, inf and NaN come
                    // out as from the division.
                    (Binary::Div, Inst::Unary(jit::Unary::Sqrt, _))
                        if *level == Level::Full && ops.get(1).is_some_and(|n| per_row(*n)) =>
                    {
                        let one = l.push(Inst::Const(1.0));
                        let r = l.push(Inst::Binary(Binary::Div, one, c));
                        l.push(Inst::Binary(Binary::Mul, a, r))
                    }
                    _ => l.push(Inst::Binary(b, a, c)),
                }
            }
            Role::Select => {
                let mk = arg(&mut l, 0, *level)?;
                let a = arg(&mut l, 1, *level)?;
                let b = arg(&mut l, 2, *level)?;
                l.push(Inst::Select(mk, a, b))
            }
            Role::Cast => arg(&mut l, 0, *level)?,
            Role::Reduce { op, .. } => {
                let x = arg(&mut l, 0, Level::Full)?;
                match op {
                    ReduceOp::Sum => l.push(Inst::Reduce(RowReduce::Sum, x)),
                    ReduceOp::Max => l.push(Inst::Reduce(RowReduce::Max, x)),
                    ReduceOp::Min => l.push(Inst::Reduce(RowReduce::Min, x)),
                    ReduceOp::Mean => {
                        let s = l.push(Inst::Reduce(RowReduce::Sum, x));
                        let c = l.push(Inst::Const(1.0 / len as f64));
                        l.push(Inst::Binary(Binary::Mul, s, c))
                    }
                    ReduceOp::LogSumExp => {
                        let (m, s, _, _) = exp_sum(&mut l, x, true);
                        let lg = l.push(Inst::Unary(jit::Unary::Strip(Func::Log), s));
                        l.push(Inst::Binary(Binary::Add, lg, m))
                    }
                }
            }
            Role::Softmax { log, .. } => {
                let x = arg(&mut l, 0, Level::Full)?;
                // A softmax the kernel outputs is one call of the row
                // function per row, at the vector width of the machine.
                if !log && grp.outputs.contains(m) && l.is_full(x) {
                    let v = l.push(Inst::RowFn(RowFunc::Softmax, x));
                    l.value.insert(*m, v);
                    continue;
                }
                let (_, s, d, e) = exp_sum(&mut l, x, false);
                if log {
                    let lg = l.push(Inst::Unary(jit::Unary::Strip(Func::Log), s));
                    l.push(Inst::Binary(Binary::Sub, d, lg))
                } else {
                    // One division per row, then a product per element:
                    // the sum is at least 1 (its largest term is
                    // `exp(0)`), so its reciprocal is a normal number.
                    let one = l.push(Inst::Const(1.0));
                    let r = l.push(Inst::Binary(Binary::Div, one, s));
                    l.push(Inst::Binary(Binary::Mul, e, r))
                }
            }
            Role::Const(_) | Role::Boundary => return Err("not a fusible member".into()),
        };
        l.value.insert(*m, v);
    }
    Ok((l, gelu_sites))
}

fn bind_with(
    g: &Graph,
    grp: &fuse::Group,
    dims: &DimEnv,
    float: CDType,
    through_broadcasts: bool,
) -> Result<BoundGroup, String> {
    let first = grp.members.first().ok_or("an empty group")?.0;
    let ty = ktype(g, first, float).ok_or("not a float group")?;
    let full = dims.shape(&grp.shape, None).map_err(|e| e.to_string())?;
    // With reductions the split is the reduced axes' start (and `len`, the
    // count a mean divides by, is known now); without, it is chosen below.
    let len: usize = full[grp.split.unwrap_or(0).min(full.len())..]
        .iter()
        .product();
    let lower = |expand: &HashSet<NodeId>| {
        lower_members(g, grp, dims, &full, len, through_broadcasts, expand)
    };
    // GELU whose derivative the group also computes shares its `sigmoid`
    // (see `Lowering::gelu`); elsewhere the `gelu` strip is faster than
    // its steps at cranelift's vector width.
    let (mut l, gelu_sites) = lower(&HashSet::new())?;
    let shared: HashSet<NodeId> = gelu_sites
        .iter()
        .filter(|(_, x)| l.gelu_derivative_present(*x))
        .map(|(m, _)| *m)
        .collect();
    if !shared.is_empty() {
        l = lower(&shared)?.0;
    }
    let mut outputs = Vec::new();
    let mut out_values = Vec::new();
    for o in &grp.outputs {
        let level = grp
            .members
            .iter()
            .find(|(m, _)| m == o)
            .map(|(_, lv)| *lv)
            .ok_or("an output is not a member")?;
        out_values.push(*l.value.get(o).ok_or("an output has no value")?);
        outputs.push((*o, l.shape(*o)?, level));
    }
    let mut shapes = Vec::new();
    for (node, _, _) in &l.inputs {
        if ktype(g, *node, float) != Some(ty) {
            return Err("an input of another type".into());
        }
        shapes.push(l.shape(*node)?);
    }
    let split = match grp.split {
        Some(s) => s.min(full.len()),
        None => choose_split(&full, &shapes),
    };
    let rows: usize = full[..split].iter().product();
    let len: usize = full[split..].iter().product();
    let mut kinds = Vec::new();
    let mut inputs = Vec::new();
    for ((node, target, level), shape) in l.inputs.iter().zip(shapes) {
        let (kind, expand) = match level {
            Level::Row => (InputKind::Scalar, false),
            Level::Full => classify(&shape, target, split),
        };
        let read = if expand {
            target.clone()
        } else {
            shape.clone()
        };
        inputs.push(BoundInput {
            node: *node,
            offsets: row_offsets(&read, target, split, rows),
            shape,
            target: target.clone(),
            expand,
            kind,
        });
        kinds.push(kind);
    }
    let kernel = Kernel {
        ty,
        inputs: kinds,
        insts: l.insts,
        outputs: out_values,
    };
    // A full-shape output must get a value per element (the kernel stores
    // one per row for a per-row value).
    let levels = kernel.levels();
    for (v, (_, _, level)) in kernel.outputs.iter().zip(&outputs) {
        if *level == Level::Full && levels[*v] != Level::Full {
            return Err("a full output computed from per-row values only".into());
        }
    }
    let strips = kernel
        .insts
        .iter()
        .filter_map(|i| match i {
            Inst::Unary(u, _) => u.strip(),
            _ => None,
        })
        .collect();
    let compiled = jit::compile(&kernel)?;
    let mut input_nodes: Vec<NodeId> = Vec::new();
    for i in &inputs {
        if !input_nodes.contains(&i.node) {
            input_nodes.push(i.node);
        }
    }
    Ok(BoundGroup {
        compiled: CompiledRef(compiled),
        ty,
        rows,
        len,
        inputs,
        outputs,
        input_nodes,
        members: grp.members.len(),
        strips,
        buffers: vec![None; grp.outputs.len()],
    })
}

/// The first axis of the row for a group without reductions: the smallest
/// one at which every input is read in place (consecutive or one value per
/// row), so rows are as long as possible without copying an input.
fn choose_split(full: &[usize], shapes: &[Vec<usize>]) -> usize {
    (0..=full.len())
        .find(|&k| shapes.iter().all(|s| !classify(s, full, k).1))
        .unwrap_or(full.len())
}

/// `shape` right-aligned to `target`, padded with ones.
fn padded(shape: &[usize], target: &[usize]) -> Vec<usize> {
    let lead = target.len().saturating_sub(shape.len());
    let mut p = vec![1; lead];
    p.extend_from_slice(shape);
    p
}

/// How a full-level input is read along the row: consecutive (`Row`), one
/// value (`Scalar`), or consecutive after materializing (`expand`).
fn classify(shape: &[usize], target: &[usize], split: usize) -> (InputKind, bool) {
    let p = padded(shape, target);
    let (mut dense, mut bcast) = (false, false);
    for a in split..target.len() {
        if target[a] == 1 {
            continue;
        }
        if p[a] == target[a] {
            dense = true;
        } else {
            bcast = true;
        }
    }
    match (dense, bcast) {
        (true, true) => (InputKind::Row, true),
        (false, true) => (InputKind::Scalar, false),
        (_, false) => (InputKind::Row, false),
    }
}

/// Element offset of each row's start in a contiguous tensor of `shape`
/// broadcast to `target` (rows: the leading `split` axes).
fn row_offsets(shape: &[usize], target: &[usize], split: usize, rows: usize) -> Vec<usize> {
    let p = padded(shape, target);
    let mut strides = vec![0usize; p.len()];
    let mut acc = 1;
    for a in (0..p.len()).rev() {
        strides[a] = if p[a] == 1 { 0 } else { acc };
        acc *= p[a];
    }
    let lead = &target[..split.min(target.len())];
    let mut out = Vec::with_capacity(rows);
    let mut idx = vec![0usize; lead.len()];
    for _ in 0..rows {
        out.push(idx.iter().zip(&strides).map(|(i, s)| i * s).sum());
        for a in (0..lead.len()).rev() {
            idx[a] += 1;
            if idx[a] < lead[a] {
                break;
            }
            idx[a] = 0;
        }
    }
    out
}

mod run;
