//! `normalize = true` on `mnist(...)`: standardize the input field `x` of
//! every split with one mean and one standard deviation, both computed on
//! the training split that the run uses (after any `classes`/`per_class`
//! selection), so no statistic ever comes from test data.
//!
//! Guarantees:
//! - The statistics are computed in f64 over every value of the training
//!   split's `x` and are a pure function of that split: `deqc eval` and
//!   `deqc attack`, which reload the data, get the same numbers as the run.
//! - A constant training split (standard deviation 0) is an error, not a
//!   division by zero.
//! - Only `x` changes; labels and every other field are untouched.

use super::{DataError, Dataset, HostData, Splits};

/// The mean and standard deviation used to standardize `x`: a model sees
/// `(x - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standardization {
    pub mean: f64,
    pub std: f64,
    /// Number of training samples the statistics come from.
    pub samples: usize,
}

impl Standardization {
    /// From the data's own units to the model's.
    pub fn apply(&self, v: f64) -> f64 {
        (v - self.mean) / self.std
    }

    /// From the model's units back to the data's own.
    pub fn invert(&self, v: f64) -> f64 {
        v * self.std + self.mean
    }
}

impl std::fmt::Display for Standardization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mean {:.6}, std {:.6} (training split, {} samples)",
            self.mean, self.std, self.samples
        )
    }
}

/// The statistics of `train`'s field `x`.
pub fn statistics(train: &Dataset) -> Result<Standardization, DataError> {
    let values = x_values(train)?;
    let n = values.len() as f64;
    let mean = values.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|v| (f64::from(*v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    if !(std > 0.0 && std.is_finite()) {
        return Err(DataError::Subset(format!(
            "normalize = true: the training split's `x` has standard deviation {std}; it cannot be standardized"
        )));
    }
    Ok(Standardization {
        mean,
        std,
        samples: train.len(),
    })
}

/// Standardize `x` in every split with the training split's statistics.
pub fn standardize(mut splits: Splits) -> Result<Splits, DataError> {
    let stats = statistics(&splits.train)?;
    apply_to(&mut splits.train, &stats);
    for ds in [splits.valid.as_mut(), splits.test.as_mut()]
        .into_iter()
        .flatten()
    {
        apply_to(ds, &stats);
    }
    splits.standardization = Some(stats);
    Ok(splits)
}

fn x_values(ds: &Dataset) -> Result<&[f32], DataError> {
    match ds.field("x").map(|a| &a.data) {
        Some(HostData::F32(v)) if !v.is_empty() => Ok(v),
        _ => Err(DataError::Subset(
            "normalize = true needs a non-empty float input field `x`".into(),
        )),
    }
}

fn apply_to(ds: &mut Dataset, stats: &Standardization) {
    if let Some(HostData::F32(v)) = ds.field_mut("x").map(|a| &mut a.data) {
        for value in v.iter_mut() {
            *value = stats.apply(f64::from(*value)) as f32;
        }
    }
}
