//! The planned executor's schedule: for one graph and one set of dim values,
//! computed once and replayed by every run.
//!
//! Owns [`Schedule`] (the order of steps, plain nodes and fused kernels;
//! what each step reads; which values die after it; every node's resolved
//! shape; which kernel outputs go into reused buffers), the process-wide
//! cache of schedules ([`schedule_for`]) and the [`Arena`]s of reused
//! buffers. Guarantees:
//! - a schedule is built once per (graph [`Stamp`], dim values, float type,
//!   fused or plain) and replayed: a solver evaluating its body every
//!   iteration, or a training loop running its step graph every step (with a
//!   new `Executor` each time), neither re-plans nor re-hashes the graph; the
//!   key is the graph's stamp, which changes whenever its contents do;
//! - a kernel output is written into a reused buffer only when it is not a
//!   graph output and every step that reads it leaves nothing pointing at it
//!   (another kernel, or a library op whose result is new storage:
//!   [`result_is_new_storage`]); two such outputs share a buffer only when
//!   their lifetimes do not overlap, so a buffer is never overwritten while
//!   a value in it is still to be read;
//! - arenas are checked out for the length of one run, so nested or
//!   concurrent runs of the same graph each write their own buffers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType as CDType, Device, Tensor};

use crate::ir::op_groups::{
    binary_math_ops, constructor_ops, equilibrium_ops, layout_ops, network_adjoint_ops,
    network_ops, source_ops, unary_math_ops,
};
use crate::ir::{Graph, NodeId, Op, Stamp};
use crate::jit::{KType, Level};
use crate::passes::fuse::Step;

use super::fused::BoundPlan;
use super::{DimEnv, ExecError, Result};

/// A graph's schedule for one set of dim values.
#[derive(Debug)]
pub struct Schedule {
    pub(super) steps: Vec<Step>,
    /// The values each step reads (operands in slot order; a kernel's
    /// distinct inputs).
    pub(super) reads: Vec<Vec<NodeId>>,
    /// The values dropped after each step: read for the last time, or
    /// never read (graph outputs are kept).
    pub(super) frees: Vec<Vec<NodeId>>,
    /// Each node's resolved shape (by node index), `None` when a dim is not
    /// bound (the node reports it when it runs).
    pub(super) shapes: Vec<Option<Vec<usize>>>,
    pub(super) fused: Option<BoundPlan>,
    /// For each matrix product whose only user permutes it (or a chain of
    /// permutations does), the composed permutation: the product stores its
    /// result in that order, so the permuted view needs no copy.
    pub(super) out_orders: HashMap<NodeId, Vec<usize>>,
    /// Buffers of reused kernel outputs: type and element count.
    buffers: Vec<(KType, usize)>,
    /// Arenas not in use by a run.
    idle: Mutex<Vec<Arena>>,
}

/// The reused buffers of one run of a schedule.
#[derive(Debug, Default)]
pub struct Arena {
    buffers: Vec<Option<Tensor>>,
    /// Buffers this arena allocated during the current run.
    pub(super) allocated: usize,
    /// Kernel outputs written into a buffer that already existed.
    pub(super) reused: usize,
}

impl Arena {
    /// Buffer `b` (`elements` long, of type `ty`), allocated on first use.
    pub(super) fn buffer(
        &mut self,
        b: usize,
        ty: KType,
        elements: usize,
    ) -> std::result::Result<Tensor, String> {
        if self.buffers.len() <= b {
            self.buffers.resize(b + 1, None);
        }
        if let Some(t) = &self.buffers[b] {
            self.reused += 1;
            return Ok(t.clone());
        }
        let dtype = match ty {
            KType::F32 => CDType::F32,
            KType::F64 => CDType::F64,
        };
        let t = Tensor::zeros(elements, dtype, &Device::Cpu).map_err(|e| e.to_string())?;
        self.allocated += 1;
        self.buffers[b] = Some(t.clone());
        Ok(t)
    }
}

/// An arena checked out of a schedule; returned to it when dropped.
pub struct CheckedOut<'a> {
    schedule: &'a Schedule,
    pub(super) arena: Arena,
}

impl Drop for CheckedOut<'_> {
    fn drop(&mut self) {
        let mut arena = std::mem::take(&mut self.arena);
        arena.allocated = 0;
        arena.reused = 0;
        if let Ok(mut idle) = self.schedule.idle.lock() {
            idle.push(arena);
        }
    }
}

impl Schedule {
    /// The step order and liveness of `graph` for `dims`, fused (kernels
    /// bound for `float`) when `fuse`.
    pub fn new(graph: &Graph, dims: &DimEnv, float: CDType, fuse: bool) -> Result<Schedule> {
        let fused = fuse.then(|| BoundPlan::new(graph, dims, float));
        let steps: Vec<Step> = match &fused {
            Some(p) => p.steps.clone(),
            None => graph
                .try_topo_order()
                .ok_or_else(|| ExecError::Internal("the graph has a cycle".into()))?
                .into_iter()
                .map(Step::Node)
                .collect(),
        };
        let bound = graph.id_bound();
        let mut reads = Vec::with_capacity(steps.len());
        let mut last_read = vec![None::<usize>; bound];
        for (k, s) in steps.iter().enumerate() {
            let r = match s {
                Step::Node(id) => graph.operands(*id),
                Step::Group(gi) => group_of(&fused, *gi)?.input_nodes.clone(),
                Step::Attention(ai) => attention_of(&fused, *ai)?.plan.reads(),
                Step::AttentionBackward(bi) => {
                    let b = backward_of(&fused, *bi)?;
                    b.plan.reads(&b.forward)
                }
            };
            for o in &r {
                last_read[o.index()] = Some(k);
            }
            reads.push(r);
        }
        let mut is_output = vec![false; bound];
        for o in graph.outputs() {
            is_output[o.index()] = true;
        }
        let mut frees: Vec<Vec<NodeId>> = vec![Vec::new(); steps.len()];
        for (k, s) in steps.iter().enumerate() {
            for n in produced(s, &fused)? {
                if is_output[n.index()] {
                    continue;
                }
                let at = last_read[n.index()].unwrap_or(k);
                frees[at].push(n);
            }
        }
        let mut shapes = vec![None; bound];
        for id in graph.node_ids() {
            shapes[id.index()] = dims.shape(&graph.ty(id).shape, None).ok();
        }
        let out_orders = steps
            .iter()
            .filter_map(|s| match s {
                Step::Node(id) if matches!(graph.op(*id), Op::MatMul) => {
                    user_permutation(graph, *id).map(|o| (*id, o))
                }
                Step::Attention(ai) => {
                    let mixed = attention_of(&fused, *ai).ok()?.plan.mixed;
                    user_permutation(graph, mixed).map(|o| (mixed, o))
                }
                _ => None,
            })
            .chain(steps.iter().flat_map(|s| {
                match s {
                    Step::AttentionBackward(bi) => backward_of(&fused, *bi)
                        .map(|b| b.plan.produces())
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|n| user_permutation(graph, n).map(|o| (n, o)))
                        .collect(),
                    _ => Vec::new(),
                }
            }))
            .collect();
        let mut schedule = Schedule {
            steps,
            reads,
            frees,
            shapes,
            fused,
            out_orders,
            buffers: Vec::new(),
            idle: Mutex::new(Vec::new()),
        };
        schedule.assign_buffers(graph, &is_output);
        Ok(schedule)
    }

    /// Give every kernel output that nothing keeps a buffer, sharing buffers
    /// between values whose lifetimes do not overlap.
    fn assign_buffers(&mut self, graph: &Graph, is_output: &[bool]) {
        let Some(plan) = self.fused.as_mut() else {
            return;
        };
        // Which values are read only by steps that keep nothing of them.
        let mut released = vec![true; graph.id_bound()];
        for (s, r) in self.steps.iter().zip(&self.reads) {
            let keeps = match s {
                Step::Node(id) => !result_is_new_storage(graph.op(*id)),
                Step::Group(_) | Step::Attention(_) | Step::AttentionBackward(_) => false,
            };
            if keeps {
                for o in r {
                    released[o.index()] = false;
                }
            }
        }
        let mut holder: HashMap<NodeId, usize> = HashMap::new();
        let mut free: HashMap<(KType, usize), Vec<usize>> = HashMap::new();
        for (k, s) in self.steps.iter().enumerate() {
            if let Step::Group(gi) = s {
                if let Some(Some(g)) = plan.groups.get_mut(*gi) {
                    let elements = g.elements();
                    let ty = g.ty();
                    for (j, (node, level)) in g.output_levels().into_iter().enumerate() {
                        if is_output[node.index()] || !released[node.index()] {
                            continue;
                        }
                        let n = match level {
                            Level::Full => elements.0,
                            Level::Row => elements.1,
                        };
                        let b = match free.get_mut(&(ty, n)).and_then(|v| v.pop()) {
                            Some(b) => b,
                            None => {
                                self.buffers.push((ty, n));
                                self.buffers.len() - 1
                            }
                        };
                        g.set_buffer(j, b);
                        holder.insert(node, b);
                    }
                }
            }
            for n in &self.frees[k] {
                if let Some(b) = holder.remove(n) {
                    free.entry(self.buffers[b]).or_default().push(b);
                }
            }
        }
    }

    /// Reused buffers the schedule plans (for tests and reports).
    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }

    /// Matrix products that store their result in the order their
    /// permuting users read it (for tests and reports).
    pub fn stored_order_count(&self) -> usize {
        self.out_orders.len()
    }

    /// Fused kernels in the schedule.
    pub fn kernel_count(&self) -> usize {
        self.fused.as_ref().map_or(0, |p| p.kernel_count())
    }

    /// An arena for one run (an idle one when there is one).
    pub(super) fn checkout(&self) -> CheckedOut<'_> {
        let arena = self
            .idle
            .lock()
            .ok()
            .and_then(|mut v| v.pop())
            .unwrap_or_default();
        CheckedOut {
            schedule: self,
            arena,
        }
    }

    /// Bound group `gi`.
    pub(super) fn group(&self, gi: usize) -> Result<&super::fused::BoundGroup> {
        group_of(&self.fused, gi)
    }

    pub(super) fn attention(&self, ai: usize) -> Result<&super::attention::BoundAttention> {
        attention_of(&self.fused, ai)
    }

    pub(super) fn attention_backward(&self, bi: usize) -> Result<&super::attention::BoundBackward> {
        backward_of(&self.fused, bi)
    }
}

fn backward_of(plan: &Option<BoundPlan>, bi: usize) -> Result<&super::attention::BoundBackward> {
    plan.as_ref()
        .and_then(|p| p.backwards.get(bi))
        .and_then(|b| b.as_ref())
        .ok_or_else(|| ExecError::Internal(format!("attention backward {bi} is not bound")))
}

fn attention_of(plan: &Option<BoundPlan>, ai: usize) -> Result<&super::attention::BoundAttention> {
    plan.as_ref()
        .and_then(|p| p.attentions.get(ai))
        .and_then(|a| a.as_ref())
        .ok_or_else(|| ExecError::Internal(format!("attention {ai} is not bound")))
}

fn group_of(plan: &Option<BoundPlan>, gi: usize) -> Result<&super::fused::BoundGroup> {
    plan.as_ref()
        .and_then(|p| p.groups.get(gi))
        .and_then(|g| g.as_ref())
        .ok_or_else(|| ExecError::Internal(format!("fusion group {gi} is not bound")))
}

/// The permutation that `id`'s users apply to it before anything else reads
/// it: its only user a `Permute`, that permute's only user another, and so
/// on, composed (`None` when its only user is no permute, or it is a graph
/// output). A matrix product stores its result in that order.
fn user_permutation(graph: &Graph, id: NodeId) -> Option<Vec<usize>> {
    let mut order: Option<Vec<usize>> = None;
    let mut value = id;
    while !graph.outputs().contains(&value) {
        let [user] = graph.users(value)[..] else {
            break;
        };
        let Op::Permute { axes } = graph.op(user) else {
            break;
        };
        // Axis j of the permuted value is axis `axes[j]` of `value`.
        order = Some(match order {
            None => axes.clone(),
            Some(o) => axes
                .iter()
                .map(|a| o.get(*a).copied())
                .collect::<Option<_>>()?,
        });
        value = user;
    }
    order
}

/// The values a step produces.
fn produced(s: &Step, plan: &Option<BoundPlan>) -> Result<Vec<NodeId>> {
    Ok(match s {
        Step::Node(id) => vec![*id],
        Step::Group(gi) => group_of(plan, *gi)?
            .output_levels()
            .into_iter()
            .map(|(n, _)| n)
            .collect(),
        Step::Attention(ai) => attention_of(plan, *ai)?.plan.produces(),
        Step::AttentionBackward(bi) => backward_of(plan, *bi)?.plan.produces(),
    })
}

/// Whether the kernel of `op` returns new storage and keeps nothing of its
/// operands, so an operand's buffer may be overwritten once it has run.
/// Views (reshape, permute, broadcast, slice), same-type casts, sources,
/// equilibria (the solver holds its captures) and ops that may return an
/// operand unchanged say no.
pub fn result_is_new_storage(op: &Op) -> bool {
    match op {
        unary_math_ops!()
        | Op::LeakyRelu { .. }
        | Op::Clamp { .. }
        | binary_math_ops!()
        | Op::Where
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | network_ops!()
        | network_adjoint_ops!() => true,
        source_ops!()
        | Op::Const(_)
        | Op::Cast { .. }
        | Op::Reduce { .. }
        | layout_ops!()
        | constructor_ops!()
        | equilibrium_ops!()
        | Op::SumTo { .. }
        | Op::Count { .. }
        | Op::SliceBackward { .. } => false,
    }
}

/// What a cached schedule depends on besides the dims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    stamp: Stamp,
    float: CDType,
    fuse: bool,
}

type Cache = HashMap<Key, Vec<(Vec<(String, i64)>, Arc<Schedule>)>>;

/// Cached schedules beyond which the cache starts over (graphs of finished
/// runs are not tracked; a training run uses a handful).
const CACHE_LIMIT: usize = 256;

static CACHE: OnceLock<Mutex<(Cache, usize)>> = OnceLock::new();

/// The schedule of `graph` for `dims`, built on first use. Looking one up
/// costs a hash of the graph's stamp and a comparison of the dim values.
pub fn schedule_for(
    graph: &Graph,
    dims: &DimEnv,
    float: CDType,
    fuse: bool,
) -> Result<Arc<Schedule>> {
    let key = Key {
        stamp: graph.stamp(),
        float,
        fuse,
    };
    let cache = CACHE.get_or_init(Default::default);
    let poisoned = || ExecError::Internal("the schedule cache is poisoned".into());
    {
        let guard = cache.lock().map_err(|_| poisoned())?;
        if let Some(found) = guard
            .0
            .get(&key)
            .and_then(|v| v.iter().find(|(d, _)| dims.same_bindings(d)))
        {
            return Ok(found.1.clone());
        }
    }
    // Built outside the lock: kernels compile meanwhile, and a nested run
    // (an equilibrium body) may need the cache.
    let schedule = Arc::new(Schedule::new(graph, dims, float, fuse)?);
    let mut guard = cache.lock().map_err(|_| poisoned())?;
    if guard.1 >= CACHE_LIMIT {
        guard.0.clear();
        guard.1 = 0;
    }
    guard.1 += 1;
    let owned = dims
        .bindings()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    guard
        .0
        .entry(key)
        .or_default()
        .push((owned, schedule.clone()));
    Ok(schedule)
}
