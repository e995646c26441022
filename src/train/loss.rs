//! Losses as IR: the built-ins and the `fn`s a train block names.
//!
//! Owns what the target input looks like for each loss and the nodes that
//! compute the loss from a model graph's outputs and that target.
//! Guarantees: every loss is made of ordinary IR ops, so its gradient is
//! derived like the model's (and gradient-checked in `tests/losses.rs`):
//! - `cross_entropy(label_smoothing = e)`:
//!   `-sum(log_softmax(scores) * q) / count`, `q = (1 - e) * one_hot + e / C`
//!   (PyTorch's `CrossEntropyLoss(label_smoothing = e)`), the one-hot being
//!   `embedding(target, eye(C))`;
//! - `nll`: the same on scores that already are log-probabilities;
//! - `bce_with_logits`: `mean(softplus(x) - x * y)` over every element
//!   (softplus is evaluated as `relu(x) + log(1 + exp(-|x|))`, stable);
//! - `mse`: `mean((x - y)^2)`;
//! - a custom loss: the fn's elaborated body inlined, fed the model's
//!   outputs then the target.

use crate::autodiff::builder::Builder;
use crate::autodiff::AdError;
use crate::ir::{Graph, GraphInput, NodeId, Op, ReduceOp};
use crate::sema::spec::Loss;
use crate::types::{DType, Type};

/// What the target of the loss looks like for a model output.
pub fn target_type(loss: &Loss, scores: &Type) -> Type {
    // Class ids: the scores without their last (class) dimension.
    let ids = || {
        Type::new(
            DType::I64,
            scores.shape[..scores.rank().saturating_sub(1)].to_vec(),
        )
    };
    match loss {
        Loss::CrossEntropy { .. } | Loss::Nll => ids(),
        Loss::BceWithLogits | Loss::Mse => scores.clone(),
        Loss::Custom(c) => c.target.clone(),
    }
}

fn reduce_all(b: &mut Builder, x: NodeId, op: ReduceOp) -> Result<NodeId, AdError> {
    let axes: Vec<usize> = (0..b.ty(x).rank()).collect();
    b.op(
        Op::Reduce {
            op,
            axes,
            keepdim: false,
        },
        &[x],
    )
}

/// Append the target input and the loss to a model graph; returns
/// `(loss, scores)`, the scores being the model's first output.
pub fn append_loss(g: &mut Graph, loss: &Loss) -> Result<(NodeId, NodeId), AdError> {
    let outputs = g.outputs().to_vec();
    let scores = *outputs
        .first()
        .ok_or_else(|| AdError::Internal("the model has no output".into()))?;
    let sty = g.ty(scores).clone();
    let tty = target_type(loss, &sty);
    g.inputs.push(GraphInput {
        name: "target".into(),
        ty: tty.clone(),
    });
    let target = g.add(Op::Input(g.inputs.len() - 1), tty.clone(), &[], None);
    let span = g.span(scores);
    let mut b = Builder { g, span };
    let value = match loss {
        Loss::CrossEntropy { label_smoothing } => {
            let logp = b.op(
                Op::LogSoftmax {
                    axis: sty.rank().saturating_sub(1),
                },
                &[scores],
            )?;
            class_nll(&mut b, logp, target, &sty, &tty, *label_smoothing)?
        }
        Loss::Nll => class_nll(&mut b, scores, target, &sty, &tty, 0.0)?,
        Loss::BceWithLogits => {
            let soft = b.unary(Op::Softplus, scores)?;
            let xy = b.mul(scores, target)?;
            let each = b.sub(soft, xy)?;
            reduce_all(&mut b, each, ReduceOp::Mean)?
        }
        Loss::Mse => {
            let d = b.sub(scores, target)?;
            let sq = b.mul(d, d)?;
            reduce_all(&mut b, sq, ReduceOp::Mean)?
        }
        Loss::Custom(c) => {
            let body = c.body.as_ref().ok_or_else(|| {
                AdError::Internal(format!("the loss fn `{}` was not elaborated", c.name))
            })?;
            let lowered = crate::ir::lower::lower_model(body)
                .map_err(|e| AdError::Internal(format!("lowering the loss `{}`: {e}", c.name)))?;
            let mut args = outputs;
            args.push(target);
            inline_graph(b.g, &lowered, &args)?
        }
    };
    Ok((value, scores))
}

/// `-sum(logp * q) / count` with `q` the one-hot of `target`, smoothed
/// toward the uniform distribution by `smoothing`.
fn class_nll(
    b: &mut Builder,
    logp: NodeId,
    target: NodeId,
    sty: &Type,
    tty: &Type,
    smoothing: f64,
) -> Result<NodeId, AdError> {
    let classes = sty
        .shape
        .last()
        .cloned()
        .ok_or_else(|| AdError::Internal("a class loss of a scalar".into()))?;
    let eye = b.g.add(
        Op::Eye { n: classes.clone() },
        Type::new(sty.dtype, vec![classes.clone(), classes.clone()]),
        &[],
        b.span,
    );
    let one_hot = b.op(Op::Embedding, &[target, eye])?;
    let q = if smoothing > 0.0 {
        let kept = b.scale(one_hot, 1.0 - smoothing)?;
        let c = b.count(vec![classes], sty.dtype);
        let e = b.konst(smoothing, sty.dtype);
        let spread = b.div(e, c)?;
        b.add(kept, spread)?
    } else {
        one_hot
    };
    let picked = b.mul(logp, q)?;
    let total = reduce_all(b, picked, ReduceOp::Sum)?;
    let count = b.count(tty.shape.clone(), sty.dtype);
    let mean = b.div(total, count)?;
    b.neg(mean)
}

/// Copy the graph `inner` into `outer` with its inputs replaced by `args`
/// (in order); returns the copy of its first output.
fn inline_graph(outer: &mut Graph, inner: &Graph, args: &[NodeId]) -> Result<NodeId, AdError> {
    let mut map: Vec<Option<NodeId>> = vec![None; inner.id_bound()];
    for id in inner.topo_order() {
        let mapped = match inner.op(id) {
            Op::Input(i) => *args
                .get(*i)
                .ok_or_else(|| AdError::Internal(format!("inlining the loss: no argument {i}")))?,
            op => {
                let operands = inner
                    .operands(id)
                    .iter()
                    .map(|o| map[o.index()])
                    .collect::<Option<Vec<NodeId>>>()
                    .ok_or_else(|| {
                        AdError::Internal("inlining the loss: operand before its definition".into())
                    })?;
                outer.add(op.clone(), inner.ty(id).clone(), &operands, inner.span(id))
            }
        };
        map[id.index()] = Some(mapped);
    }
    inner
        .outputs()
        .first()
        .and_then(|o| map[o.index()])
        .ok_or_else(|| AdError::Internal("the loss fn has no output".into()))
}
