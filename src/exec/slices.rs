//! The elements of contiguous CPU tensors as slices, for host passes that
//! read tensors in place (the solvers' bookkeeping, the optimizer's update).
//!
//! Guarantees: the slices stay valid for the whole call (the tensors' read
//! guards are held across it); `None` when a tensor is not on the CPU, not
//! contiguous, not of element type `T`, or the tensors' lengths differ.

use candle_core::{Storage, Tensor, WithDType};

/// Run `f` on the element slices of `ts`, all of one length.
pub fn with_cpu_slices<T: WithDType, R>(ts: &[&Tensor], f: impl FnOnce(&[&[T]]) -> R) -> Option<R> {
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(ts.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(cpu) = &**storage else {
            return None;
        };
        let (start, end) = layout.contiguous_offsets()?;
        slices.push(T::cpu_storage_as_slice(cpu).ok()?.get(start..end)?);
    }
    let n = slices.first().map_or(0, |s| s.len());
    if slices.iter().any(|s| s.len() != n) {
        return None;
    }
    Some(f(&slices))
}
