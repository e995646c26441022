//! Optimizer steps against hand-computed values (PyTorch's formulas).

use candle_core::{Device, Tensor};

use super::*;

fn param(v: &[f32]) -> Vec<(String, Tensor)> {
    vec![("w".to_string(), Tensor::new(v, &Device::Cpu).unwrap())]
}

fn grad(v: &[f32]) -> Vec<Tensor> {
    vec![Tensor::new(v, &Device::Cpu).unwrap()]
}

fn values(p: &[(String, Tensor)]) -> Vec<f32> {
    p[0].1.to_vec1::<f32>().unwrap()
}

fn assert_close(got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < 1e-6, "got {got:?}, want {want:?}");
    }
}

/// Two steps with gradients [0.5, -1] then `second`, from p = [1, 2].
fn two_steps(opt: &mut Optim, second: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut p = param(&[1.0, 2.0]);
    opt.step(&mut p, &grad(&[0.5, -1.0]), opt.lr).unwrap();
    let first = values(&p);
    opt.step(&mut p, &grad(second), opt.lr).unwrap();
    (first, values(&p))
}

#[test]
fn sgd_with_momentum() {
    let mut opt = sgd(0.1, 0.9, 0.0);
    let (a, b) = two_steps(&mut opt, &[0.5, -1.0]);
    // buf = g; p = [1 - 0.05, 2 + 0.1]
    assert_close(&a, &[0.95, 2.1]);
    // buf = 0.9 g + g = [0.95, -1.9]; p -= 0.1 buf
    assert_close(&b, &[0.855, 2.29]);
    assert_eq!(opt.steps_taken(), 2);
}

#[test]
fn sgd_plain_with_weight_decay() {
    let mut opt = sgd(0.1, 0.0, 0.1);
    let mut p = param(&[1.0, 2.0]);
    opt.step(&mut p, &grad(&[0.5, -1.0]), 0.1).unwrap();
    // g + 0.1 p = [0.6, -0.8]
    assert_close(&values(&p), &[0.94, 2.08]);
    assert!(opt.state().tensors.is_empty(), "no buffer without momentum");
}

/// Adam, Adam with L2 weight decay, and AdamW (`p *= 1 - lr * wd`, then
/// the Adam step of about lr * sign(g)): parameters after each of two steps.
#[test]
fn adam_family_two_steps() {
    let cases = [
        (
            adam(0.1, (0.9, 0.999), 0.0),
            [0.900000002, 2.099999999],
            [0.8067820404774624, 2.199999997999999],
        ),
        (
            adam(0.1, (0.9, 0.999), 0.1),
            [0.9000000016666666, 2.09999999875],
            [0.8050097658613199, 2.1999652333159365],
        ),
        (
            adamw(0.1, (0.9, 0.999), 0.1),
            [0.890000002, 2.079999999],
            [0.7878820404574624, 2.159199998009999],
        ),
    ];
    for (mut opt, first, second) in cases {
        let (a, b) = two_steps(&mut opt, &[0.25, -1.0]);
        assert_close(&a, &first);
        assert_close(&b, &second);
    }
}

#[test]
fn state_round_trip_resumes_identically() {
    let mut a = adam(0.1, (0.9, 0.999), 0.0);
    let mut p = param(&[1.0, 2.0]);
    a.step(&mut p, &grad(&[0.5, -1.0]), 0.1).unwrap();
    let state = a.state();
    let keys: Vec<&str> = state.tensors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["exp_avg/w", "exp_avg_sq/w"]);
    assert_eq!(state.step, 1);
    let shapes = a.state_shapes(&[("w".into(), vec![2])]);
    assert_eq!(
        shapes,
        [
            ("exp_avg/w".into(), vec![2]),
            ("exp_avg_sq/w".into(), vec![2])
        ]
    );

    let mut b = adam(0.1, (0.9, 0.999), 0.0);
    b.load_state(state).unwrap();
    let mut q = p.clone();
    a.step(&mut p, &grad(&[0.25, -1.0]), 0.1).unwrap();
    b.step(&mut q, &grad(&[0.25, -1.0]), 0.1).unwrap();
    assert_eq!(values(&p), values(&q));
}

#[test]
fn load_state_rejects_foreign_or_partial_state() {
    let mut s = sgd(0.1, 0.9, 0.0);
    let mut p = param(&[1.0]);
    s.step(&mut p, &grad(&[1.0]), 0.1).unwrap();
    let mut a = adam(0.1, (0.9, 0.999), 0.0);
    let err = a.load_state(s.state()).unwrap_err().to_string();
    assert!(err.contains("momentum_buffer/w"), "{err}");

    let mut full = adam(0.1, (0.9, 0.999), 0.0);
    full.step(&mut p, &grad(&[1.0]), 0.1).unwrap();
    let mut partial = full.state();
    partial.tensors.retain(|(k, _)| k.starts_with("exp_avg/"));
    let err = a.load_state(partial).unwrap_err().to_string();
    assert!(err.contains("missing state tensor `exp_avg_sq/w`"), "{err}");
}

#[test]
fn mismatched_gradients_are_errors() {
    let mut opt = sgd(0.1, 0.0, 0.0);
    let mut p = param(&[1.0, 2.0]);
    assert!(opt.step(&mut p, &[], 0.1).is_err());
    let err = opt
        .step(&mut p, &grad(&[1.0]), 0.1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`w`"), "{err}");
}

#[test]
fn clipping_scales_to_max_norm() {
    let mut g = vec![
        Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
        Tensor::new(&[0.0f32, 4.0], &Device::Cpu).unwrap(),
    ];
    let norm = clip_grad_norm(&mut g, 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-9);
    let after = grad_norm(&g).unwrap();
    assert!((after - 1.0).abs() < 1e-5, "{after}");
    // Under the limit: untouched.
    let norm = clip_grad_norm(&mut g, 10.0).unwrap();
    assert!((norm - after).abs() < 1e-9);
    assert!((grad_norm(&g).unwrap() - after).abs() < 1e-9);
}

#[test]
fn optimizer_from_spec() {
    let o = Optim::new(&Optimizer::AdamW {
        lr: 0.01,
        betas: (0.8, 0.9),
        weight_decay: 0.5,
    });
    assert_eq!(o.lr, 0.01);
    assert_eq!(
        o.kind,
        OptimKind::Adam {
            betas: (0.8, 0.9),
            weight_decay: 0.5,
            decoupled: true
        }
    );
}
