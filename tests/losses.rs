//! Losses: the built-ins against closed forms computed here in plain f64,
//! every loss (built-in and `fn`) gradient-checked against central finite
//! differences in f64, a custom loss equal to the built-in it re-implements
//! (value and gradients), one fed every output of a two-output model, and
//! training with a custom loss following the built-in step by step.

mod common;

use candle_core::{DType, Device, Tensor};
use deqc::autodiff::check::check_graph;
use deqc::exec::Executor;
use deqc::ir::lower::lower_model;
use deqc::ir::Graph;
use deqc::sema::spec::Loss;
use deqc::train::program::{eval_graph, step_graph};

fn program(src: &str) -> deqc::sema::hir::Program {
    common::checked("losses.deq", src).0
}

/// The loss alone, as the only output.
fn loss_graph(model: &Graph, loss: &Loss) -> Graph {
    let mut g = eval_graph(model, loss).expect("loss graph").graph;
    let value = g.outputs()[0];
    g.set_outputs(vec![value]);
    g
}

/// Gradient-check the loss of `model` (parameters and float inputs,
/// the target included when it is float) at random values.
fn gradcheck_loss(model: &Graph, loss: &Loss) {
    let g = loss_graph(model, loss);
    let (params, inputs) = common::random_feeds(&g, &[("B", 5)], 3);
    let report = check_graph(
        &g,
        &params,
        &inputs,
        &Executor::cpu_f64(),
        1e-5,
        7,
        Some(24),
    )
    .expect("gradcheck runs");
    assert!(!report.is_empty());
    for r in &report {
        assert!(
            r.max_rel_error <= 1e-6,
            "{loss}: {}: error {:e}\n derived {:?}\n numeric {:?}",
            r.name,
            r.max_rel_error,
            r.derived,
            r.numeric
        );
    }
}

const LINEAR: &str =
    "model M(x: [B, 6]) -> [B, 4] {\n    param w: [6, 4] = normal;\n    x @ w\n}\n";
const LOG_PROBS: &str =
    "model M(x: [B, 6]) -> [B, 4] {\n    param w: [6, 4] = normal;\n    log_softmax(x @ w)\n}\n";
const IDENTITY: &str = "model Id(x: [B, C]) -> [B, C] {\n    x\n}\n";

fn lowered(src: &str) -> Graph {
    lower_model(&program(src).models[0]).expect("lowers")
}

#[test]
fn builtin_losses_pass_gradcheck() {
    let linear = lowered(LINEAR);
    for loss in [
        Loss::CROSS_ENTROPY,
        Loss::CrossEntropy {
            label_smoothing: 0.1,
        },
        Loss::BceWithLogits,
        Loss::Mse,
    ] {
        gradcheck_loss(&linear, &loss);
    }
    gradcheck_loss(&lowered(LOG_PROBS), &Loss::Nll);
}

/// The loss of the identity model at `scores` (rows) and `target`.
fn value(loss: &Loss, scores: &[Vec<f64>], target: Tensor) -> f64 {
    let g = loss_graph(&lowered(IDENTITY), loss);
    let (rows, cols) = (scores.len(), scores[0].len());
    let flat: Vec<f64> = scores.concat();
    let x = Tensor::from_vec(flat, (rows, cols), &Device::Cpu).unwrap();
    let out = Executor::cpu_f64().run(&g, &[], &[x, target]).unwrap();
    out.outputs[0]
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn ids(v: &[i64]) -> Tensor {
    Tensor::from_vec(v.to_vec(), v.len(), &Device::Cpu).unwrap()
}

const SCORES: [[f64; 3]; 3] = [[0.3, -1.2, 2.0], [1.5, 0.1, -0.4], [-2.0, 0.7, 0.6]];
const LABELS: [i64; 3] = [2, 0, 1];

fn scores() -> Vec<Vec<f64>> {
    SCORES.iter().map(|r| r.to_vec()).collect()
}

/// `-sum_c q_c log p_c` per row, averaged: the definition, written out.
fn smoothed_ce_reference(eps: f64) -> f64 {
    let mut total = 0.0;
    for (row, &t) in SCORES.iter().zip(&LABELS) {
        let z: f64 = row.iter().map(|x| x.exp()).sum();
        for (c, x) in row.iter().enumerate() {
            let q = if c as i64 == t { 1.0 - eps } else { 0.0 } + eps / 3.0;
            total -= q * (x.exp() / z).ln();
        }
    }
    total / 3.0
}

#[test]
fn cross_entropy_with_label_smoothing_matches_its_definition() {
    for eps in [0.0, 0.1, 0.35] {
        let loss = Loss::CrossEntropy {
            label_smoothing: eps,
        };
        let got = value(&loss, &scores(), ids(&LABELS));
        let want = smoothed_ce_reference(eps);
        assert!((got - want).abs() < 1e-12, "eps {eps}: {got} vs {want}");
    }
    // Closed form: scores (0, ln 3) are probabilities (1/4, 3/4); with the
    // target 1 the smoothed target is (e/2, 1 - e/2).
    let eps = 0.2;
    let got = value(
        &Loss::CrossEntropy {
            label_smoothing: eps,
        },
        &[vec![0.0, 3f64.ln()]],
        ids(&[1]),
    );
    let want = -(eps / 2.0 * 0.25f64.ln() + (1.0 - eps / 2.0) * 0.75f64.ln());
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // Uniform scores give ln C whatever the smoothing.
    let got = value(
        &Loss::CrossEntropy {
            label_smoothing: 0.3,
        },
        &[vec![0.5; 5], vec![-1.0; 5]],
        ids(&[4, 0]),
    );
    assert!((got - 5f64.ln()).abs() < 1e-12, "{got}");
}

#[test]
fn nll_picks_the_log_probability_of_the_target() {
    // Log-probabilities of three classes, as a model's log_softmax gives.
    let logp: Vec<Vec<f64>> = vec![
        vec![0.2f64.ln(), 0.5f64.ln(), 0.3f64.ln()],
        vec![0.6f64.ln(), 0.1f64.ln(), 0.3f64.ln()],
    ];
    let got = value(&Loss::Nll, &logp, ids(&[1, 2]));
    let want = -(0.5f64.ln() + 0.3f64.ln()) / 2.0;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
}

#[test]
fn bce_with_logits_matches_the_sigmoid_form() {
    let y = [[0.0, 1.0, 1.0], [1.0, 0.0, 0.25], [0.5, 1.0, 0.0]];
    let target = Tensor::from_vec(y.concat(), (3, 3), &Device::Cpu).unwrap();
    let got = value(&Loss::BceWithLogits, &scores(), target);
    // -(y ln s(x) + (1 - y) ln(1 - s(x))), averaged over every element.
    let mut want = 0.0;
    for (row, yrow) in SCORES.iter().zip(&y) {
        for (x, y) in row.iter().zip(yrow) {
            let s = 1.0 / (1.0 + (-x).exp());
            want -= y * s.ln() + (1.0 - y) * (1.0 - s).ln();
        }
    }
    want /= 9.0;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // Large logits stay finite (softplus in its stable form).
    let far = Tensor::from_vec(vec![1.0f64, 0.0], (1, 2), &Device::Cpu).unwrap();
    let got = value(&Loss::BceWithLogits, &[vec![800.0, -800.0]], far);
    assert!(got.abs() < 1e-12, "{got}");
}

/// A train block on MNIST (only checked here, never loaded) with the
/// given loss and extra items.
fn mnist_program(items: &str, model: &str, loss: &str) -> deqc::sema::hir::Program {
    program(&format!(
        "{items}\n{model}\ntrain M {{\n    data = mnist(\"data/mnist-10k\", flatten = true);\n    loss = {loss};\n}}\n"
    ))
}

const MNIST_LINEAR: &str =
    "model M(x: [B, 784]) -> [B, 10] {\n    param w: [784, 10] = normal(std = 0.05);\n    tanh(x @ w)\n}";
const MY_CE: &str = "fn my_ce(scores: [B, C], target: i64[B]) =\n    -mean(sum(log_softmax(scores) * embedding(target, eye(C)), axis = -1));";

#[test]
fn a_custom_loss_equals_the_builtin_it_rewrites_and_passes_gradcheck() {
    let custom = mnist_program(MY_CE, MNIST_LINEAR, "my_ce");
    let builtin = mnist_program(MY_CE, MNIST_LINEAR, "cross_entropy");
    let model = lower_model(&custom.models[0]).expect("lowers");
    let Loss::Custom(c) = &custom.trains[0].loss else {
        panic!("a custom loss: {:?}", custom.trains[0].loss)
    };
    assert_eq!(c.name, "my_ce");
    assert_eq!(c.target.dtype, deqc::types::DType::I64);
    assert_eq!(custom.trains[0].loss.to_string(), "my_ce");
    assert!(custom.trains[0].loss.takes_class_ids());
    // Same loss and gradients as the built-in at the same point.
    let a = step_graph(&model, &custom.trains[0].loss).expect("custom step");
    let b = step_graph(&model, &builtin.trains[0].loss).expect("builtin step");
    let (params, inputs) = common::random_feeds(&a.graph, &[("B", 4)], 5);
    let exec = Executor::cpu_f64();
    let ra = exec.run(&a.graph, &params, &inputs).unwrap().outputs;
    let rb = exec.run(&b.graph, &params, &inputs).unwrap().outputs;
    for (k, (x, y)) in ra.iter().zip(&rb).enumerate() {
        let (x, y) = (common::values(x), common::values(y));
        common::assert_close(&x, &y, 1e-12);
        assert!(k != 0 || x[0] > 0.0, "a positive loss");
    }
    gradcheck_loss(&model, &custom.trains[0].loss);
}

#[test]
fn a_custom_loss_receives_every_output_of_a_two_output_model() {
    // `aux` is a second output; the loss adds a penalty on it, so the
    // gradient of `v` comes only through the loss fn's second argument.
    let items = "fn with_penalty(scores: [B, C], aux: [B, 2], target: i64[B]) =\n    -mean(sum(log_softmax(scores) * embedding(target, eye(C)), axis = -1)) + 0.5 * mean(aux * aux);";
    let model = "model M(x: [B, 784]) -> ([B, 10], [B, 2]) {\n    param w: [784, 10] = normal(std = 0.05);\n    param v: [784, 2] = normal(std = 0.05);\n    (x @ w, tanh(x @ v))\n}";
    let p = mnist_program(items, model, "with_penalty");
    let graph = lower_model(&p.models[0]).expect("lowers");
    gradcheck_loss(&graph, &p.trains[0].loss);
}

#[test]
fn training_with_a_custom_loss_follows_the_builtin() {
    let dir = std::env::temp_dir().join(format!("deqc-losses-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rows = String::from("a,b,y\n");
    for i in 0..96 {
        let (a, b) = ((i % 12) as f64 / 6.0 - 1.0, (i / 12) as f64 / 4.0 - 1.0);
        rows.push_str(&format!("{a},{b},{}\n", i64::from(a + 0.5 * b > 0.0)));
    }
    let path = dir.join("train.csv");
    std::fs::write(&path, rows).unwrap();
    let run = |loss: &str| -> Vec<f64> {
        let src = format!(
            "use nn;\n{MY_CE}\nmodel Cls(x: [B, 2]) -> [B, 2] {{\n    let inject = nn::Linear[2, 8];\n    let cell = nn::Linear[8, 8];\n    let head = nn::Linear[8, 2];\n    let u = inject(x);\n    equilibrium z: [B, 8] = tanh(cell(z) + u);\n    head(z)\n}}\ntrain Cls {{\n    data = csv({:?}, target = \"y\");\n    loss = {loss};\n    optimizer = adam(lr = 1e-2);\n    epochs = 3;\n    batch_size = 32;\n}}\n",
            path.display().to_string()
        );
        let c = deqc::compile_source("cls.deq", &src);
        let p = c.program.clone().expect("checks");
        let out = dir.join(loss);
        let opts = deqc::train::trainer::RunOptions {
            out: Some(out.clone()),
            quiet: true,
            ..Default::default()
        };
        deqc::train::trainer::train(p.model("Cls").unwrap(), &p.trains[0], &c.sources, &opts)
            .expect("trains");
        common::train_losses(&out)
    };
    let builtin = run("cross_entropy");
    let custom = run("my_ce");
    assert_eq!(builtin.len(), 9);
    assert_eq!(builtin.len(), custom.len());
    for (a, b) in builtin.iter().zip(&custom) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{builtin:?}\n{custom:?}"
        );
    }
    assert!(custom[8] < custom[0], "the loss falls: {custom:?}");
}

#[test]
fn the_readme_focal_loss_checks_and_passes_gradcheck() {
    let focal = "fn focal(scores: [B, C], target: i64[B]) =\n    -mean(sum((1.0 - softmax(scores)) * (1.0 - softmax(scores)) * log_softmax(scores) * embedding(target, eye(C)), axis = -1));";
    let p = mnist_program(focal, MNIST_LINEAR, "focal");
    let graph = lower_model(&p.models[0]).expect("lowers");
    gradcheck_loss(&graph, &p.trains[0].loss);
}
