//! Adversarial training (`adversarial = pgd(...)` or `fgsm(...)` in a train
//! block): each step's batch is attacked against the current parameters
//! before the step trains on it.
//!
//! Owns [`Adversary`], built once per run from the model graph (and one
//! more from the unrolled graph of a `pretrain` phase, [`Adversaries`]): the loss's
//! gradient with respect to the model's float inputs through each
//! equilibrium's own backward rule (the gradient the step itself uses), the
//! valid range of each attacked input (its smallest and largest value in
//! the training split), and an executor whose solves stay out of the step's
//! solve records and failed-solve guard. Guarantees: attacked inputs stay
//! within eps of the clean ones and inside their range, labels are never
//! changed, and eps = 0 returns the clean batch bit for bit (see
//! [`super::attack::Attacker`]); the clean loss reported is the loss of the
//! same parameters at the clean batch.

use candle_core::{Device, Tensor};

use super::attack::{attack_graph, range_of, AttackGraph, AttackSpec, Attacker};
use super::data::normalize::Standardization;
use super::data::{Dataset, Splits};
use super::metrics::Record;
use super::pretrain::Phase;
use super::program::eval_graph;
use super::TrainError;
use crate::deq::SolverRunner;
use crate::exec::{ExecOptions, Executor};
use crate::ir::Graph;
use crate::sema::spec::{Adversarial, Loss, TrainConfig};

/// The attack of one training run.
pub struct Adversary {
    graph: AttackGraph,
    /// Loss and scores only (the attacker's choice among restarts).
    eval: Graph,
    ranges: Vec<(f64, f64)>,
    spec: AttackSpec,
    exec: Executor,
}

impl Adversary {
    /// The attack `adversarial` on the lowered `model` under `loss`;
    /// `train` gives the inputs' valid ranges. `eps` and `alpha` are in the
    /// data's own units (pixels in 0..1 for MNIST): with `normalize = true`
    /// (`standardization`) the model sees `(x - mean) / std`, so they are
    /// divided by `std`, as `deqc attack` does.
    pub fn new(
        model: &Graph,
        loss: &Loss,
        adversarial: &Adversarial,
        train: &Dataset,
        standardization: Option<Standardization>,
        seed: u64,
        device: &Device,
    ) -> Result<Adversary, TrainError> {
        let pipeline = crate::passes::Pipeline::default();
        let mut graph = attack_graph(model, loss)?;
        pipeline.run(&mut graph.graph)?;
        let mut eval = eval_graph(model, loss)?.graph;
        pipeline.run(&mut eval)?;
        let names = train.fields();
        let ranges = graph
            .attacked
            .iter()
            .map(|&i| range_of(names.get(i).map_or("", |f| f.0.as_str()), &[train]))
            .collect();
        // Its own runner: attack solves are not the step's solves.
        let runner = SolverRunner::new().with_lenient_adjoint(true);
        let exec = Executor::new(device.clone())
            .with_runner(Box::new(runner))
            .with_options(ExecOptions {
                seed,
                ..ExecOptions::default()
            });
        let scale = standardization.map_or(1.0, |st| st.std);
        let spec = AttackSpec {
            method: adversarial.method,
            norm: adversarial.norm,
            eps: adversarial.eps / scale,
            steps: adversarial.steps,
            alpha: adversarial.alpha / scale,
            restarts: 1,
            seed,
        };
        Ok(Adversary {
            graph,
            eval,
            ranges,
            spec,
            exec,
        })
    }

    /// The run's attack when its train block has `adversarial`.
    pub fn of_run(
        cfg: &TrainConfig,
        model: &Graph,
        splits: &Splits,
        device: &Device,
    ) -> Result<Option<Adversary>, TrainError> {
        cfg.adversarial
            .as_ref()
            .map(|a| {
                let (train, st) = (&splits.train, splits.standardization);
                Adversary::new(model, &cfg.loss, a, train, st, cfg.seed, device)
            })
            .transpose()
    }

    /// `inputs` (model inputs then target) attacked against `params`, and
    /// the loss at the clean inputs; `step` numbers the batch.
    pub fn perturb(
        &self,
        params: &[Tensor],
        inputs: &[Tensor],
        step: u64,
    ) -> Result<(Vec<Tensor>, Option<f64>), TrainError> {
        let attacker = Attacker {
            exec: &self.exec,
            graph: &self.graph,
            eval: &self.eval,
            params,
            ranges: &self.ranges,
            spec: &self.spec,
        };
        let batch = inputs
            .first()
            .and_then(|t| t.dims().first().copied())
            .unwrap_or(1);
        attacker.attack_measured(inputs, batch, step)
    }
}

/// The attacks of a run: one against the model, and with `pretrain` one
/// against the unrolled network its first steps train, so that each step's
/// batch is attacked through the graph that step differentiates.
#[derive(Default)]
pub struct Adversaries {
    model: Option<Adversary>,
    pretrain: Option<Adversary>,
}

impl Adversaries {
    /// The run's attacks when its train block has `adversarial`: against
    /// `model`, and against `unrolled` (the pretraining graph) when given.
    pub fn of_run(
        cfg: &TrainConfig,
        model: &Graph,
        unrolled: Option<&Graph>,
        splits: &Splits,
        device: &Device,
    ) -> Result<Adversaries, TrainError> {
        let pretrain = match unrolled {
            Some(g) => Adversary::of_run(cfg, g, splits, device)?,
            None => None,
        };
        Ok(Adversaries {
            model: Adversary::of_run(cfg, model, splits, device)?,
            pretrain,
        })
    }

    /// A step's batch: attacked through the graph of `phase` when the run
    /// has an attack (with the clean loss), else as it is.
    pub fn attacked(
        &self,
        phase: Phase,
        params: &[Tensor],
        inputs: Vec<Tensor>,
        step: u64,
    ) -> Result<(Vec<Tensor>, Option<f64>), TrainError> {
        let adversary = match (phase, &self.pretrain) {
            (Phase::Pretrain, Some(unrolled)) => Some(unrolled),
            _ => self.model.as_ref(),
        };
        match adversary {
            Some(a) => a.perturb(params, &inputs, step),
            None => Ok((inputs, None)),
        }
    }
}

/// Add a step's `clean_loss` and `adversarial_loss` (the loss it trained
/// on) to its metrics record.
pub fn record_losses(rec: &mut Record, clean_loss: Option<f64>, trained_loss: f64) {
    if let Some(clean) = clean_loss {
        rec.extra.push(("clean_loss".into(), clean));
        rec.extra.push(("adversarial_loss".into(), trained_loss));
    }
}
