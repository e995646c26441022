//! The autodiff rule of equilibrium nodes: one lowering per backward mode.
//!
//! For a node `z* = f(z*, c)` and the cotangent `v = dL/dz*`:
//! - `implicit`: a new equilibrium node solves the adjoint `g = J^T g + v`
//!   (its body is the VJP graph of `f` with respect to the state, evaluated
//!   at z*), with the backward solver's settings; then one VJP of `f` at z*
//!   maps `g` to the captures: `dL/dc = g^T df/dc`;
//! - `phantom(k, tau)`: k damped steps `z <- (1 - tau) z + tau f(z, c)` from
//!   z* (held constant), differentiated by reverse mode; `jfb` is one
//!   undamped step;
//! - `unrolled`: the solver's own iterations from the initial value (every
//!   `unroll` step, or `max_iter` damped `fixed_point` steps) as an explicit
//!   chain, differentiated by reverse mode: the memory-hungry baseline.
//!
//! Guarantees: everything appended is ordinary IR (the adjoint solve is an
//! equilibrium node), derived sub-computations are built in separate graphs
//! whose sources are captures and then inlined, so the reverse sweep never
//! differentiates through z* again; captures that need no gradient get none.

use crate::autodiff::builder::Builder;
use crate::autodiff::{vjp_nodes, AdError, EquilibriumVjp};
use crate::ir::{EqInitKind, EqNode, Graph, NodeId, Op, SolveRole};
use crate::sema::spec::{Backward, SolverKind};
use crate::source::Span;

use super::inline::{
    body_at_sources, capture_graph, cotangent_seeds, inline_body, state_capture_state_types,
};

/// The equilibrium rule for [`crate::autodiff::grad_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DeqVjp;

/// Where the pieces of one equilibrium node live in the outer graph.
struct Site {
    node: EqNode,
    captures: Vec<NodeId>,
    inits: Vec<NodeId>,
    zstar: Vec<NodeId>,
    cotangents: Vec<NodeId>,
    span: Option<Span>,
}

impl EquilibriumVjp for DeqVjp {
    fn vjp(
        &self,
        graph: &mut Graph,
        eq: NodeId,
        cotangents: &[Option<NodeId>],
        needed: &[bool],
    ) -> Result<Vec<Option<NodeId>>, AdError> {
        let site = site(graph, eq, cotangents)?;
        let n = site.node.num_captures();
        let need_caps: Vec<usize> = (0..n)
            .filter(|j| needed.get(*j).copied().unwrap_or(false))
            .collect();
        let mut out: Vec<Option<NodeId>> = vec![None; needed.len()];
        match site.node.backward.clone() {
            Backward::Implicit { solver } => {
                if need_caps.is_empty() {
                    return Ok(out);
                }
                let g = self.adjoint_solve(graph, &site, solver)?;
                let grads = self.captures_vjp(graph, &site, &g, &need_caps)?;
                for (j, d) in need_caps.iter().zip(grads) {
                    out[*j] = d;
                }
            }
            Backward::Phantom { steps, damping } => {
                let grads = self.chain_vjp(
                    graph,
                    &site,
                    Start::Zstar,
                    steps,
                    damping,
                    &need_caps,
                    false,
                )?;
                for (j, d) in need_caps.iter().zip(grads) {
                    out[*j] = d;
                }
            }
            Backward::Jfb => {
                let grads =
                    self.chain_vjp(graph, &site, Start::Zstar, 1, 1.0, &need_caps, false)?;
                for (j, d) in need_caps.iter().zip(grads) {
                    out[*j] = d;
                }
            }
            Backward::Unrolled => {
                let (steps, damping) =
                    match site.node.solver.kind {
                        SolverKind::Unroll { steps } => (steps, 1.0),
                        SolverKind::FixedPoint { damping } => (site.node.solver.max_iter, damping),
                        _ => return Err(AdError::Internal(
                            "`unrolled` backward reached a solver other than unroll or fixed_point"
                                .into(),
                        )),
                    };
                let need_inits =
                    site.node.init == EqInitKind::Values && needed[n..].iter().any(|b| *b);
                let grads = self.chain_vjp(
                    graph,
                    &site,
                    Start::Init,
                    steps,
                    damping,
                    &need_caps,
                    need_inits,
                )?;
                let (cap_grads, init_grads) = grads.split_at(need_caps.len());
                for (j, d) in need_caps.iter().zip(cap_grads) {
                    out[*j] = *d;
                }
                for (i, d) in init_grads.iter().enumerate() {
                    if needed.get(n + i).copied().unwrap_or(false) {
                        out[n + i] = *d;
                    }
                }
            }
        }
        Ok(out)
    }
}

fn site(graph: &mut Graph, eq: NodeId, cotangents: &[Option<NodeId>]) -> Result<Site, AdError> {
    let Op::Equilibrium(node) = graph.op(eq).clone() else {
        return Err(AdError::Internal(
            "the equilibrium rule got another op".into(),
        ));
    };
    let node = *node;
    let span = graph.span(eq);
    let operands = graph.operands(eq);
    let n = node.num_captures();
    let (captures, inits) = (operands[..n].to_vec(), operands[n..].to_vec());
    let users = graph.users(eq);
    let mut zstar = Vec::new();
    let mut cts = Vec::new();
    for (i, ty) in node.state_types.iter().enumerate() {
        let existing = users
            .iter()
            .copied()
            .find(|u| matches!(graph.op(*u), Op::Project(k) if *k == i));
        zstar.push(existing.unwrap_or_else(|| graph.add(Op::Project(i), ty.clone(), &[eq], span)));
        cts.push(match cotangents.get(i).copied().flatten() {
            Some(c) => c,
            None => Builder { g: graph, span }.zeros(ty),
        });
    }
    Ok(Site {
        node,
        captures,
        inits,
        zstar,
        cotangents: cts,
        span,
    })
}

/// Where an unrolled chain starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// From the fixed point, held constant (phantom, jfb).
    Zstar,
    /// From the solver's initial value (unrolled).
    Init,
}

impl DeqVjp {
    /// Append the adjoint equilibrium `g = J^T g + v`; returns `g` per state.
    fn adjoint_solve(
        &self,
        graph: &mut Graph,
        site: &Site,
        solver: crate::sema::spec::SolverSpec,
    ) -> Result<Vec<NodeId>, AdError> {
        let node = &site.node;
        let (k, n) = (node.num_states(), node.num_captures());
        let cap_types = state_capture_state_types(node);
        let (mut adj, caps, f) = body_at_sources("adjoint", node)?;
        let g: Vec<NodeId> = node
            .state_types
            .iter()
            .enumerate()
            .map(|(i, t)| adj.add(Op::State(i), t.clone(), &[], site.span))
            .collect();
        let seeds: Vec<(NodeId, NodeId)> = f.iter().copied().zip(g.iter().copied()).collect();
        let jt_g = vjp_nodes(&mut adj, &seeds, &caps[..k], self)?;
        let mut outputs = Vec::new();
        for (i, d) in jt_g.into_iter().enumerate() {
            let v = caps[k + n + i];
            outputs.push(match d {
                Some(d) => Builder {
                    g: &mut adj,
                    span: site.span,
                }
                .add(d, v)?,
                None => v,
            });
        }
        adj.set_outputs(outputs);
        let adjoint = EqNode {
            state_names: node.state_names.clone(),
            state_types: node.state_types.clone(),
            capture_types: cap_types,
            body: adj,
            init: EqInitKind::Zeros,
            solver: solver.clone(),
            backward: Backward::Implicit { solver },
            role: SolveRole::Adjoint,
        };
        let mut operands = site.zstar.clone();
        operands.extend(site.captures.iter().copied());
        operands.extend(site.cotangents.iter().copied());
        let first = node.state_types[0].clone();
        let a = graph.add(
            Op::Equilibrium(Box::new(adjoint)),
            first,
            &operands,
            site.span,
        );
        Ok(node
            .state_types
            .iter()
            .enumerate()
            .map(|(i, t)| graph.add(Op::Project(i), t.clone(), &[a], site.span))
            .collect())
    }

    /// `g^T df/dc` at z* for the captures `wanted`.
    fn captures_vjp(
        &self,
        graph: &mut Graph,
        site: &Site,
        g: &[NodeId],
        wanted: &[usize],
    ) -> Result<Vec<Option<NodeId>>, AdError> {
        let node = &site.node;
        let k = node.num_states();
        let (mut sub, caps, f) = body_at_sources("adjoint_vjp", node)?;
        let seeds = cotangent_seeds(&f, &caps);
        let wrt: Vec<NodeId> = wanted.iter().map(|j| caps[k + j]).collect();
        let grads = vjp_nodes(&mut sub, &seeds, &wrt, self)?;
        let mut operands = site.zstar.clone();
        operands.extend(site.captures.iter().copied());
        operands.extend(g.iter().copied());
        finish(graph, sub, grads, &operands)
    }

    /// Reverse mode through `steps` damped steps of the body.
    #[allow(clippy::too_many_arguments)]
    fn chain_vjp(
        &self,
        graph: &mut Graph,
        site: &Site,
        start: Start,
        steps: usize,
        damping: f64,
        wanted: &[usize],
        with_inits: bool,
    ) -> Result<Vec<Option<NodeId>>, AdError> {
        let node = &site.node;
        let (k, n) = (node.num_states(), node.num_captures());
        // Sources: start values, captures, cotangents.
        let (mut sub, caps) = capture_graph("unrolled_vjp", &state_capture_state_types(node));
        let span = site.span;
        let mut z: Vec<NodeId> = caps[..k].to_vec();
        for _ in 0..steps {
            let f = inline_body(&mut sub, &node.body, &z, &caps[k..k + n])?;
            z = if damping == 1.0 {
                f
            } else {
                let mut b = Builder { g: &mut sub, span };
                z.iter()
                    .zip(&f)
                    .map(|(zi, fi)| {
                        let keep = b.scale(*zi, 1.0 - damping)?;
                        let step = b.scale(*fi, damping)?;
                        b.add(keep, step)
                    })
                    .collect::<Result<Vec<_>, _>>()?
            };
        }
        let seeds = cotangent_seeds(&z, &caps);
        let mut wrt: Vec<NodeId> = wanted.iter().map(|j| caps[k + j]).collect();
        if with_inits {
            wrt.extend(caps[..k].iter().copied());
        }
        let grads = vjp_nodes(&mut sub, &seeds, &wrt, self)?;
        let starts: Vec<NodeId> = match start {
            Start::Zstar => site.zstar.clone(),
            Start::Init if node.init == EqInitKind::Values => site.inits.clone(),
            Start::Init => node
                .state_types
                .iter()
                .map(|t| Builder { g: graph, span }.zeros(t))
                .collect(),
        };
        let mut operands = starts;
        operands.extend(site.captures.iter().copied());
        operands.extend(site.cotangents.iter().copied());
        finish(graph, sub, grads, &operands)
    }
}

/// Make the gradients the outputs of `sub`, inline it with its captures
/// bound to `operands`, and return the outer nodes (`None` where no
/// gradient flows).
fn finish(
    graph: &mut Graph,
    mut sub: Graph,
    grads: Vec<Option<NodeId>>,
    operands: &[NodeId],
) -> Result<Vec<Option<NodeId>>, AdError> {
    let present: Vec<NodeId> = grads.iter().flatten().copied().collect();
    sub.set_outputs(present);
    let mut outs = inline_body(graph, &sub, &[], operands)?.into_iter();
    Ok(grads.iter().map(|g| g.and_then(|_| outs.next())).collect())
}
