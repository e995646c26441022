//! The IR graph: nodes (an [`Op`] and its static [`Type`]) joined by operand
//! edges, on a petgraph `StableGraph`.
//!
//! Owns node storage, operand order, spans (in a side table) and the graph's
//! signature (inputs, parameters, outputs). Guarantees:
//! - every edge carries its operand slot, so [`Graph::operands`] returns the
//!   operands in slot order (petgraph hands edges back in reverse insertion
//!   order);
//! - [`NodeId`]s stay valid until their node is removed; a removed node's id
//!   may be reused by a later node (petgraph's `StableGraph` recycles slots),
//!   so passes that remove nodes must not keep stale ids;
//! - [`Graph::topo_order`] is deterministic (ready nodes in increasing id
//!   order), so printing and execution order do not depend on hashing.

use std::collections::{BTreeSet, HashMap};

use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::{EdgeRef, NodeIndexable};
use petgraph::Direction;

use crate::sema::hir::ParamRole;
use crate::sema::spec::Init;
use crate::source::Span;
use crate::types::Type;

use super::op::Op;
use super::shape;
use super::IrError;

/// A node of one [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex<u32>);

impl NodeId {
    /// The node's slot number (stable while the node exists).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "n{}", self.0.index())
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub op: Op,
    /// The result type (for an equilibrium: the type of its first state;
    /// every result's type is in its `EqNode`).
    pub ty: Type,
}

/// A model input of the graph's signature.
#[derive(Debug, Clone)]
pub struct GraphInput {
    pub name: String,
    pub ty: Type,
}

/// A parameter of the graph's signature (trained, or non-trainable state).
#[derive(Debug, Clone)]
pub struct GraphParam {
    /// Checkpoint key, e.g. `cell.w`.
    pub path: String,
    pub ty: Type,
    pub init: Init,
    /// Trained, or non-trainable state (see [`ParamRole`]).
    pub role: ParamRole,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The model's name (empty for an equilibrium body).
    pub name: String,
    pub inputs: Vec<GraphInput>,
    pub params: Vec<GraphParam>,
    inner: StableGraph<Node, usize>,
    spans: HashMap<NodeId, Span>,
    outputs: Vec<NodeId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    /// Add a node with an explicit type. Operands are given in slot order.
    pub fn add(&mut self, op: Op, ty: Type, operands: &[NodeId], span: Option<Span>) -> NodeId {
        let id = NodeId(self.inner.add_node(Node { op, ty }));
        for (slot, o) in operands.iter().enumerate() {
            self.inner.add_edge(o.0, id.0, slot);
        }
        if let Some(s) = span {
            self.spans.insert(id, s);
        }
        id
    }

    /// Add a node whose type follows from its operands by the op's shape
    /// rule ([`shape::infer`]).
    pub fn add_inferred(
        &mut self,
        op: Op,
        operands: &[NodeId],
        span: Option<Span>,
    ) -> Result<NodeId, IrError> {
        let tys: Vec<&Type> = operands.iter().map(|o| self.ty(*o)).collect();
        let ty = match shape::infer(&op, &tys) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Err(IrError::Invalid(format!(
                    "the type of a `{}` node cannot be inferred from its operands",
                    op.name()
                )))
            }
            Err(e) => return Err(IrError::Invalid(format!("{}: {e}", op.name()))),
        };
        Ok(self.add(op, ty, operands, span))
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.inner.contains_node(id.0)
    }

    /// The node. Panics on a removed id (a compiler bug, never user input).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.inner[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.inner[id.0]
    }

    pub fn op(&self, id: NodeId) -> &Op {
        &self.inner[id.0].op
    }

    pub fn ty(&self, id: NodeId) -> &Type {
        &self.inner[id.0].ty
    }

    pub fn span(&self, id: NodeId) -> Option<Span> {
        self.spans.get(&id).copied()
    }

    pub fn set_span(&mut self, id: NodeId, span: Option<Span>) {
        match span {
            Some(s) => {
                self.spans.insert(id, s);
            }
            None => {
                self.spans.remove(&id);
            }
        }
    }

    /// Operands in slot order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(usize, NodeId)> = self
            .inner
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (*e.weight(), NodeId(e.source())))
            .collect();
        edges.sort_by_key(|(slot, _)| *slot);
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// Operand edges as `(slot, operand)`, in slot order (for the verifier).
    pub fn operand_slots(&self, id: NodeId) -> Vec<(usize, NodeId)> {
        let mut edges: Vec<(usize, NodeId)> = self
            .inner
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (*e.weight(), NodeId(e.source())))
            .collect();
        edges.sort();
        edges
    }

    /// Nodes that use `id` (once per use), sorted.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut u: Vec<NodeId> = self
            .inner
            .edges_directed(id.0, Direction::Outgoing)
            .map(|e| NodeId(e.target()))
            .collect();
        u.sort();
        u
    }

    /// Number of operand uses of `id` (not counting graph outputs).
    pub fn use_count(&self, id: NodeId) -> usize {
        self.inner.edges_directed(id.0, Direction::Outgoing).count()
    }

    /// Every node id, in increasing order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.inner.node_indices().map(NodeId).collect()
    }

    pub fn node_count(&self) -> usize {
        self.inner.node_count()
    }

    /// One past the largest node slot (for dense side tables).
    pub fn id_bound(&self) -> usize {
        self.inner.node_bound()
    }

    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    pub fn set_outputs(&mut self, outputs: Vec<NodeId>) {
        self.outputs = outputs;
    }

    /// Remove a node and its edges. Its id may be reused later.
    pub fn remove(&mut self, id: NodeId) {
        self.inner.remove_node(id.0);
        self.spans.remove(&id);
        self.outputs.retain(|o| *o != id);
    }

    /// Point every use of `old` (operand edges and outputs) at `new`.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        let uses: Vec<(NodeId, usize, petgraph::stable_graph::EdgeIndex<u32>)> = self
            .inner
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (NodeId(e.target()), *e.weight(), e.id()))
            .collect();
        for (user, slot, edge) in uses {
            self.inner.remove_edge(edge);
            self.inner.add_edge(new.0, user.0, slot);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// A topological order of every node (operands first); ready nodes are
    /// taken in increasing id order, so the order is deterministic. `None`
    /// when the graph has a cycle.
    pub fn try_topo_order(&self) -> Option<Vec<NodeId>> {
        let mut pending: HashMap<NodeId, usize> = HashMap::new();
        let mut ready: BTreeSet<NodeId> = BTreeSet::new();
        for id in self.node_ids() {
            let n = self.inner.edges_directed(id.0, Direction::Incoming).count();
            if n == 0 {
                ready.insert(id);
            } else {
                pending.insert(id, n);
            }
        }
        let mut order = Vec::with_capacity(self.node_count());
        while let Some(id) = ready.pop_first() {
            order.push(id);
            for e in self.inner.edges_directed(id.0, Direction::Outgoing) {
                let t = NodeId(e.target());
                if let Some(c) = pending.get_mut(&t) {
                    *c -= 1;
                    if *c == 0 {
                        pending.remove(&t);
                        ready.insert(t);
                    }
                }
            }
        }
        (order.len() == self.node_count()).then_some(order)
    }

    /// The topological order; a cyclic graph (a compiler bug) yields the
    /// acyclic prefix, and the verifier reports the cycle.
    pub fn topo_order(&self) -> Vec<NodeId> {
        self.try_topo_order().unwrap_or_default()
    }

    /// Nodes from which some node of `roots` can be reached (roots included).
    pub fn ancestors(&self, roots: &[NodeId]) -> BTreeSet<NodeId> {
        let mut seen: BTreeSet<NodeId> = BTreeSet::new();
        let mut stack: Vec<NodeId> = roots.to_vec();
        while let Some(n) = stack.pop() {
            if !self.contains(n) || !seen.insert(n) {
                continue;
            }
            for e in self.inner.edges_directed(n.0, Direction::Incoming) {
                stack.push(NodeId(e.source()));
            }
        }
        seen
    }
}
