//! The hybrid flow example and its metrics: `examples/hybrid_flow.deq`
//! trains a few steps and reports accuracy, bits per dimension and the
//! loss parts in `metrics.jsonl`, `run.json` and `deqc eval` (with the
//! AUROC of `--ood shuffle,noise`); the diagonal-Gaussian baseline of the
//! README in closed form; `--ood` without a log-density is refused.

use std::path::{Path, PathBuf};
use std::process::Command;

use deqc::train::data::{self, HostData};
use deqc::train::density::{self, BitsScale, LEVELS};
use deqc::train::trainer::{self, RunOptions};
use serde_json::Value;

mod common;

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("hybrid-{name}"))
}

fn records(out: &Path) -> Vec<Value> {
    common::records(out)
}

#[test]
fn the_example_trains_and_reports_accuracy_bits_and_loss_parts() {
    let c = deqc::compile_path(Path::new("examples/hybrid_flow.deq")).unwrap();
    let sources = c.sources.clone();
    let p = c.program.unwrap_or_else(|| panic!("does not check"));
    let mut cfg = p.trains[0].clone();
    cfg.batch_size = 16;
    let out = temp_dir("example");
    let opts = RunOptions {
        out: Some(out.clone()),
        quiet: true,
        max_steps: Some(3),
        max_eval_batches: Some(2),
        ..RunOptions::default()
    };
    let s = trainer::train(p.model("HybridFlow").unwrap(), &cfg, &sources, &opts).expect("trains");
    assert_eq!(s.steps, 3);
    let bits = s.test_bits_per_dim.expect("test bits per dimension");
    assert!(bits.is_finite(), "{bits}");
    let recs = records(&out);
    assert_eq!(recs.len(), 4, "3 train records and 1 test record");
    for r in &recs {
        for key in ["loss", "accuracy", "cross_entropy", "nll", "bits_per_dim"] {
            assert!(r[key].is_number(), "{key} missing in {r}");
        }
        // bits/dim = nll / (784 ln 2) + 8 on the 256-level scale.
        let nll = r["nll"].as_f64().unwrap();
        let want = nll / (784.0 * std::f64::consts::LN_2) + 8.0;
        assert!((r["bits_per_dim"].as_f64().unwrap() - want).abs() < 1e-9);
        // The loss is cross-entropy plus the nll per pixel (the fn's parts).
        let total = r["cross_entropy"].as_f64().unwrap() + nll / 784.0;
        let loss = r["loss"].as_f64().unwrap();
        assert!((loss - total).abs() < 1e-3 * loss.abs().max(1.0), "{r}");
    }
    assert_eq!(recs[3]["split"], "test");
    let facts: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(facts["density"]["dims"], 784);
    assert_eq!(facts["density"]["offset_bits"], 8.0);
    let recorded = facts["test"]["bits_per_dim"].as_f64().unwrap();
    assert!((recorded - bits).abs() < 1e-9, "{recorded} vs {bits}");
    assert!(facts["train_block"]
        .as_str()
        .unwrap()
        .contains("outputs = [scores, log_density]"));

    // `deqc eval` of the checkpoint, with the AUROC of both corruptions.
    let eval = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(["eval", "examples/hybrid_flow.deq", "--weights"])
        .arg(out.join("model.safetensors"))
        .args(["--ood", "shuffle,noise", "--batch-size", "500"])
        .output()
        .expect("deqc eval runs");
    let text = String::from_utf8_lossy(&eval.stdout);
    assert!(
        eval.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    for want in [
        "accuracy",
        "bits/dim",
        "cross_entropy",
        "nll",
        "on 2000 samples",
        "vs pixel-shuffled images: ",
        "vs uniform-noise images: ",
    ] {
        assert!(text.contains(want), "`{want}` missing in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn ood_needs_a_log_density() {
    let eval = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args([
            "eval",
            "examples/mnist_mlp.deq",
            "--weights",
            "nowhere.safetensors",
            "--ood",
            "shuffle",
        ])
        .output()
        .expect("deqc eval runs");
    assert_eq!(eval.status.code(), Some(2));
    let err = String::from_utf8_lossy(&eval.stderr);
    assert!(err.contains("--ood needs a log-density"), "{err}");
    let bad = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args([
            "eval",
            "examples/hybrid_flow.deq",
            "--weights",
            "nowhere.safetensors",
            "--ood",
            "blur",
        ])
        .output()
        .expect("deqc eval runs");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown corruption `blur`"));
}

/// Pixels of a split as grey levels `k`, one row per sample.
fn levels(ds: &data::Dataset) -> Vec<Vec<f64>> {
    let HostData::F32(x) = &ds.field("x").unwrap().data else {
        panic!("float pixels")
    };
    x.chunks(784)
        .map(|r| r.iter().map(|v| (f64::from(*v) * 255.0).round()).collect())
        .collect()
}

/// The README's diagonal-Gaussian baseline: per-pixel mean and variance of
/// the dequantized train pixels `(k + u) / 256` in closed form (mean
/// `(k̄ + 1/2) / 256`, variance `(var(k) + 1/12) / 256²`), scored on the
/// test pixels dequantized exactly as `deqc eval` does (seed 0).
#[test]
fn diagonal_gaussian_baseline_in_closed_form() {
    let splits = data::mnist("data/mnist-10k", true).unwrap();
    let train = levels(&splits.train);
    let n = train.len() as f64;
    let mut mean = vec![0.0; 784];
    let mut var = vec![0.0; 784];
    for row in &train {
        for (m, k) in mean.iter_mut().zip(row) {
            *m += k / n;
        }
    }
    for row in &train {
        for ((v, k), m) in var.iter_mut().zip(row).zip(&mean) {
            *v += (k - m).powi(2) / n;
        }
    }
    let mu: Vec<f64> = mean.iter().map(|m| (m + 0.5) / LEVELS).collect();
    let sigma2: Vec<f64> = var
        .iter()
        .map(|v| (v + 1.0 / 12.0) / (LEVELS * LEVELS))
        .collect();
    let test = splits.test.unwrap();
    let x = test
        .batches(test.len(), &candle_core::Device::Cpu)
        .next()
        .unwrap()
        .unwrap();
    let deq = density::dequantize(x.get("x").unwrap(), |r| density::eval_key(0, r)).unwrap();
    let pixels: Vec<f32> = deq.flatten_all().unwrap().to_vec1().unwrap();
    let mut nll = 0.0;
    for row in pixels.chunks(784) {
        for ((v, m), s2) in row.iter().zip(&mu).zip(&sigma2) {
            let d = f64::from(*v) - m;
            nll += 0.5 * (d * d / s2 + s2.ln() + (2.0 * std::f64::consts::PI).ln());
        }
    }
    nll /= test.len() as f64;
    let scale = BitsScale {
        dims: 784,
        offset_bits: LEVELS.log2(),
    };
    let bits = scale.bits_per_dim(nll);
    println!("diagonal Gaussian: test bits/dim {bits:.4} (nll {nll:.1} nats per image)");
    // Recorded in the README (6.2271); the hybrid flow must go below it.
    assert!((bits - 6.2271).abs() < 1e-3, "{bits}");
}
