//! The stdlib's causal helpers (`nn::causal_pad`, `nn::delay`,
//! `nn::CausalConv1d`) and the TrellisNet example (`examples/trellis_lm.deq`):
//! outputs never depend on later time steps, and the example trains.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use deqc::exec::Executor;
use deqc::train::trainer::{self, RunOptions};

fn run(src: &str, x: &Tensor) -> Vec<f64> {
    let g = lower(src);
    let params = trainer::init_params(&g, 5, &Device::Cpu).unwrap();
    let values: Vec<Tensor> = params.into_iter().map(|p| p.1).collect();
    let out = Executor::new(Device::Cpu)
        .run(&g, &values, std::slice::from_ref(x))
        .unwrap()
        .outputs;
    common::values(&out[0])
}

#[test]
fn delay_shifts_along_time_with_zeros_first() {
    let x = Tensor::arange(1f32, 13.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 2, 6))
        .unwrap();
    let out = run(
        "use nn;\nmodel M(x: [B, 2, T]) -> [B, 2, T] {\n    nn::delay(x, n = 2)\n}\n",
        &x,
    );
    assert_eq!(
        out,
        vec![0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 7.0, 8.0, 9.0, 10.0]
    );
}

#[test]
fn causal_convolution_never_reads_the_future() {
    // Kernel 3, dilation 2: output t reads inputs t - 4, t - 2 and t.
    let src = "use nn;\nmodel M(x: [B, 3, T]) -> [B, 5, T] {\n    let c = nn::CausalConv1d[3, 5, 3, dilation = 2, norm = \"weight\"];\n    c(x)\n}\n";
    let (t, at) = (10usize, 6usize);
    let x = common::seeded_normal(&[2, 3, t], 1.0, 1)
        .to_dtype(DType::F32)
        .unwrap();
    let bump = Tensor::zeros((2, 3, t), DType::F32, &Device::Cpu)
        .unwrap()
        .slice_assign(
            &[0..2, 0..3, at..at + 1],
            &Tensor::ones((2, 3, 1), DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
    let (a, b) = (run(src, &x), run(src, &(&x + bump).unwrap()));
    assert_eq!(a.len(), 2 * 5 * t);
    for (i, (p, q)) in a.iter().zip(&b).enumerate() {
        let time = i % t;
        if time < at {
            assert_eq!(p, q, "output at time {time} moved with input at {at}");
        } else if [at, at + 2, at + 4].contains(&time) {
            assert_ne!(p, q, "output at time {time} ignores input at {at}");
        } else {
            assert_eq!(
                p, q,
                "output at time {time} reads input at {at} outside its kernel"
            );
        }
    }
}

#[test]
fn trellis_lm_example_trains() {
    let src = std::fs::read_to_string("examples/trellis_lm.deq")
        .unwrap()
        .replace("seq_len = 64", "seq_len = 16")
        .replace("batch_size = 32", "batch_size = 8")
        .replace("lr = 1e-3", "lr = 3e-3");
    let c = deqc::compile_source("trellis_lm.deq", &src);
    let sources = c.sources.clone();
    let p = c.program.expect("the example checks");
    let model = p.model("TrellisLm").unwrap();
    // Weight normalization on both convolutions: each has its gain.
    let paths: Vec<&str> = model.params.iter().map(|p| p.path.as_str()).collect();
    assert!(
        paths.contains(&"inject.conv.w_g") && paths.contains(&"level.conv.conv.w_g"),
        "{paths:?}"
    );
    let out = std::env::temp_dir().join(format!("deqc-trellis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let opts = RunOptions {
        out: Some(out.clone()),
        quiet: true,
        max_steps: Some(8),
        max_eval_batches: Some(1),
        ..RunOptions::default()
    };
    let s = trainer::train(model, &p.trains[0], &sources, &opts).expect("trellis_lm trains");
    assert_eq!(s.steps, 8);
    let losses: Vec<f64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    let (first, last) = (
        losses[..2].iter().sum::<f64>(),
        losses[6..].iter().sum::<f64>(),
    );
    assert!(last < first, "loss did not fall: {losses:?}");
    assert!(s.test_perplexity.unwrap().is_finite());
}
