//! Training end to end: a short MNIST run on a 512-sample subset (loss
//! falls, metrics and checkpoints are written and load), exact resume,
//! corrupt checkpoints, `deqc grad` against finite differences, and a few
//! steps of the char-level LM and the monDEQ.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use deqc::train::checkpoint;
use deqc::train::data;
use deqc::train::trainer::{self, RunOptions};

mod common;

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("train-{name}"))
}

/// A 512/256-sample MNIST subset in a temporary folder.
fn mnist_subset(name: &str) -> PathBuf {
    let dir = temp_dir(name).join("mnist");
    common::mnist::write_subset(&dir, 512, 256);
    dir
}

fn program(src: &str) -> (deqc::sema::hir::Program, deqc::source::SourceMap) {
    common::checked("train_test.deq", src)
}

fn mnist_mlp(data: &Path) -> String {
    std::fs::read_to_string("examples/mnist_mlp.deq")
        .unwrap()
        .replace(
            "\"data/mnist-10k\"",
            &format!("{:?}", data.display().to_string()),
        )
        .replace("batch_size = 128", "batch_size = 64")
}

fn quiet(out: &Path) -> RunOptions {
    RunOptions {
        max_eval_batches: Some(2),
        ..common::quiet_run(out)
    }
}

fn losses(out: &Path) -> Vec<f64> {
    common::train_losses(out)
}

#[test]
fn mnist_mlp_learns_and_writes_metrics_and_checkpoints() {
    let data = mnist_subset("e2e");
    let (p, sources) = program(&mnist_mlp(&data));
    let mut cfg = p.trains[0].clone();
    cfg.epochs = 3;
    let out = data.parent().unwrap().join("run");
    let s =
        trainer::train(p.model("DeqMlp").unwrap(), &cfg, &sources, &quiet(&out)).expect("trains");
    assert_eq!(s.steps, 24);
    let l = losses(&out);
    assert_eq!(l.len(), 24);
    let first: f64 = l[..4].iter().sum::<f64>() / 4.0;
    let last: f64 = l[l.len() - 4..].iter().sum::<f64>() / 4.0;
    assert!(last < 0.7 * first, "loss did not fall: {first} -> {last}");
    // Every record has the promised keys.
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in [
            "epoch",
            "step",
            "split",
            "loss",
            "accuracy",
            "fwd_iters",
            "fwd_residual",
            "bwd_iters",
            "bwd_residual",
            "seconds",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
    }
    // The adjoint solves (tol 1e-6, relative) converge on most steps.
    let mut adjoint: Vec<f64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| v["bwd_residual"].as_f64().unwrap())
        .collect();
    adjoint.sort_by(f64::total_cmp);
    let median = adjoint[adjoint.len() / 2];
    assert!(
        median > 0.0 && median < 1e-4,
        "adjoint residuals {adjoint:?}"
    );
    assert!(text.contains("\"split\":\"test\""));
    // Both checkpoints load with the model's keys and shapes.
    let compiled = trainer::compile(p.model("DeqMlp").unwrap(), &cfg).unwrap();
    let shapes = trainer::param_shapes(&compiled.graph);
    let params =
        checkpoint::load_model(&out, &shapes, &Device::Cpu).expect("model.safetensors loads");
    assert_eq!(params[0].0, "inject.w");
    let state = checkpoint::load_train_state(&out, None, &Device::Cpu).expect("train_state loads");
    assert_eq!((state.epoch, state.step), (3, 24));
    // `deqc eval` semantics: the saved weights reach a sensible accuracy.
    let values: Vec<Tensor> = params.into_iter().map(|p| p.1).collect();
    let exec = deqc::exec::Executor::new(Device::Cpu)
        .with_runner(Box::new(deqc::deq::SolverRunner::new()));
    let test = data::mnist(&data, true).unwrap().test.unwrap();
    let (_, acc) = trainer::evaluate(
        &exec,
        &compiled.eval,
        &values,
        &test,
        128,
        &Device::Cpu,
        true,
        None,
    )
    .unwrap();
    assert!(acc.unwrap() > 0.5, "accuracy {acc:?}");
}

#[test]
fn resuming_continues_exactly() {
    let data = mnist_subset("resume");
    let (p, sources) = program(&mnist_mlp(&data));
    let model = p.model("DeqMlp").unwrap();
    let mut cfg = p.trains[0].clone();
    cfg.epochs = 2;
    let root = data.parent().unwrap().to_path_buf();
    let straight = root.join("straight");
    trainer::train(model, &cfg, &sources, &quiet(&straight)).unwrap();
    // Interrupted mid-epoch (5 of 8 batches), then at an epoch's end.
    let split = root.join("split");
    for stop in [5, 8] {
        let mut first = quiet(&split);
        first.max_steps = Some(stop);
        first.resume = stop != 5;
        // Checkpoints after every step as well: they must not disturb the run.
        first.checkpoint_every = Some(std::time::Duration::ZERO);
        trainer::train(model, &cfg, &sources, &first).unwrap();
        let state = checkpoint::load_train_state(&split, None, &Device::Cpu).unwrap();
        assert_eq!(state.step, stop as u64);
    }
    let mut second = quiet(&split);
    second.resume = true;
    let s = trainer::train(model, &cfg, &sources, &second).unwrap();
    assert_eq!(s.steps, 16);
    let (a, _) =
        checkpoint::read_tensors(&straight.join("model.safetensors"), &Device::Cpu).unwrap();
    let (b, _) = checkpoint::read_tensors(&split.join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(a.len(), b.len());
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        let d = max_abs_diff(ta, tb);
        assert!(d <= 1e-6, "{ka} differs by {d}");
    }
    // Files from different steps (a crash between the two writes) are an
    // error naming both steps.
    std::fs::copy(
        straight.join("train_state.safetensors"),
        root.join("state_16"),
    )
    .unwrap();
    let mut early = quiet(&split);
    early.max_steps = Some(3);
    trainer::train(model, &cfg, &sources, &early).unwrap();
    std::fs::copy(root.join("state_16"), split.join("train_state.safetensors")).unwrap();
    let err = trainer::train(model, &cfg, &sources, &second).expect_err("torn pair");
    assert!(
        err.to_string().contains("from step 3") && err.to_string().contains("step 16"),
        "{err}"
    );
    // A torn checkpoint is an error, not a panic.
    let bytes = std::fs::read(split.join("model.safetensors")).unwrap();
    std::fs::write(split.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = trainer::train(model, &cfg, &sources, &second).expect_err("corrupt checkpoint");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn deqc_grad_matches_finite_differences() {
    let dir = temp_dir("grad");
    let src = r#"
model Tiny(x: f64[B, 3]) -> f64[B, 2] {
    param w: f64[4, 4] = zeros;
    param u: f64[3, 4] = zeros;
    param h: f64[4, 2] = zeros;
    equilibrium z: f64[B, 4] = tanh(z @ w + x @ u)
        with solver = anderson(tol = 1e-13, max_iter = 300, stop = "abs"),
             backward = implicit(tol = 1e-13, max_iter = 300);
    z @ h
}
"#;
    let file = dir.join("tiny.deq");
    std::fs::write(&file, src).unwrap();
    let dev = Device::Cpu;
    let w = common::seeded_normal(&[4, 4], 0.2, 1);
    let u = common::seeded_normal(&[3, 4], 1.0, 2);
    let h = common::seeded_normal(&[4, 2], 1.0, 3);
    let params = vec![
        ("w".to_string(), w),
        ("u".to_string(), u),
        ("h".to_string(), h),
    ];
    checkpoint::save_tensors(&dir.join("w.safetensors"), &params, &Default::default()).unwrap();
    let x = common::seeded_normal(&[5, 3], 1.0, 4);
    let target = Tensor::new(&[0i64, 1, 1, 0, 1], &dev).unwrap();
    let batch = vec![
        ("x".to_string(), x.clone()),
        ("target".to_string(), target.clone()),
    ];
    checkpoint::save_tensors(&dir.join("batch.safetensors"), &batch, &Default::default()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(["grad", file.to_str().unwrap(), "--weights"])
        .arg(dir.join("w.safetensors"))
        .arg("--batch")
        .arg(dir.join("batch.safetensors"))
        .arg("--out")
        .arg(dir.join("g.safetensors"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (grads, _) = checkpoint::read_tensors(&dir.join("g.safetensors"), &dev).unwrap();
    // A batch without the target is refused, naming the file and the tensor.
    let partial = dir.join("partial.safetensors");
    checkpoint::save_tensors(&partial, &batch[..1], &Default::default()).unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(["grad", file.to_str().unwrap(), "--weights"])
        .arg(dir.join("w.safetensors"))
        .arg("--batch")
        .arg(&partial)
        .arg("--out")
        .arg(dir.join("never.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("partial.safetensors has no tensor `target`") && err.contains("(x)"),
        "{err}"
    );
    let saved_loss = grads
        .iter()
        .find(|g| g.0 == "loss")
        .expect("loss saved")
        .1
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()[0];
    // Central differences of the same loss, evaluated by the library.
    let c = deqc::compile_path(&file).unwrap();
    let model = c.program.unwrap().models[0].clone();
    let graph = deqc::ir::lower::lower_model(&model).unwrap();
    let eval =
        deqc::train::program::eval_graph(&graph, &deqc::sema::spec::Loss::CROSS_ENTROPY).unwrap();
    let exec =
        deqc::exec::Executor::cpu_f64().with_runner(Box::new(deqc::deq::SolverRunner::new()));
    let loss = |ps: &[Tensor]| -> f64 {
        let r = exec
            .run(&eval.graph, ps, &[x.clone(), target.clone()])
            .unwrap();
        r.outputs[0].to_scalar::<f64>().unwrap()
    };
    let base: Vec<Tensor> = params.iter().map(|p| p.1.clone()).collect();
    assert!((loss(&base) - saved_loss).abs() < 1e-12);
    for (i, (name, t)) in params.iter().enumerate() {
        let derived = grads
            .iter()
            .find(|g| &g.0 == name)
            .unwrap()
            .1
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let values = t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for k in 0..values.len() {
            let at = |d: f64| {
                let mut v = values.clone();
                v[k] += d;
                let mut ps = base.clone();
                ps[i] = Tensor::from_vec(v, t.dims(), &dev).unwrap();
                loss(&ps)
            };
            let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
            assert!(
                (fd - derived[k]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "{name}[{k}]: {fd} vs {}",
                derived[k]
            );
        }
    }
    let _ = DType::F64;
}

#[test]
fn char_lm_and_mondeq_train_a_few_steps() {
    let src = std::fs::read_to_string("examples/char_lm.deq").unwrap();
    let (p, sources) = program(&src);
    let out = temp_dir("char_lm");
    let mut cfg = p.trains[0].clone();
    cfg.batch_size = 4;
    let mut opts = quiet(&out);
    opts.max_steps = Some(2);
    opts.max_eval_batches = Some(1);
    let s =
        trainer::train(p.model("CharDeq").unwrap(), &cfg, &sources, &opts).expect("char_lm trains");
    assert_eq!(s.steps, 2);
    assert!(s.last_loss.unwrap().is_finite());
    assert!(std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .contains("perplexity"));
    assert!(out.join("vocab.json").exists());
    // Text reports perplexity, exp of the test loss.
    let (ppl, loss) = (s.test_perplexity.unwrap(), s.test_loss.unwrap());
    assert!(
        (ppl - loss.exp()).abs() < 1e-9 * ppl,
        "{ppl} vs exp({loss})"
    );

    // The monDEQ example has no train block: train it on MNIST from code.
    let src = std::fs::read_to_string("examples/mondeq.deq").unwrap();
    let (p, sources) = program(&src);
    let data = mnist_subset("mondeq");
    let (q, _) = program(&mnist_mlp(&data));
    let mut cfg = q.trains[0].clone();
    cfg.model = "MonDeq".into();
    let out = data.parent().unwrap().join("run");
    let mut opts = quiet(&out);
    opts.max_steps = Some(3);
    let s =
        trainer::train(p.model("MonDeq").unwrap(), &cfg, &sources, &opts).expect("mondeq trains");
    assert_eq!(s.steps, 3);
    assert!(s.test_perplexity.is_none() && s.test_accuracy.is_some());
    assert!(s.last_loss.unwrap().is_finite());
}

#[test]
fn csv_regression_with_mse_trains() {
    let dir = temp_dir("csv");
    let mut rows = String::from("a,b,y\n");
    for i in 0..128 {
        let (a, b) = ((i % 16) as f64 / 16.0, (i / 16) as f64 / 8.0);
        rows.push_str(&format!("{a},{b},{}\n", 2.0 * a - b + 0.1));
    }
    std::fs::write(dir.join("train.csv"), rows).unwrap();
    let src = format!(
        "use nn;\nmodel Reg(x: [B, 2]) -> [B, 1] {{\n    let inject = nn::Linear[2, 8];\n    let cell = nn::Linear[8, 8];\n    let head = nn::Linear[8, 1];\n    let u = inject(x);\n    equilibrium z: [B, 8] = tanh(cell(z) + u);\n    head(z)\n}}\ntrain Reg {{\n    data = csv({:?}, target = \"y\");\n    loss = mse;\n    optimizer = adam(lr = 1e-2);\n    epochs = 8;\n    batch_size = 32;\n}}\n",
        dir.join("train.csv").display().to_string()
    );
    let (p, sources) = program(&src);
    let out = dir.join("run");
    trainer::train(
        p.model("Reg").unwrap(),
        &p.trains[0],
        &sources,
        &quiet(&out),
    )
    .expect("trains");
    let l = losses(&out);
    assert!(
        l[l.len() - 1] < 0.2 * l[0],
        "mse did not fall: {} -> {}",
        l[0],
        l[l.len() - 1]
    );
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn updates_from_failed_solves_are_skipped_and_counted() {
    // Six steps whose solves converge make "usual" a residual below tol;
    // the resumed run then solves with one iteration (residual 1 against
    // tol 1e-4): far worse than usual, so its updates are skipped. The
    // guard's history travels in train_state.safetensors.
    let data = mnist_subset("skip");
    let (p, sources) = program(&mnist_mlp(&data));
    let model = p.model("DeqMlp").unwrap();
    let root = data.parent().unwrap().to_path_buf();
    let out = root.join("run");
    let mut opts = quiet(&out);
    opts.max_steps = Some(6);
    opts.skip_failed_solves = true;
    trainer::train(model, &p.trains[0], &sources, &opts).unwrap();
    let before = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(!before.contains("skipped_update"), "{before}");
    let (saved, _) =
        checkpoint::read_tensors(&out.join("model.safetensors"), &Device::Cpu).unwrap();

    let failing = mnist_mlp(&data).replace(
        "anderson(m = 5, tol = 1e-4, max_iter = 40)",
        "fixed_point(tol = 1e-4, max_iter = 1)",
    );
    let (pf, sources_f) = program(&failing);
    let model_f = pf.model("DeqMlp").unwrap();
    let resume = |dir: &Path, skip: bool| {
        if dir != out.as_path() {
            std::fs::create_dir_all(dir).unwrap();
            for f in ["model.safetensors", "train_state.safetensors"] {
                std::fs::copy(out.join(f), dir.join(f)).unwrap();
            }
        }
        let mut opts = quiet(dir);
        opts.resume = true;
        opts.max_steps = Some(9);
        opts.skip_failed_solves = skip;
        trainer::train(model_f, &pf.trains[0], &sources_f, &opts).unwrap();
        checkpoint::read_tensors(&dir.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .0
    };
    // With the safeguard off, the same steps change the weights.
    let applied = resume(&root.join("applied"), false);
    let changed = saved
        .iter()
        .zip(&applied)
        .any(|((_, a), (_, b))| max_abs_diff(a, b) > 0.0);
    assert!(changed, "updates with the safeguard off");
    let after = resume(&out, true);
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(text.matches("\"skipped_update\":1.0").count(), 3, "{text}");
    for ((name, a), (_, b)) in saved.iter().zip(&after) {
        assert_eq!(max_abs_diff(a, b), 0.0, "{name} changed");
    }
}

#[test]
fn unrolled_backward_never_counts_as_a_failed_solve() {
    // An `unroll` network, or `fixed_point` with `unrolled` backward, is
    // differentiated exactly whether or not it reached `tol`: the safeguard
    // must apply every update (it once skipped every `unroll` step).
    let data = mnist_subset("unrolled_no_skip");
    for (i, solver) in ["unroll(steps = 2)", "fixed_point(tol = 1e-9, max_iter = 2)"]
        .iter()
        .enumerate()
    {
        let src = mnist_mlp(&data)
            .replace("anderson(m = 5, tol = 1e-4, max_iter = 40)", solver)
            .replace("implicit(tol = 1e-6, max_iter = 40)", "unrolled");
        let (p, sources) = program(&src);
        let model = p.model("DeqMlp").unwrap();
        let out = data.parent().unwrap().join(format!("run{i}"));
        let mut opts = quiet(&out);
        opts.max_steps = Some(12);
        opts.skip_failed_solves = true;
        trainer::train(model, &p.trains[0], &sources, &opts).unwrap();
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        assert!(!text.contains("skipped_update"), "{solver}: {text}");
        let l = losses(&out);
        let head: f64 = l[..3].iter().sum::<f64>() / 3.0;
        let tail: f64 = l[l.len() - 3..].iter().sum::<f64>() / 3.0;
        assert!(tail < head - 0.2, "{solver}: loss did not fall: {l:?}");
    }
}

fn records(out: &Path) -> Vec<serde_json::Value> {
    common::records(out)
}

#[test]
fn max_steps_on_an_epoch_boundary_runs_no_empty_epoch() {
    // 512 samples in batches of 64: 8 steps an epoch.
    let data = mnist_subset("max_steps");
    let (p, sources) = program(&mnist_mlp(&data));
    let model = p.model("DeqMlp").unwrap();
    let mut cfg = p.trains[0].clone();
    cfg.epochs = 3;
    for (max, epochs_run) in [(8usize, 1usize), (16, 2), (0, 0)] {
        let out = data.parent().unwrap().join(format!("run{max}"));
        let mut opts = quiet(&out);
        opts.max_steps = Some(max);
        let s = trainer::train(model, &cfg, &sources, &opts).unwrap();
        assert_eq!((s.steps, s.epochs_run), (max as u64, epochs_run), "{max}");
        let recs = records(&out);
        let mut seen = std::collections::HashSet::new();
        for r in &recs {
            let key = (r["split"].to_string(), r["step"].as_u64().unwrap());
            assert!(seen.insert(key.clone()), "{max}: duplicate record {key:?}");
        }
        let tests = recs.iter().filter(|r| r["split"] == "test").count();
        // The test split once, where the run ends.
        assert_eq!(
            (recs.len() - tests, tests),
            (max, epochs_run.min(1)),
            "{max}"
        );
    }
}

#[test]
fn two_equilibria_and_a_nested_one_are_reported_apart() {
    let data = mnist_subset("two_eq");
    let src = std::fs::read_to_string("tests/models/two_eq.deq")
        .unwrap()
        .replace(
            "\"data/mnist-10k\"",
            &format!("{:?}", data.display().to_string()),
        );
    let (p, sources) = program(&src);
    let out = data.parent().unwrap().join("run");
    let mut opts = quiet(&out);
    opts.max_steps = Some(3);
    trainer::train(p.model("TwoEq").unwrap(), &p.trains[0], &sources, &opts).unwrap();
    let recs = records(&out);
    let train: Vec<&serde_json::Value> = recs.iter().filter(|r| r["split"] == "train").collect();
    assert_eq!(train.len(), 3);
    for r in &train {
        let eqs = r["equilibria"].as_object().expect("equilibria");
        let keys: Vec<&String> = eqs.keys().collect();
        assert_eq!(keys, ["h@10/nested", "y@27", "z@24"], "{r}");
        // One solve of each top-level equilibrium per step, forward and
        // adjoint; y never meets its tolerance in 3 iterations, z does.
        for k in ["z@24", "y@27"] {
            assert_eq!(eqs[k]["fwd_solves"], 1, "{k}: {r}");
            assert_eq!(eqs[k]["bwd_solves"], 1, "{k}: {r}");
            assert_eq!(eqs[k]["nested"], false);
        }
        assert_eq!(eqs["y@27"]["fwd_unconverged"], 1, "{r}");
        assert_eq!(eqs["y@27"]["fwd_iters"], 3.0, "{r}");
        assert_eq!(eqs["z@24"]["fwd_unconverged"], 0, "{r}");
        // h runs in every evaluation of y's body (and of its adjoint's).
        let h = &eqs["h@10/nested"];
        assert_eq!(h["nested"], true);
        assert!(h["fwd_solves"].as_u64().unwrap() >= 3, "{r}");
        // The aggregates are over the top-level equilibria only.
        let mean = (eqs["z@24"]["fwd_iters"].as_f64().unwrap() + 3.0) / 2.0;
        assert!(
            (r["fwd_iters"].as_f64().unwrap() - mean).abs() < 1e-9,
            "{r}"
        );
    }
    let test = recs
        .iter()
        .find(|r| r["split"] == "test")
        .expect("a test record");
    for k in ["z@24", "y@27"] {
        let radius = test["equilibria"][k]["spectral_radius"].as_f64();
        assert!(radius.is_some_and(|r| r > 0.0), "{k}: {test}");
    }
}

#[test]
fn a_guard_that_skips_most_updates_stops_skipping_with_advice() {
    // Twenty steps whose solves converge make "usual" a residual below tol;
    // the resumed run then solves with one iteration, far worse than usual,
    // so the guard skips every update: after 10 skipped of the last 20 it
    // says so, with what to change, and applies the updates from then on
    // (a guard that skips most updates freezes training).
    let data = mnist_subset("stall");
    let (p, sources) = program(&mnist_mlp(&data));
    let out = data.parent().unwrap().join("run");
    let mut opts = quiet(&out);
    opts.max_steps = Some(20);
    opts.skip_failed_solves = true;
    trainer::train(p.model("DeqMlp").unwrap(), &p.trains[0], &sources, &opts).unwrap();
    let failing = mnist_mlp(&data).replace(
        "anderson(m = 5, tol = 1e-4, max_iter = 40)",
        "fixed_point(tol = 1e-4, max_iter = 1)",
    );
    let (pf, sources_f) = program(&failing);
    let mut cfg = pf.trains[0].clone();
    cfg.epochs = 10;
    let mut opts = quiet(&out);
    opts.resume = true;
    opts.max_steps = Some(60);
    opts.skip_failed_solves = true;
    let summary = trainer::train(pf.model("DeqMlp").unwrap(), &cfg, &sources_f, &opts)
        .expect("the run goes on");
    assert_eq!(summary.steps, 60);
    let msg = summary.guard_disabled.expect("the stall is reported");
    for advice in [
        "10 of the last",
        "updates are applied",
        "max_iter",
        "jacobian_reg",
        "learning rate",
        "train_test.deq:10:5",
    ] {
        assert!(msg.contains(advice), "`{advice}` missing: {msg}");
    }
    let recs = records(&out);
    let skipped = recs
        .iter()
        .filter(|r| r.get("skipped_update").is_some())
        .count();
    assert_eq!(skipped, 10, "no update is skipped after the stall");
    let disabled: Vec<_> = recs
        .iter()
        .filter(|r| r.get("guard_disabled").is_some())
        .collect();
    assert_eq!(disabled.len(), 1);
    assert_eq!(disabled[0]["step"].as_u64(), Some(29));
}

/// The learning rate a run applies at each step (its `lr` records) is the
/// schedule's closed form over the run's real step count and epochs.
#[test]
fn runs_apply_schedules_per_step() {
    use std::f64::consts::PI;
    let data = mnist_subset("schedule");
    // 512 samples, batch 64: 8 steps an epoch, 16 in all.
    let lrs = |schedule: &str, name: &str| -> Vec<f64> {
        let src = mnist_mlp(&data);
        assert!(
            src.contains("epochs = 4;"),
            "the example's train block changed"
        );
        let src = src.replace(
            "epochs = 4;",
            &format!("epochs = 2;\n    schedule = {schedule};"),
        );
        let (p, sources) = program(&src);
        let out = data.parent().unwrap().join(name);
        let cfg = p.trains[0].clone();
        trainer::train(p.model("DeqMlp").unwrap(), &cfg, &sources, &quiet(&out)).expect("trains");
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["split"] == "train")
            .map(|v| v["lr"].as_f64().unwrap())
            .collect()
    };
    let agree = |got: &[f64], want: &dyn Fn(f64) -> f64| {
        assert_eq!(got.len(), 16);
        for (t, g) in got.iter().enumerate() {
            let w = want(t as f64);
            assert!((g - w).abs() <= 1e-12, "step {t}: lr {g} != {w}; {got:?}");
        }
    };
    // Up from 1e-3 to 1e-2 over steps 0..=4, then down to 1e-7 at step 15.
    let got = lrs("onecycle(max_lr = 1e-2, warmup = 5)", "onecycle");
    let anneal = |a: f64, b: f64, p: f64| b + (a - b) / 2.0 * (1.0 + (PI * p).cos());
    agree(&got, &|t| {
        if t <= 4.0 {
            anneal(1e-3, 1e-2, t / 4.0)
        } else {
            anneal(1e-2, 1e-7, (t - 4.0) / 11.0)
        }
    });
    // Three warm-up steps, then halved each epoch (steps 8.. are epoch 1).
    let got = lrs("exponential(gamma = 0.5, warmup = 3)", "exponential");
    agree(&got, &|t| {
        if t < 3.0 {
            1e-3 * (t + 1.0) / 3.0
        } else {
            1e-3 * 0.5f64.powf((t / 8.0).floor())
        }
    });
}
