//! Adversarial training (`adversarial = pgd(...)` in a train block): the
//! attacked batch differs from the clean one by at most eps and stays in
//! the data's range, eps = 0 trains exactly as without the option, and the
//! metrics record the clean and the adversarial loss of every step.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use deqc::train::adversarial::Adversary;
use deqc::train::data;
use deqc::train::trainer::{self, RunOptions};

mod common;

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("adv-{name}"))
}

/// A small DEQ on a 128-sample MNIST subset, with `adversarial` (a whole
/// `key = value;` line, or "") in its train block.
fn source(data: &Path, adversarial: &str) -> String {
    source_with(data, adversarial, false)
}

/// [`source`], its inputs standardized (`normalize = true`) when `normalized`.
fn source_with(data: &Path, adversarial: &str, normalized: bool) -> String {
    let normalize = if normalized { ", normalize = true" } else { "" };
    format!(
        "use nn;
model Small(x: [B, 784]) -> [B, 10] {{
    let inject = nn::Linear[784, 16];
    let cell = nn::Linear[16, 16];
    let head = nn::Linear[16, 10];
    let u = inject(x);
    equilibrium z: [B, 16] = tanh(cell(z) + u)
        with solver = anderson(m = 5, tol = 1e-4, max_iter = 30),
        backward = implicit(tol = 1e-6, max_iter = 30);
    head(z)
}}
train Small {{
    data = mnist({:?}, flatten = true{normalize});
    loss = cross_entropy;
    optimizer = adam(lr = 1e-2);
    batch_size = 32;
    {adversarial}
}}
",
        data.display().to_string()
    )
}

fn program(src: &str) -> (deqc::sema::hir::Program, deqc::source::SourceMap) {
    common::checked("adversarial_test.deq", src)
}

fn subset(name: &str) -> PathBuf {
    let dir = temp_dir(name).join("mnist");
    common::mnist::write_subset(&dir, 128, 32);
    dir
}

/// Train `steps` steps; the train records of metrics.jsonl.
fn train(src: &str, out: &Path, steps: usize) -> Vec<serde_json::Value> {
    let (p, sources) = program(src);
    let opts = RunOptions {
        out: Some(out.to_path_buf()),
        quiet: true,
        max_steps: Some(steps),
        max_eval_batches: Some(1),
        ..RunOptions::default()
    };
    trainer::train(p.model("Small").unwrap(), &p.trains[0], &sources, &opts).expect("trains");
    common::records(out)
        .into_iter()
        .filter(|v| v["split"] == "train")
        .collect()
}

/// The seed-0 initial values of `graph`'s parameters.
fn initial_params(graph: &deqc::ir::Graph, device: &Device) -> Vec<Tensor> {
    trainer::init_params(graph, 0, device)
        .unwrap()
        .into_iter()
        .map(|p| p.1)
        .collect()
}

/// The first training batch of 32 in order: the images, then the labels.
fn first_batch(splits: &data::Splits, device: &Device) -> Vec<Tensor> {
    let batch = splits.train.batches(32, device).next().unwrap().unwrap();
    vec![
        batch.get("x").unwrap().clone(),
        batch.get("y").unwrap().clone(),
    ]
}

/// One batch of the 128-sample subset attacked by PGD (eps 0.1, alpha
/// 0.05 in pixel units) at the initial parameters, inputs standardized
/// when `normalized`: each pixel before and after, converted back to pixel
/// units, and the loss before and after.
fn attack_one_batch(name: &str, normalized: bool) -> (Vec<f64>, Vec<f64>, f64, f64) {
    let data = subset(name);
    let src = source_with(
        &data,
        "adversarial = pgd(eps = 0.1, steps = 3, alpha = 0.05);",
        normalized,
    );
    let (p, _) = program(&src);
    let cfg = &p.trains[0];
    let compiled = trainer::compile(p.model("Small").unwrap(), cfg).unwrap();
    let device = Device::Cpu;
    let params = initial_params(&compiled.graph, &device);
    let splits = data::load(&cfg.data).unwrap();
    assert_eq!(splits.standardization.is_some(), normalized);
    let inputs = first_batch(&splits, &device);
    let spec = cfg.adversarial.clone().expect("adversarial is set");
    let adversary = Adversary::new(
        &compiled.graph,
        &cfg.loss,
        &spec,
        &splits.train,
        splits.standardization,
        0,
        &device,
    )
    .unwrap();
    let (attacked, clean_loss) = adversary.perturb(&params, &inputs, 0).unwrap();
    // The labels are not attacked.
    let y0: Vec<i64> = inputs[1].to_vec1().unwrap();
    let y1: Vec<i64> = attacked[1].to_vec1().unwrap();
    assert_eq!(y0, y1);
    let to_pixels = |t: &Tensor| -> Vec<f64> {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        v.into_iter()
            .map(|x| {
                splits
                    .standardization
                    .map_or(f64::from(x), |st| st.invert(f64::from(x)))
            })
            .collect()
    };
    let clean_loss = clean_loss.expect("the clean loss is measured");
    let after = adversary.perturb(&params, &attacked, 1).unwrap().1.unwrap();
    (
        to_pixels(&inputs[0]),
        to_pixels(&attacked[0]),
        clean_loss,
        after,
    )
}

fn check_attacked_batch(name: &str, normalized: bool) {
    let (x0, x1, clean_loss, after) = attack_one_batch(name, normalized);
    let moved = x0
        .iter()
        .zip(&x1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f64, f64::max);
    assert!(
        moved > 0.05,
        "the attack moved the inputs by at most {moved} pixel units"
    );
    assert!(moved <= 0.1 + 1e-5, "moved {moved} > eps");
    assert!(
        x1.iter().all(|v| (-1e-5..=1.0 + 1e-5).contains(v)),
        "left 0..1"
    );
    // The attack raised the loss of these parameters.
    assert!(
        after > clean_loss,
        "loss {clean_loss} -> {after} after the attack"
    );
}

#[test]
fn attacked_batches_move_within_eps_and_stay_in_range() {
    check_attacked_batch("perturb", false);
}

/// With `normalize = true` eps and alpha stay in pixel units: the model's
/// inputs move by eps / std, which is eps once converted back.
#[test]
fn eps_is_in_pixel_units_when_inputs_are_standardized() {
    check_attacked_batch("perturb-normalized", true);
}

#[test]
fn metrics_record_both_losses_and_eps_zero_trains_as_without_the_option() {
    let data = subset("metrics");
    let dir = data.parent().unwrap().to_path_buf();
    let adv = train(
        &source(&data, "adversarial = pgd(eps = 0.1, steps = 2);"),
        &dir.join("adv"),
        3,
    );
    assert_eq!(adv.len(), 3);
    for r in &adv {
        let clean = r["clean_loss"].as_f64().expect("clean_loss recorded");
        let attacked = r["adversarial_loss"].as_f64().expect("adversarial_loss");
        assert_eq!(Some(attacked), r["loss"].as_f64(), "the step trains on it");
        assert!(attacked > clean, "{r}");
    }
    let plain = train(&source(&data, ""), &dir.join("plain"), 3);
    let zero = train(
        &source(&data, "adversarial = fgsm(eps = 0);"),
        &dir.join("zero"),
        3,
    );
    let loss = |rs: &[serde_json::Value]| -> Vec<f64> {
        rs.iter().map(|r| r["loss"].as_f64().unwrap()).collect()
    };
    assert_eq!(loss(&plain), loss(&zero), "eps = 0 changes nothing");
    assert!(plain[0].get("clean_loss").is_none());
    for r in &zero {
        assert_eq!(r["clean_loss"], r["adversarial_loss"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `pretrain = unrolled(..)` the steps of the pretraining phase train
/// the unrolled network, so their batches are attacked through it: the
/// pretraining attack is exactly an attack on the unrolled graph, the later
/// one exactly an attack on the DEQ, and the two differ.
#[test]
fn pretraining_steps_are_attacked_through_the_unrolled_network() {
    use deqc::train::adversarial::Adversaries;
    use deqc::train::pretrain::Phase;
    let data = subset("pretrain");
    let src = source(
        &data,
        "adversarial = fgsm(eps = 0.1);\n    pretrain = unrolled(steps = 2, depth = 2);",
    );
    let (p, _) = program(&src);
    let cfg = &p.trains[0];
    let model = p.model("Small").unwrap();
    let compiled = trainer::compile(model, cfg).unwrap();
    let unrolled = deqc::train::compiled::compile_pretrain(model, cfg, 2).unwrap();
    let device = Device::Cpu;
    let params = initial_params(&compiled.graph, &device);
    let splits = data::load(&cfg.data).unwrap();
    let inputs = first_batch(&splits, &device);
    let spec = cfg.adversarial.clone().expect("adversarial is set");
    let single = |graph| {
        let a = Adversary::new(graph, &cfg.loss, &spec, &splits.train, None, 0, &device);
        a.unwrap().perturb(&params, &inputs, 0).unwrap()
    };
    let pixels = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let both = Adversaries::of_run(
        cfg,
        &compiled.graph,
        Some(&unrolled.graph),
        &splits,
        &device,
    )
    .unwrap();
    let (pre, pre_loss) = both
        .attacked(Phase::Pretrain, &params, inputs.clone(), 0)
        .unwrap();
    let (deq, deq_loss) = both
        .attacked(Phase::Deq, &params, inputs.clone(), 0)
        .unwrap();
    let (alone_unrolled, unrolled_loss) = single(&unrolled.graph);
    let (alone_deq, _) = single(&compiled.graph);
    assert_eq!(pixels(&pre[0]), pixels(&alone_unrolled[0]));
    assert_eq!(pre_loss, unrolled_loss);
    assert_eq!(pixels(&deq[0]), pixels(&alone_deq[0]));
    assert_ne!(pixels(&pre[0]), pixels(&deq[0]));
    assert_ne!(pre_loss, deq_loss);
}
