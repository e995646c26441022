//! The types every stage shares: element types, symbolic dimensions and
//! tensor types, and what a slice does to an axis.
//!
//! Owns [`Type`] (an element type and a shape of [`dim::Dim`]s) and
//! [`SliceAxis`]. `sema` computes them, and the IR, the executor, autodiff
//! and training read them, so they live below all of those; `sema::dim` and
//! `sema::hir::{Type, DType, SliceAxis}` re-export them at their old paths.

pub mod dim;

pub use crate::syntax::ast::DType;
use dim::Dim;

/// An element type and a (possibly symbolic) shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Type {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl Type {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Type {
        Type { dtype, shape }
    }

    pub fn scalar(dtype: DType) -> Type {
        Type {
            dtype,
            shape: Vec::new(),
        }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements, when every dimension is known.
    pub fn numel(&self) -> Option<i64> {
        self.shape
            .iter()
            .try_fold(1i64, |acc, d| acc.checked_mul(d.as_const()?))
    }
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dtype != DType::F32 {
            write!(f, "{}", self.dtype.name())?;
        }
        write!(f, "{}", shape_text(&self.shape))
    }
}

/// A shape as text: `[B, 784]`.
pub fn shape_text(shape: &[Dim]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// What a slice does to one axis of its operand.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceAxis {
    /// The whole axis.
    Full,
    /// Elements `start, start + step, ...` below `end` (bounds normalized to
    /// be non-negative).
    Range { start: Dim, end: Dim, step: i64 },
    /// One element; the axis is removed.
    Index(Dim),
}

impl SliceAxis {
    /// The axes of a slice `start..end` along `axis` of a rank-`rank`
    /// tensor, every other axis whole.
    pub fn along(rank: usize, axis: usize, start: &Dim, end: &Dim) -> Vec<SliceAxis> {
        (0..rank)
            .map(|k| {
                if k == axis {
                    SliceAxis::Range {
                        start: start.clone(),
                        end: end.clone(),
                        step: 1,
                    }
                } else {
                    SliceAxis::Full
                }
            })
            .collect()
    }
}
