//! Which graphs compute every sample of a batch from that sample alone.
//!
//! Owns [`per_sample`], an analysis (it changes nothing): whether evaluating
//! a graph, an equilibrium body above all, on samples `a..b` of its batch
//! axis gives exactly samples `a..b` of its evaluation on the whole batch.
//! The executor evaluates such bodies in parts of the batch, one per thread
//! (`exec::parts`).
//!
//! Guarantees: the answer is conservative. `Ok` only when every node either
//! has the batch symbol as its first dim and nowhere else, or does not
//! mention it at all; no value without the batch axis is computed from one
//! with it (a sum over the batch, a weight's gradient); no attribute reads
//! the batch size (a count, a mask or a range of that length); and every op
//! treats the first axis as independent samples (no reduction, softmax,
//! permutation, concatenation or slice along it, no random draws, no nested
//! equilibrium). Every op is matched exhaustively, so a new op does not
//! compile until it says how it treats the batch.

use std::collections::HashMap;

use crate::ir::op::EqNode;
use crate::ir::op_groups::{binary_math_ops, source_ops, unary_math_ops};
use crate::ir::{Graph, NodeId, Op};
use crate::types::dim::Dim;
use crate::types::{SliceAxis, Type};

/// Why a graph is not evaluated per sample: the first node found that mixes
/// samples (or reads the batch size), and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mixing {
    /// `None` when the graph itself is the problem (a cycle).
    pub node: Option<NodeId>,
    pub why: &'static str,
}

/// How a value relates to the batch axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// The batch symbol is its first dim, and no other dim mentions it.
    Leading,
    /// No dim mentions the batch symbol.
    Absent,
}

/// Whether `graph` computes each sample along the batch symbol `batch`
/// from that sample alone (module docs); `Err` names the first node that
/// does not.
pub fn per_sample(graph: &Graph, batch: &str) -> Result<(), Mixing> {
    let order = graph.try_topo_order().ok_or(Mixing {
        node: None,
        why: "the graph has a cycle",
    })?;
    let mut class: HashMap<NodeId, Batch> = HashMap::new();
    for id in order {
        let node = graph.node(id);
        let fail = |why| Mixing {
            node: Some(id),
            why,
        };
        let this = classify(&node.ty, batch)
            .ok_or_else(|| fail("the batch size appears in a dim other than the first"))?;
        let operands: Vec<(Batch, usize)> = graph
            .operands(id)
            .iter()
            .map(|o| (class[o], graph.ty(*o).rank()))
            .collect();
        let (shapes, lengths) = attributes(&node.op, batch);
        if lengths.iter().any(|d| mentions(d, batch)) {
            return Err(fail("an attribute reads the batch size"));
        }
        match this {
            Batch::Absent => {
                if operands.iter().any(|(c, _)| *c == Batch::Leading) {
                    return Err(fail(
                        "a value without the batch axis is computed from batched values \
                         (a sum over the batch, or a weight's gradient)",
                    ));
                }
                if shapes
                    .iter()
                    .flat_map(|s| s.iter())
                    .any(|d| mentions(d, batch))
                {
                    return Err(fail("an attribute reads the batch size"));
                }
            }
            Batch::Leading => {
                // A shape attribute may lead with the batch, as the result does.
                if shapes.iter().any(|s| classify_dims(s, batch).is_none()) {
                    return Err(fail("the batch size appears in a dim other than the first"));
                }
                leading(&node.op, node.ty.rank(), &operands, batch).map_err(fail)?
            }
        }
        class.insert(id, this);
    }
    for o in graph.outputs() {
        if class.get(o) != Some(&Batch::Leading) {
            return Err(Mixing {
                node: Some(*o),
                why: "an output lacks the batch axis",
            });
        }
    }
    Ok(())
}

/// One line on how an equilibrium's body treats its batch, for `deqc dump
/// --emit=kernels`: evaluated in parts of it (when threads allow), or why
/// it runs whole.
pub fn describe(eq: &EqNode) -> String {
    let batch = eq
        .state_types
        .iter()
        .map(|t| t.shape.first().and_then(Dim::as_symbol))
        .reduce(|a, b| if a == b { a } else { None })
        .flatten();
    let Some(batch) = batch else {
        return "whole batch: the states do not all lead with one named dim".into();
    };
    match per_sample(&eq.body, batch) {
        Ok(()) => format!(
            "per sample along {batch}: may run in parts of {batch}, one per thread \
             (when the batch and the threads allow)"
        ),
        Err(Mixing { node: Some(n), why }) => {
            format!("whole batch: {n} {}: {why}", eq.body.op(n).name())
        }
        Err(Mixing { node: None, why }) => format!("whole batch: {why}"),
    }
}

fn mentions(d: &Dim, batch: &str) -> bool {
    d.symbols().iter().any(|s| s == batch)
}

fn classify(ty: &Type, batch: &str) -> Option<Batch> {
    classify_dims(&ty.shape, batch)
}

fn classify_dims(shape: &[Dim], batch: &str) -> Option<Batch> {
    let rest_free = |dims: &[Dim]| !dims.iter().any(|d| mentions(d, batch));
    match shape.split_first() {
        Some((first, rest)) if first.as_symbol() == Some(batch) => {
            rest_free(rest).then_some(Batch::Leading)
        }
        _ => rest_free(shape).then_some(Batch::Absent),
    }
}

/// Whether an op whose result leads with the batch axis computes each
/// sample from that sample alone, given its operands' classes and ranks.
fn leading(
    op: &Op,
    rank: usize,
    operands: &[(Batch, usize)],
    batch: &str,
) -> Result<(), &'static str> {
    let lead = |slot: usize| operands.get(slot).map(|(c, _)| *c) == Some(Batch::Leading);
    // Every batched operand has the result's rank, so its first axis is
    // the result's first axis (elementwise broadcasting aligns the last).
    let aligned = || {
        let ok = operands
            .iter()
            .all(|(c, r)| *c == Batch::Absent || *r == rank);
        if ok {
            Ok(())
        } else {
            Err("a batched operand is broadcast against another axis")
        }
    };
    let first_whole = |axes: &[SliceAxis]| match axes.first() {
        None => Ok(()),
        Some(a) if whole(a, batch) => Ok(()),
        Some(_) => Err("a slice along the batch axis"),
    };
    let batched_input = || {
        if lead(0) {
            Ok(())
        } else {
            Err("a value gains the batch axis from one without it")
        }
    };
    match op {
        source_ops!() | Op::Const(_) => Ok(()),
        unary_math_ops!()
        | binary_math_ops!()
        | Op::LeakyRelu { .. }
        | Op::Clamp { .. }
        | Op::Cast { .. }
        | Op::Where
        | Op::BroadcastTo { .. }
        | Op::SumTo { .. }
        | Op::AvgPool2d { .. }
        | Op::MaxPool2d { .. }
        | Op::UpsampleNearest2d { .. }
        | Op::AvgPool2dBackward { .. }
        | Op::MaxPool2dBackward { .. }
        | Op::MaxPool2dSelect { .. } => aligned(),
        Op::Reduce { axes, .. } => {
            if axes.contains(&0) {
                Err("a reduction over the batch axis")
            } else {
                batched_input()
            }
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            if *axis == 0 {
                Err("a softmax over the batch axis")
            } else {
                Ok(())
            }
        }
        Op::MatMul => {
            // `[B, k] @ [k, n]`: the batch is the rows; otherwise it is a
            // batch axis of both results. A batched right operand of a
            // plain product would be summed over.
            if rank == 2 {
                if lead(1) {
                    Err("a product sums over the batch axis")
                } else {
                    Ok(())
                }
            } else {
                aligned()
            }
        }
        Op::Reshape { .. } => batched_input(),
        Op::Permute { axes } => {
            if axes.first() == Some(&0) {
                batched_input()
            } else {
                Err("a permutation moves the batch axis")
            }
        }
        Op::Concat { axis } => {
            if *axis == 0 {
                Err("a concatenation along the batch axis")
            } else {
                aligned()
            }
        }
        Op::Slice { axes } | Op::SliceBackward { axes, .. } => {
            first_whole(axes)?;
            batched_input()
        }
        Op::Fill { .. } => Ok(()),
        Op::Eye { .. } | Op::Arange { .. } | Op::CausalMask { .. } => {
            Err("a value numbers the samples")
        }
        Op::DropoutMask { .. } | Op::Probe { .. } => {
            Err("random draws per sample (a part would draw other numbers)")
        }
        Op::Conv(_) | Op::ConvInputGrad { .. } => {
            if lead(1) {
                Err("a batched convolution weight")
            } else {
                aligned()
            }
        }
        Op::Embedding => {
            if lead(1) {
                Err("a batched embedding table")
            } else {
                batched_input()
            }
        }
        Op::Equilibrium(_) | Op::Project(_) => {
            Err("a nested equilibrium (its solver sees the whole batch)")
        }
        Op::Count { .. } => Err("a count of the batch"),
        Op::ConvWeightGrad { .. } | Op::EmbeddingBackward { .. } => {
            Err("a weight's gradient sums over the batch")
        }
    }
}

/// The dims an op's attributes hold: whole shapes (which may lead with
/// the batch axis, as the op's result does), then single lengths and slice
/// bounds (which never may).
fn attributes<'o>(op: &'o Op, batch: &str) -> (Vec<&'o [Dim]>, Vec<&'o Dim>) {
    match op {
        source_ops!()
        | unary_math_ops!()
        | binary_math_ops!()
        | Op::Const(_)
        | Op::LeakyRelu { .. }
        | Op::Clamp { .. }
        | Op::Where
        | Op::Reduce { .. }
        | Op::Softmax { .. }
        | Op::LogSoftmax { .. }
        | Op::MatMul
        | Op::Permute { .. }
        | Op::Concat { .. }
        | Op::Conv(_)
        | Op::AvgPool2d { .. }
        | Op::MaxPool2d { .. }
        | Op::UpsampleNearest2d { .. }
        | Op::Embedding
        | Op::Cast { .. }
        | Op::Project(_)
        | Op::MaxPool2dBackward { .. }
        | Op::MaxPool2dSelect { .. } => (vec![], vec![]),
        Op::Reshape { shape }
        | Op::BroadcastTo { shape }
        | Op::Fill { shape, .. }
        | Op::DropoutMask { shape, .. }
        | Op::Probe { shape, .. }
        | Op::SumTo { shape }
        | Op::ConvInputGrad { shape, .. }
        | Op::ConvWeightGrad { shape, .. }
        | Op::AvgPool2dBackward { shape, .. } => (vec![shape.as_slice()], vec![]),
        Op::Count { dims } => (vec![], dims.iter().collect()),
        Op::Eye { n } | Op::Arange { n } => (vec![], vec![n]),
        Op::CausalMask { t } => (vec![], vec![t]),
        Op::EmbeddingBackward { rows } => (vec![], vec![rows]),
        Op::Slice { axes } => (vec![], slice_bounds(axes, batch)),
        Op::SliceBackward { axes, shape } => (vec![shape.as_slice()], slice_bounds(axes, batch)),
        Op::Equilibrium(eq) => (
            eq.state_types
                .iter()
                .chain(&eq.capture_types)
                .map(|t| t.shape.as_slice())
                .collect(),
            vec![],
        ),
    }
}

/// A slice's bounds, but for a first axis taken whole (those are the
/// batch's own length, not a read of it).
fn slice_bounds<'a>(axes: &'a [SliceAxis], batch: &str) -> Vec<&'a Dim> {
    axes.iter()
        .enumerate()
        .filter(|(k, a)| !(*k == 0 && whole(a, batch)))
        .flat_map(|(_, a)| match a {
            SliceAxis::Full => vec![],
            SliceAxis::Range { start, end, .. } => vec![start, end],
            SliceAxis::Index(i) => vec![i],
        })
        .collect()
}

/// Whether a slice of the batch axis keeps all of it: `:` or `0:B`.
fn whole(axis: &SliceAxis, batch: &str) -> bool {
    match axis {
        SliceAxis::Full => true,
        SliceAxis::Range { start, end, step } => {
            start.as_const() == Some(0) && end.as_symbol() == Some(batch) && *step == 1
        }
        SliceAxis::Index(_) => false,
    }
}
