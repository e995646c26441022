//! Out-of-distribution checks of a density (`deqc eval --ood`): corrupted
//! copies of the test images, and the AUROC of `log p(x)` separating the
//! test images from them.
//!
//! Owns the corruptions ([`Corruption::Shuffle`]: each image's pixels in a
//! random order, so the grey-level histogram is kept and the strokes are
//! gone; [`Corruption::Noise`]: each pixel a uniformly drawn grey level)
//! and [`auroc`]. Guarantees: a corruption is a pure function of the data,
//! the seed and the sample index (SplitMix64), changes only the first
//! field (the input) and keeps its values on the data's grey levels, so
//! that dequantization applies to it as to real images; the AUROC is the
//! Mann-Whitney statistic with ties counted one half, and a score that is
//! not a number counts as the lowest.

use super::data::{Dataset, HostData, SplitMix64};
use super::trainer::mix;

const SHUFFLE_TAG: u64 = 0x6f6f_6473_6875_6666; // "oodshuff"
const NOISE_TAG: u64 = 0x6f6f_646e_6f69_7365; // "oodnoise"

/// A way to corrupt test images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Each image's values in a random order.
    Shuffle,
    /// Each value a uniform draw of the 256 grey levels between the
    /// split's smallest and largest value.
    Noise,
}

impl Corruption {
    pub const NAMES: &'static [&'static str] = &["shuffle", "noise"];

    pub fn parse(name: &str) -> Result<Corruption, String> {
        match name {
            "shuffle" => Ok(Corruption::Shuffle),
            "noise" => Ok(Corruption::Noise),
            other => Err(format!(
                "unknown corruption `{other}` for --ood: use `shuffle` or `noise`"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Corruption::Shuffle => "shuffle",
            Corruption::Noise => "noise",
        }
    }

    /// How the README and `deqc eval` describe the corrupted images.
    pub fn describe(self) -> &'static str {
        match self {
            Corruption::Shuffle => "pixel-shuffled images",
            Corruption::Noise => "uniform-noise images",
        }
    }
}

/// A copy of `ds` whose first field (the input) is corrupted; the other
/// fields (the labels) are kept. `Err` when the input is not floats.
pub fn corrupt(ds: &Dataset, c: Corruption, seed: u64) -> Result<Dataset, String> {
    let mut out = ds.clone();
    let name = ds
        .fields()
        .first()
        .map(|f| f.0.clone())
        .ok_or("the data set has no fields")?;
    let field = out
        .field_mut(&name)
        .ok_or("the data set has no input field")?;
    let per = field.sample_size().max(1);
    let HostData::F32(values) = &mut field.data else {
        return Err(format!(
            "--ood corrupts float inputs, but `{name}` holds integers"
        ));
    };
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    for (i, row) in values.chunks_mut(per).enumerate() {
        match c {
            Corruption::Shuffle => {
                let mut rng = SplitMix64(mix(seed ^ SHUFFLE_TAG, i as u64));
                for j in (1..row.len()).rev() {
                    let k = rng.below(j as u64 + 1) as usize;
                    row.swap(j, k);
                }
            }
            Corruption::Noise => {
                let mut rng = SplitMix64(mix(seed ^ NOISE_TAG, i as u64));
                for v in row.iter_mut() {
                    let level = rng.below(256) as f32 / 255.0;
                    *v = lo + (hi - lo) * level;
                }
            }
        }
    }
    Ok(out)
}

/// The area under the ROC curve of `score` telling `positive` samples
/// (higher scores expected) from `negative` ones: the probability that a
/// random positive scores above a random negative, ties counting one half.
/// `NaN` scores count as the lowest; 0.5 when either side is empty.
pub fn auroc(positive: &[f64], negative: &[f64]) -> f64 {
    if positive.is_empty() || negative.is_empty() {
        return 0.5;
    }
    let clean = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    let mut all: Vec<(f64, bool)> = positive
        .iter()
        .map(|v| (clean(*v), true))
        .chain(negative.iter().map(|v| (clean(*v), false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' ranks (1-based), ties sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        let pos = all[i..=j].iter().filter(|a| a.1).count();
        rank_sum += mean_rank * pos as f64;
        i = j + 1;
    }
    let (p, n) = (positive.len() as f64, negative.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::data::HostArray;

    fn draws(seed: u64, n: usize, shift: f64) -> Vec<f64> {
        let mut rng = SplitMix64(seed);
        (0..n)
            .map(|_| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 + shift)
            .collect()
    }

    #[test]
    fn auroc_of_identical_distributions_is_one_half() {
        let a = draws(1, 20_000, 0.0);
        let b = draws(2, 20_000, 0.0);
        assert!((auroc(&a, &b) - 0.5).abs() < 0.01, "{}", auroc(&a, &b));
        // The same values on both sides: every pair ties.
        assert_eq!(auroc(&a, &a), 0.5);
    }

    #[test]
    fn auroc_of_separable_scores_is_one_or_zero() {
        let a = draws(1, 500, 1.0);
        let b = draws(2, 700, 0.0);
        assert_eq!(auroc(&a, &b), 1.0);
        assert_eq!(auroc(&b, &a), 0.0);
        // Half-overlapping uniforms: P(a > b) = 1 - 0.5^2 / 2 = 0.875.
        let c = draws(3, 20_000, 0.5);
        assert!((auroc(&c, &b) - 0.875).abs() < 0.01);
        // A failed (NaN) score is the lowest.
        assert_eq!(auroc(&[1.0], &[f64::NAN]), 1.0);
    }

    #[test]
    fn corruptions_keep_levels_and_labels() {
        let x: Vec<f32> = (0..2 * 16).map(|i| (i % 7) as f32 / 255.0).collect();
        let ds = Dataset::new(vec![
            ("x".into(), HostArray::f32(vec![2, 16], x.clone()).unwrap()),
            ("y".into(), HostArray::i64(vec![2], vec![3, 4]).unwrap()),
        ])
        .unwrap();
        let s = corrupt(&ds, Corruption::Shuffle, 5).unwrap();
        let HostData::F32(sv) = &s.field("x").unwrap().data else {
            panic!("floats")
        };
        for (a, b) in sv.chunks(16).zip(x.chunks(16)) {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            assert_ne!(a, b, "shuffled");
            a.sort_by(f32::total_cmp);
            b.sort_by(f32::total_cmp);
            assert_eq!(a, b, "same pixels");
        }
        assert_eq!(s.field("y"), ds.field("y"));
        let n = corrupt(&ds, Corruption::Noise, 5).unwrap();
        let HostData::F32(nv) = &n.field("x").unwrap().data else {
            panic!("floats")
        };
        let hi = 6.0 / 255.0;
        for v in nv {
            let level = v / hi * 255.0;
            assert!((level - level.round()).abs() < 1e-3 && *v <= hi + 1e-7);
        }
        assert_eq!(corrupt(&ds, Corruption::Noise, 5).unwrap(), n);
    }
}
