//! Fusion: which nodes of a graph run together as one generated kernel.
//!
//! Owns [`role`], the one exhaustive `match` saying how each [`Op`] fuses,
//! and [`plan`], which partitions a graph into [`Group`]s: maximal sets of
//! elementwise and broadcasting ops, `where`, compares, same-type casts and
//! reductions along the trailing axes (sum, mean, max, min, logsumexp,
//! softmax, log-softmax) with their producers and consumers. Matmul,
//! convolution, pooling, embedding, shape ops and equilibria are the
//! boundaries; constants are folded into the kernels that read them. A
//! softmax that left-multiplies a product (attention weights) closes its
//! group, and the plan then runs each attention, and its backward pass, as
//! one step ([`super::attention`], [`super::attention_backward`]).
//!
//! Fusion is an executor-side plan, not a graph rewrite (see
//! docs/architecture.md): the graph keeps its primitive nodes, so autodiff,
//! the other passes and the printers never see a kernel, and the plan is
//! made where the executor prepares a graph, which reaches every graph that
//! runs (forward, gradient, equilibrium and adjoint bodies, regularizer).
//!
//! Guarantees of a [`Group`]: its members in topological order; every
//! member's shape is the group's `shape` (a [`Level::Full`] member) or the
//! per-row shape (the shape's leading `split` axes, with or without trailing
//! ones: a [`Level::Row`] member); a full member reads per-row members only
//! in the keepdim form, so broadcasting is per row; merging never creates a
//! cycle (no path leaves the group and comes back); outputs are the members
//! used outside the group or by the graph's outputs.

use std::collections::{BTreeSet, HashMap};

use crate::ir::op_groups::{
    constructor_ops, equilibrium_ops, layout_ops, network_adjoint_ops, network_ops, source_ops,
};
use crate::ir::{Graph, NodeId, Op, ReduceOp};
use crate::jit::strip::Func;
use crate::jit::{Binary, Level, Unary};
use crate::sema::dim::Dim;
use crate::sema::hir::DType;

use super::attention::Attention;
use super::attention_backward::AttentionBackward;

/// How one op takes part in fusion.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    Unary(Unary),
    Binary(Binary),
    /// `where(mask, a, b)`.
    Select,
    /// A cast; fused only when it does not change the runtime type.
    Cast,
    /// A reduction; fused when its axes are the trailing ones.
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
        keepdim: bool,
    },
    /// Softmax (or log-softmax) along one axis; fused along the last one.
    Softmax {
        axis: usize,
        log: bool,
    },
    /// A scalar constant, folded into the kernels that read it.
    Const(f64),
    /// A library call or a source: a group boundary.
    Boundary,
}

/// How `op` fuses.
pub fn role(op: &Op) -> Role {
    match op {
        Op::Neg => Role::Unary(Unary::Neg),
        Op::Exp => Role::Unary(Unary::Strip(Func::Exp)),
        Op::Log => Role::Unary(Unary::Strip(Func::Log)),
        Op::Sqrt => Role::Unary(Unary::Sqrt),
        Op::Abs => Role::Unary(Unary::Abs),
        Op::Tanh => Role::Unary(Unary::Strip(Func::Tanh)),
        Op::Sigmoid => Role::Unary(Unary::Strip(Func::Sigmoid)),
        Op::Relu => Role::Unary(Unary::Relu),
        Op::Gelu => Role::Unary(Unary::Strip(Func::Gelu)),
        Op::Softplus => Role::Unary(Unary::Strip(Func::Softplus)),
        Op::Sin => Role::Unary(Unary::Strip(Func::Sin)),
        Op::Cos => Role::Unary(Unary::Strip(Func::Cos)),
        Op::LeakyRelu { slope } => Role::Unary(Unary::LeakyRelu(*slope)),
        Op::Clamp { lo, hi } => Role::Unary(Unary::Clamp(*lo, *hi)),
        Op::Add => Role::Binary(Binary::Add),
        Op::Sub => Role::Binary(Binary::Sub),
        Op::Mul => Role::Binary(Binary::Mul),
        Op::Div => Role::Binary(Binary::Div),
        Op::Pow => Role::Binary(Binary::Pow),
        Op::Maximum => Role::Binary(Binary::Max),
        Op::Minimum => Role::Binary(Binary::Min),
        Op::Compare(c) => Role::Binary(Binary::Cmp(*c)),
        Op::Where => Role::Select,
        Op::Cast { .. } => Role::Cast,
        Op::Reduce { op, axes, keepdim } => Role::Reduce {
            op: *op,
            axes: axes.clone(),
            keepdim: *keepdim,
        },
        Op::Softmax { axis } => Role::Softmax {
            axis: *axis,
            log: false,
        },
        Op::LogSoftmax { axis } => Role::Softmax {
            axis: *axis,
            log: true,
        },
        Op::Const(v) => Role::Const(*v),
        // Library calls (gemm, convolution, pooling, gathers), shape ops
        // (views and copies), sources, constructors and equilibria.
        source_ops!()
        | layout_ops!()
        | constructor_ops!()
        | network_ops!()
        | equilibrium_ops!()
        | Op::SumTo { .. }
        | Op::Count { .. }
        | Op::SliceBackward { .. }
        | network_adjoint_ops!() => Role::Boundary,
    }
}

/// One fusion group of a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Members and their levels, in topological order.
    pub members: Vec<(NodeId, Level)>,
    /// The iteration shape: every full member has it.
    pub shape: Vec<Dim>,
    /// Rows are the leading `split` axes; a row is the rest. `None` for a
    /// group without reductions: the executor picks the split that reads
    /// every input in place.
    pub split: Option<usize>,
    /// Values read from outside, each with the level of its readers
    /// (a value read at both levels appears twice).
    pub inputs: Vec<(NodeId, Level)>,
    /// Members used outside the group (or graph outputs).
    pub outputs: Vec<NodeId>,
}

struct Building {
    members: Vec<(NodeId, Level)>,
    shape: Vec<Dim>,
    split: Option<usize>,
    float: DType,
}

/// The dtype a node computes in, when it is a float.
fn float_of(g: &Graph, id: NodeId) -> Option<DType> {
    let d = g.ty(id).dtype;
    d.is_float().then_some(d)
}

/// The per-row shapes of a group: keepdim form and plain form.
fn row_shapes(shape: &[Dim], split: usize) -> (Vec<Dim>, Vec<Dim>) {
    let lead: Vec<Dim> = shape[..split].to_vec();
    let mut keep = lead.clone();
    keep.extend((split..shape.len()).map(|_| Dim::konst(1)));
    (keep, lead)
}

/// The first axis of a reduction over the trailing axes of rank `rank`.
fn trailing_start(axes: &[usize], rank: usize) -> Option<usize> {
    let first = rank.checked_sub(axes.len())?;
    let trailing = !axes.is_empty() && axes.iter().copied().eq(first..rank);
    trailing.then_some(first)
}

/// Whether `n` is a softmax whose result is the left operand of a product.
fn weighs_a_product(g: &Graph, n: NodeId) -> bool {
    matches!(g.op(n), Op::Softmax { .. })
        && g.users(n)
            .iter()
            .any(|u| matches!(g.op(*u), Op::MatMul) && g.operands(*u).first() == Some(&n))
}

/// One step of a fused schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// A node outside every group, run by the plain kernels.
    Node(NodeId),
    /// A group, run as one kernel.
    Group(usize),
    /// An attention (index into [`Plan::attentions`]): its scores product,
    /// its group and its second product as one step.
    Attention(usize),
    /// An attention's backward pass (index into [`Plan::backwards`]): five
    /// steps as one.
    AttentionBackward(usize),
}

/// The groups of a graph and an order to run them and the other nodes in.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub groups: Vec<Group>,
    /// Attentions run as one step each (see [`super::attention`]).
    pub attentions: Vec<Attention>,
    /// Their backward passes, one step each (see
    /// [`super::attention_backward`]).
    pub backwards: Vec<AttentionBackward>,
    /// Every node that is no group member, and every group, operands first.
    pub steps: Vec<Step>,
}

/// Plan the fused execution of `g` (its top level; bodies are planned when
/// they run). A group that would make the schedule cyclic (two groups each
/// needing the other's output) is dissolved into plain nodes.
pub fn plan(g: &Graph) -> Plan {
    let mut groups = form_groups(g);
    loop {
        match schedule(g, &groups) {
            Ok(mut steps) => {
                let attentions = super::attention::find(g, &groups, &mut steps);
                let backwards =
                    super::attention_backward::find(g, &groups, &attentions, &mut steps);
                return Plan {
                    groups,
                    attentions,
                    backwards,
                    steps,
                };
            }
            Err(stuck) if stuck.is_empty() => groups.clear(),
            Err(stuck) => {
                let mut k = 0;
                groups.retain(|_| {
                    k += 1;
                    !stuck.contains(&(k - 1))
                });
            }
        }
    }
}

/// Order the groups and the remaining nodes; `Err` holds the groups caught
/// in a cycle.
fn schedule(g: &Graph, groups: &[Group]) -> Result<Vec<Step>, Vec<usize>> {
    let order = g.topo_order();
    let mut unit_of: HashMap<NodeId, usize> = HashMap::new();
    for (gi, grp) in groups.iter().enumerate() {
        for (m, _) in &grp.members {
            unit_of.insert(*m, gi);
        }
    }
    let mut steps_of_unit: Vec<Step> = (0..groups.len()).map(Step::Group).collect();
    let mut first_pos: Vec<usize> = vec![usize::MAX; groups.len()];
    for (pos, id) in order.iter().enumerate() {
        match unit_of.get(id) {
            Some(u) => first_pos[*u] = first_pos[*u].min(pos),
            None => {
                unit_of.insert(*id, steps_of_unit.len());
                steps_of_unit.push(Step::Node(*id));
                first_pos.push(pos);
            }
        }
    }
    let n = steps_of_unit.len();
    let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for id in &order {
        let to = unit_of[id];
        for o in g.operands(*id) {
            let from = unit_of[&o];
            if from != to {
                succ[from].insert(to);
            }
        }
    }
    let mut indeg = vec![0usize; n];
    for s in &succ {
        for t in s {
            indeg[*t] += 1;
        }
    }
    let mut ready: BTreeSet<(usize, usize)> = (0..n)
        .filter(|u| indeg[*u] == 0)
        .map(|u| (first_pos[u], u))
        .collect();
    let mut steps = Vec::with_capacity(n);
    while let Some((_, u)) = ready.pop_first() {
        steps.push(steps_of_unit[u]);
        for t in &succ[u] {
            indeg[*t] -= 1;
            if indeg[*t] == 0 {
                ready.insert((first_pos[*t], *t));
            }
        }
    }
    if steps.len() == n {
        return Ok(steps);
    }
    Err((0..groups.len()).filter(|u| indeg[*u] > 0).collect())
}

/// Partition `g` into fusion groups. Groups of a single member that gains
/// nothing from fusion (one elementwise op or one plain reduction) are left
/// out.
fn form_groups(g: &Graph) -> Vec<Group> {
    let order = g.topo_order();
    let mut group_of: HashMap<NodeId, usize> = HashMap::new();
    // Groups each node depends on (transitively, through any path).
    let mut deps: HashMap<NodeId, BTreeSet<usize>> = HashMap::new();
    let mut groups: Vec<Building> = Vec::new();
    for id in order {
        let operands = g.operands(id);
        let mut d: BTreeSet<usize> = BTreeSet::new();
        for o in &operands {
            if let Some(ds) = deps.get(o) {
                d.extend(ds.iter().copied());
            }
            if let Some(gi) = group_of.get(o) {
                d.insert(*gi);
            }
        }
        deps.insert(id, d);
        let r = role(g.op(id));
        let Some(float) = float_of(g, id) else {
            continue;
        };
        if matches!(r, Role::Boundary | Role::Const(_)) {
            continue;
        }
        // Every operand must be a float of the same dtype (casts included:
        // a cast that changes the runtime type is left to the library).
        if operands.iter().any(|o| float_of(g, *o) != Some(float)) {
            continue;
        }
        let mut joined = false;
        let candidates: Vec<usize> = operands
            .iter()
            .filter_map(|o| group_of.get(o).copied())
            .collect();
        for gi in candidates {
            if let Some(level) = admit(g, &groups[gi], gi, &group_of, &deps, id, &r, &operands) {
                let b = &mut groups[gi];
                if let Role::Reduce { axes, .. } = &r {
                    b.split = trailing_start(axes, b.shape.len());
                }
                if let Role::Softmax { .. } = &r {
                    b.split = Some(b.shape.len() - 1);
                }
                b.members.push((id, level));
                group_of.insert(id, gi);
                joined = true;
                break;
            }
        }
        if joined {
            continue;
        }
        if let Some(b) = start(g, id, &r, float, &operands) {
            group_of.insert(id, groups.len());
            groups.push(b);
        }
    }
    finish(g, groups, &group_of)
}

/// The level at which `id` can join group `gi`, if it can.
#[allow(clippy::too_many_arguments)]
fn admit(
    g: &Graph,
    b: &Building,
    gi: usize,
    group_of: &HashMap<NodeId, usize>,
    deps: &HashMap<NodeId, BTreeSet<usize>>,
    id: NodeId,
    r: &Role,
    operands: &[NodeId],
) -> Option<Level> {
    if float_of(g, id) != Some(b.float) {
        return None;
    }
    // Attention weights (a softmax that left-multiplies a product) close
    // their group, so that the attention runs as one step
    // (`super::attention`) and its backward pass, which reads the weights,
    // forms a group of its own (`super::attention_backward`).
    if b.members.iter().any(|(m, _)| weighs_a_product(g, *m)) {
        return None;
    }
    // No cycle: an outside operand must not depend on the group.
    let inside = |o: &NodeId| group_of.get(o) == Some(&gi);
    for o in operands {
        if !inside(o) && deps.get(o).is_some_and(|d| d.contains(&gi)) {
            return None;
        }
    }
    let level_of = |o: &NodeId| b.members.iter().find(|(m, _)| m == o).map(|(_, l)| *l);
    let shape = &g.ty(id).shape;
    let rank = b.shape.len();
    match r {
        Role::Unary(_) | Role::Binary(_) | Role::Select | Role::Cast => {
            if *shape == b.shape {
                let ok = operands.iter().filter(|o| inside(o)).all(|o| {
                    level_of(o) == Some(Level::Full)
                        || (level_of(o) == Some(Level::Row) && g.ty(*o).rank() == rank)
                });
                return ok.then_some(Level::Full);
            }
            let split = b.split?;
            let (keep, plain) = row_shapes(&b.shape, split);
            if *shape != keep && *shape != plain {
                return None;
            }
            let ok = operands
                .iter()
                .filter(|o| inside(o))
                .all(|o| level_of(o) == Some(Level::Row) && g.ty(*o).shape == *shape);
            ok.then_some(Level::Row)
        }
        Role::Reduce { axes, keepdim, .. } => {
            let x = operands.first()?;
            if !inside(x) || level_of(x) != Some(Level::Full) || g.ty(*x).shape != b.shape {
                return None;
            }
            let start = trailing_start(axes, rank)?;
            if b.split.is_some_and(|s| s != start) {
                return None;
            }
            let (keep, plain) = row_shapes(&b.shape, start);
            let want = if *keepdim { keep } else { plain };
            (*shape == want).then_some(Level::Row)
        }
        Role::Softmax { axis, .. } => {
            let x = operands.first()?;
            let last = rank.checked_sub(1)?;
            if !inside(x) || level_of(x) != Some(Level::Full) || *axis != last {
                return None;
            }
            if b.split.is_some_and(|s| s != last) || *shape != b.shape {
                return None;
            }
            Some(Level::Full)
        }
        Role::Const(_) | Role::Boundary => None,
    }
}

/// A new group holding only `id`.
fn start(g: &Graph, id: NodeId, r: &Role, float: DType, operands: &[NodeId]) -> Option<Building> {
    let shape = g.ty(id).shape.clone();
    let (shape, split, level) = match r {
        Role::Unary(_) | Role::Binary(_) | Role::Select | Role::Cast => (shape, None, Level::Full),
        Role::Reduce { axes, keepdim, .. } => {
            let x = g.ty(*operands.first()?).shape.clone();
            let start = trailing_start(axes, x.len())?;
            let (keep, plain) = row_shapes(&x, start);
            if shape != if *keepdim { keep } else { plain } {
                return None;
            }
            (x, Some(start), Level::Row)
        }
        Role::Softmax { axis, .. } => {
            let last = shape.len().checked_sub(1)?;
            if *axis != last {
                return None;
            }
            (shape, Some(last), Level::Full)
        }
        Role::Const(_) | Role::Boundary => return None,
    };
    Some(Building {
        members: vec![(id, level)],
        shape,
        split,
        float,
    })
}

/// Whether a lone member is worth a kernel of its own.
fn worth_alone(r: &Role) -> bool {
    match r {
        Role::Softmax { .. } => true,
        Role::Reduce { op, .. } => *op == ReduceOp::LogSumExp,
        Role::Unary(u) => matches!(u, Unary::Strip(Func::Softplus) | Unary::LeakyRelu(_)),
        Role::Binary(_) | Role::Select | Role::Cast | Role::Const(_) | Role::Boundary => false,
    }
}

fn finish(g: &Graph, groups: Vec<Building>, group_of: &HashMap<NodeId, usize>) -> Vec<Group> {
    let graph_outputs: BTreeSet<NodeId> = g.outputs().iter().copied().collect();
    let mut out = Vec::new();
    for (gi, b) in groups.into_iter().enumerate() {
        if b.members.len() == 1 && !worth_alone(&role(g.op(b.members[0].0))) {
            continue;
        }
        let inside = |o: &NodeId| group_of.get(o) == Some(&gi);
        let mut inputs: Vec<(NodeId, Level)> = Vec::new();
        let mut outputs = Vec::new();
        for (m, level) in &b.members {
            for o in g.operands(*m) {
                if inside(&o) || matches!(g.op(o), Op::Const(_)) {
                    continue;
                }
                let reader = match role(g.op(*m)) {
                    Role::Reduce { .. } | Role::Softmax { .. } => Level::Full,
                    _ => *level,
                };
                if !inputs.contains(&(o, reader)) {
                    inputs.push((o, reader));
                }
            }
            let used_outside = g.users(*m).iter().any(|u| !inside(u));
            if used_outside || graph_outputs.contains(m) {
                outputs.push(*m);
            }
        }
        out.push(Group {
            members: b.members,
            split: b.split,
            shape: b.shape,
            inputs,
            outputs,
        });
    }
    out
}

/// The groups as text (`deqc dump --emit=kernels`).
pub fn print_groups(g: &Graph, groups: &[Group]) -> String {
    use std::fmt::Write;
    let show = |d: &[Dim]| {
        let parts: Vec<String> = d.iter().map(|x| x.to_string()).collect();
        format!("[{}]", parts.join(", "))
    };
    let mut s = String::new();
    if groups.is_empty() {
        let _ = writeln!(s, "  (no fused kernels)");
    }
    for (k, grp) in groups.iter().enumerate() {
        match grp.split {
            Some(split) => {
                let rows = show(&grp.shape[..split]);
                let row = show(&grp.shape[split..]);
                let _ = writeln!(s, "  kernel k{k}: rows {rows} x row {row}");
            }
            None => {
                let _ = writeln!(s, "  kernel k{k}: elementwise over {}", show(&grp.shape));
            }
        }
        let members: Vec<String> = grp
            .members
            .iter()
            .map(|(m, l)| {
                let lvl = if *l == Level::Row { " (per row)" } else { "" };
                format!("{m} {}{lvl}", g.op(*m).name())
            })
            .collect();
        let _ = writeln!(s, "    nodes:   {}", members.join(", "));
        let inputs: Vec<String> = grp
            .inputs
            .iter()
            .map(|(i, l)| {
                let lvl = if *l == Level::Row { " (per row)" } else { "" };
                format!("{i} {}{lvl}", show(&g.ty(*i).shape))
            })
            .collect();
        let _ = writeln!(s, "    inputs:  {}", inputs.join(", "));
        let outputs: Vec<String> = grp
            .outputs
            .iter()
            .map(|o| format!("{o} {}", show(&g.ty(*o).shape)))
            .collect();
        let _ = writeln!(s, "    outputs: {}", outputs.join(", "));
    }
    s
}

/// The groups of a graph and of every body in it, as text, body by body.
pub fn print_plan(g: &Graph) -> String {
    let p = plan(g);
    let mut s = print_groups(g, &p.groups);
    s.push_str(&super::attention::print(g, &p.attentions));
    s.push_str(&super::attention_backward::print(&p.backwards));
    for id in g.node_ids() {
        if let Op::Equilibrium(eq) = g.op(id) {
            s.push_str(&format!("  body of equilibrium {id}:\n"));
            s.push_str(&format!("    {}\n", super::per_sample::describe(eq)));
            for line in print_plan(&eq.body).lines() {
                s.push_str("  ");
                s.push_str(line);
                s.push('\n');
            }
        }
    }
    s
}
