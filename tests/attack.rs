//! `deqc attack`: the compiler-derived input gradient against finite
//! differences in f64 (mnist_mlp and a two-state DEQ), `--eps 0` giving
//! exactly the clean accuracy, robust accuracy falling with eps and PGD at
//! least as strong as FGSM on a briefly trained model, and the command
//! line's error paths.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use deqc::commands::attack::{attack, Options};
use deqc::exec::Executor;
use deqc::ir::{lower::lower_model, Graph, Op};
use deqc::sema::spec::{Backward, Loss, Stop};
use deqc::train::attack::{
    attack_graph, with_gradient_mode, AttackGraph, AttackSpec, GradientMode, Method, Norm,
};
use deqc::train::trainer::{self, RunOptions};
use rand::{Rng, SeedableRng};

mod common;
use common::cli::deqc;

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("attack-{name}"))
}

fn program(src: &str) -> deqc::sema::hir::Program {
    common::checked("attack_test.deq", src).0
}

/// Every solve converged far below the differences' own error.
fn tighten(g: &mut Graph) {
    for id in g.node_ids() {
        if let Op::Equilibrium(eq) = &mut g.node_mut(id).op {
            tighten(&mut eq.body);
            eq.solver.tol = 1e-13;
            eq.solver.stop = Stop::Abs;
            eq.solver.max_iter = eq.solver.max_iter.max(500);
            if let Backward::Implicit { solver } = &mut eq.backward {
                solver.tol = 1e-13;
                solver.stop = Stop::Abs;
                solver.max_iter = solver.max_iter.max(500);
            }
        }
    }
}

/// The derived input gradient of the loss at the model's initial
/// parameters against central differences, on `checks` input elements.
fn input_gradient_matches_differences(src: &str, checks: usize) {
    let p = program(src);
    let mut model = lower_model(&p.models[0]).unwrap();
    tighten(&mut model);
    let graph = attack_graph(
        &with_gradient_mode(&model, GradientMode::Implicit),
        &Loss::CROSS_ENTROPY,
    )
    .unwrap();
    let params: Vec<Tensor> = trainer::init_params(&model, 0, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.to_dtype(DType::F64).unwrap())
        .collect();
    let features = model.inputs[0].ty.shape[1].as_const().unwrap() as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let x: Vec<f64> = (0..2 * features).map(|_| rng.random::<f64>()).collect();
    let target = Tensor::new(&[3i64, 1], &Device::Cpu).unwrap();
    let exec = Executor::cpu_f64();
    let run = |x: &[f64]| {
        let xt = Tensor::from_vec(x.to_vec(), (2, features), &Device::Cpu).unwrap();
        exec.run(&graph.graph, &params, &[xt, target.clone()])
            .unwrap()
            .outputs
    };
    let out = run(&x);
    let derived: Vec<f64> = out[graph.grad_output(0)]
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let scale = derived.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 1e-6, "the input gradient is zero: {derived:?}");
    let h = 1e-5;
    let loss = |x: &[f64]| {
        run(x)[AttackGraph::LOSS]
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let mut worst = 0.0f64;
    for k in 0..checks {
        let j = rng.random_range(0..x.len());
        let (mut up, mut down) = (x.clone(), x.clone());
        up[j] += h;
        down[j] -= h;
        let numeric = (loss(&up) - loss(&down)) / (2.0 * h);
        let err = (numeric - derived[j]).abs();
        // Relative to the element, or to the gradient's scale for
        // elements near zero.
        let rel = err / numeric.abs().max(derived[j].abs()).max(1e-4 * scale);
        worst = worst.max(rel);
        assert!(
            rel <= 1e-6,
            "element {j} (check {k}): derived {} numeric {numeric} (rel {rel:e})",
            derived[j]
        );
    }
    eprintln!("worst relative error {worst:e} (gradient scale {scale:e})");
}

#[test]
fn input_gradient_of_mnist_mlp_matches_finite_differences() {
    let src = std::fs::read_to_string("examples/mnist_mlp.deq").unwrap();
    input_gradient_matches_differences(&src, 12);
}

#[test]
fn input_gradient_of_a_two_state_deq_matches_finite_differences() {
    let src = "use nn;
model TwoState(x: [B, 12]) -> [B, 4] {
    let inject = nn::Linear[12, 6];
    let a = nn::Linear[6, 6];
    let b = nn::Linear[6, 5];
    let c = nn::Linear[5, 6];
    let head = nn::Linear[5, 4];
    let u = inject(x);
    equilibrium (z: [B, 6], y: [B, 5]) = (tanh(a(z) + c(y) + u), tanh(b(z)))
        with solver = anderson(m = 5, tol = 1e-4, max_iter = 40),
             backward = implicit(tol = 1e-6, max_iter = 40);
    head(y)
}
";
    input_gradient_matches_differences(src, 24);
}

/// A small DEQ trained briefly on a 512-sample MNIST subset; returns its
/// source and the run folder.
fn trained(name: &str) -> (String, PathBuf) {
    let dir = temp_dir(name);
    let mnist = dir.join("mnist");
    common::mnist::write_subset(&mnist, 512, 64);
    let src = std::fs::read_to_string("examples/mnist_mlp.deq")
        .unwrap()
        .replace(
            "\"data/mnist-10k\"",
            &format!("{:?}", mnist.display().to_string()),
        )
        .replace("[784, 256]", "[784, 64]")
        .replace("[256, 256]", "[64, 64]")
        .replace("[256, 10]", "[64, 10]")
        .replace("[B, 256]", "[B, 64]")
        .replace("batch_size = 128", "batch_size = 64");
    let p = program(&src);
    let mut cfg = p.trains[0].clone();
    cfg.epochs = 3;
    let out = dir.join("run");
    let opts = RunOptions {
        out: Some(out.clone()),
        quiet: true,
        max_eval_batches: Some(1),
        ..RunOptions::default()
    };
    let sources = deqc::compile_source("attack_test.deq", &src).sources;
    trainer::train(p.model("DeqMlp").unwrap(), &cfg, &sources, &opts).expect("trains");
    std::fs::write(dir.join("model.deq"), &src).unwrap();
    (src, out)
}

fn options(weights: &Path, out: Option<PathBuf>) -> Options {
    Options {
        model: None,
        weights: weights.to_path_buf(),
        method: Method::Pgd,
        norm: Norm::Linf,
        eps: 0.0,
        steps: None,
        alpha: None,
        restarts: None,
        gradient: GradientMode::Implicit,
        out,
        batch_size: Some(32),
        limit: Some(64),
        seed: 0,
        device: "cpu".into(),
        threads: None,
        quiet: true,
    }
}

fn spec(method: Method, eps: f64, steps: usize) -> AttackSpec {
    AttackSpec {
        method,
        norm: Norm::Linf,
        eps,
        steps,
        alpha: eps / 4.0,
        restarts: 1,
        seed: 0,
    }
}

#[test]
fn robust_accuracy_falls_with_eps_and_pgd_is_at_least_as_strong_as_fgsm() {
    let (src, run) = trained("trained");
    let p = program(&src);
    let (model, cfg) = (&p.models[0], &p.trains[0]);
    let weights = run.join("model.safetensors");
    let out = run.parent().unwrap().join("attack-out");
    let o = options(&weights, Some(out.clone()));
    let cpu = Device::Cpu;

    // eps = 0: exactly the clean accuracy, for both methods.
    let zero = attack(model, cfg, &o, &spec(Method::Pgd, 0.0, 3), &cpu).unwrap();
    assert_eq!(zero.robust_accuracy, zero.clean_accuracy);
    assert!(zero.clean_accuracy > 0.5, "{}", zero.clean_accuracy);
    let zero_fgsm = attack(model, cfg, &o, &spec(Method::Fgsm, 0.0, 1), &cpu).unwrap();
    assert_eq!(zero_fgsm.robust_accuracy, zero_fgsm.clean_accuracy);
    // The example standardizes its inputs (`normalize = true`); ranges, eps
    // and the written examples are still in pixel units (up to the f32
    // rounding of the standardized values).
    assert!(zero.standardization.is_some());
    let (lo, hi) = zero.ranges[0].1;
    assert!(
        lo.abs() < 1e-6 && (hi - 1.0).abs() < 1e-6,
        "MNIST pixels lie in 0..1: {lo} {hi}"
    );

    let mut last = zero.clean_accuracy;
    for eps in [0.05, 0.1, 0.2] {
        let fgsm = attack(model, cfg, &o, &spec(Method::Fgsm, eps, 1), &cpu).unwrap();
        let pgd = attack(model, cfg, &o, &spec(Method::Pgd, eps, 5), &cpu).unwrap();
        eprintln!(
            "eps {eps}: clean {} fgsm {} pgd {}",
            fgsm.clean_accuracy, fgsm.robust_accuracy, pgd.robust_accuracy
        );
        assert!(pgd.robust_accuracy <= fgsm.robust_accuracy, "eps {eps}");
        assert!(
            pgd.robust_accuracy < last,
            "eps {eps}: {} >= {last}",
            pgd.robust_accuracy
        );
        last = pgd.robust_accuracy;
    }
    // The last attack's files: adversarial inputs within eps and in range.
    let (adv, meta) =
        deqc::train::checkpoint::read_tensors(&out.join("adversarial.safetensors"), &cpu).unwrap();
    assert_eq!(meta.get("eps").map(String::as_str), Some("0.2"));
    let x: Vec<f32> = adv
        .iter()
        .find(|(k, _)| k == "x")
        .unwrap()
        .1
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(x.len(), 64 * 784);
    assert!(x.iter().all(|v| (-1e-6..=1.0 + 1e-6).contains(v)));
    let (results, _) =
        deqc::train::checkpoint::read_tensors(&out.join("results.safetensors"), &cpu).unwrap();
    let perturbation: Vec<f32> = results
        .iter()
        .find(|(k, _)| k == "perturbation")
        .unwrap()
        .1
        .to_vec1()
        .unwrap();
    assert_eq!(perturbation.len(), 64);
    assert!(perturbation.iter().all(|d| *d <= 0.2 + 1e-6));
    // eps is in pixel units, not standardized ones: the L∞ attack reaches it.
    assert!(
        perturbation.iter().any(|d| *d > 0.2 - 1e-4),
        "{perturbation:?}"
    );
    for key in [
        "robust_correct",
        "adv_iterations",
        "adv_residual",
        "adv_failed",
    ] {
        assert!(results.iter().any(|(k, _)| k == key), "{key} missing");
    }

    // Through the solver's iterations and through phantom steps too, and
    // the L2 ball.
    for gradient in [GradientMode::Unrolled, GradientMode::Phantom] {
        let mut o = options(&weights, None);
        o.gradient = gradient;
        o.limit = Some(32);
        let s = attack(model, cfg, &o, &spec(Method::Pgd, 0.1, 3), &cpu).unwrap();
        assert!(s.robust_accuracy < s.clean_accuracy, "{gradient:?}");
    }
    let mut l2 = spec(Method::Pgd, 1.5, 3);
    l2.norm = Norm::L2;
    l2.alpha = 0.5;
    let l2_out = run.parent().unwrap().join("attack-l2");
    let s = attack(
        model,
        cfg,
        &options(&weights, Some(l2_out.clone())),
        &l2,
        &cpu,
    )
    .unwrap();
    assert!(s.robust_accuracy < s.clean_accuracy);
    let (results, _) =
        deqc::train::checkpoint::read_tensors(&l2_out.join("results.safetensors"), &cpu).unwrap();
    let sizes: Vec<f32> = results
        .iter()
        .find(|(k, _)| k == "perturbation")
        .unwrap()
        .1
        .to_vec1()
        .unwrap();
    assert!(sizes.iter().all(|d| *d <= 1.5 + 1e-5), "{sizes:?}");
    assert!(
        sizes.iter().any(|d| *d > 1.0),
        "the L2 attack barely moved: {sizes:?}"
    );
}

#[test]
fn command_line_errors_are_clear() {
    let ex = "examples/mnist_mlp.deq";
    let dir = temp_dir("cli");
    let missing = dir.join("nothing.safetensors");
    let missing = missing.to_str().unwrap();

    let (code, _, err) = deqc(&["attack", ex, "--weights", missing, "--method", "cw"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("invalid value 'cw'") && err.contains("fgsm"),
        "{err}"
    );

    let (code, _, err) = deqc(&["attack", ex, "--weights", missing, "--eps", "-0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected a number >= 0"), "{err}");

    let (code, _, err) = deqc(&["attack", ex]);
    assert_eq!(code, 2);
    assert!(err.contains("--weights"), "{err}");

    let (code, _, err) = deqc(&["attack", ex, "--weights", missing, "--norm", "l1"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid value 'l1'"), "{err}");

    let (code, _, err) = deqc(&[
        "attack",
        ex,
        "--weights",
        missing,
        "--method",
        "fgsm",
        "--steps",
        "3",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--steps applies to --method pgd"), "{err}");

    let (code, _, err) = deqc(&["attack", ex, "--weights", missing, "--steps", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected an integer >= 1"), "{err}");

    let (code, _, err) = deqc(&["attack", ex, "--weights", missing]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing.safetensors"), "{err}");

    let no_train = dir.join("no_train.deq");
    std::fs::write(
        &no_train,
        "model M(x: [B, 3]) -> [B, 2] {\n    param w: [3, 2] = zeros;\n    x @ w\n}\n",
    )
    .unwrap();
    let (code, _, err) = deqc(&["attack", no_train.to_str().unwrap(), "--weights", missing]);
    assert_eq!(code, 2);
    assert!(err.contains("needs the `train` block"), "{err}");

    let (code, _, err) = deqc(&["attack", "no/such/file.deq", "--weights", missing]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
}
