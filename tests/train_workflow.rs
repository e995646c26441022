//! Training workflows: a validation split held out of MNIST with its
//! records and `best.safetensors`, early stopping ending a run, the test
//! split once at the end, unrolled pretraining switching to the DEQ (in the
//! metrics, and across `--resume`), `eval_solver` at evaluation, and the
//! warning for a resume with a changed program.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use deqc::train::checkpoint;
use deqc::train::trainer::{self, RunOptions};
use serde_json::Value;

mod common;

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("workflow-{name}"))
}

/// A 512/128-sample MNIST subset in a temporary folder.
fn mnist_subset(name: &str) -> PathBuf {
    let dir = temp_dir(name).join("mnist");
    common::mnist::write_subset(&dir, 512, 128);
    dir
}

/// The MNIST example on `data` in batches of 64, with `extra` train keys.
fn source(data: &Path, extra: &str) -> String {
    std::fs::read_to_string("examples/mnist_mlp.deq")
        .unwrap()
        .replace(
            "\"data/mnist-10k\"",
            &format!("{:?}", data.display().to_string()),
        )
        .replace("batch_size = 128;", &format!("batch_size = 64;\n{extra}"))
}

fn program(src: &str) -> (deqc::sema::hir::Program, deqc::source::SourceMap) {
    common::checked("workflow.deq", src)
}

fn quiet(out: &Path) -> RunOptions {
    common::quiet_run(out)
}

fn records(out: &Path) -> Vec<Value> {
    common::records(out)
}

fn of_split<'a>(recs: &'a [Value], split: &str) -> Vec<&'a Value> {
    recs.iter().filter(|r| r["split"] == split).collect()
}

fn steps(recs: &[&Value]) -> Vec<u64> {
    recs.iter().map(|r| r["step"].as_u64().unwrap()).collect()
}

#[test]
fn validation_records_the_best_checkpoint_and_the_test_split_at_the_end() {
    // 512 samples, a quarter held out: 384 to train on, 6 batches an epoch.
    let data = mnist_subset("valid");
    let src = source(
        &data,
        "    valid = 0.25;\n    eval_every = 4;\n    eval_samples = 64;\n",
    );
    let (p, sources) = program(&src);
    let model = p.model("DeqMlp").unwrap();
    let mut cfg = p.trains[0].clone();
    cfg.epochs = 3;
    let out = data.parent().unwrap().join("run");
    let s = trainer::train(model, &cfg, &sources, &quiet(&out)).unwrap();
    assert_eq!(s.steps, 18);
    let recs = records(&out);
    // Every 4 steps and at each epoch's end (steps 6, 12, 18), once per
    // step; the test split once, where the run ends.
    let valid = of_split(&recs, "valid");
    assert_eq!(steps(&valid), [4, 6, 8, 12, 16, 18]);
    assert_eq!(steps(&of_split(&recs, "test")), [18]);
    assert_eq!(of_split(&recs, "train").len(), 18);
    assert!(s.test_accuracy.is_some());

    // best.safetensors holds the parameters of the lowest validation loss
    // (the first one on a tie), and the records mark each improvement.
    let losses: Vec<f64> = valid.iter().map(|r| r["loss"].as_f64().unwrap()).collect();
    let mut best = 0;
    let mut marked = Vec::new();
    for (i, l) in losses.iter().enumerate() {
        if i == 0 || *l < losses[best] {
            best = i;
            marked.push(i);
        }
    }
    let flagged: Vec<usize> = (0..valid.len())
        .filter(|i| valid[*i].get("best").is_some())
        .collect();
    assert_eq!(flagged, marked);
    let best_file = out.join(trainer::BEST_FILE);
    let (_, meta) = checkpoint::read_tensors(&best_file, &Device::Cpu).unwrap();
    assert_eq!(meta["step"], valid[best]["step"].to_string());
    assert_eq!(meta["metric"], "loss");

    // `deqc eval`'s path: the best parameters, on the same 64 held-out
    // samples, give the recorded loss.
    let compiled = trainer::compile(model, &cfg).unwrap();
    let params = trainer::load_weights(&compiled.graph, &best_file, &Device::Cpu).unwrap();
    let values: Vec<Tensor> = params.into_iter().map(|p| p.1).collect();
    let splits = deqc::train::validation::load_splits(&cfg).unwrap();
    assert_eq!(
        (splits.train.len(), splits.valid.as_ref().unwrap().len()),
        (384, 128)
    );
    let first64 = splits.valid.unwrap().take(&(0..64).collect::<Vec<_>>());
    let exec = deqc::exec::Executor::new(Device::Cpu)
        .with_runner(Box::new(deqc::deq::SolverRunner::new()));
    let (loss, _) = trainer::evaluate(
        &exec,
        &compiled.eval,
        &values,
        &first64,
        64,
        &Device::Cpu,
        true,
        None,
    )
    .unwrap();
    assert!(
        (loss - losses[best]).abs() < 1e-5,
        "best.safetensors evaluates to {loss}, its record says {}",
        losses[best]
    );
}

#[test]
fn early_stopping_ends_a_run_that_stopped_improving() {
    // An SGD step of 1e-12 leaves every f32 parameter as it is: the
    // validation loss never improves after the first epoch.
    let data = mnist_subset("early");
    let src = source(
        &data,
        "    valid = 0.25;\n    early_stopping = patience(epochs = 2, metric = \"accuracy\");\n",
    )
    .replace("adam(lr = 1e-3)", "sgd(lr = 1e-12)");
    let (p, sources) = program(&src);
    let model = p.model("DeqMlp").unwrap();
    let mut cfg = p.trains[0].clone();
    cfg.epochs = 10;
    let out = data.parent().unwrap().join("run");
    let s = trainer::train(model, &cfg, &sources, &quiet(&out)).unwrap();
    // Best after epoch 1, no better after epochs 2 and 3: stop after 3.
    assert_eq!((s.epochs_run, s.steps), (3, 18));
    let message = s.stopped_early.expect("stopped early");
    assert!(
        message.contains("after epoch 3") && message.contains("accuracy"),
        "{message}"
    );
    let recs = records(&out);
    assert_eq!(steps(&of_split(&recs, "valid")), [6, 12, 18]);
    assert_eq!(steps(&of_split(&recs, "test")), [18]);
    // Resuming an early-stopped run does not train on.
    let mut again = quiet(&out);
    again.resume = true;
    let s = trainer::train(model, &cfg, &sources, &again).unwrap();
    assert_eq!((s.epochs_run, s.steps), (0, 18));
    assert_eq!(records(&out).len(), recs.len());
}

/// A record without its wall time (which differs from run to run).
fn timeless(r: &Value) -> Value {
    let mut r = r.clone();
    if let Value::Object(m) = &mut r {
        m.remove("seconds");
    }
    r
}

#[test]
fn pretraining_switches_to_the_deq_and_everything_resumes_exactly() {
    let data = mnist_subset("pretrain");
    let src = source(
        &data,
        "    valid = 0.25;\n    eval_every = 4;\n    early_stopping = patience(epochs = 5);\n    pretrain = unrolled(steps = 7, depth = 3);\n",
    );
    let (p, sources) = program(&src);
    let model = p.model("DeqMlp").unwrap();
    let mut cfg = p.trains[0].clone();
    cfg.epochs = 2;
    let root = data.parent().unwrap().to_path_buf();
    let straight = root.join("straight");
    trainer::train(model, &cfg, &sources, &quiet(&straight)).unwrap();
    let recs = records(&straight);
    // Steps 0-6 train the network of 3 unrolled iterations: exactly 3
    // forward iterations, no adjoint solve; then the implicit DEQ.
    let train = of_split(&recs, "train");
    assert_eq!(train.len(), 12);
    for r in &train {
        let step = r["step"].as_u64().unwrap();
        let pretraining = step < 7;
        assert_eq!(
            r["phase"],
            if pretraining { "pretrain" } else { "deq" },
            "{r}"
        );
        let (fwd, bwd) = (
            r["fwd_iters"].as_f64().unwrap(),
            r["bwd_iters"].as_f64().unwrap(),
        );
        if pretraining {
            assert_eq!((fwd, bwd), (3.0, 0.0), "{r}");
        } else {
            assert!(fwd != 3.0 && bwd > 0.0, "{r}");
        }
    }

    // Interrupted in pretraining (step 5), at the switch (step 7) and
    // mid-epoch after it (step 9), with a checkpoint after every step.
    let split = root.join("split");
    for stop in [5, 7, 9] {
        let mut opts = quiet(&split);
        opts.max_steps = Some(stop);
        opts.resume = stop != 5;
        opts.checkpoint_every = Some(std::time::Duration::ZERO);
        trainer::train(model, &cfg, &sources, &opts).unwrap();
    }
    let mut last = quiet(&split);
    last.resume = true;
    let s = trainer::train(model, &cfg, &sources, &last).unwrap();
    assert!(s.program_changes.is_empty(), "{:?}", s.program_changes);
    // The same train and validation records; the interrupted run also
    // tested where each part stopped, and its last test is the same.
    let resumed = records(&split);
    for split_name in ["train", "valid"] {
        let a: Vec<Value> = of_split(&recs, split_name)
            .into_iter()
            .map(timeless)
            .collect();
        let b: Vec<Value> = of_split(&resumed, split_name)
            .into_iter()
            .map(timeless)
            .collect();
        assert_eq!(a, b, "{split_name} records differ");
    }
    assert_eq!(steps(&of_split(&resumed, "test")), [5, 7, 9, 12]);
    assert_eq!(
        timeless(of_split(&recs, "test")[0]),
        timeless(of_split(&resumed, "test")[3])
    );
    for file in ["model.safetensors", trainer::BEST_FILE] {
        let (a, _) = checkpoint::read_tensors(&straight.join(file), &Device::Cpu).unwrap();
        let (b, _) = checkpoint::read_tensors(&split.join(file), &Device::Cpu).unwrap();
        for ((ka, ta), (_, tb)) in a.iter().zip(&b) {
            let d = (ta - tb).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() <= 1e-6, "{file}: {ka}");
        }
    }
}

#[test]
fn eval_solver_runs_at_evaluation_only() {
    let data = mnist_subset("eval_solver");
    let src = source(
        &data,
        "    valid = 0.25;\n    eval_solver = fixed_point(max_iter = 2, tol = 1e-12);\n",
    );
    let (p, sources) = program(&src);
    let model = p.model("DeqMlp").unwrap();
    let cfg = p.trains[0].clone();
    let out = data.parent().unwrap().join("run");
    let mut opts = quiet(&out);
    opts.max_steps = Some(6);
    trainer::train(model, &cfg, &sources, &opts).unwrap();
    let recs = records(&out);
    // Two fixed-point iterations at evaluation; Anderson's own budget
    // (tol 1e-4) in training.
    for split in ["valid", "test"] {
        let r = of_split(&recs, split);
        assert_eq!(r.len(), 1, "{split}");
        assert_eq!(r[0]["fwd_iters"].as_f64(), Some(2.0), "{}", r[0]);
    }
    for r in of_split(&recs, "train") {
        assert!(r["fwd_iters"].as_f64().unwrap() > 2.0, "{r}");
    }
    // `deqc eval` compiles the same evaluation graph.
    let compiled = trainer::compile(model, &cfg).unwrap();
    let solvers: Vec<String> = compiled
        .eval
        .graph
        .node_ids()
        .into_iter()
        .filter_map(|n| match compiled.eval.graph.op(n) {
            deqc::ir::Op::Equilibrium(eq) => Some(eq.solver.kind.name().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(solvers, ["fixed_point"]);
}

#[test]
fn resuming_with_a_changed_program_warns_and_names_the_change() {
    let data = mnist_subset("changed");
    let src = source(&data, "");
    let (p, sources) = program(&src);
    let model = p.model("DeqMlp").unwrap();
    let cfg = p.trains[0].clone();
    let out = data.parent().unwrap().join("run");
    let mut opts = quiet(&out);
    opts.max_steps = Some(1);
    trainer::train(model, &cfg, &sources, &opts).unwrap();
    // Same program: nothing to say.
    opts.resume = true;
    opts.max_steps = Some(2);
    let s = trainer::train(model, &cfg, &sources, &opts).unwrap();
    assert!(s.program_changes.is_empty(), "{:?}", s.program_changes);
    // Another tolerance in the model and a clip in the train block.
    let changed = src
        .replace("tol = 1e-4,", "tol = 1e-3,")
        .replace("epochs = 4;", "epochs = 4;\n    clip_grad = 1.0;");
    let (p2, sources2) = program(&changed);
    opts.max_steps = Some(3);
    let s = trainer::train(p2.model("DeqMlp").unwrap(), &p2.trains[0], &sources2, &opts).unwrap();
    assert_eq!(s.steps, 3);
    let changes = s.program_changes.join("\n");
    assert!(
        changes.contains("`clip_grad = off` → `clip_grad = 1.0`"),
        "{changes}"
    );
    assert!(
        changes.contains("workflow.deq: line 11 was") && changes.contains("tol = 1e-3"),
        "{changes}"
    );
}

#[test]
fn text_data_validates_on_its_valid_file() {
    let src = std::fs::read_to_string("examples/char_lm.deq")
        .unwrap()
        .replace(
            "clip_grad = 1.0;",
            "clip_grad = 1.0;\n    eval_every = 1;\n    eval_samples = 4;",
        );
    let (p, sources) = program(&src);
    let mut cfg = p.trains[0].clone();
    cfg.batch_size = 4;
    let out = temp_dir("text");
    let mut opts = quiet(&out);
    opts.max_steps = Some(2);
    opts.max_eval_batches = Some(1);
    let s = trainer::train(p.model("CharDeq").unwrap(), &cfg, &sources, &opts).unwrap();
    assert!(s.test_perplexity.is_some());
    let recs = records(&out);
    let valid = of_split(&recs, "valid");
    assert_eq!(steps(&valid), [1, 2]);
    assert!(valid.iter().all(|r| r["perplexity"].as_f64().is_some()));
    assert_eq!(steps(&of_split(&recs, "test")), [2]);
    // The validation loss is not the test loss: another file.
    let test = of_split(&recs, "test")[0]["loss"].as_f64().unwrap();
    assert_ne!(valid[1]["loss"].as_f64().unwrap(), test);
    assert!(out.join(trainer::BEST_FILE).exists());
}
