//! Attention fusion: scaled dot-product attention found in a fusion plan and
//! run as one step.
//!
//! Owns [`Attention`] (one match: the scores product, the fusion group that
//! scales, masks and normalizes them, and the product with the values) and
//! [`find`], which recognizes
//! `softmax(where(causal_mask(T), (q @ kt) / c, fill)) @ v` and its variants
//! (no scale, a multiplying scale, no mask) in a [`Plan`] and puts one
//! [`Step::Attention`] where the second product ran. The executor then
//! computes each batch entry's scores, weights and mixed values in cache,
//! never writing the scores to memory, and with a causal mask skips the
//! masked half of both products.
//!
//! Guarantees of a match: the scores product is used only by its group; the
//! group's only output is the softmax (along the last axis); the softmax is
//! the left operand of the second product, and any other user of it
//! (a backward pass reading the weights) runs after that product's step, so
//! moving the first product and the group there is safe; the scale and the
//! fill are scalar constants and the mask is a `causal_mask` node. Like the
//! fusion groups, this is an executor-side plan: the graph is not rewritten.

use std::collections::HashMap;

use crate::ir::{Graph, NodeId, Op};

use super::fuse::{Group, Step};

/// How the scores are scaled before masking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Div(f64),
    Mul(f64),
}

/// One scaled dot-product attention of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention {
    /// The queries `[.., Tq, dh]`, the transposed keys `[.., dh, Tk]` and the
    /// values `[.., Tk, dv]`.
    pub q: NodeId,
    pub kt: NodeId,
    pub v: NodeId,
    /// `q @ kt`, no longer computed on its own.
    pub scores: NodeId,
    /// The fusion group that scales, masks and normalizes the scores.
    pub group: usize,
    /// The softmax: the attention weights.
    pub weights: NodeId,
    /// `weights @ v`, the step's main output.
    pub mixed: NodeId,
    pub scale: Option<Scale>,
    /// The causal mask node and the value masked scores take.
    pub mask: Option<(NodeId, f64)>,
    /// Whether the weights are read after the step (a backward pass), so the
    /// step writes them out too.
    pub keeps_weights: bool,
}

impl Attention {
    /// The values the step reads, operands first.
    pub fn reads(&self) -> Vec<NodeId> {
        let mut r = vec![self.q, self.kt, self.v];
        r.extend(self.mask.map(|(m, _)| m));
        r
    }

    /// The values the step produces.
    pub fn produces(&self) -> Vec<NodeId> {
        let mut p = vec![self.mixed];
        if self.keeps_weights {
            p.push(self.weights);
        }
        p
    }

    /// The steps this one replaces, in their order.
    pub fn unfused(&self) -> [Step; 3] {
        [
            Step::Node(self.scores),
            Step::Group(self.group),
            Step::Node(self.mixed),
        ]
    }
}

/// Find the attentions of a plan and rewrite its steps to run each as one
/// [`Step::Attention`] (indices into the returned list).
pub fn find(g: &Graph, groups: &[Group], steps: &mut Vec<Step>) -> Vec<Attention> {
    let position: HashMap<Step, usize> = steps.iter().enumerate().map(|(k, s)| (*s, k)).collect();
    let mut found = Vec::new();
    for gi in 0..groups.len() {
        let Some(a) = matching(g, groups, gi, &position) else {
            continue;
        };
        found.push(a);
    }
    if found.is_empty() {
        return found;
    }
    let mut replaced: HashMap<Step, Option<Step>> = HashMap::new();
    for (ai, a) in found.iter().enumerate() {
        replaced.insert(Step::Node(a.scores), None);
        replaced.insert(Step::Group(a.group), None);
        replaced.insert(Step::Node(a.mixed), Some(Step::Attention(ai)));
    }
    replace_steps(steps, &replaced);
    found
}

/// Rewrite `steps`: each step in `replaced` is dropped (`None`) or becomes
/// the step given; the others stay, in order.
pub(super) fn replace_steps(steps: &mut Vec<Step>, replaced: &HashMap<Step, Option<Step>>) {
    *steps = steps
        .iter()
        .filter_map(|s| match replaced.get(s) {
            None => Some(*s),
            Some(by) => *by,
        })
        .collect();
}

/// The value of a scalar constant node.
pub(super) fn const_of(g: &Graph, n: NodeId) -> Option<f64> {
    match g.op(n) {
        Op::Const(c) if g.ty(n).shape.is_empty() => Some(*c),
        _ => None,
    }
}

/// The attention group `grp` (index `gi`) normalizes, if it is one.
fn matching(
    g: &Graph,
    groups: &[Group],
    gi: usize,
    position: &HashMap<Step, usize>,
) -> Option<Attention> {
    let grp = &groups[gi];
    let [weights] = grp.outputs[..] else {
        return None;
    };
    if g.outputs().contains(&weights) {
        return None;
    }
    let rank = g.ty(weights).shape.len();
    if rank < 3 || !matches!(g.op(weights), Op::Softmax { axis } if *axis == rank - 1) {
        return None;
    }
    let const_of = |n: NodeId| const_of(g, n);
    let mut members = vec![weights];
    let [mut x] = g.operands(weights)[..] else {
        return None;
    };
    let mut mask = None;
    if matches!(g.op(x), Op::Where) {
        let [m, on, fill] = g.operands(x)[..] else {
            return None;
        };
        if !matches!(g.op(m), Op::CausalMask { .. }) {
            return None;
        }
        mask = Some((m, const_of(fill)?));
        members.push(x);
        x = on;
    }
    let mut scale = None;
    if matches!(g.op(x), Op::Div | Op::Mul) {
        let [a, b] = g.operands(x)[..] else {
            return None;
        };
        let (s, c) = match g.op(x) {
            Op::Div => (Scale::Div(const_of(b)?), a),
            _ => match (const_of(a), const_of(b)) {
                (_, Some(c)) => (Scale::Mul(c), a),
                (Some(c), None) => (Scale::Mul(c), b),
                (None, None) => return None,
            },
        };
        scale = Some(s);
        members.push(x);
        x = c;
    }
    let scores = x;
    // The group is exactly these members, and every one of them is used
    // only inside it (the weights aside).
    if grp.members.len() != members.len() || grp.members.iter().any(|(m, _)| !members.contains(m)) {
        return None;
    }
    if !matches!(g.op(scores), Op::MatMul) || g.outputs().contains(&scores) {
        return None;
    }
    if g.users(scores).iter().any(|u| !members.contains(u)) {
        return None;
    }
    let [q, kt] = g.operands(scores)[..] else {
        return None;
    };
    let mut mixed = None;
    for u in g.users(weights) {
        if matches!(g.op(u), Op::MatMul) && g.operands(u).first() == Some(&weights) {
            mixed = Some(u);
            break;
        }
    }
    let mixed = mixed?;
    let [_, v] = g.operands(mixed)[..] else {
        return None;
    };
    if v == weights || g.ty(mixed).shape.len() != rank {
        return None;
    }
    // Same batch axes throughout, no broadcasting.
    let batch = &g.ty(weights).shape[..rank - 2];
    for n in [q, kt, v] {
        let s = &g.ty(n).shape;
        if s.len() != rank || &s[..rank - 2] != batch {
            return None;
        }
    }
    let at = *position.get(&Step::Node(mixed))?;
    // The step that computes node `u`: its own, or its group's.
    let step_of = |u: NodeId| match position.get(&Step::Node(u)) {
        Some(p) => Some(*p),
        None => groups
            .iter()
            .position(|o| o.members.iter().any(|(m, _)| *m == u))
            .and_then(|gj| position.get(&Step::Group(gj)).copied()),
    };
    let mut keeps_weights = false;
    for u in g.users(weights) {
        if u == mixed {
            continue;
        }
        keeps_weights = true;
        if step_of(u)? <= at {
            return None;
        }
    }
    let first_of = |s: Step| position.get(&s).copied();
    if first_of(Step::Node(scores))? > at || first_of(Step::Group(gi))? > at {
        return None;
    }
    Some(Attention {
        q,
        kt,
        v,
        scores,
        group: gi,
        weights,
        mixed,
        scale,
        mask,
        keeps_weights,
    })
}

/// The attentions of a plan as text (`deqc dump --emit=kernels`).
pub fn print(g: &Graph, found: &[Attention]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for (k, a) in found.iter().enumerate() {
        let scale = match a.scale {
            Some(Scale::Div(c)) => format!(" / {c}"),
            Some(Scale::Mul(c)) => format!(" * {c}"),
            None => String::new(),
        };
        let mask = match a.mask {
            Some((m, fill)) => format!(", causal ({m}, masked scores {fill})"),
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "  attention a{k}: {} = softmax({} @ {}{scale}{mask}) @ {}, one step with kernel k{}",
            a.mixed, a.q, a.kt, a.v, a.group
        );
        let weights = if a.keeps_weights {
            format!("kept ({} {})", a.weights, g.op(a.weights).name())
        } else {
            "not kept".to_string()
        };
        let _ = writeln!(s, "    scores {} never stored; weights {weights}", a.scores);
    }
    s
}
