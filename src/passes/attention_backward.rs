//! The backward pass of a fused attention, found in a gradient graph and run
//! as one step.
//!
//! Owns [`AttentionBackward`] and [`find`]. For a forward [`Attention`] that
//! keeps its weights `P`, the gradient graph autodiff builds holds, with
//! `dO` the mixed values' gradient:
//! `dP = dO @ vᵀ`; a fusion group computing
//! `dS = scale'(where(mask, P * (dP - sum(dP * P)), 0))`;
//! `dV = Pᵀ @ dO`, `dQ = dS @ ktᵀ` and `dKt = qᵀ @ dS`. [`find`] recognizes
//! exactly these nodes (the forms of `autodiff::vjp`) and puts one
//! [`Step::AttentionBackward`] where the first of them ran, so that the
//! executor computes each batch entry's `dP` and `dS` in cache, never
//! storing them, and with a causal mask skips their masked half.
//!
//! Guarantees of a match: `dP` and `dS` are used only inside the pattern;
//! the group is exactly the softmax's, mask's and scale's backward (its one
//! output `dS`); every value the step reads is computed before the first
//! replaced step, so running the five there is safe (their users all come
//! later). Anything else (a missing gradient, another use of `dS`) leaves
//! the steps as they are.

use std::collections::HashMap;

use crate::ir::{Graph, NodeId, Op, ReduceOp};

use super::attention::{const_of, replace_steps, Attention, Scale};
use super::fuse::{Group, Step};

/// The backward pass of one attention.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionBackward {
    /// The forward attention (index into the plan's attentions).
    pub forward: usize,
    /// The gradient of the mixed values, `dO`.
    pub d_mixed: NodeId,
    /// `dO @ vᵀ`, never stored.
    pub d_weights: NodeId,
    /// The group computing the scores' gradient `dS`, never stored.
    pub group: usize,
    pub d_scores: NodeId,
    /// `Pᵀ @ dO`, `dS @ ktᵀ` and `qᵀ @ dS`: the step's outputs.
    pub d_values: NodeId,
    pub d_queries: NodeId,
    pub d_keys_t: NodeId,
    /// The replaced steps in their order.
    pub unfused: Vec<Step>,
}

impl AttentionBackward {
    /// The values the step reads.
    pub fn reads(&self, a: &Attention) -> Vec<NodeId> {
        let mut r = vec![self.d_mixed, a.q, a.kt, a.v, a.weights];
        r.extend(a.mask.map(|(m, _)| m));
        r
    }

    /// The values the step produces.
    pub fn produces(&self) -> Vec<NodeId> {
        vec![self.d_values, self.d_queries, self.d_keys_t]
    }
}

/// Find the backward passes of `attentions` and rewrite `steps` to run each
/// as one [`Step::AttentionBackward`] (indices into the returned list).
pub fn find(
    g: &Graph,
    groups: &[Group],
    attentions: &[Attention],
    steps: &mut Vec<Step>,
) -> Vec<AttentionBackward> {
    let position: HashMap<Step, usize> = steps.iter().enumerate().map(|(k, s)| (*s, k)).collect();
    let mut found: Vec<AttentionBackward> = Vec::new();
    for (ai, a) in attentions.iter().enumerate() {
        if !a.keeps_weights {
            continue;
        }
        for gi in 0..groups.len() {
            if let Some(b) = matching(g, groups, gi, ai, a, &position) {
                found.push(b);
                break;
            }
        }
    }
    if found.is_empty() {
        return found;
    }
    let mut replaced: HashMap<Step, Option<Step>> = HashMap::new();
    for (bi, b) in found.iter().enumerate() {
        for (k, s) in b.unfused.iter().enumerate() {
            replaced.insert(*s, (k == 0).then_some(Step::AttentionBackward(bi)));
        }
    }
    replace_steps(steps, &replaced);
    found
}

/// `x` when `n` permutes `x` by swapping its last two axes.
fn swapped(g: &Graph, n: NodeId) -> Option<NodeId> {
    let Op::Permute { axes } = g.op(n) else {
        return None;
    };
    let r = axes.len();
    let swap = r >= 2
        && axes[..r - 2].iter().copied().eq(0..r - 2)
        && axes[r - 2] == r - 1
        && axes[r - 1] == r - 2;
    let [x] = g.operands(n)[..] else {
        return None;
    };
    swap.then_some(x)
}

/// The product `a @ b` among the users of `of` whose operands satisfy
/// `want`.
fn product_using(g: &Graph, of: NodeId, want: impl Fn(NodeId, NodeId) -> bool) -> Option<NodeId> {
    g.users(of).into_iter().find(|u| {
        matches!(g.op(*u), Op::MatMul) && {
            let ops = g.operands(*u);
            ops.len() == 2 && want(ops[0], ops[1])
        }
    })
}

/// The backward of attention `a` (index `ai`) with group `gi`, if it is one.
fn matching(
    g: &Graph,
    groups: &[Group],
    gi: usize,
    ai: usize,
    a: &Attention,
    position: &HashMap<Step, usize>,
) -> Option<AttentionBackward> {
    let grp = &groups[gi];
    let [d_scores] = grp.outputs[..] else {
        return None;
    };
    let p = a.weights;
    let rank = g.ty(p).shape.len();
    let mut members = vec![d_scores];
    let mut x = d_scores;
    match a.scale {
        Some(Scale::Div(c)) => {
            let [w, k] = g.operands(x)[..] else {
                return None;
            };
            if !matches!(g.op(x), Op::Div) || const_of(g, k) != Some(c) {
                return None;
            }
            x = w;
        }
        Some(Scale::Mul(c)) => {
            let [u, w] = g.operands(x)[..] else {
                return None;
            };
            if !matches!(g.op(x), Op::Mul) {
                return None;
            }
            x = match (const_of(g, u), const_of(g, w)) {
                (_, Some(k)) if k == c => u,
                (Some(k), _) if k == c => w,
                _ => return None,
            };
        }
        None => {}
    }
    members.push(x);
    if let Some((mask, _)) = a.mask {
        let [m, ds, zero] = g.operands(x)[..] else {
            return None;
        };
        if !matches!(g.op(x), Op::Where) || m != mask || const_of(g, zero) != Some(0.0) {
            return None;
        }
        x = ds;
        members.push(x);
    }
    // ds = P * d, d = dP - s, s = sum(gy, last, keepdim), gy = dP * P.
    let ds = x;
    let [p1, d] = g.operands(ds)[..] else {
        return None;
    };
    let [d_weights, s] = g.operands(d)[..] else {
        return None;
    };
    let [gy] = g.operands(s)[..] else {
        return None;
    };
    let [dp2, p2] = g.operands(gy)[..] else {
        return None;
    };
    let sums_last = matches!(g.op(s), Op::Reduce { op: ReduceOp::Sum, axes, keepdim: true }
        if axes[..] == [rank - 1]);
    if !matches!(g.op(ds), Op::Mul)
        || !matches!(g.op(d), Op::Sub)
        || !matches!(g.op(gy), Op::Mul)
        || !sums_last
        || p1 != p
        || p2 != p
        || dp2 != d_weights
    {
        return None;
    }
    members.extend([ds, d, s, gy]);
    members.sort();
    members.dedup();
    if grp.members.len() != members.len() || grp.members.iter().any(|(m, _)| !members.contains(m)) {
        return None;
    }
    // dP = dO @ vᵀ, used only by the group.
    let [d_mixed, vt] = g.operands(d_weights)[..] else {
        return None;
    };
    if !matches!(g.op(d_weights), Op::MatMul)
        || swapped(g, vt) != Some(a.v)
        || g.outputs().contains(&d_weights)
        || g.users(d_weights).iter().any(|u| !members.contains(u))
    {
        return None;
    }
    // dV = Pᵀ @ dO.
    let d_values = g
        .users(p)
        .into_iter()
        .filter(|u| swapped(g, *u) == Some(p))
        .find_map(|pt| product_using(g, pt, |l, r| l == pt && r == d_mixed))?;
    // dQ = dS @ ktᵀ and dKt = qᵀ @ dS, the only users of dS.
    let d_queries = product_using(g, d_scores, |l, r| {
        l == d_scores && swapped(g, r) == Some(a.kt)
    })?;
    let d_keys_t = product_using(g, d_scores, |l, r| {
        r == d_scores && swapped(g, l) == Some(a.q)
    })?;
    let mut users = g.users(d_scores);
    users.dedup();
    if users.len() != 2 || g.outputs().contains(&d_scores) {
        return None;
    }
    for n in [d_values, d_queries, d_keys_t] {
        if g.ty(n).shape.len() != rank {
            return None;
        }
    }
    let mut unfused = vec![
        Step::Node(d_weights),
        Step::Group(gi),
        Step::Node(d_values),
        Step::Node(d_queries),
        Step::Node(d_keys_t),
    ];
    let at = |s: &Step| position.get(s).copied();
    for s in &unfused {
        at(s)?;
    }
    unfused.sort_by_key(|s| at(s));
    let first = at(&unfused[0])?;
    // Everything read is ready before the first replaced step.
    let step_of = |u: NodeId| match position.get(&Step::Node(u)) {
        Some(p) => Some(*p),
        None => position.iter().find_map(|(s, p)| match s {
            Step::Group(gj) => groups[*gj]
                .members
                .iter()
                .any(|(m, _)| *m == u)
                .then_some(*p),
            Step::Attention(k) if *k == ai && u == a.weights => Some(*p),
            _ => None,
        }),
    };
    let mut reads = vec![d_mixed, a.q, a.kt, a.v, a.weights];
    reads.extend(a.mask.map(|(m, _)| m));
    for r in reads {
        if step_of(r)? >= first {
            return None;
        }
    }
    Some(AttentionBackward {
        forward: ai,
        d_mixed,
        d_weights,
        group: gi,
        d_scores,
        d_values,
        d_queries,
        d_keys_t,
        unfused,
    })
}

/// The backward steps of a plan as text (`deqc dump --emit=kernels`).
pub fn print(found: &[AttentionBackward]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for (k, b) in found.iter().enumerate() {
        let _ = writeln!(
            s,
            "  attention backward b{k} of a{}: {}, {}, {} from {} in one step with kernel k{}",
            b.forward, b.d_queries, b.d_keys_t, b.d_values, b.d_mixed, b.group
        );
        let _ = writeln!(
            s,
            "    weights' gradient {} and scores' gradient {} never stored",
            b.d_weights, b.d_scores
        );
    }
    s
}
