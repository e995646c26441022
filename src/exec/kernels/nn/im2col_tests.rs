//! The im2col convolutions against candle's kernels (the old path).

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::super::{conv_generic, conv_input_grad_generic, conv_weight_grad_generic, KErr};
use crate::ir::ConvAttrs;

fn random(shape: &[usize], dtype: DType, rng: &mut rand::rngs::StdRng) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("random tensor")
}

fn old(r: Result<Tensor, KErr>) -> Tensor {
    match r {
        Ok(t) => t,
        Err(KErr::Candle(e)) => panic!("candle path failed: {e}"),
        Err(KErr::Msg(m)) => panic!("candle path failed: {m}"),
        Err(KErr::Exec(e)) => panic!("candle path failed: {e}"),
    }
}

/// max |a - b| / max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let flat = |t: &Tensor| -> Vec<f64> {
        t.to_dtype(DType::F64)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f64>())
            .expect("readable")
    };
    let (a, b) = (flat(a), flat(b));
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
    a.iter()
        .zip(&b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// (spatial, batch, ci, co, length, kernel, stride, padding, dilation, groups)
type Case = (usize, usize, usize, usize, usize, usize, i64, i64, i64, i64);

const CASES: &[Case] = &[
    (2, 3, 4, 6, 9, 3, 1, 1, 1, 1),
    (2, 2, 4, 6, 9, 3, 2, 1, 1, 2),
    (2, 2, 3, 4, 8, 3, 2, 0, 1, 1), // the last input row is never covered
    (2, 2, 4, 4, 10, 3, 1, 2, 2, 4),
    (2, 9, 2, 3, 7, 1, 1, 0, 1, 1),
    (2, 2, 6, 6, 11, 5, 3, 2, 2, 3),
    (2, 1, 2, 2, 4, 3, 1, 3, 1, 1), // padding wider than the kernel
    (1, 3, 4, 6, 12, 3, 1, 1, 1, 1),
    (1, 2, 4, 4, 13, 3, 2, 2, 3, 2),
    (1, 10, 2, 2, 9, 4, 3, 0, 1, 1),
];

fn check(dtype: DType, tol: f64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for &(spatial, b, ci, co, len, k, s, p, d, g) in CASES {
        let a = ConvAttrs {
            spatial,
            stride: s,
            padding: p,
            dilation: d,
            groups: g,
        };
        let sp = |n: usize| vec![n; spatial];
        let x_shape = [vec![b, ci], sp(len)].concat();
        let w_shape = [vec![co, ci / g as usize], sp(k)].concat();
        let x = random(&x_shape, dtype, &mut rng);
        let w = random(&w_shape, dtype, &mut rng);
        let case = format!("{dtype:?} {:?}", (spatial, b, ci, co, len, k, s, p, d, g));

        let y_old = old(conv_generic(&x, &w, &a));
        let y_new = super::conv(&x, &w, &a)
            .expect("runs")
            .unwrap_or_else(|| panic!("fast path refused {case}"));
        let e = rel_err(&y_new, &y_old);
        assert!(e <= tol, "conv {case}: {e:e}");

        let dy = random(y_old.dims(), dtype, &mut rng);
        let dx_old = old(conv_input_grad_generic(&dy, &w, &a, &x_shape));
        let dx_new = super::conv_input_grad(&dy, &w, &a, &x_shape)
            .expect("runs")
            .unwrap_or_else(|| panic!("fast path refused {case}"));
        let e = rel_err(&dx_new, &dx_old);
        assert!(e <= tol, "input grad {case}: {e:e}");

        let dw_old = old(conv_weight_grad_generic(&x, &dy, &a, &w_shape));
        let dw_new = super::conv_weight_grad(&x, &dy, &a, &w_shape)
            .expect("runs")
            .unwrap_or_else(|| panic!("fast path refused {case}"));
        let e = rel_err(&dw_new, &dw_old);
        assert!(e <= tol, "weight grad {case}: {e:e}");
    }
}

#[test]
fn im2col_matches_candle_in_f64() {
    check(DType::F64, 1e-12);
}

#[test]
fn im2col_matches_candle_in_f32() {
    check(DType::F32, 1e-5);
}

#[test]
fn valid_ranges_cover_exactly_the_inside_reads() {
    for n_out in 0..6 {
        for len in 1..7 {
            for stride in 1..4 {
                for offset in 0..5 {
                    for pad in 0..4 {
                        let (a, b) = super::valid_range(n_out, len, stride, offset, pad);
                        for i in 0..n_out {
                            let pos = (i * stride + offset) as i64 - pad as i64;
                            let inside = pos >= 0 && pos < len as i64;
                            assert_eq!(
                                inside,
                                (a..b).contains(&i),
                                "{:?}",
                                (n_out, len, stride, offset, pad, i)
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn other_dtypes_and_inconsistent_shapes_stay_on_candle() {
    let a = ConvAttrs {
        spatial: 2,
        stride: 1,
        padding: 0,
        dilation: 1,
        groups: 1,
    };
    let x = Tensor::zeros((1, 2, 4, 4), DType::F16, &Device::Cpu).expect("x");
    let w = Tensor::zeros((3, 2, 3, 3), DType::F16, &Device::Cpu).expect("w");
    assert!(super::conv(&x, &w, &a).expect("runs").is_none());
    // A weight whose channels do not match the input's.
    let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu).expect("x");
    let w = Tensor::zeros((3, 5, 3, 3), DType::F32, &Device::Cpu).expect("w");
    assert!(super::conv(&x, &w, &a).expect("runs").is_none());
}
