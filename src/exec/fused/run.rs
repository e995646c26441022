//! Running a bound kernel: its inputs read in place (or copied once when
//! a broadcast or a strided view must be made contiguous), its outputs
//! written into the schedule's arena buffers or fresh storage, its rows
//! split over the pool.
//!
//! Guarantees: every output element is written by the kernel before the
//! output is read; no two threads write the same row.

use std::cell::RefCell;

use candle_core::{CpuStorage, Device, Layout, Storage, Tensor};
use rayon::prelude::*;

use super::{BoundGroup, PARALLEL_ELEMENTS};
use crate::exec::schedule::Arena;
use crate::ir::NodeId;
use crate::jit::{self, InputKind, KType, Level};

/// A pointer that may cross to a worker thread (the buffers outlive the
/// scoped threads and each thread writes disjoint rows).
#[derive(Clone, Copy)]
struct SendPtr(*mut u8);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

fn raw_ptr(t: &Tensor, ty: KType) -> Result<(candle_core::StorageRef<'_>, usize), String> {
    let (storage, layout) = t.storage_and_layout();
    let start = layout.start_offset();
    let base = match (&*storage, ty) {
        (Storage::Cpu(CpuStorage::F32(v)), KType::F32) => {
            v.get(start..).ok_or("bad offset")?.as_ptr() as usize
        }
        (Storage::Cpu(CpuStorage::F64(v)), KType::F64) => {
            v.get(start..).ok_or("bad offset")?.as_ptr() as usize
        }
        _ => return Err("a kernel input is not a CPU tensor of the kernel's type".into()),
    };
    Ok((storage, base))
}

/// Holds candle's write lock on each reused output's storage (one nested
/// in-place op per output) while the kernel writes into them.
struct WriteInto<'a> {
    rest: &'a [Tensor],
    /// Element pointers of the outputs locked so far, in order.
    pointers: &'a RefCell<Vec<usize>>,
    then: &'a dyn Fn(&[usize]),
}

impl candle_core::InplaceOp1 for WriteInto<'_> {
    fn name(&self) -> &'static str {
        "fused-kernel-output"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let start = layout.start_offset();
        let p = match storage {
            CpuStorage::F32(v) => v.get_mut(start..).map(|s| s.as_mut_ptr() as usize),
            CpuStorage::F64(v) => v.get_mut(start..).map(|s| s.as_mut_ptr() as usize),
            _ => None,
        };
        let p =
            p.ok_or_else(|| candle_core::Error::Msg("a kernel buffer of another type".into()))?;
        self.pointers.borrow_mut().push(p);
        match self.rest.split_first() {
            Some((next, rest)) => next.inplace_op1(&WriteInto {
                rest,
                pointers: self.pointers,
                then: self.then,
            }),
            None => {
                let ptrs = self.pointers.borrow().clone();
                (self.then)(&ptrs);
                Ok(())
            }
        }
    }
}

impl BoundGroup {
    /// Run on the values of `input_nodes` (looked up by `value`), writing
    /// outputs that have a buffer into `arena`; returns one tensor per
    /// output node.
    pub fn run(
        &self,
        value: &dyn Fn(NodeId) -> Option<Tensor>,
        arena: &mut Arena,
    ) -> Result<Vec<(NodeId, Tensor)>, String> {
        let mut held = Vec::with_capacity(self.inputs.len());
        for i in &self.inputs {
            let t = value(i.node).ok_or("a kernel input is not live")?;
            if t.dims() != i.shape.as_slice() {
                return Err(format!(
                    "input shape {:?}, expected {:?}",
                    t.dims(),
                    i.shape
                ));
            }
            let t = if i.expand {
                t.broadcast_as(i.target.as_slice())
                    .and_then(|b| b.contiguous())
                    .map_err(|e| e.to_string())?
            } else {
                t.contiguous().map_err(|e| e.to_string())?
            };
            held.push(t);
        }
        let mut guards = Vec::with_capacity(held.len());
        let mut bases = Vec::with_capacity(held.len());
        for t in &held {
            let (g, base) = raw_ptr(t, self.ty)?;
            guards.push(g);
            bases.push(base);
        }
        let result = match self.ty {
            KType::F32 => self.run_typed::<f32>(&bases, arena),
            KType::F64 => self.run_typed::<f64>(&bases, arena),
        };
        drop(guards);
        result
    }

    fn run_typed<T: candle_core::WithDType>(
        &self,
        bases: &[usize],
        arena: &mut Arena,
    ) -> Result<Vec<(NodeId, Tensor)>, String> {
        let count = |lv: Level| match lv {
            Level::Full => self.rows * self.len,
            Level::Row => self.rows,
        };
        // New storage for outputs without a buffer, the arena's for the rest.
        let mut fresh: Vec<Option<Vec<T>>> = Vec::with_capacity(self.outputs.len());
        let mut reused: Vec<Tensor> = Vec::new();
        let mut results = Vec::with_capacity(self.outputs.len());
        for ((node, shape, lv), buffer) in self.outputs.iter().zip(&self.buffers) {
            match buffer {
                Some(b) => {
                    let t = arena
                        .buffer(*b, self.ty, count(*lv))?
                        .reshape(shape.as_slice())
                        .map_err(|e| e.to_string())?;
                    reused.push(t.clone());
                    results.push((*node, Some(t)));
                    fresh.push(None);
                }
                None => {
                    fresh.push(Some(Vec::with_capacity(count(*lv))));
                    results.push((*node, None));
                }
            }
        }
        let fresh_ptrs: Vec<Option<usize>> = fresh
            .iter_mut()
            .map(|v| v.as_mut().map(|v| v.as_mut_ptr() as usize))
            .collect();
        let call = |arena_ptrs: &[usize]| {
            let mut next = arena_ptrs.iter();
            let ptrs: Vec<usize> = fresh_ptrs
                .iter()
                .map(|p| p.or_else(|| next.next().copied()).unwrap_or(0))
                .collect();
            self.execute(bases, &ptrs);
        };
        match reused.split_first() {
            None => call(&[]),
            Some((first, rest)) => {
                let pinned = RefCell::new(Vec::with_capacity(reused.len()));
                first
                    .inplace_op1(&WriteInto {
                        rest,
                        pointers: &pinned,
                        then: &call,
                    })
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut out = Vec::with_capacity(results.len());
        for (((node, t), v), (_, shape, lv)) in results.into_iter().zip(fresh).zip(&self.outputs) {
            let t = match (t, v) {
                (Some(t), _) => t,
                (None, Some(mut v)) => {
                    // SAFETY: the kernel wrote every element.
                    unsafe { v.set_len(count(*lv)) };
                    Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)
                        .map_err(|e| e.to_string())?
                }
                (None, None) => return Err("a kernel output has no storage".into()),
            };
            out.push((node, t));
        }
        Ok(out)
    }

    /// Call the kernel on every row (in chunks on several threads when big).
    fn execute(&self, bases: &[usize], outs: &[usize]) {
        let size = self.ty.size();
        // The pool's threads, or 1 in a part of a batch evaluated in parts.
        let threads = crate::threads::available().max(1);
        let total = self.rows * self.len;
        let parallel = threads > 1 && total >= PARALLEL_ELEMENTS;
        let compiled = self.compiled.0;
        let run_rows = |lo: usize, hi: usize| {
            let mut ptrs: Vec<*mut u8> = vec![std::ptr::null_mut(); bases.len() + outs.len()];
            let mut pending = None;
            for r in lo..hi {
                for (j, i) in self.inputs.iter().enumerate() {
                    ptrs[j] = (bases[j] + i.offsets[r] * size) as *mut u8;
                }
                for (j, (_, _, lv)) in self.outputs.iter().enumerate() {
                    let elems = match lv {
                        Level::Full => r * self.len,
                        Level::Row => r,
                    };
                    ptrs[bases.len() + j] = (outs[j] + elems * size) as *mut u8;
                }
                // SAFETY: every pointer is a row start inside a live buffer
                // of the kernel's type with the row's elements; the pending
                // row is this loop's previous one.
                unsafe { jit::call_lagged(&compiled, &ptrs, self.len, &mut pending) };
            }
            // SAFETY: as above, for the last row.
            unsafe { jit::finish_lagged(&compiled, self.len, &mut pending) };
        };
        if !parallel {
            run_rows(0, self.rows);
            return;
        }
        if self.rows >= threads {
            let chunk = self.rows.div_ceil(threads);
            (0..threads).into_par_iter().for_each(|t| {
                let (lo, hi) = (t * chunk, ((t + 1) * chunk).min(self.rows));
                if lo < hi {
                    run_rows(lo, hi);
                }
            });
            return;
        }
        if compiled.has_reductions {
            run_rows(0, self.rows);
            return;
        }
        // Few long rows without reductions: split each row along its length.
        let chunk = self.len.div_ceil(threads);
        for r in 0..self.rows {
            let bases: Vec<SendPtr> = self
                .inputs
                .iter()
                .enumerate()
                .map(|(j, i)| SendPtr((bases[j] + i.offsets[r] * size) as *mut u8))
                .collect();
            let starts: Vec<SendPtr> = outs
                .iter()
                .map(|o| SendPtr((o + r * self.len * size) as *mut u8))
                .collect();
            let kinds: Vec<bool> = self
                .inputs
                .iter()
                .map(|i| i.kind == InputKind::Row)
                .collect();
            let (bases, starts, kinds) = (&bases, &starts, &kinds);
            (0..threads).into_par_iter().for_each(|t| {
                let (lo, hi) = (t * chunk, ((t + 1) * chunk).min(self.len));
                if lo >= hi {
                    return;
                }
                let mut ptrs: Vec<*mut u8> = Vec::with_capacity(bases.len() + starts.len());
                for (b, row) in bases.iter().zip(kinds) {
                    let step = if *row { lo * size } else { 0 };
                    ptrs.push(b.0.wrapping_add(step));
                }
                for o in starts {
                    ptrs.push(o.0.wrapping_add(lo * size));
                }
                // SAFETY: as above, on the sub-range [lo, hi).
                unsafe { jit::call(&compiled, &ptrs, hi - lo) };
            });
        }
    }
}
