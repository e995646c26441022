//! `classes = [..]` and `per_class = N` on `mnist(...)` and `csv(...)`: a
//! labelled subset for transfer and few-label training.
//!
//! Owns choosing the samples. Guarantees: the train split keeps only the
//! listed classes and, with `per_class`, exactly that many samples of each,
//! drawn by a Fisher-Yates shuffle seeded from the run seed and the class
//! (a pure function of the data, the options and the seed), in the data
//! set's own order; the test and validation splits keep every sample of the
//! listed classes (evaluation covers the same task). Labels are not
//! renumbered. A class with fewer samples than `per_class`, or class options
//! on a data set without integer labels, is a [`DataError`], never a smaller
//! set than asked for.

use super::{epoch_order, DataError, Dataset, HostArray, HostData, Splits};
use crate::sema::spec::Subset;

impl HostArray {
    /// The samples `indices`, in that order.
    pub fn take(&self, indices: &[usize]) -> HostArray {
        let k = self.sample_size();
        let mut shape = self.shape.clone();
        shape[0] = indices.len();
        let data = match &self.data {
            HostData::F32(v) => HostData::F32(
                indices
                    .iter()
                    .flat_map(|i| v[i * k..(i + 1) * k].iter().copied())
                    .collect(),
            ),
            HostData::I64(v) => HostData::I64(
                indices
                    .iter()
                    .flat_map(|i| v[i * k..(i + 1) * k].iter().copied())
                    .collect(),
            ),
        };
        HostArray { shape, data }
    }
}

impl Dataset {
    /// The samples `indices` of every field, in that order.
    pub fn take(&self, indices: &[usize]) -> Dataset {
        Dataset {
            fields: self
                .fields
                .iter()
                .map(|(n, a)| (n.clone(), a.take(indices)))
                .collect(),
        }
    }
}

fn labels<'a>(ds: &'a Dataset, what: &str) -> Result<&'a [i64], DataError> {
    match ds.field("y").map(|a| &a.data) {
        Some(HostData::I64(v)) => Ok(v),
        _ => Err(DataError::Subset(format!(
            "{what}: `classes` and `per_class` need integer class labels; this data set's target is not one"
        ))),
    }
}

/// The train indices to keep: the listed classes (all when none are
/// listed), at most `per_class` of each, drawn with `seed`.
pub fn choose(labels: &[i64], subset: &Subset, seed: u64) -> Result<Vec<usize>, DataError> {
    let wanted = |l: i64| subset.classes.is_empty() || subset.classes.contains(&l);
    let Some(per_class) = subset.per_class else {
        return Ok((0..labels.len()).filter(|i| wanted(labels[*i])).collect());
    };
    let mut classes: Vec<i64> = labels.iter().copied().filter(|l| wanted(*l)).collect();
    classes.sort_unstable();
    classes.dedup();
    for c in &subset.classes {
        if !classes.contains(c) {
            return Err(DataError::Subset(format!(
                "class {c} has no sample in the train split"
            )));
        }
    }
    let mut keep = Vec::new();
    for c in classes {
        let of_class: Vec<usize> = (0..labels.len()).filter(|i| labels[*i] == c).collect();
        if of_class.len() < per_class {
            return Err(DataError::Subset(format!(
                "per_class = {per_class}, but class {c} has only {} samples in the train split",
                of_class.len()
            )));
        }
        let order = epoch_order(of_class.len(), seed ^ 0x7375_6273_6574, c as u64);
        keep.extend(order[..per_class].iter().map(|k| of_class[*k]));
    }
    keep.sort_unstable();
    Ok(keep)
}

/// Apply `subset` to every split of `splits`.
pub fn apply(splits: Splits, subset: &Subset, seed: u64) -> Result<Splits, DataError> {
    if subset.is_all() {
        return Ok(splits);
    }
    let train = {
        let keep = choose(labels(&splits.train, "train split")?, subset, seed)?;
        splits.train.take(&keep)
    };
    let only_classes = Subset {
        classes: subset.classes.clone(),
        per_class: None,
    };
    let filter = |ds: Option<Dataset>, what: &str| -> Result<Option<Dataset>, DataError> {
        let Some(ds) = ds else { return Ok(None) };
        let keep = choose(labels(&ds, what)?, &only_classes, seed)?;
        Ok(Some(ds.take(&keep)))
    };
    Ok(Splits {
        train,
        valid: filter(splits.valid, "validation split")?,
        test: filter(splits.test, "test split")?,
        vocab: splits.vocab,
        standardization: splits.standardization,
    })
}
