//! The passes of a kernel over its row: in which pass each value becomes
//! available, what each pass computes, and which values are kept from one
//! pass to a later one instead of being computed again.
//!
//! Guarantees: a pass computes exactly what its outputs and reductions
//! need, minus inputs and what earlier passes left in memory (their outputs
//! and stashed values); a stashed value lives in an output buffer that is
//! not written between the pass that stores it and the one element-wise
//! read that consumes it.

use std::collections::{HashMap, HashSet};

use super::super::{Binary, Inst, Kernel, Level};

/// The stash [`super::compile`] would use for `kernel`: (value, output slot),
/// sorted.
#[cfg(test)]
pub(in crate::jit) fn stash_of(kernel: &Kernel) -> Vec<(usize, usize)> {
    let levels = kernel.levels();
    let ready = ready_passes(kernel);
    let passes = ready.iter().copied().max().unwrap_or(0);
    let n_in = kernel.inputs.len();
    let mut outputs_of: HashMap<usize, Vec<usize>> = HashMap::new();
    for (o, v) in kernel.outputs.iter().enumerate() {
        outputs_of.entry(*v).or_default().push(n_in + o);
    }
    let mut v: Vec<_> = choose_stash(kernel, passes, &ready, &levels, &outputs_of)
        .into_iter()
        .collect();
    v.sort();
    v
}

/// The pass in which each value becomes available (one more than its
/// latest reduction's operand).
pub(super) fn ready_passes(k: &Kernel) -> Vec<usize> {
    let mut ready = vec![0usize; k.insts.len()];
    for (i, inst) in k.insts.iter().enumerate() {
        ready[i] = match inst {
            Inst::Input(_) | Inst::Const(_) => 0,
            Inst::Unary(_, a) => ready[*a],
            Inst::Binary(_, a, b) => ready[*a].max(ready[*b]),
            Inst::Select(m, a, b) => ready[*m].max(ready[*a]).max(ready[*b]),
            Inst::Reduce(_, a) | Inst::RowFn(_, a) => ready[*a] + 1,
        };
    }
    ready
}

/// The full values pass `p` must produce: its outputs and the operands of
/// the reductions and row functions that finish with it (a row function's
/// own value is written by its call after the pass, never by a loop).
pub(super) fn roots_of(
    k: &Kernel,
    p: usize,
    ready: &[usize],
    levels: &[Level],
    outputs_of: &HashMap<usize, Vec<usize>>,
) -> Vec<usize> {
    let mut roots: Vec<usize> = (0..k.insts.len())
        .filter(|&i| {
            levels[i] == Level::Full
                && ready[i] == p
                && outputs_of.contains_key(&i)
                && !matches!(k.insts[i], Inst::RowFn(..))
        })
        .collect();
    for (i, inst) in k.insts.iter().enumerate() {
        if let Inst::Reduce(_, a) | Inst::RowFn(_, a) = inst {
            if ready[i] == p + 1 {
                roots.push(*a);
            }
        }
    }
    roots
}

/// Values computed in pass `p`: its roots and what they need, minus inputs
/// and the outputs and stashed values of earlier passes (read from memory).
pub(super) fn needed_in(
    k: &Kernel,
    p: usize,
    roots: &[usize],
    ready: &[usize],
    levels: &[Level],
    outputs_of: &HashMap<usize, Vec<usize>>,
    stash: &HashMap<usize, usize>,
) -> Vec<bool> {
    let mut needed = vec![false; k.insts.len()];
    let mut stack = roots.to_vec();
    while let Some(v) = stack.pop() {
        // Row functions' values are in their output buffers from the pass
        // they are ready in.
        if needed[v]
            || levels[v] != Level::Full
            || matches!(k.insts[v], Inst::Input(_) | Inst::RowFn(..))
        {
            continue;
        }
        if ready[v] < p && (outputs_of.contains_key(&v) || stash.contains_key(&v)) {
            continue;
        }
        needed[v] = true;
        stack.extend(k.insts[v].operands());
    }
    needed
}

/// Values worth keeping from the pass that computes them to a later one
/// instead of computing them again there, each in the buffer of the output
/// that consumes it (softmax's `exp(x - max)`, written during the pass that
/// sums it and divided in place by the sum in the last pass).
///
/// A value `v` is stashed in output `o`'s first buffer when: `v` is a full
/// value computed in an earlier pass that calls a strip function somewhere
/// in its computation (recomputing it costs a transcendental); `o` is
/// written in a later pass `q` by a plain instruction (not a strip call)
/// that reads `v` directly, and nothing else computed in pass `q` reads
/// `v`, so each element of `v` is read just before the same element of
/// `o` overwrites it; and no pass but those two needs `v`. The executor
/// never gives an output a buffer that holds one of the kernel's inputs.
pub(super) fn choose_stash(
    k: &Kernel,
    passes: usize,
    ready: &[usize],
    levels: &[Level],
    outputs_of: &HashMap<usize, Vec<usize>>,
) -> HashMap<usize, usize> {
    let mut stash = HashMap::new();
    if passes == 0 {
        return stash;
    }
    let mut costly = vec![false; k.insts.len()];
    for (i, inst) in k.insts.iter().enumerate() {
        let calls = matches!(inst, Inst::Unary(u, _) if u.strip().is_some())
            || matches!(inst, Inst::Binary(Binary::Pow, ..));
        costly[i] =
            levels[i] == Level::Full && (calls || inst.operands().iter().any(|a| costly[*a]));
    }
    let none = HashMap::new();
    let needed: Vec<Vec<bool>> = (0..=passes)
        .map(|p| {
            let roots = roots_of(k, p, ready, levels, outputs_of);
            needed_in(k, p, &roots, ready, levels, outputs_of, &none)
        })
        .collect();
    let mut taken = HashSet::new();
    // In the kernel's output order, so the choice is the same every time.
    for &o in &k.outputs {
        let slots = &outputs_of[&o];
        let q = ready[o];
        let plain = match &k.insts[o] {
            Inst::Unary(u, _) => u.strip().is_none(),
            Inst::Binary(b, ..) => *b != Binary::Pow,
            Inst::Select(..) => true,
            Inst::Input(_) | Inst::Const(_) | Inst::Reduce(..) | Inst::RowFn(..) => false,
        };
        if levels[o] != Level::Full || q == 0 || !plain || taken.contains(&slots[0]) {
            continue;
        }
        let fits = |v: usize| {
            levels[v] == Level::Full
                && costly[v]
                && ready[v] < q
                && !outputs_of.contains_key(&v)
                && !stash.contains_key(&v)
                && needed[ready[v]][v]
                && (0..=passes).all(|p| p == ready[v] || p == q || !needed[p][v])
                && (0..k.insts.len())
                    .all(|j| j == o || !needed[q][j] || !k.insts[j].operands().contains(&v))
        };
        if let Some(v) = k.insts[o].operands().into_iter().find(|v| fits(*v)) {
            stash.insert(v, slots[0]);
            taken.insert(slots[0]);
        }
    }
    stash
}
