//! Transfer: `freeze = [...]` (frozen parameters stay bit-identical, their
//! gradients are pruned from the step graph) and `--init-from` (loads by
//! path with renames; a mis-shaped or unmatched entry is a clear error),
//! and `classes`/`per_class` subsets of MNIST and CSV data.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use deqc::train::checkpoint;
use deqc::train::compiled::{compile, init_params};
use deqc::train::trainer::{self, RunOptions};
use deqc::train::transfer::{load_into, InitFrom};

mod common;
use common::cli::deqc;

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("transfer-{name}"))
}

/// A small DEQ on the bundled MNIST, with `extra` added to its train block.
fn source(extra: &str) -> String {
    format!(
        r#"use nn;
model Small(x: [B, 784]) -> [B, 10] {{
    let inject = nn::Linear[784, 32];
    let cell   = nn::Linear[32, 32];
    let head   = nn::Linear[32, 10];
    let u = inject(x);
    equilibrium z: [B, 32] = tanh(cell(z) + u)
        with solver = anderson(m = 5, tol = 1e-4, max_iter = 30);
    head(z)
}}
train Small {{
    data = mnist("data/mnist-10k", flatten = true);
    loss = cross_entropy;
    optimizer = adamw(lr = 1e-2, weight_decay = 0.1);
    batch_size = 32;
    seed = 3;
    {extra}
}}
"#
    )
}

fn program(src: &str) -> (deqc::sema::hir::Program, deqc::source::SourceMap) {
    common::checked("transfer_test.deq", src)
}

fn quiet(out: &Path, steps: usize) -> RunOptions {
    RunOptions {
        max_eval_batches: Some(1),
        max_steps: Some(steps),
        ..common::quiet_run(out)
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn saved(out: &Path) -> Vec<(String, Tensor)> {
    checkpoint::read_tensors(&out.join("model.safetensors"), &Device::Cpu)
        .unwrap()
        .0
}

#[test]
fn frozen_parameters_stay_bit_identical_and_the_rest_train() {
    let (p, sources) = program(&source("freeze = [inject, \"cell.w\"];"));
    let model = p.model("Small").unwrap();
    let cfg = p.trains[0].clone();
    let out = temp_dir("freeze");
    trainer::train(model, &cfg, &sources, &quiet(&out, 5)).unwrap();
    let compiled = compile(model, &cfg).unwrap();
    let init = init_params(&compiled.graph, cfg.seed, &Device::Cpu).unwrap();
    let after = saved(&out);
    for (path, start) in &init {
        let (_, end) = after.iter().find(|(k, _)| k == path).unwrap();
        let frozen = path.starts_with("inject.") || path == "cell.w";
        let same = values(start) == values(end);
        // AdamW's decay alone would move every parameter it touches.
        assert_eq!(same, frozen, "{path}: frozen {frozen}, unchanged {same}");
    }
    // Exactly the unfrozen parameters have optimizer state.
    let state = checkpoint::load_train_state(&out, None, &Device::Cpu).unwrap();
    let mut with_state: Vec<String> = state
        .optimizer
        .tensors
        .iter()
        .filter_map(|(k, _)| k.split_once('/').map(|(_, p)| p.to_string()))
        .collect();
    with_state.sort();
    with_state.dedup();
    assert_eq!(with_state, ["cell.b", "head.b", "head.w"]);
}

#[test]
fn frozen_gradients_are_pruned_from_the_step_graph() {
    let (p, _) = program(&source(""));
    let model = p.model("Small").unwrap();
    let open = compile(model, &p.trains[0]).unwrap();
    let (p, _) = program(&source("freeze = [inject];"));
    let frozen = compile(model, &p.trains[0]).unwrap();
    assert_eq!(frozen.frozen, [true, true, false, false, false, false]);
    let matmuls = |c: &deqc::train::compiled::Compiled| {
        let g = &c.step.graph;
        g.node_ids()
            .into_iter()
            .filter(|n| matches!(g.op(*n), deqc::ir::Op::MatMul))
            .count()
    };
    // dL/dW_inject = x^T @ du is the one product that freezing `inject`
    // removes (its slot holds a constant zero instead).
    assert_eq!(matmuls(&frozen) + 1, matmuls(&open));
}

#[test]
fn init_from_loads_by_path_with_renames_and_reports() {
    let (p, sources) = program(&source(""));
    let model = p.model("Small").unwrap();
    let cfg = p.trains[0].clone();
    let root = temp_dir("init");
    let first = root.join("first");
    trainer::train(model, &cfg, &sources, &quiet(&first, 2)).unwrap();
    let trained = saved(&first);
    // A checkpoint whose `inject` is called `enc`, with an extra tensor and
    // without `head`.
    let renamed: Vec<(String, Tensor)> = trained
        .iter()
        .filter(|(k, _)| !k.starts_with("head."))
        .map(|(k, t)| (k.replace("inject.", "enc."), t.clone()))
        .chain([(
            "extra.w".to_string(),
            Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
        )])
        .collect();
    let file = root.join("renamed.safetensors");
    checkpoint::save_tensors(&file, &renamed, &Default::default()).unwrap();
    let compiled = compile(model, &cfg).unwrap();
    let init = init_params(&compiled.graph, cfg.seed, &Device::Cpu).unwrap();
    let mut params = init.clone();
    let from = InitFrom {
        path: file.clone(),
        map: vec![("enc".into(), "inject".into())],
    };
    let report = load_into(&mut params, &from, &Device::Cpu).unwrap();
    let mut loaded: Vec<&str> = report.loaded.iter().map(|l| l.0.as_str()).collect();
    loaded.sort();
    assert_eq!(loaded, ["cell.b", "cell.w", "inject.b", "inject.w"]);
    assert_eq!(report.initialized, ["head.w", "head.b"]);
    assert_eq!(report.unused, ["extra.w"]);
    for ((path, got), (_, start)) in params.iter().zip(&init) {
        let want = trained.iter().find(|(k, _)| k == path).map(|(_, t)| t);
        match want {
            Some(t) if !path.starts_with("head.") => assert_eq!(values(got), values(t), "{path}"),
            _ => assert_eq!(values(got), values(start), "{path}"),
        }
    }
    // Without the rename `inject` stays at initialization.
    let mut params = init.clone();
    let report = load_into(
        &mut params,
        &InitFrom {
            path: file.clone(),
            map: vec![],
        },
        &Device::Cpu,
    )
    .unwrap();
    assert!(report.unused.contains(&"enc.w".to_string()), "{report}");
    // A rename that matches nothing is a typo, not a silent no-op.
    let err = load_into(
        &mut init.clone(),
        &InitFrom {
            path: file.clone(),
            map: vec![("encoder".into(), "inject".into())],
        },
        &Device::Cpu,
    )
    .expect_err("unmatched --init-map");
    assert!(
        err.to_string().contains("--init-map encoder=inject"),
        "{err}"
    );
    // Through a whole run from the checkpoint's folder, everything frozen:
    // the saved parameters are the checkpoint's, bit for bit.
    let (p, sources) = program(&source("freeze = [inject, cell, head];"));
    let (model, cfg) = (p.model("Small").unwrap(), p.trains[0].clone());
    let second = root.join("second");
    let mut opts = quiet(&second, 1);
    opts.init_from = Some(InitFrom {
        path: first.clone(),
        map: vec![],
    });
    trainer::train(model, &cfg, &sources, &opts).unwrap();
    for (k, t) in saved(&second) {
        let (_, want) = trained.iter().find(|(n, _)| *n == k).unwrap();
        assert_eq!(values(&t), values(want), "{k}");
    }
}

#[test]
fn init_from_a_mis_shaped_parameter_names_both_shapes() {
    let (p, sources) = program(&source(""));
    let model = p.model("Small").unwrap();
    let cfg = p.trains[0].clone();
    let root = temp_dir("misshaped");
    let file = root.join("bad.safetensors");
    let bad = vec![(
        "old.w".to_string(),
        Tensor::zeros((32, 16), candle_core::DType::F32, &Device::Cpu).unwrap(),
    )];
    checkpoint::save_tensors(&file, &bad, &Default::default()).unwrap();
    let mut opts = quiet(&root.join("run"), 1);
    opts.init_from = Some(InitFrom {
        path: file,
        map: vec![("old".into(), "cell".into())],
    });
    let err = trainer::train(model, &cfg, &sources, &opts).expect_err("shape mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains("`cell.w`")
            && msg.contains("[32, 32]")
            && msg.contains("[32, 16]")
            && msg.contains("`old.w`"),
        "{msg}"
    );
}

fn labels_of(ds: &deqc::train::data::Dataset) -> Vec<i64> {
    match &ds.field("y").unwrap().data {
        deqc::train::data::HostData::I64(v) => v.clone(),
        other => panic!("labels {other:?}"),
    }
}

fn count(labels: &[i64], c: i64) -> usize {
    labels.iter().filter(|l| **l == c).count()
}

#[test]
fn mnist_subsets_keep_the_classes_and_are_drawn_from_the_seed() {
    use deqc::train::data::load_seeded;
    let src = source("").replace(
        "flatten = true)",
        "flatten = true, classes = [5, 6, 7, 8, 9], per_class = 100)",
    );
    let (p, _) = program(&src);
    let spec = &p.trains[0].data;
    assert!(
        spec.to_string()
            .ends_with("classes = [5, 6, 7, 8, 9], per_class = 100)"),
        "{spec}"
    );
    let a = load_seeded(spec, 1).unwrap();
    let y = labels_of(&a.train);
    assert_eq!(y.len(), 500);
    for c in 5..10 {
        assert_eq!(count(&y, c), 100, "class {c}");
    }
    // Same seed, same samples; another seed, another draw.
    assert_eq!(load_seeded(spec, 1).unwrap().train, a.train);
    assert_ne!(load_seeded(spec, 2).unwrap().train, a.train);
    // The test split keeps every sample of the listed classes.
    let full = deqc::train::data::mnist("data/mnist-10k", true).unwrap();
    let full_test = labels_of(full.test.as_ref().unwrap());
    let test = labels_of(a.test.as_ref().unwrap());
    assert_eq!(test.len(), full_test.iter().filter(|l| **l >= 5).count());
    assert!(test.iter().all(|l| *l >= 5));
    // Asking for more than a class has is an error, not a smaller set.
    let greedy = src.replace("per_class = 100", "per_class = 100000");
    let (p, _) = program(&greedy);
    let err = load_seeded(&p.trains[0].data, 1).expect_err("too many per class");
    assert!(err.to_string().contains("per_class = 100000"), "{err}");
}

#[test]
fn csv_subsets_filter_classes_and_need_integer_labels() {
    use deqc::train::data::load_seeded;
    let dir = temp_dir("csv");
    let file = dir.join("t.csv");
    let mut rows = String::from("a,b,label\n");
    for i in 0..30 {
        rows.push_str(&format!("{i},{},{}\n", 2 * i, i % 3));
    }
    std::fs::write(&file, rows).unwrap();
    let spec = |opts: &str| {
        let (p, _) = program(&format!(
            r#"model M(x: [B, 2]) -> [B, 3] {{
    param w: [2, 3] = zeros;
    x @ w
}}
train M {{
    data = csv({:?}, target = "label"{opts});
    loss = cross_entropy;
}}
"#,
            file.display().to_string()
        ));
        p.trains[0].data.clone()
    };
    let s = load_seeded(&spec(", classes = [0, 2], per_class = 4"), 7).unwrap();
    let y = labels_of(&s.train);
    assert_eq!((count(&y, 0), count(&y, 1), count(&y, 2)), (4, 0, 4));
    // Rows keep their features: column `a` is the row number, label = a % 3.
    let deqc::train::data::HostData::F32(x) = &s.train.field("x").unwrap().data else {
        panic!("features")
    };
    for (row, label) in x.chunks(2).zip(&y) {
        assert_eq!(row[0] as i64 % 3, *label);
        assert_eq!(row[1], 2.0 * row[0]);
    }
    let only = load_seeded(&spec(", classes = [1]"), 7).unwrap();
    assert_eq!(labels_of(&only.train), vec![1; 10]);
    // A regression target has no classes.
    std::fs::write(&file, "a,label\n1,0.5\n2,1.5\n").unwrap();
    let err = load_seeded(&spec(", classes = [1]"), 7).expect_err("float target");
    assert!(err.to_string().contains("integer class labels"), "{err}");
}

#[test]
fn the_cli_reports_what_init_from_loaded_and_rejects_bad_flags() {
    let root = temp_dir("cli");
    let (p, sources) = program(&source(""));
    let first = root.join("first");
    trainer::train(
        p.model("Small").unwrap(),
        &p.trains[0],
        &sources,
        &quiet(&first, 1),
    )
    .unwrap();
    // `head` renamed away: it stays at initialization and the checkpoint's
    // `out.*` tensors are unused.
    let file = root.join("small.deq");
    std::fs::write(&file, source("").replace("head", "out")).unwrap();
    let (file, first_s) = (file.to_str().unwrap(), first.to_str().unwrap());
    let run_out = root.join("second");
    let (code, _, err) = deqc(&[
        "run",
        file,
        "--init-from",
        first_s,
        "--init-map",
        "cell=cell",
        "--max-steps",
        "1",
        "--out",
        run_out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("loaded 4: cell.b, cell.w, inject.b, inject.w"),
        "{err}"
    );
    assert!(
        err.contains("left at initialization 2: out.w, out.b"),
        "{err}"
    );
    assert!(
        err.contains("unused in the checkpoint 2: head.b, head.w"),
        "{err}"
    );
    // Flag errors are usage errors (exit 2) that say what to write.
    let (code, _, err) = deqc(&["run", file, "--init-map", "a=b"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--init-from"), "{err}");
    let (code, _, err) = deqc(&["run", file, "--init-from", first_s, "--init-map", "ab"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("OLD=NEW"), "{err}");
    let (code, _, err) = deqc(&[
        "run",
        file,
        "--init-from",
        first_s,
        "--resume",
        "--out",
        first_s,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("give one of them"), "{err}");
    let missing = root.join("nothing-here");
    let third = root.join("third");
    let (code, _, err) = deqc(&[
        "run",
        file,
        "--init-from",
        missing.to_str().unwrap(),
        "--out",
        third.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("nothing-here"), "{err}");
}

#[test]
fn the_transfer_example_fine_tunes_with_the_cell_frozen() {
    let root = temp_dir("example");
    let read = |name: &str| {
        program(&std::fs::read_to_string(format!("examples/transfer/{name}.deq")).unwrap())
    };
    let (pre, pre_sources) = read("pretrain");
    let pretrained = root.join("pretrain");
    let (model, cfg) = (pre.model("DeqMlp").unwrap(), &pre.trains[0]);
    trainer::train(model, cfg, &pre_sources, &quiet(&pretrained, 2)).unwrap();
    let (fine, fine_sources) = read("finetune");
    let tuned = root.join("finetune");
    let mut opts = quiet(&tuned, 2);
    opts.init_from = Some(InitFrom {
        path: pretrained.clone(),
        map: vec![],
    });
    let (model, cfg) = (fine.model("DeqMlp").unwrap(), &fine.trains[0]);
    assert_eq!(
        deqc::train::data::load_seeded(&cfg.data, cfg.seed)
            .unwrap()
            .train
            .len(),
        500
    );
    trainer::train(model, cfg, &fine_sources, &opts).unwrap();
    let (before, after) = (saved(&pretrained), saved(&tuned));
    for ((k, a), (k2, b)) in before.iter().zip(&after) {
        assert_eq!(k, k2);
        assert_eq!(values(a) == values(b), !k.starts_with("head."), "{k}");
    }
    // The baseline trains from scratch on the same 500 samples.
    let (scratch, _) = read("scratch");
    assert_eq!(scratch.trains[0].data, cfg.data);
    assert!(scratch.trains[0].freeze.is_empty());
}
