//! Lowering from the checked HIR (`sema::hir::Model`) to an IR [`Graph`].
//!
//! Owns the translation of each instruction to graph nodes. Guarantees:
//! - each parameter becomes one `Param(i)` node of the top graph, shared by
//!   every use (HIR has one instruction per use site);
//! - an HIR `Equilibrium` becomes an `Equilibrium` node whose body is a
//!   sub-graph: `State(i)` for the iterates, `Capture(j)` for every value
//!   from outside the body (parameters included), outputs in state order;
//!   the node's results are read through `Project(i)` nodes;
//! - `split` becomes one `Slice` per part; `dropout(x, p)` becomes
//!   `x * DropoutMask`, the mask made in the top graph (and captured into
//!   bodies), so one mask is drawn per solve; a `probe` is made the same
//!   way;
//! - `vjp`/`jvp` become the nodes of the reverse sweep (`autodiff`) in the
//!   current graph: plain IR, differentiable again;
//! - every node keeps the span of the instruction it came from;
//! - the result passes the verifier.

use std::collections::HashMap;

use crate::sema::hir::{self, InstKind, Model, Prim, SliceAxis, Type, ValueId};
use crate::source::Span;
use crate::types::dim::Dim;

use super::graph::{Graph, GraphInput, GraphParam, NodeId};
use super::op::{EqInitKind, EqNode, Op, SolveRole};
use super::IrError;

/// What a `Capture` of an equilibrium body refers to, one level out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum CaptureKey {
    Value(ValueId),
    Param(usize),
    /// A node of the top graph (a hoisted dropout mask).
    Root(NodeId),
}

struct Scope {
    graph: Graph,
    values: HashMap<ValueId, NodeId>,
    captured: HashMap<CaptureKey, NodeId>,
    captures: Vec<(CaptureKey, Type)>,
}

impl Scope {
    fn new(graph: Graph) -> Scope {
        Scope {
            graph,
            values: HashMap::new(),
            captured: HashMap::new(),
            captures: Vec::new(),
        }
    }
}

struct Lowerer<'m> {
    model: &'m Model,
    /// Innermost scope last; scope 0 is the model's graph.
    scopes: Vec<Scope>,
    params: HashMap<usize, NodeId>,
}

/// Lower one checked model to a graph whose outputs are the model's outputs.
pub fn lower_model(model: &Model) -> Result<Graph, IrError> {
    let mut g = Graph::new(model.name.clone());
    g.inputs = model
        .inputs
        .iter()
        .map(|i| GraphInput {
            name: i.name.clone(),
            ty: i.ty.clone(),
        })
        .collect();
    g.params = model
        .params
        .iter()
        .map(|p| GraphParam {
            path: p.path.clone(),
            ty: p.ty.clone(),
            init: p.init.clone(),
            role: p.role,
        })
        .collect();
    let mut l = Lowerer {
        model,
        scopes: vec![Scope::new(g)],
        params: HashMap::new(),
    };
    l.block(&model.body)?;
    let outs = model
        .outputs
        .iter()
        .map(|v| l.value(0, *v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut g = l.scopes.pop().map(|s| s.graph).unwrap_or_default();
    g.set_outputs(outs);
    super::debug_verify(&g, "lowering")?;
    Ok(g)
}

fn bad(msg: impl Into<String>) -> IrError {
    IrError::Invalid(msg.into())
}

impl Lowerer<'_> {
    fn level(&self) -> usize {
        self.scopes.len() - 1
    }

    fn graph(&mut self) -> &mut Graph {
        let l = self.level();
        &mut self.scopes[l].graph
    }

    /// The node of HIR value `v` in scope `level`, capturing it from outer
    /// scopes when it was defined outside.
    fn value(&mut self, level: usize, v: ValueId) -> Result<NodeId, IrError> {
        if let Some(n) = self.scopes[level].values.get(&v) {
            return Ok(*n);
        }
        if level == 0 {
            return Err(bad(format!("value %{} used before its definition", v.0)));
        }
        let ty = self.model.ty(v).clone();
        self.capture(level, CaptureKey::Value(v), ty)
    }

    fn capture(&mut self, level: usize, key: CaptureKey, ty: Type) -> Result<NodeId, IrError> {
        if let Some(n) = self.scopes[level].captured.get(&key) {
            return Ok(*n);
        }
        let s = &mut self.scopes[level];
        let idx = s.captures.len();
        let n = s.graph.add(Op::Capture(idx), ty.clone(), &[], None);
        s.captures.push((key, ty));
        s.captured.insert(key, n);
        Ok(n)
    }

    /// Resolve a capture key of scope `level + 1` in scope `level`.
    fn resolve(&mut self, level: usize, key: CaptureKey, ty: &Type) -> Result<NodeId, IrError> {
        match key {
            CaptureKey::Value(v) => self.value(level, v),
            CaptureKey::Param(i) => self.param(level, i),
            CaptureKey::Root(n) if level == 0 => Ok(n),
            CaptureKey::Root(_) => self.capture(level, key, ty.clone()),
        }
    }

    fn param(&mut self, level: usize, i: usize) -> Result<NodeId, IrError> {
        let p = self
            .model
            .params
            .get(i)
            .ok_or_else(|| bad(format!("parameter {i} out of range")))?;
        if level > 0 {
            return self.capture(level, CaptureKey::Param(i), p.ty.clone());
        }
        if let Some(n) = self.params.get(&i) {
            return Ok(*n);
        }
        let n = self.scopes[0]
            .graph
            .add(Op::Param(i), p.ty.clone(), &[], Some(p.span));
        self.params.insert(i, n);
        Ok(n)
    }

    fn define(&mut self, v: ValueId, n: NodeId) {
        let l = self.level();
        self.scopes[l].values.insert(v, n);
    }

    fn block(&mut self, b: &hir::Block) -> Result<(), IrError> {
        for inst in &b.insts {
            self.inst(inst)?;
        }
        Ok(())
    }

    fn one_result(inst: &hir::Inst) -> Result<ValueId, IrError> {
        match inst.results.as_slice() {
            [r] => Ok(*r),
            _ => Err(bad(format!(
                "an instruction with {} results where one was expected",
                inst.results.len()
            ))),
        }
    }

    fn inst(&mut self, inst: &hir::Inst) -> Result<(), IrError> {
        let span = Some(inst.span);
        let level = self.level();
        match &inst.kind {
            InstKind::Input(i) => {
                let r = Self::one_result(inst)?;
                let ty = self.model.ty(r).clone();
                let n = if level == 0 {
                    self.graph().add(Op::Input(*i), ty, &[], span)
                } else {
                    return Err(bad("an input instruction inside an equilibrium body"));
                };
                self.define(r, n);
            }
            InstKind::Param(i) => {
                let r = Self::one_result(inst)?;
                let n = self.param(level, *i)?;
                self.define(r, n);
            }
            InstKind::Const(x) => {
                let r = Self::one_result(inst)?;
                let ty = self.model.ty(r).clone();
                let n = self.graph().add(Op::Const(*x), ty, &[], span);
                self.define(r, n);
            }
            InstKind::State(i) => {
                let r = Self::one_result(inst)?;
                let ty = self.model.ty(r).clone();
                let n = self.graph().add(Op::State(*i), ty, &[], span);
                self.define(r, n);
            }
            InstKind::Prim(p, args) => {
                let ops = args
                    .iter()
                    .map(|a| self.value(level, *a))
                    .collect::<Result<Vec<_>, _>>()?;
                self.prim(inst, p, &ops, inst.span)?;
            }
            InstKind::Equilibrium(eq) => self.equilibrium(inst, eq)?,
        }
        Ok(())
    }

    /// A primitive: most carry their IR op as it stands; `split` becomes one
    /// slice per result and `dropout` a product with a mask.
    fn prim(
        &mut self,
        inst: &hir::Inst,
        p: &Prim,
        args: &[NodeId],
        span: Span,
    ) -> Result<(), IrError> {
        match p {
            Prim::Op(op @ Op::Probe { .. }) => {
                let r = Self::one_result(inst)?;
                let ty = self.model.ty(r).clone();
                let n = self.root_node(op.clone(), ty, span)?;
                self.define(r, n);
                Ok(())
            }
            Prim::Op(op) => {
                let r = Self::one_result(inst)?;
                let ty = self.model.ty(r).clone();
                let n = self.graph().add(op.clone(), ty, args, Some(span));
                self.define(r, n);
                Ok(())
            }
            Prim::Split { axis, sizes } => self.split(inst, *axis, sizes, args, span),
            Prim::Dropout { p } => self.dropout(inst, *p, args, span),
            Prim::Vjp => self.jacobian_product(inst, false, args),
            Prim::Jvp => self.jacobian_product(inst, true, args),
        }
    }

    fn split(
        &mut self,
        inst: &hir::Inst,
        axis: usize,
        sizes: &[Dim],
        args: &[NodeId],
        span: Span,
    ) -> Result<(), IrError> {
        let x = *args.first().ok_or_else(|| bad("split without operand"))?;
        let rank = self.graph().ty(x).rank();
        let mut start = Dim::konst(0);
        for (r, size) in inst.results.iter().zip(sizes) {
            let end = start.add(size).ok_or_else(|| bad("overflow"))?;
            let axes = SliceAxis::along(rank, axis, &start, &end);
            let ty = self.model.ty(*r).clone();
            let n = self.graph().add(Op::Slice { axes }, ty, &[x], Some(span));
            self.define(*r, n);
            start = end;
        }
        Ok(())
    }

    fn dropout(
        &mut self,
        inst: &hir::Inst,
        p: f64,
        args: &[NodeId],
        span: Span,
    ) -> Result<(), IrError> {
        let r = Self::one_result(inst)?;
        let ty = self.model.ty(r).clone();
        let x = *args.first().ok_or_else(|| bad("dropout without operand"))?;
        if p == 0.0 {
            self.define(r, x);
            return Ok(());
        }
        let mask_op = Op::DropoutMask {
            p,
            shape: ty.shape.clone(),
        };
        let mask = self.root_node(mask_op, ty.clone(), span)?;
        let n = self.graph().add(Op::Mul, ty, &[x, mask], Some(span));
        self.define(r, n);
        Ok(())
    }

    /// A random constructor (dropout mask, probe) made in the top graph and
    /// captured into the current body, so it is drawn once per run of the
    /// graph and derived bodies (adjoints) see the same values.
    fn root_node(&mut self, op: Op, ty: Type, span: Span) -> Result<NodeId, IrError> {
        let root = self.scopes[0].graph.add(op, ty.clone(), &[], Some(span));
        let level = self.level();
        if level == 0 {
            return Ok(root);
        }
        self.capture(level, CaptureKey::Root(root), ty)
    }

    /// `vjp(f, x, v)` (`jvp` false) or `jvp(f, x, u)`, operands
    /// `[f(x), x, vector]`: the reverse sweep appends the product's nodes to
    /// the current graph (an equilibrium body included), so it is plain IR
    /// that later stages optimize and differentiate again. A JVP is the VJP
    /// of the linear map `w -> J^T w` (taken at `w = 0`) with cotangent `u`.
    fn jacobian_product(
        &mut self,
        inst: &hir::Inst,
        jvp: bool,
        args: &[NodeId],
    ) -> Result<(), IrError> {
        let r = Self::one_result(inst)?;
        let &[out, x, vector] = args else {
            return Err(bad("a Jacobian product without its three operands"));
        };
        let g = self.graph();
        let n = if jvp {
            let w_ty = g.ty(out).clone();
            let w = g.add(
                Op::Fill {
                    value: 0.0,
                    shape: w_ty.shape.clone(),
                },
                w_ty,
                &[],
                Some(inst.span),
            );
            let jt_w = cotangent(g, out, x, w)?;
            cotangent(g, jt_w, w, vector)?
        } else {
            cotangent(g, out, x, vector)?
        };
        self.define(r, n);
        Ok(())
    }

    fn equilibrium(&mut self, inst: &hir::Inst, eq: &hir::Equilibrium) -> Result<(), IrError> {
        let outer = self.level();
        self.scopes.push(Scope::new(Graph::new("")));
        let inner = self.level();
        self.block(&eq.body)?;
        let outs = eq
            .outputs
            .iter()
            .map(|v| self.value(inner, *v))
            .collect::<Result<Vec<_>, _>>()?;
        let mut scope = self
            .scopes
            .pop()
            .ok_or_else(|| bad("equilibrium scope lost"))?;
        scope.graph.set_outputs(outs);
        let mut operands = Vec::new();
        for (key, ty) in &scope.captures {
            operands.push(self.resolve(outer, *key, ty)?);
        }
        let init = match &eq.init {
            hir::EqInit::Zeros => EqInitKind::Zeros,
            hir::EqInit::Values(vs) => {
                for v in vs {
                    operands.push(self.value(outer, *v)?);
                }
                EqInitKind::Values
            }
        };
        let state_types: Vec<Type> = inst
            .results
            .iter()
            .map(|r| self.model.ty(*r).clone())
            .collect();
        let first = state_types
            .first()
            .cloned()
            .ok_or_else(|| bad("an equilibrium without states"))?;
        let node = EqNode {
            state_names: eq.state_names.clone(),
            state_types,
            capture_types: scope.captures.iter().map(|(_, t)| t.clone()).collect(),
            body: scope.graph,
            init,
            solver: eq.solver.clone(),
            backward: eq.backward.clone(),
            role: SolveRole::Forward,
        };
        let span = Some(inst.span);
        let e = self
            .graph()
            .add(Op::Equilibrium(Box::new(node)), first, &operands, span);
        for (i, r) in inst.results.iter().enumerate() {
            let ty = self.model.ty(*r).clone();
            let p = self.graph().add(Op::Project(i), ty, &[e], span);
            self.define(*r, p);
        }
        Ok(())
    }
}

/// The cotangent of `wrt` for the cotangent `seed` of `out` (zeros when
/// `out` does not depend on `wrt`), appended to `g` by the reverse sweep
/// with the equilibria's own backward modes.
fn cotangent(g: &mut Graph, out: NodeId, wrt: NodeId, seed: NodeId) -> Result<NodeId, IrError> {
    let found = crate::autodiff::vjp_nodes(g, &[(out, seed)], &[wrt], &crate::deq::DeqVjp)
        .map_err(|e| match e {
            crate::autodiff::AdError::Ir(e) => e,
            other => bad(other.to_string()),
        })?;
    if let Some(Some(n)) = found.first() {
        return Ok(*n);
    }
    let ty = g.ty(wrt).clone();
    let span = g.span(out);
    Ok(g.add(
        Op::Fill {
            value: 0.0,
            shape: ty.shape.clone(),
        },
        ty,
        &[],
        span,
    ))
}
