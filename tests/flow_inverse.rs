//! Inversion by equilibrium: a residual flow trained briefly by `deqc run`
//! (tests/models/flow_inverse.deq), its features computed by one model and
//! inverted by another that declares the same layer instances, so both read
//! the trained parameters by checkpoint path. In f32 the reconstruction
//! error is at most 1e-4, and the inverse's solves are recorded like any
//! equilibrium's. And a hybrid model (tests/models/hybrid_flow.deq:
//! scores and log p(x), a fn loss combining them) trains.

mod common;

use std::path::PathBuf;
use std::process::Command;

use candle_core::{Device, Tensor};
use deqc::deq::SolverRunner;
use deqc::exec::Executor;
use deqc::ir::{lower::lower_model, Graph};
use deqc::train::checkpoint::read_tensors;

const FILE: &str = "tests/models/flow_inverse.deq";

fn lower_named(name: &str) -> Graph {
    let c = deqc::compile_path(std::path::Path::new(FILE)).expect("readable");
    let p = match c.program {
        Some(p) => p,
        None => panic!("{}", c.render_plain(100)),
    };
    lower_model(p.model(name).expect("model")).expect("lowers")
}

/// The graph's parameters, read from the checkpoint by path.
fn params_by_path(g: &Graph, tensors: &[(String, Tensor)]) -> Vec<Tensor> {
    g.params
        .iter()
        .map(|p| {
            tensors
                .iter()
                .find(|(k, _)| *k == p.path)
                .unwrap_or_else(|| panic!("no `{}` in the checkpoint", p.path))
                .1
                .clone()
        })
        .collect()
}

#[test]
fn a_trained_flow_is_inverted_by_its_equilibria() {
    let out: PathBuf =
        std::env::temp_dir().join(format!("deqc-flow-inverse-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(["run", FILE, "--max-steps", "30", "--out"])
        .arg(&out)
        .output()
        .expect("deqc runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (tensors, _) =
        read_tensors(&out.join("model.safetensors"), &Device::Cpu).expect("checkpoint");

    let features = lower_named("Features");
    let inverse = lower_named("Inverse");
    let x = common::seeded_uniform(&[16, 784], 1)
        .to_dtype(candle_core::DType::F32)
        .expect("pixels");
    let exec = Executor::new(Device::Cpu);
    let y = exec
        .run(
            &features,
            &params_by_path(&features, &tensors),
            std::slice::from_ref(&x),
        )
        .expect("features")
        .outputs[0]
        .clone();
    let runner = SolverRunner::new();
    let exec = Executor::new(Device::Cpu).with_runner(Box::new(runner.clone()));
    let back = exec
        .run(
            &inverse,
            &params_by_path(&inverse, &tensors),
            std::slice::from_ref(&y),
        )
        .expect("inverse")
        .outputs[0]
        .clone();
    let err = (back - &x)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|m| m.to_scalar::<f32>())
        .expect("error");
    let moved = (&y - &x)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|m| m.to_scalar::<f32>())
        .expect("moved");
    eprintln!("reconstruction max error {err:e}; the flow moved pixels by up to {moved}");
    assert!(moved > 0.05, "the flow is nearly the identity ({moved})");
    assert!(err <= 1e-4, "reconstruction max error {err:e}");
    let records = runner.take_records();
    assert_eq!(records.len(), 2, "one solve per block");
    // The stdlib's `flow::residual_inverse` writes the same equilibria.
    let by_stdlib = lower_named("InverseByStdlib");
    let again = Executor::new(Device::Cpu)
        .run(
            &by_stdlib,
            &params_by_path(&by_stdlib, &tensors),
            std::slice::from_ref(&y),
        )
        .expect("inverse by stdlib")
        .outputs[0]
        .clone();
    let err2 = (again - &x)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|m| m.to_scalar::<f32>())
        .expect("error");
    assert!(err2 <= 1e-4, "flow::residual_inverse: max error {err2:e}");
    for r in &records {
        assert!(r.stats.converged, "{:?}", r.stats.residual);
        assert!(r.stats.iterations > 1);
    }

    // `deqc grad` of the inverse reads the trained model's checkpoint (its
    // head's tensors are left out) and differentiates through both solves.
    let batch = out.join("batch.safetensors");
    let target = Tensor::zeros(16, candle_core::DType::I64, &Device::Cpu).expect("target");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("y".to_string(), y), ("target".to_string(), target)]),
        &batch,
    )
    .expect("batch written");
    let grads = out.join("grads.safetensors");
    let run = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(["grad", FILE, "--model", "Inverse", "--weights"])
        .arg(&out)
        .arg("--batch")
        .arg(&batch)
        .arg("--out")
        .arg(&grads)
        .output()
        .expect("deqc grad runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (written, _) = read_tensors(&grads, &Device::Cpu).expect("gradients");
    let names: Vec<&str> = written.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.contains(&"g1.a.w") && !names.contains(&"head.w"),
        "{names:?}"
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_hybrid_model_trains_on_its_scores_and_its_log_density() {
    // Two outputs (scores, log p(x) from the log-det series with probes
    // drawn per step) and a fn loss combining them.
    let out: PathBuf = std::env::temp_dir().join(format!("deqc-hybrid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args([
            "run",
            "tests/models/hybrid_flow.deq",
            "--max-steps",
            "40",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("deqc runs");
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let accuracy: f64 = stdout
        .split("test accuracy ")
        .nth(1)
        .and_then(|s| s.split('%').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no test accuracy in {stdout}"));
    assert!(accuracy > 70.0, "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
