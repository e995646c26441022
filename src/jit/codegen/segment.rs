//! Segments: a pass's runs of arithmetic compiled as one loop each.
//!
//! Owns the split of a pass into [`Unit`]s (segments of arithmetic between
//! strip-function calls) and the code of one segment: a single loop over
//! the strip whose instructions keep their values in registers; a value
//! goes to memory only when it is an output, feeds another unit or a
//! strip function. Guarantees: every instruction of a segment is computed
//! once per element, in instruction order (so results match the scalar
//! reference to rounding); comparisons and selects run on whole vectors
//! (lane masks and a blend), with NaN masks counting as nonzero.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};

use super::loops::Acc;
use super::{Gen, Src};
use crate::ir::Cmp;
use crate::jit::{Binary, Inst, Kernel};

/// A pass's computations in order: runs of arithmetic computed together in
/// one loop, and strip-function calls (which read and write memory).
pub(super) enum Unit {
    Segment(Vec<usize>),
    Strip(usize),
}

impl Unit {
    pub(super) fn insts(&self) -> Vec<usize> {
        match self {
            Unit::Segment(m) => m.clone(),
            Unit::Strip(i) => vec![*i],
        }
    }
}

/// Split the needed instructions (in order) into [`Unit`]s.
pub(super) fn units_of(k: &Kernel, needed: &[bool]) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    for (i, inst) in k.insts.iter().enumerate() {
        if !needed[i] {
            continue;
        }
        let strip = match inst {
            Inst::Unary(u, _) => u.strip().is_some(),
            Inst::Binary(op, ..) => *op == Binary::Pow,
            _ => false,
        };
        match units.last_mut() {
            _ if strip => units.push(Unit::Strip(i)),
            Some(Unit::Segment(m)) => m.push(i),
            _ => units.push(Unit::Segment(vec![i])),
        }
    }
    units
}

pub(super) fn float_cc(c: Cmp) -> FloatCC {
    match c {
        Cmp::Lt => FloatCC::LessThan,
        Cmp::Le => FloatCC::LessThanOrEqual,
        Cmp::Gt => FloatCC::GreaterThan,
        Cmp::Ge => FloatCC::GreaterThanOrEqual,
        Cmp::Eq => FloatCC::Equal,
        Cmp::Ne => FloatCC::NotEqual,
    }
}

impl Gen<'_, '_> {
    /// One loop over the strip computing a segment's instructions in
    /// registers: operands come from registers, memory or pinned row
    /// values; stored values go to their addresses; folded reductions
    /// accumulate the value as it is computed.
    pub(super) fn segment_loop(
        &mut self,
        members: &[usize],
        loc: &HashMap<usize, Src>,
        dsts: &HashMap<usize, Vec<Value>>,
        (reduced, rows): (&[usize], &[Acc]),
        n: Value,
    ) -> Result<(), String> {
        let k = self.k;
        let mut failure = None;
        let local = self.loop_accs(rows);
        let unroll = Self::unroll_for(&local);
        self.element_loop(n, unroll, &mut |g, byte_off, is_vector, slot| {
            let ty = if is_vector { g.vty } else { g.ty };
            let mut reg: HashMap<usize, Value> = HashMap::new();
            for &i in members {
                let mut get = |g: &mut Self, v: usize| -> Option<Value> {
                    if let Some(r) = reg.get(&v) {
                        return Some(*r);
                    }
                    let x = match loc.get(&v)? {
                        Src::Mem(a) => {
                            let a = g.b.ins().iadd(*a, byte_off);
                            g.b.ins().load(ty, g.mf, a, 0)
                        }
                        // Lane 0 of the pinned vector is the scalar.
                        Src::Pinned(a) => g.b.ins().load(ty, g.mf, *a, 0),
                    };
                    reg.insert(v, x);
                    Some(x)
                };
                let y = match &k.insts[i] {
                    Inst::Unary(u, a) => get(g, *a).map(|x| g.arith_unary(*u, x, is_vector)),
                    Inst::Binary(op, a, b) => match (get(g, *a), get(g, *b)) {
                        (Some(x), Some(y)) => Some(g.lane_binary(*op, x, y, is_vector)),
                        _ => None,
                    },
                    Inst::Select(m, a, b) => match (get(g, *m), get(g, *a), get(g, *b)) {
                        (Some(m), Some(x), Some(y)) => Some(g.lane_select(m, x, y, is_vector)),
                        _ => None,
                    },
                    Inst::Input(_) | Inst::Const(_) | Inst::Reduce(..) | Inst::RowFn(..) => None,
                };
                let Some(y) = y else {
                    failure = Some(format!(
                        "instruction {i} has an operand that is not available"
                    ));
                    return;
                };
                reg.insert(i, y);
                for d in dsts.get(&i).into_iter().flatten() {
                    let d = g.b.ins().iadd(*d, byte_off);
                    g.b.ins().store(g.mf, y, d, 0);
                }
            }
            for (a, acc) in reduced.iter().zip(&local) {
                g.accumulate(acc, reg[a], is_vector, slot);
            }
        });
        self.merge_accs(rows, &local);
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A non-strip binary function on vectors or scalars; comparisons give
    /// 1 or 0 in every lane.
    fn lane_binary(&mut self, op: Binary, a: Value, b: Value, vector: bool) -> Value {
        match op {
            Binary::Cmp(c) if vector => {
                let mask = self.b.ins().fcmp(float_cc(c), a, b);
                let (one, zero) = (self.konst(1.0, true), self.konst(0.0, true));
                self.blend(mask, one, zero)
            }
            _ => self.arith_binary(op, a, b),
        }
    }

    /// `a` where `m` is nonzero, else `b` (NaN counts as nonzero).
    fn lane_select(&mut self, m: Value, a: Value, b: Value, vector: bool) -> Value {
        let z = self.konst(0.0, vector);
        let c = self.b.ins().fcmp(FloatCC::NotEqual, m, z);
        if vector {
            self.blend(c, a, b)
        } else {
            self.b.ins().select(c, a, b)
        }
    }

    /// Lanewise `mask ? a : b` for a vector comparison's mask.
    fn blend(&mut self, mask: Value, a: Value, b: Value) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        let mask = self.b.ins().bitcast(self.vty, flags, mask);
        self.b.ins().bitselect(mask, a, b)
    }
}
