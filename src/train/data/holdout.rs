//! `valid = f` in a `train` block: a validation split held out of the
//! train split.
//!
//! Guarantees: the held-out samples are a pure function of the number of
//! train samples, the fraction and the seed (a shuffle seeded from the run
//! seed, independent of the epoch shuffles); both splits keep the data
//! set's own order; each split keeps at least one sample; a data set that
//! already has a validation split, or has fewer than two train samples, is
//! a [`DataError`], never a silent choice.

use super::{epoch_order, DataError, Splits};

/// Move `round(fraction * n)` (at least 1, at most `n - 1`) of the `n`
/// train samples, drawn with `seed`, into the validation split.
pub fn hold_out(splits: Splits, fraction: f64, seed: u64) -> Result<Splits, DataError> {
    let fail = |message: String| DataError::Holdout { fraction, message };
    if splits.valid.is_some() {
        return Err(fail(
            "this data set has its own validation split; remove `valid` to use it".into(),
        ));
    }
    let n = splits.train.len();
    if n < 2 {
        return Err(fail(format!(
            "the train split has {n} sample(s); holding some out needs at least 2"
        )));
    }
    let k = ((fraction * n as f64).round() as usize).clamp(1, n - 1);
    let order = epoch_order(n, seed ^ 0x7661_6c69_6468_6f6c, 0); // "validhol"
    let mut valid: Vec<usize> = order[..k].to_vec();
    let mut train: Vec<usize> = order[k..].to_vec();
    valid.sort_unstable();
    train.sort_unstable();
    Ok(Splits {
        valid: Some(splits.train.take(&valid)),
        train: splits.train.take(&train),
        test: splits.test,
        vocab: splits.vocab,
        standardization: splits.standardization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::{Dataset, HostArray};

    fn splits(n: usize) -> Splits {
        let x = HostArray::i64(vec![n], (0..n as i64).collect()).unwrap();
        Splits {
            train: Dataset::new(vec![("x".into(), x)]).unwrap(),
            valid: None,
            test: None,
            vocab: None,
            standardization: None,
        }
    }

    fn ids(ds: &Dataset) -> Vec<i64> {
        match &ds.fields()[0].1.data {
            crate::train::data::HostData::I64(v) => v.clone(),
            crate::train::data::HostData::F32(_) => Vec::new(),
        }
    }

    #[test]
    fn holds_out_a_seeded_disjoint_fraction() {
        let a = hold_out(splits(100), 0.1, 7).unwrap();
        let (train, valid) = (ids(&a.train), ids(a.valid.as_ref().unwrap()));
        assert_eq!((train.len(), valid.len()), (90, 10));
        let mut all: Vec<i64> = train.iter().chain(&valid).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        // Same seed, same split; another seed, another one.
        let again = hold_out(splits(100), 0.1, 7).unwrap();
        assert_eq!(ids(again.valid.as_ref().unwrap()), valid);
        let other = hold_out(splits(100), 0.1, 8).unwrap();
        assert_ne!(ids(other.valid.as_ref().unwrap()), valid);
        // Not simply the first or the last samples.
        assert!(valid != (0..10).collect::<Vec<_>>() && valid != (90..100).collect::<Vec<_>>());
    }

    #[test]
    fn keeps_a_sample_on_each_side_and_refuses_a_second_validation_split() {
        let a = hold_out(splits(3), 0.99, 0).unwrap();
        assert_eq!((a.train.len(), a.valid.as_ref().unwrap().len()), (1, 2));
        assert!(hold_out(splits(1), 0.5, 0).is_err());
        let mut s = splits(10);
        s.valid = Some(s.train.clone());
        let err = hold_out(s, 0.1, 0).unwrap_err().to_string();
        assert!(err.contains("own validation split"), "{err}");
    }
}
