//! Equilibrium bodies evaluated in parts of their batch, one per thread.
//!
//! Owns the split behind [`EqContext::eval_body`]: when a body computes
//! each sample from that sample alone ([`per_sample`]), its states and
//! batched captures are cut along the batch axis into one part per thread,
//! each part runs the whole body with its ops kept to its own thread
//! ([`threads::serially`]), and the parts' outputs are joined again.
//!
//! Why: the ops of a DEQ body are small (1–4 MB each). Splitting every op
//! across the threads costs a fork and a join per op and hands half of
//! every operand to the other core; parts run without synchronizing between
//! ops and keep their samples in their own core's cache (DEQ transformer
//! and MDEQ training steps about 7% shorter on 2 threads,
//! `docs/performance-log.md`).
//!
//! Guarantees:
//! - the outputs are bit for bit those of the whole batch, so results do
//!   not depend on the thread count either: each op of a per-sample body
//!   computes a sample the same way however many samples it is given. For
//!   products whose rows include the batch, parts are kept large enough
//!   that gemm blocks them as it blocks the whole batch
//!   (`rows_for_same_blocking`). Tested on every example and test model,
//!   in 2 and 3 parts, f32 and f64;
//! - [`BatchSplit::Auto`] splits only with fused execution on the CPU, with
//!   at least 2 threads available, and when the states hold at least
//!   [`MIN_ELEMENTS`] values; parts never nest (inside a part one thread is
//!   available);
//! - an error in a part is returned (the lowest part's); a panic propagates.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use candle_core::Tensor;

use crate::ir::op::EqNode;
use crate::ir::{Graph, Op, Stamp};
use crate::passes::per_sample::per_sample;
use crate::threads;
use crate::types::Type;

use super::kernels::CUT_SUMS_FROM;
use super::{DimEnv, EqContext, ExecError, Feeds, Result};

/// Whether equilibrium bodies run in parts of their batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSplit {
    /// One part per available thread, when it pays (module docs).
    Auto,
    /// Always the whole batch at once.
    Off,
    /// This many parts (at most one per sample) whenever the body allows,
    /// whatever the device, threads and size: for tests.
    Parts(usize),
}

/// Below this many state values in all, a body runs whole: the MNIST
/// DEQ's 32,768 (batch 128 × 256) neither gained nor lost from parts on 2
/// threads, and smaller bodies' ops are too short to pay for a join.
pub const MIN_ELEMENTS: usize = 1 << 16;

thread_local! {
    static SPLITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Body evaluations this thread has run in parts so far (for tests that
/// must know a split happened).
pub fn splits_on_this_thread() -> usize {
    SPLITS.with(std::cell::Cell::get)
}

/// How one body evaluation is split.
pub(super) struct Plan<'a> {
    /// The batch symbol, every state's first dim.
    batch: &'a str,
    samples: usize,
    parts: usize,
}

/// The split of this evaluation, or `None` to run the whole batch.
pub(super) fn plan<'a>(ctx: &EqContext, node: &'a EqNode, states: &[Tensor]) -> Option<Plan<'a>> {
    let wanted = match ctx.exec.options.batch_split {
        BatchSplit::Off => return None,
        BatchSplit::Parts(n) => n,
        BatchSplit::Auto => {
            let values: usize = states.iter().map(Tensor::elem_count).sum();
            if !ctx.exec.fuses() || values < MIN_ELEMENTS {
                return None;
            }
            threads::available()
        }
    };
    let batch = node.state_types.first()?.shape.first()?.as_symbol()?;
    if !node.state_types.iter().all(|t| leads_with(t, batch)) {
        return None;
    }
    let samples = usize::try_from(ctx.dims.get(batch)?).ok()?;
    let parts = match smallest_part(&node.body, batch, ctx.dims) {
        Some(least) => wanted.min(samples / least),
        None => 0,
    };
    (parts >= 2).then_some(Plan {
        batch,
        samples,
        parts,
    })
}

/// Whether a value of type `t` has the batch symbol as its first dim.
fn leads_with(t: &Type, batch: &str) -> bool {
    t.shape.first().and_then(|d| d.as_symbol()) == Some(batch)
}

/// The fewest samples a part of `body` may have, or `None` when the body
/// must run whole (it mixes samples: [`per_sample`]). Remembered per
/// (body, dims): a solver asks at every iteration.
fn smallest_part(body: &Graph, batch: &str, dims: &DimEnv) -> Option<usize> {
    type Key = (Stamp, String, Vec<(String, i64)>);
    static KNOWN: OnceLock<Mutex<HashMap<Key, Option<usize>>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    let bindings = dims
        .bindings()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let key = (body.stamp(), batch.to_string(), bindings);
    if let Some(v) = known.lock().ok().and_then(|k| k.get(&key).copied()) {
        return v;
    }
    let v = per_sample(body, batch)
        .ok()
        .and_then(|()| rows_for_same_blocking(body, batch, dims));
    if let Ok(mut k) = known.lock() {
        k.insert(key, v);
    }
    v
}

/// The fewest samples per part for which every product whose rows include
/// the batch (a left operand leading with it, a right one without) is
/// blocked by gemm as on the whole batch, so that each row sums in the
/// same order: more than 64 rows (gemm takes another summed-axis block
/// length for products of at most 64 rows and columns) and more than 256
/// results (gemm computes smaller products with dot-product kernels, and
/// one row by a matrix-vector product). Products with a batch of their own
/// are per sample already. `None` (run whole) when a dim does not resolve,
/// or when such a product sums over [`CUT_SUMS_FROM`] terms or more: it may
/// be cut along its summed axis (`split_k`, decided by its row count too)
/// for a part and not for the whole batch, and add in another order.
fn rows_for_same_blocking(body: &Graph, batch: &str, dims: &DimEnv) -> Option<usize> {
    let leads = |t: &Type| leads_with(t, batch);
    let size = |d: &crate::types::dim::Dim| dims.eval(d).and_then(|v| usize::try_from(v).ok());
    let mut least = 1;
    for id in body.node_ids() {
        if !matches!(body.op(id), Op::MatMul) {
            continue;
        }
        let operands = body.operands(id);
        let (a, b) = (body.ty(operands[0]), body.ty(operands[1]));
        if !leads(a) || leads(b) {
            continue;
        }
        // Rows of one sample: the left operand's dims between the batch and
        // the summed axis.
        let rows: usize = (a.shape[1..a.rank() - 1].iter().map(size))
            .product::<Option<usize>>()?
            .max(1);
        if size(a.shape.last()?)? >= CUT_SUMS_FROM {
            return None;
        }
        let cols = size(body.ty(id).shape.last()?)?.max(1);
        least = least.max(64 / rows + 1).max(256 / (rows * cols) + 1);
    }
    Some(least)
}

/// Evaluate the body in the parts of `plan` and join their outputs along
/// the batch axis.
pub(super) fn eval(
    ctx: &EqContext,
    node: &EqNode,
    states: &[Tensor],
    captures: &[Tensor],
    plan: &Plan,
) -> Result<Vec<Tensor>> {
    SPLITS.with(|n| n.set(n.get() + 1));
    let (samples, parts) = (plan.samples, plan.parts);
    let ranges: Vec<(usize, usize)> = (0..parts)
        .map(|p| {
            let (lo, hi) = (p * samples / parts, (p + 1) * samples / parts);
            (lo, hi - lo)
        })
        .collect();
    let run_part = |(start, len): (usize, usize)| -> Result<Vec<Tensor>> {
        let cut = |values: &[Tensor], types: &[Type]| -> Result<Vec<Tensor>> {
            values
                .iter()
                .zip(types)
                .map(|(v, t)| {
                    if leads_with(t, plan.batch) {
                        v.narrow(0, start, len).map_err(library)
                    } else {
                        Ok(v.clone())
                    }
                })
                .collect()
        };
        let states = cut(states, &node.state_types)?;
        let captures = cut(captures, &node.capture_types)?;
        let dims = ctx.dims.rebound(plan.batch, len as i64);
        let feeds = Feeds {
            states: &states,
            captures: &captures,
            ..Feeds::default()
        };
        threads::serially(|| Ok(ctx.exec.run_with(&node.body, &feeds, &dims)?.outputs))
    };
    let mut results: Vec<Option<Result<Vec<Tensor>>>> = (0..parts).map(|_| None).collect();
    rayon::scope(|scope| {
        let (first, rest) = results.split_at_mut(1);
        for (slot, range) in rest.iter_mut().zip(&ranges[1..]) {
            let run_part = &run_part;
            scope.spawn(move |_| {
                *slot = Some(crate::profile::unrecorded(|| run_part(*range)));
            });
        }
        // The first part on this thread, which the per-op table records.
        first[0] = Some(run_part(ranges[0]));
    });
    let outputs: Vec<Vec<Tensor>> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ExecError::Internal("a part did not run".into()))))
        .collect::<Result<_>>()?;
    (0..outputs[0].len())
        .map(|k| {
            let pieces: Vec<&Tensor> = outputs.iter().map(|o| &o[k]).collect();
            Tensor::cat(&pieces, 0).map_err(library)
        })
        .collect()
}

fn library(e: candle_core::Error) -> ExecError {
    ExecError::Internal(format!("splitting a body's batch: {e}"))
}
