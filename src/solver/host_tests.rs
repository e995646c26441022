//! Tests of the host loops: against the generic forms, across thread
//! counts, and the solvers' iterates on both paths.

use super::*;

fn t(v: &[f64], dtype: DType) -> Tensor {
    Tensor::from_vec(v.to_vec(), (2, v.len() / 2), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

/// Large enough to be split across threads: the same bits on a pool of
/// two threads as on one.
#[test]
fn split_samples_give_the_bits_of_one_thread() {
    let (b, n) = (8, PARALLEL_MIN / 4);
    let vals = |seed: f64| -> Vec<f64> {
        (0..b * n)
            .map(|i| ((i as f64 * 0.618 + seed).sin() * 3.0).tanh())
            .collect()
    };
    let mk = |v: Vec<f64>| Tensor::from_vec(v, (b, n), &Device::Cpu).expect("tensor");
    let (z, fz, h) = (mk(vals(0.0)), mk(vals(1.0)), mk(vals(2.0)));
    let coefs: Vec<f64> = (0..b * 3).map(|i| 0.1 * i as f64 - 0.7).collect();
    let run = || {
        let sums = residual_sums(&z, &fz).expect("cpu");
        let dots = row_dots(&z, &[&fz, &h]).expect("cpu");
        let mix: Vec<f64> = weighted_sum(&[&z, &fz, &h], &coefs)
            .expect("cpu")
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .expect("values");
        let many = row_dots_many(&[&z, &h], &[&fz, &h]).expect("cpu");
        let pair_coefs: Vec<f64> = (0..b * 2).map(|i| 0.3 * i as f64 - 1.1).collect();
        let (p, q) = weighted_sum_pair(
            &[&fz, &h],
            Mix {
                head: &z,
                skip: 0,
                coefs: &coefs,
            },
            Mix {
                head: &h,
                skip: 1,
                coefs: &pair_coefs,
            },
        )
        .expect("cpu");
        let flat =
            |t: Tensor| -> Vec<f64> { t.flatten_all().and_then(|t| t.to_vec1()).expect("values") };
        // The fused forms are the single ones, read together.
        assert_eq!(many[0], dots);
        assert_eq!(flat(p.clone()), mix);
        let single = weighted_sum(&[&h, &h], &pair_coefs).expect("cpu");
        assert_eq!(flat(q.clone()), flat(single));
        // The elementwise passes give candle's bits.
        let (g, dg) = residual_and_change(&fz, &z, &h).expect("cpu");
        let want_g = (&fz - &z).expect("sub");
        assert_eq!(flat(g.clone()), flat(want_g.clone()));
        assert_eq!(flat(dg.clone()), flat((&want_g - &h).expect("sub")));
        let plus = sum(&z, &h).expect("cpu");
        assert_eq!(flat(plus.clone()), flat((&z + &h).expect("add")));
        let minus = difference(&fz, &z).expect("cpu");
        assert_eq!(flat(minus), flat(want_g.clone()));
        let per_row: Vec<f64> = (0..b).map(|r| 0.25 * r as f64 - 0.6).collect();
        let scaled = scaled_difference(&z, &h, &per_row).expect("cpu");
        let column = Tensor::from_vec(per_row.clone(), (b, 1), &Device::Cpu).expect("col");
        let want = (&z - &h)
            .and_then(|d| d.broadcast_mul(&column))
            .expect("scale");
        assert_eq!(flat(scaled.clone()), flat(want));
        (
            sums,
            dots,
            mix,
            many,
            flat(p),
            flat(q),
            flat(g),
            flat(dg),
            flat(plus),
            flat(scaled),
        )
    };
    let pool = |k| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(k)
            .build()
            .expect("pool")
    };
    let one = pool(1).install(|| {
        assert!(!split_rows(b, n));
        run()
    });
    let two = pool(2).install(|| {
        assert!(split_rows(b, n));
        run()
    });
    assert_eq!(one, two);
}

#[test]
fn sums_dots_and_mixes_match_the_generic_forms() {
    for dtype in [DType::F32, DType::F64] {
        let z = t(&[1.0, 2.0, 3.0, -1.0, 0.5, 0.25], dtype);
        let fz = t(&[1.5, 1.0, 3.0, f64::NAN, 0.5, 1.0], dtype);
        let s = residual_sums(&z, &fz).expect("cpu f32/f64");
        assert_eq!(s[0], [0.25 + 1.0, 2.25 + 1.0 + 9.0, 0.0]);
        assert_eq!(s[1][2], 1.0);
        let d = row_dots(&z, &[&z, &fz]).expect("cpu");
        // Row-major [B, k]: sample 0's two dots, then sample 1's.
        assert_eq!(d.len(), 4);
        assert_eq!(d[..2], [14.0, 1.5 + 2.0 + 9.0]);
        let m = weighted_sum(&[&z, &z], &[1.0, 2.0, 0.5, 0.0]).expect("cpu");
        let want = t(&[3.0, 6.0, 9.0, -0.5, 0.25, 0.125], dtype);
        let diff = (m - want)
            .and_then(|d| d.abs())
            .and_then(|d| d.sum_all())
            .and_then(|d| d.to_dtype(DType::F64))
            .and_then(|d| d.to_scalar::<f64>())
            .expect("diff");
        assert_eq!(diff, 0.0);
    }
}

#[test]
fn lane_sums_match_a_plain_sum() {
    for n in [1usize, 7, 8, 9, 37, 1000, 4099] {
        let a: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(
            (dot(&a, &b) - plain).abs() <= 1e-12 * plain.abs().max(1.0),
            "{n}"
        );
        // The AVX2 forms (taken on this CPU when it has it) give the
        // portable lanes' results to the bit.
        assert_eq!(dot(&a, &b).to_bits(), dot_lanes(&a, &b).to_bits(), "{n}");
        let af: Vec<f32> = a.iter().map(|x| *x as f32).collect();
        let bf: Vec<f32> = b.iter().map(|x| *x as f32).collect();
        assert_eq!(dot(&af, &bf).to_bits(), dot_lanes(&af, &bf).to_bits());
        assert_eq!(residual_row(&af, &bf), residual_lanes(&af, &bf));
        let r = residual_row(&a, &b);
        let d2: f64 = a.iter().zip(&b).map(|(x, y)| (y - x) * (y - x)).sum();
        assert!(
            (r[0] - d2).abs() <= 1e-12 * d2.max(1.0) && r[2] == 0.0,
            "{n}"
        );
        let mut bad32 = bf.clone();
        bad32[n - 1] = f32::NAN;
        assert_eq!(residual_row(&af, &bad32)[2], 1.0, "{n}");
        let mut bad = b.clone();
        bad[n - 1] = f64::INFINITY;
        assert_eq!(residual_row(&a, &bad)[2], 1.0, "{n}");
    }
}

/// Solve `z = tanh(z W + x)` with the in-place bookkeeping or the
/// generic one.
fn solve(kind: crate::solver::SolverKind, dtype: DType, generic: bool) -> (Vec<f64>, usize) {
    use crate::solver::{SolverError, SolverSpec, Stop};
    FORCE_GENERIC.with(|f| f.set(generic));
    let (b, n) = (3, 19);
    let w: Vec<f64> = (0..n * n)
        .map(|i| 0.9 * ((i as f64) * 0.7).sin() / n as f64)
        .collect();
    let x: Vec<f64> = (0..b * n).map(|i| ((i as f64) * 0.3).cos()).collect();
    let w = Tensor::from_vec(w, (n, n), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("w");
    let x = Tensor::from_vec(x, (b, n), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("x");
    let spec = SolverSpec {
        kind,
        tol: 1e-30,
        max_iter: 15,
        stop: Stop::Rel,
    };
    let mut f = |z: &Tensor| -> Result<Tensor, SolverError> { Ok((z.matmul(&w)? + &x)?.tanh()?) };
    let z0 = x.zeros_like().expect("z0");
    let sol = crate::solver::solve(&spec, &mut f, &z0).expect("solves");
    FORCE_GENERIC.with(|f| f.set(false));
    let z = sol
        .z
        .to_dtype(DType::F64)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("z");
    (z, sol.stats.iterations)
}

#[test]
fn solvers_give_the_same_iterates_on_both_paths() {
    use crate::solver::SolverKind;
    for kind in [
        SolverKind::Anderson {
            m: 5,
            beta: 1.0,
            lam: 1e-4,
        },
        SolverKind::Anderson {
            m: 3,
            beta: 0.7,
            lam: 1e-4,
        },
        SolverKind::Broyden { memory: 8 },
    ] {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let (fast, it_fast) = solve(kind.clone(), dtype, false);
            let (slow, it_slow) = solve(kind.clone(), dtype, true);
            assert_eq!(it_fast, it_slow);
            let scale = slow.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = fast
                .iter()
                .zip(&slow)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= tol * scale, "{kind:?} {dtype:?}: {err:e}");
        }
    }
}

#[test]
fn other_layouts_take_the_generic_path() {
    let z = t(&[1.0, 2.0, 3.0, 4.0], DType::F32);
    let zt = z.t().expect("transpose");
    assert!(residual_sums(&zt, &z).is_none());
    let h = z.to_dtype(DType::F16).expect("f16");
    assert!(row_dots(&h, &[&h]).is_none());
    let z64 = z.to_dtype(DType::F64).expect("f64");
    assert!(weighted_sum(&[&z, &z64], &[1.0; 4]).is_none());
}
