//! The IR verifier: invariants every graph satisfies between stages.
//!
//! Checks, recursively into equilibrium bodies: the graph is acyclic; operand
//! slots are `0..n` without gaps; operand counts match each op's arity;
//! result types agree with each op's shape rule (dims that cannot be decided
//! at compile time are accepted); sources are in range of the signature
//! (`Input`, `Param` only in the top graph; `State`, `Capture` only in a
//! body, with the enclosing node's types); `Project` reads an equilibrium;
//! outputs exist. Returns the first violation found, as text.

use crate::types::Type;

use super::graph::{Graph, NodeId};
use super::op::{EqInitKind, Op};
use super::shape::{infer, same_shape};

/// Where a graph sits: the top graph, or the body of an equilibrium with
/// these state and capture types.
enum Context<'a> {
    Top,
    Body {
        states: &'a [Type],
        captures: &'a [Type],
    },
    /// A derived computation built outside any equilibrium (its sources are
    /// captures and states, bound when it is inlined): an adjoint body, the
    /// VJP of a body, the Jacobian regularization term.
    Detached,
}

pub fn verify(g: &Graph) -> Result<(), String> {
    let ops: Vec<&Op> = g.node_ids().into_iter().map(|n| g.op(n)).collect();
    let has_sources = ops
        .iter()
        .any(|o| matches!(o, Op::State(_) | Op::Capture(_)));
    let has_signature = ops.iter().any(|o| matches!(o, Op::Input(_) | Op::Param(_)));
    if has_sources && !has_signature {
        return verify_in(g, &Context::Detached);
    }
    verify_in(g, &Context::Top)
}

fn same_type(a: &Type, b: &Type) -> bool {
    a.dtype == b.dtype && same_shape(&a.shape, &b.shape)
}

fn verify_in(g: &Graph, ctx: &Context) -> Result<(), String> {
    if g.try_topo_order().is_none() {
        return Err("the graph has a cycle".into());
    }
    for id in g.node_ids() {
        verify_node(g, id, ctx).map_err(|e| {
            format!(
                "node {id} (`{} {}`: {}): {e}",
                g.op(id).name(),
                g.op(id).attrs(),
                g.ty(id)
            )
        })?;
    }
    for o in g.outputs() {
        if !g.contains(*o) {
            return Err(format!("output {o} is not a node"));
        }
    }
    if let Context::Body { states, .. } = ctx {
        if g.outputs().len() != states.len() {
            return Err(format!(
                "the body has {} outputs for {} states",
                g.outputs().len(),
                states.len()
            ));
        }
        for (o, t) in g.outputs().iter().zip(states.iter()) {
            if !same_type(g.ty(*o), t) {
                return Err(format!("body output {} for a state {t}", g.ty(*o)));
            }
        }
    }
    Ok(())
}

fn verify_node(g: &Graph, id: NodeId, ctx: &Context) -> Result<(), String> {
    let slots = g.operand_slots(id);
    for (k, (slot, _)) in slots.iter().enumerate() {
        if *slot != k {
            return Err(format!("operand slots {slots:?} are not 0..n"));
        }
    }
    let operands: Vec<NodeId> = slots.iter().map(|(_, n)| *n).collect();
    let op = g.op(id);
    if !op.arity().accepts(operands.len()) {
        return Err(format!(
            "{} operands, arity {:?}",
            operands.len(),
            op.arity()
        ));
    }
    let ty = g.ty(id);
    let tys: Vec<&Type> = operands.iter().map(|o| g.ty(*o)).collect();
    if let Some(expected) = infer(op, &tys)? {
        if !same_type(&expected, ty) {
            return Err(format!("the shape rule gives {expected}"));
        }
    }
    let want = |t: &Type, what: &str| -> Result<(), String> {
        if same_type(t, ty) {
            Ok(())
        } else {
            Err(format!("{what} has type {t}"))
        }
    };
    let in_body = matches!(ctx, Context::Body { .. });
    // Source ops read the signature (top graph) or the enclosing node (body).
    if let (Op::Input(i), Context::Top) = (op, ctx) {
        let inp = g.inputs.get(*i).ok_or("input index out of range")?;
        want(&inp.ty, "the input")?;
    }
    if let (Op::Param(i), Context::Top) = (op, ctx) {
        let p = g.params.get(*i).ok_or("parameter index out of range")?;
        want(&p.ty, "the parameter")?;
    }
    if in_body && matches!(op, Op::Input(_) | Op::Param(_)) {
        return Err("inputs and parameters must be captured into a body".into());
    }
    if let (Op::State(i), Context::Body { states, .. }) = (op, ctx) {
        want(
            states.get(*i).ok_or("state index out of range")?,
            "the state",
        )?;
    }
    if let (Op::Capture(i), Context::Body { captures, .. }) = (op, ctx) {
        want(
            captures.get(*i).ok_or("capture index out of range")?,
            "the capture",
        )?;
    }
    let detached = matches!(ctx, Context::Detached);
    if detached && matches!(op, Op::Input(_) | Op::Param(_)) {
        return Err("a detached computation has no inputs or parameters".into());
    }
    if !in_body && !detached && matches!(op, Op::State(_) | Op::Capture(_)) {
        return Err("a state or capture outside an equilibrium body".into());
    }
    if matches!(op, Op::Const(_)) && ty.rank() != 0 {
        return Err("a constant must be a scalar".into());
    }
    if let Op::Equilibrium(eq) = op {
        if eq.state_types.is_empty() || eq.state_names.len() != eq.state_types.len() {
            return Err("bad state list".into());
        }
        want(&eq.state_types[0], "the first state")?;
        for (k, t) in eq.capture_types.iter().enumerate() {
            if !same_type(tys[k], t) {
                return Err(format!("capture {k} is {} for {t}", tys[k]));
            }
        }
        if eq.init == EqInitKind::Values {
            for (k, t) in eq.state_types.iter().enumerate() {
                let got = tys[eq.num_captures() + k];
                if !same_type(got, t) {
                    return Err(format!("init {k} is {got} for {t}"));
                }
            }
        }
        verify_in(
            &eq.body,
            &Context::Body {
                states: &eq.state_types,
                captures: &eq.capture_types,
            },
        )
        .map_err(|e| format!("in the body: {e}"))?;
    }
    if let Op::Project(i) = op {
        let Op::Equilibrium(eq) = g.op(operands[0]) else {
            return Err(format!("projects from a `{}`", g.op(operands[0]).name()));
        };
        want(
            eq.state_types.get(*i).ok_or("result index out of range")?,
            "the result",
        )?;
    }
    if let Op::DropoutMask { p, shape } = op {
        if !(0.0..1.0).contains(p) || !same_shape(shape, &ty.shape) {
            return Err("bad dropout mask".into());
        }
    }
    if let Op::Probe { shape, .. } = op {
        if !ty.dtype.is_float() || !same_shape(shape, &ty.shape) {
            return Err("bad probe".into());
        }
    }
    // Only a Project may read an equilibrium's (tuple) result.
    for o in &operands {
        if matches!(g.op(*o), Op::Equilibrium(_)) && !matches!(op, Op::Project(_)) {
            return Err("reads an equilibrium result without `project`".into());
        }
    }
    Ok(())
}
