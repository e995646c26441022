//! Weight and spectral normalization (`weight_norm`, `spectral_norm`, the
//! `norm` argument of `nn::Linear` and `nn::Conv2d`): gradients against
//! finite differences in f64, the power iteration against a known largest
//! singular value, the starting point of weight norm, and spectral norm's
//! state in training (one power iteration per step, untouched by the
//! optimizer, restored bit for bit on `--resume`).

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use deqc::exec::Executor;
use deqc::train::checkpoint;
use deqc::train::normalize::{power_iteration, sigma_estimate, INIT_ITERATIONS};
use deqc::train::trainer::{self, RunOptions};

#[test]
fn normalized_linear_and_conv_gradients_match_finite_differences() {
    for norm in ["\"weight\"", "\"spectral\"", "\"spectral\", coeff = 0.7"] {
        gradcheck(&format!(
            "use nn;\nmodel M(x: [2, 3]) {{\n    let l = nn::Linear[3, 4, norm = {norm}];\n    tanh(l(x))\n}}\n"
        ));
        gradcheck(&format!(
            "use nn;\nmodel M(x: [2, 2, 4, 4]) {{\n    let c = nn::Conv2d[2, 3, 3, padding = 1, norm = {norm}];\n    c(x)\n}}\n"
        ));
    }
    // Inside an equilibrium (implicit backward), used twice per iteration:
    // one gain or state serves both calls.
    for norm in ["\"weight\"", "\"spectral\", coeff = 0.5"] {
        let report = gradcheck(&format!(
            "use nn;\nmodel M(x: [2, 3]) {{\n    let cell = nn::Linear[3, 3, norm = {norm}];\n    equilibrium z: [2, 3] = tanh(cell(z) * 0.5 + cell(x))\n        with solver = anderson(tol = 1e-12, max_iter = 200),\n        backward = implicit(tol = 1e-12, max_iter = 200);\n    z\n}}\n"
        ));
        let names: Vec<&str> = report.iter().map(|r| r.name.as_str()).collect();
        // The state vector is not differentiated; the gain is.
        assert!(!names.iter().any(|n| n.ends_with("w_u")), "{names:?}");
        assert_eq!(
            names.iter().any(|n| n.ends_with("w_g")),
            norm.contains("weight")
        );
    }
    // The builtins themselves, on a weight of rank 3 along its middle axis.
    gradcheck(
        "layer L[](x: [2, 3]) -> [2, 3] {\n    param w: [3, 3, 2] = normal(std = 0.5);\n    let a = weight_norm(w, axis = 1);\n    let b = spectral_norm(w, axis = 1, coeff = 2.0);\n    x @ sum(a, axis = 2) + x @ sum(b * b, axis = 2)\n}\nmodel M(x: [2, 3]) {\n    let l = L[];\n    l(x)\n}\n",
    );
}

#[test]
fn an_unknown_norm_is_an_error_naming_the_choices() {
    let src = "use nn;\nmodel M(x: [B, 8]) -> [B, 4] {\n    let l = nn::Linear[8, 4, norm = \"spectal\"];\n    l(x)\n}\n";
    let c = deqc::compile_source("norm.deq", src);
    assert!(c.program.is_none());
    let text = c.render_plain(100);
    assert!(text.contains("deq::sema::bad_setting"), "{text}");
    assert!(
        text.contains("norm = \"none\", \"weight\" or \"spectral\", found norm = \"spectal\""),
        "{text}"
    );
}

/// `U diag(s) Vᵀ` with Householder reflections for U (m x m) and V (n x n).
fn with_singular_values(m: usize, n: usize, s: &[f64]) -> Vec<f64> {
    let reflect = |k: usize, h: &[f64]| -> Vec<f64> {
        let hh: f64 = h.iter().map(|x| x * x).sum();
        let mut q = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                q[i * k + j] = f64::from(u8::from(i == j)) - 2.0 * h[i] * h[j] / hh;
            }
        }
        q
    };
    let hu: Vec<f64> = (0..m).map(|i| 0.3 + i as f64 * 0.7).collect();
    let hv: Vec<f64> = (0..n).map(|i| 1.1 - i as f64 * 0.4).collect();
    let (u, v) = (reflect(m, &hu), reflect(n, &hv));
    let mut w = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            w[i * n + j] = (0..s.len())
                .map(|k| u[i * m + k] * s[k] * v[j * n + k])
                .sum();
        }
    }
    w
}

#[test]
fn power_iteration_finds_the_largest_singular_value() {
    // Singular values 3, 2.5, 1, 0.2: the estimate converges like (2.5/3)^2k.
    let s = [3.0, 2.5, 1.0, 0.2];
    let w = t(&with_singular_values(5, 4, &s), &[5, 4]);
    let start = |n: usize| {
        t(
            &(0..n).map(|i| 1.0 + (i as f64).sin()).collect::<Vec<_>>(),
            &[n],
        )
    };
    // Along either axis (u has one entry per index of the axis), and for a
    // 4-d weight seen as [out, in * k * k].
    let cases = [
        (w.clone(), 0usize, start(5)),
        (w.t().unwrap().contiguous().unwrap(), 1, start(5)),
        (w.reshape((5, 2, 2, 1)).unwrap(), 0, start(5)),
    ];
    for (w, axis, u0) in cases {
        let once = sigma_estimate(&w, &u0, axis).unwrap();
        assert!(
            (once - 3.0).abs() > 1e-3,
            "one iteration is not converged: {once}"
        );
        let mut u = u0;
        for _ in 0..200 {
            u = power_iteration(&w, &u, axis).unwrap();
        }
        let sigma = sigma_estimate(&w, &u, axis).unwrap();
        assert!((sigma - 3.0).abs() < 1e-10, "sigma {sigma}");
        let norm: f64 = values(&u).iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-12);
    }
}

#[test]
fn the_graph_divides_by_the_estimate_from_the_state() {
    let src = "layer L[](x: [2, 5]) -> [2, 4] {\n    param w: [5, 4] = normal(std = 1.0);\n    x @ spectral_norm(w, axis = 1, coeff = 0.9)\n}\nmodel M(x: [2, 5]) {\n    let l = L[];\n    l(x)\n}\n";
    let g = lower(src);
    assert_eq!(g.params.len(), 2);
    assert_eq!(g.params[1].path, "l.w_u");
    assert!(g.params[1].role.is_state());
    let w = t(&with_singular_values(5, 4, &[3.0, 2.5, 1.0, 0.2]), &[5, 4]);
    let u = t(&[0.3, -1.0, 0.5, 2.0], &[4]);
    let x = Tensor::eye(5, DType::F64, &Device::Cpu)
        .unwrap()
        .narrow(0, 0, 2)
        .unwrap();
    let out = Executor::cpu_f64()
        .run(&g, &[w.clone(), u.clone()], &[x])
        .unwrap()
        .outputs;
    // Rows 0 and 1 of w, times 0.9 / sigma.
    let sigma = sigma_estimate(&w, &u, 1).unwrap();
    let expected: Vec<f64> = values(&w.narrow(0, 0, 2).unwrap())
        .iter()
        .map(|v| v * 0.9 / sigma)
        .collect();
    assert_close(&values(&out[0]), &expected, 1e-12);
}

fn program(src: &str) -> (deqc::sema::hir::Program, deqc::source::SourceMap) {
    common::checked("normalize_test.deq", src)
}

fn mlp(norm: &str, data: &Path) -> String {
    std::fs::read_to_string("examples/mnist_mlp.deq")
        .unwrap()
        .replace(
            "nn::Linear[256, 256]",
            &format!("nn::Linear[256, 256, norm = {norm}]"),
        )
        .replace(
            "\"data/mnist-10k\"",
            &format!("{:?}", data.display().to_string()),
        )
        .replace("adam(lr = 1e-3)", "adamw(lr = 1e-3, weight_decay = 0.1)")
        .replace("batch_size = 128", "batch_size = 32")
}

#[test]
fn weight_norm_starts_where_the_plain_layer_does() {
    let data = Path::new("data/mnist-10k");
    let x = common::seeded_normal(&[3, 784], 1.0, 1)
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let mut outs = Vec::new();
    for norm in ["\"none\"", "\"weight\""] {
        let (p, _) = program(&mlp(norm, data));
        let g = deqc::ir::lower::lower_model(&p.models[0]).unwrap();
        let params = trainer::init_params(&g, 3, &Device::Cpu).unwrap();
        let values: Vec<Tensor> = params.iter().map(|p| p.1.clone()).collect();
        let exec = Executor::new(Device::Cpu).with_runner(Box::new(deqc::deq::SolverRunner::new()));
        outs.push(common::values(
            &exec
                .run(&g, &values, std::slice::from_ref(&x))
                .unwrap()
                .outputs[0],
        ));
        if norm.contains("weight") {
            let gain = params.iter().find(|p| p.0 == "cell.w_g").expect("the gain");
            assert_eq!(gain.1.dims(), &[256]);
        }
    }
    assert_close(&outs[0], &outs[1], 1e-4);
}

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("normalize-{name}"))
}

fn quiet(out: &Path) -> RunOptions {
    RunOptions {
        max_eval_batches: Some(1),
        ..common::quiet_run(out)
    }
}

fn tensor(tensors: &[(String, Tensor)], key: &str) -> Tensor {
    tensors
        .iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no {key}"))
        .1
        .clone()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn spectral_state_advances_once_per_step_and_resumes_exactly() {
    let (p, sources) = program(&mlp("\"spectral\"", Path::new("data/mnist-10k")));
    let model = p.model("DeqMlp").unwrap();
    let cfg = p.trains[0].clone();
    let root = temp_dir("state");
    // One step: u advances by one power iteration from its start, computed
    // with the weight the step ran with; AdamW's decay does not touch it.
    let one = root.join("one");
    let mut opts = quiet(&one);
    opts.max_steps = Some(1);
    trainer::train(model, &cfg, &sources, &opts).unwrap();
    let g = deqc::ir::lower::lower_model(model).unwrap();
    let init = trainer::init_params(&g, cfg.seed, &Device::Cpu).unwrap();
    let (w0, u0) = (tensor(&init, "cell.w"), tensor(&init, "cell.w_u"));
    // The start is already refined by power iterations on the initial
    // weight: its estimate is near the converged one, unlike a raw start.
    let converged = (0..300)
        .try_fold(u0.clone(), |u, _| power_iteration(&w0, &u, 1))
        .unwrap();
    let best = sigma_estimate(&w0, &converged, 1).unwrap();
    let start = sigma_estimate(&w0, &u0, 1).unwrap();
    let raw = Tensor::ones(256, DType::F32, &Device::Cpu).unwrap();
    let unrefined = sigma_estimate(&w0, &raw, 1).unwrap();
    eprintln!("sigma: raw start {unrefined}, after {INIT_ITERATIONS} iterations {start}, converged {best}");
    assert!(
        start >= 0.97 * best && start <= best * (1.0 + 1e-6),
        "{start} vs {best}"
    );
    assert!(unrefined < 0.9 * best, "{unrefined} vs {best}");
    let (after, _) =
        checkpoint::read_tensors(&one.join("model.safetensors"), &Device::Cpu).unwrap();
    let u1 = tensor(&after, "cell.w_u");
    assert_eq!(bits(&u1), bits(&power_iteration(&w0, &u0, 1).unwrap()));
    assert_ne!(
        bits(&tensor(&after, "cell.w")),
        bits(&w0),
        "the weight trains"
    );
    // The optimizer keeps no state for it.
    let state = checkpoint::load_train_state(&one, None, &Device::Cpu).unwrap();
    let keys: Vec<&str> = state
        .optimizer
        .tensors
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(keys.iter().any(|k| k.ends_with("cell.w")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("w_u")), "{keys:?}");
    // Uninterrupted 6 steps against 3 + 3 resumed: every tensor, state
    // included, bit for bit.
    let straight = root.join("straight");
    let mut opts = quiet(&straight);
    opts.max_steps = Some(6);
    trainer::train(model, &cfg, &sources, &opts).unwrap();
    let split = root.join("split");
    for (stop, resume) in [(3, false), (6, true)] {
        let mut opts = quiet(&split);
        opts.max_steps = Some(stop);
        opts.resume = resume;
        trainer::train(model, &cfg, &sources, &opts).unwrap();
    }
    let (a, _) =
        checkpoint::read_tensors(&straight.join("model.safetensors"), &Device::Cpu).unwrap();
    let (b, _) = checkpoint::read_tensors(&split.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(a.len(), b.len());
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        assert_eq!(bits(ta), bits(tb), "{ka} differs after resuming");
    }
    assert_ne!(bits(&tensor(&a, "cell.w_u")), bits(&u1), "u kept advancing");
}
