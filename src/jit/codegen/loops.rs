//! The loops every pass is made of, and the accumulators of its reductions.
//!
//! Owns [`Gen::element_loop`] (vectors, optionally several per step, then
//! a scalar tail), the reduction loops and their accumulators ([`Acc`]).
//! Guarantees:
//! - every reduction keeps [`SLOTS`] independent vector accumulators: the
//!   vector steps of its loop are unrolled that many times, vector `s` of
//!   an unrolled step going to accumulator `s`, the single vectors after
//!   the unrolled part to accumulator 0. Their loop-carried chains then
//!   overlap (cranelift's `fmax` is eight instructions long, for its NaN
//!   and signed-zero rules; a vector add takes four cycles);
//! - a max or min gives exactly what one accumulator gives (these do not
//!   depend on order, NaN and signed zeros included); a sum is the same
//!   sum in another order: within a row, each accumulator adds its vectors
//!   in element order, one partial sum per strip, then the accumulators
//!   are added in order, then their lanes, then the scalar tail's;
//! - each loop accumulates into fresh accumulators that start at the
//!   identity and are combined into the row's after it: the row's own
//!   accumulators cross the strip functions' calls, and cranelift kept
//!   them on the stack, a load and a store in every step of the loop's
//!   chain (copies of them were merged back into the same stack slot).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{types, Block, InstBuilder, Value};
use cranelift_frontend::Variable;

use super::Gen;
use crate::jit::RowReduce;

/// Vector accumulators of a reduction: the vector steps of its loop are
/// unrolled this many times.
const SLOTS: usize = 4;

/// The accumulators of one reduction.
#[derive(Clone)]
pub(super) struct Acc {
    pub op: RowReduce,
    /// [`SLOTS`] vector accumulators; unrolled step `s` uses `vectors[s]`.
    pub vectors: Vec<Variable>,
    /// The scalar tail's accumulator.
    pub scalar: Variable,
}

impl Gen<'_, '_> {
    /// Fresh accumulators for `op`, at its identity.
    pub(super) fn new_acc(&mut self, op: RowReduce) -> Acc {
        let init = match op {
            RowReduce::Sum => 0.0,
            RowReduce::Max => f64::NEG_INFINITY,
            RowReduce::Min => f64::INFINITY,
        };
        let s = self.fconst(init);
        let v = self.b.ins().splat(self.vty, s);
        let vectors = (0..SLOTS)
            .map(|_| {
                let var = self.b.declare_var(self.vty);
                self.b.def_var(var, v);
                var
            })
            .collect();
        let scalar = self.b.declare_var(self.ty);
        self.b.def_var(scalar, s);
        Acc {
            op,
            vectors,
            scalar,
        }
    }

    /// Fresh accumulators for the body of one loop, at their identities
    /// (see the module notes); [`Self::merge_accs`] adds them in after it.
    pub(super) fn loop_accs(&mut self, accs: &[Acc]) -> Vec<Acc> {
        accs.iter().map(|a| self.new_acc(a.op)).collect()
    }

    /// Combines a loop's accumulators into the row's, slot by slot.
    pub(super) fn merge_accs(&mut self, accs: &[Acc], loop_accs: &[Acc]) {
        for (a, l) in accs.iter().zip(loop_accs) {
            for (to, from) in a
                .vectors
                .iter()
                .zip(&l.vectors)
                .chain([(&a.scalar, &l.scalar)])
            {
                let (x, y) = (self.b.use_var(*to), self.b.use_var(*from));
                let v = self.combine(a.op, x, y);
                self.b.def_var(*to, v);
            }
        }
    }

    /// Adds `x` (a vector at unrolled step `slot`, or a scalar) into `acc`.
    pub(super) fn accumulate(&mut self, acc: &Acc, x: Value, vector: bool, slot: usize) {
        let var = match vector {
            true => acc.vectors[slot],
            false => acc.scalar,
        };
        let a = self.b.use_var(var);
        let a = self.combine(acc.op, a, x);
        self.b.def_var(var, a);
    }

    /// The row's result of `acc`: its vector accumulators, then their
    /// lanes, then the scalar tail's.
    pub(super) fn finish_acc(&mut self, acc: &Acc) -> Value {
        let mut v = self.b.use_var(acc.vectors[0]);
        for s in &acc.vectors[1..] {
            let w = self.b.use_var(*s);
            v = self.combine(acc.op, v, w);
        }
        let mut out = self.b.use_var(acc.scalar);
        for lane in 0..self.lanes {
            let x = self.b.ins().extractlane(v, lane as u8);
            out = self.combine(acc.op, out, x);
        }
        out
    }

    /// How many vectors one step of a loop feeding `accs` takes: one per
    /// accumulator slot, or one when the loop reduces nothing.
    pub(super) fn unroll_for(accs: &[Acc]) -> usize {
        if accs.is_empty() {
            1
        } else {
            SLOTS
        }
    }

    pub(super) fn combine(&mut self, op: RowReduce, a: Value, b: Value) -> Value {
        match op {
            RowReduce::Sum => self.b.ins().fadd(a, b),
            RowReduce::Max => self.b.ins().fmax(a, b),
            RowReduce::Min => self.b.ins().fmin(a, b),
        }
    }

    /// `acc` over `n` consecutive elements from `addr`.
    pub(super) fn reduce_loop(&mut self, acc: &Acc, addr: Value, n: Value) {
        let local = self.loop_accs(std::slice::from_ref(acc));
        let unroll = Self::unroll_for(&local);
        self.element_loop(n, unroll, &mut |g, byte_off, vector, slot| {
            let ty = if vector { g.vty } else { g.ty };
            let a = g.b.ins().iadd(addr, byte_off);
            let x = g.b.ins().load(ty, g.mf, a, 0);
            g.accumulate(&local[0], x, vector, slot);
        });
        self.merge_accs(std::slice::from_ref(acc), &local);
    }

    /// The loop over elements `i < n` that every strip instruction runs:
    /// steps of `unroll` whole vectors of `lanes` elements while they fit,
    /// then single vectors, then single elements for the tail. `step` emits
    /// the work of one vector or element, given its byte offset, whether it
    /// is a vector, and its place in the unrolled step.
    pub(super) fn element_loop(
        &mut self,
        n: Value,
        unroll: usize,
        step: &mut dyn FnMut(&mut Self, Value, bool, usize),
    ) {
        let i = self.b.declare_var(types::I64);
        let zero = self.b.ins().iconst(types::I64, 0);
        self.b.def_var(i, zero);
        let lanes = self.lanes;
        let mut widths = vec![lanes];
        if unroll > 1 {
            widths.insert(0, lanes * unroll as i64);
        }
        for width in widths {
            let next = self.b.create_block();
            let header = self.enter_loop(next, |g| {
                let iv = g.b.use_var(i);
                let end = g.b.ins().iadd_imm_s(iv, width);
                g.b.ins().icmp(IntCC::SignedLessThanOrEqual, end, n)
            });
            let iv = self.b.use_var(i);
            let byte_off = self.b.ins().imul_imm_s(iv, self.size);
            for slot in 0..(width / lanes) as usize {
                let off = self
                    .b
                    .ins()
                    .iadd_imm_s(byte_off, slot as i64 * lanes * self.size);
                step(self, off, true, slot);
            }
            let end = self.b.ins().iadd_imm_s(iv, width);
            self.b.def_var(i, end);
            self.b.ins().jump(header, &[]);
            self.b.switch_to_block(next);
        }
        let done = self.b.create_block();
        let header = self.enter_loop(done, |g| {
            let iv = g.b.use_var(i);
            g.b.ins().icmp(IntCC::SignedLessThan, iv, n)
        });
        let iv = self.b.use_var(i);
        let byte_off = self.b.ins().imul_imm_s(iv, self.size);
        step(self, byte_off, false, 0);
        let end = self.b.ins().iadd_imm_s(iv, 1);
        self.b.def_var(i, end);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(done);
    }

    /// Ends the current block with a jump to a new loop header, which goes
    /// on to a new body block while `cond` (emitted in the header) holds and
    /// to `exit` once it fails. Leaves the builder in the body and returns
    /// the header, for the body's jump back.
    pub(super) fn enter_loop(
        &mut self,
        exit: Block,
        cond: impl FnOnce(&mut Self) -> Value,
    ) -> Block {
        let (header, body) = (self.b.create_block(), self.b.create_block());
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let go = cond(self);
        self.b.ins().brif(go, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        header
    }

    /// `dst[i] = src[i]` for `i < n` (a strip function's result that is
    /// also a second output).
    pub(super) fn copy_loop(&mut self, src: Value, dst: Value, n: Value) {
        self.element_loop(n, 1, &mut |g, byte_off, is_vector, _| {
            let ty = if is_vector { g.vty } else { g.ty };
            let from = g.b.ins().iadd(src, byte_off);
            let x = g.b.ins().load(ty, g.mf, from, 0);
            let to = g.b.ins().iadd(dst, byte_off);
            g.b.ins().store(g.mf, x, to, 0);
        });
    }
}
