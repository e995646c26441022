//! The attack itself: the input-gradient graph and FGSM/PGD steps.
//!
//! Owns [`attack_graph`] (the model plus its loss and the loss's gradient
//! with respect to every float model input, derived by the compiler through
//! each equilibrium's backward rule: implicit, or rewritten to unrolled or
//! phantom) and [`Attacker`], which turns clean inputs into adversarial
//! ones. Guarantees: adversarial inputs stay within `eps` of the clean ones
//! (L-inf or per-sample L2, in the data's own units) and inside the valid
//! range given for each input; `eps = 0` returns the clean inputs bit for
//! bit; a NaN gradient element (from a failed solve) moves nothing.

use candle_core::{DType as CDType, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::autodiff::{grad_with, AdError};
use crate::deq::DeqVjp;
use crate::exec::Executor;
use crate::ir::{Graph, NodeId, Op};
use crate::sema::spec::{Backward, Loss, SolverKind};
use crate::train::program::eval_graph;
use crate::train::TrainError;

/// FGSM (one step of size eps) or PGD (projected steps, restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Fgsm,
    Pgd,
}

/// The norm that measures a perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Norm {
    Linf,
    L2,
}

/// How the gradient passes through each equilibrium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GradientMode {
    /// The implicit function theorem at z* (the adjoint solve).
    Implicit,
    /// Reverse mode through the solver's own iterations.
    Unrolled,
    /// Reverse mode through a few damped steps from z*.
    Phantom,
}

/// The settings of one attack.
#[derive(Debug, Clone)]
pub struct AttackSpec {
    pub method: Method,
    pub norm: Norm,
    /// Radius of the allowed perturbation, in the data's units.
    pub eps: f64,
    /// PGD steps per restart.
    pub steps: usize,
    /// PGD step size.
    pub alpha: f64,
    /// PGD restarts: the first from the clean input, the others from
    /// random points of the eps-ball.
    pub restarts: usize,
    pub seed: u64,
}

/// The phantom gradient `--gradient phantom` uses where the model does
/// not set its own (the language's defaults).
const PHANTOM_STEPS: usize = 5;
const PHANTOM_DAMPING: f64 = 0.8;

/// Rewrite the backward rule of every equilibrium (nested ones included).
/// `implicit` keeps an implicit backward as written and replaces phantom
/// and jfb by an implicit solve with the forward solver's settings.
pub fn with_gradient_mode(model: &Graph, mode: GradientMode) -> Graph {
    let mut g = model.clone();
    rewrite_backward(&mut g, mode);
    g
}

fn rewrite_backward(g: &mut Graph, mode: GradientMode) {
    for id in g.node_ids() {
        if let Op::Equilibrium(eq) = &mut g.node_mut(id).op {
            rewrite_backward(&mut eq.body, mode);
            eq.backward = match (mode, &eq.backward) {
                (GradientMode::Implicit, Backward::Implicit { solver }) => Backward::Implicit {
                    solver: solver.clone(),
                },
                (GradientMode::Implicit, Backward::Phantom { .. } | Backward::Jfb)
                | (GradientMode::Implicit, Backward::Unrolled) => {
                    let mut solver = eq.solver.clone();
                    if matches!(solver.kind, SolverKind::Unroll { .. }) {
                        solver.kind = SolverKind::Anderson {
                            m: 5,
                            beta: 1.0,
                            lam: 1e-4,
                        };
                    }
                    Backward::Implicit { solver }
                }
                (GradientMode::Unrolled, _) => {
                    // Anderson's and Broyden's iterations are not steps of
                    // the map that reverse mode could follow: unroll
                    // `max_iter` plain fixed-point steps instead.
                    if !matches!(
                        eq.solver.kind,
                        SolverKind::Unroll { .. } | SolverKind::FixedPoint { .. }
                    ) {
                        eq.solver.kind = SolverKind::FixedPoint { damping: 1.0 };
                    }
                    Backward::Unrolled
                }
                (GradientMode::Phantom, Backward::Phantom { steps, damping }) => {
                    Backward::Phantom {
                        steps: *steps,
                        damping: *damping,
                    }
                }
                (GradientMode::Phantom, _) => Backward::Phantom {
                    steps: PHANTOM_STEPS,
                    damping: PHANTOM_DAMPING,
                },
            };
        }
    }
}

/// The loss and its gradient with respect to the model's float inputs.
pub struct AttackGraph {
    /// Inputs: the model's, then `target`. Outputs: the loss, the scores,
    /// then one gradient per entry of `attacked`.
    pub graph: Graph,
    /// Indices (into the model's inputs) of the inputs attacked.
    pub attacked: Vec<usize>,
}

impl AttackGraph {
    pub const LOSS: usize = 0;
    pub const SCORES: usize = 1;
    /// The output holding the gradient of the `k`-th attacked input.
    pub fn grad_output(&self, k: usize) -> usize {
        2 + k
    }
}

/// Build the input-gradient graph of a lowered model (backward rules
/// already chosen, see [`with_gradient_mode`]).
pub fn attack_graph(model: &Graph, loss: &Loss) -> Result<AttackGraph, AdError> {
    let step = eval_graph(model, loss)?;
    let mut g = step.graph;
    let outputs = g.outputs().to_vec();
    let (Some(&value), Some(&scores)) = (outputs.first(), outputs.get(1)) else {
        return Err(AdError::Internal("the loss graph has no outputs".into()));
    };
    let mut attacked = Vec::new();
    let mut nodes: Vec<NodeId> = Vec::new();
    for i in 0..model.inputs.len() {
        if !model.inputs[i].ty.dtype.is_float() {
            continue;
        }
        let node = g
            .node_ids()
            .into_iter()
            .find(|n| matches!(g.op(*n), Op::Input(k) if *k == i));
        let node = match node {
            Some(n) => n,
            // An input the model ignores: its gradient is zero.
            None => {
                let ty = g.inputs[i].ty.clone();
                g.add(Op::Input(i), ty, &[], None)
            }
        };
        attacked.push(i);
        nodes.push(node);
    }
    let grads = grad_with(&mut g, value, &nodes, &DeqVjp)?;
    let mut outs = vec![value, scores];
    outs.extend(grads);
    g.set_outputs(outs);
    Ok(AttackGraph { graph: g, attacked })
}

/// A tensor's values as f64, row-major.
pub fn host(t: &Tensor) -> Result<Vec<f64>, TrainError> {
    Ok(t.flatten_all()?.to_dtype(CDType::F64)?.to_vec1::<f64>()?)
}

fn like(values: Vec<f64>, template: &Tensor) -> Result<Tensor, TrainError> {
    let t = Tensor::from_vec(values, template.dims(), template.device())?;
    Ok(t.to_dtype(template.dtype())?)
}

/// Per-sample cross-entropy and predicted class of scores `[B, C]`.
pub fn per_sample(scores: &Tensor, target: &Tensor) -> Result<(Vec<f64>, Vec<i64>), TrainError> {
    let dims = scores.dims();
    let (b, c) = match dims {
        [b, c] => (*b, *c),
        _ => {
            return Err(TrainError::Usage(format!(
                "deqc attack needs scores of shape [B, classes]; the model's are {dims:?}"
            )))
        }
    };
    let s = host(scores)?;
    let t: Vec<i64> = target
        .flatten_all()?
        .to_dtype(CDType::I64)?
        .to_vec1::<i64>()?;
    let mut losses = Vec::with_capacity(b);
    let mut preds = Vec::with_capacity(b);
    for i in 0..b {
        let row = &s[i * c..(i + 1) * c];
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        let label = t.get(i).copied().unwrap_or(0).clamp(0, c as i64 - 1) as usize;
        losses.push(lse - row[label]);
        let pred = row
            .iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |best, (k, v)| {
                if *v > best.1 {
                    (k, *v)
                } else {
                    best
                }
            })
            .0;
        preds.push(pred as i64);
    }
    Ok((losses, preds))
}

/// Turns clean inputs into adversarial ones for one model and parameters.
pub struct Attacker<'a> {
    pub exec: &'a Executor,
    pub graph: &'a AttackGraph,
    /// The forward-only graph (loss, scores) used to pick among restarts.
    pub eval: &'a Graph,
    pub params: &'a [Tensor],
    /// Valid `(low, high)` of each attacked input.
    pub ranges: &'a [(f64, f64)],
    pub spec: &'a AttackSpec,
}

impl Attacker<'_> {
    /// The loss gradient of each attacked input at `inputs` (model inputs
    /// then target).
    pub fn gradients(&self, inputs: &[Tensor]) -> Result<Vec<Vec<f64>>, TrainError> {
        let out = self
            .exec
            .run(&self.graph.graph, self.params, inputs)?
            .outputs;
        (0..self.graph.attacked.len())
            .map(|k| {
                let t = out
                    .get(self.graph.grad_output(k))
                    .ok_or(TrainError::Layout {
                        graph: "attack",
                        what: "outputs",
                        got: out.len(),
                        want: self.graph.grad_output(k) + 1,
                    })?;
                host(t)
            })
            .collect()
    }

    /// Adversarial versions of `clean` (model inputs then target); inputs
    /// that are not attacked are returned unchanged. `batch` samples.
    pub fn attack(
        &self,
        clean: &[Tensor],
        batch: usize,
        batch_index: u64,
    ) -> Result<Vec<Tensor>, TrainError> {
        let x0: Vec<Vec<f64>> = self
            .graph
            .attacked
            .iter()
            .map(|&i| host(&clean[i]))
            .collect::<Result<_, _>>()?;
        match self.spec.method {
            Method::Fgsm => {
                let g = self.gradients(clean)?;
                let x = self.step(&x0, &x0, &g, self.spec.eps, batch);
                self.assemble(clean, x)
            }
            Method::Pgd => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(
                    self.spec.seed ^ batch_index.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let mut best: Option<(Vec<Tensor>, Vec<f64>)> = None;
                for restart in 0..self.spec.restarts {
                    let mut x = if restart == 0 {
                        x0.clone()
                    } else {
                        self.random_start(&x0, batch, &mut rng)
                    };
                    for _ in 0..self.spec.steps {
                        let feed = self.assemble(clean, x.clone())?;
                        let g = self.gradients(&feed)?;
                        x = self.step(&x0, &x, &g, self.spec.alpha, batch);
                    }
                    let candidate = self.assemble(clean, x)?;
                    let strength = self.strength(&candidate)?;
                    best = Some(match best {
                        None => (candidate, strength),
                        Some((kept, kept_strength)) => {
                            self.keep_stronger(kept, kept_strength, candidate, strength, batch)?
                        }
                    });
                }
                best.map(|b| b.0)
                    .ok_or_else(|| TrainError::Usage("--restarts must be at least 1".into()))
            }
        }
    }

    /// Per sample: how strong an adversarial input is (misclassified first,
    /// then by loss).
    fn strength(&self, inputs: &[Tensor]) -> Result<Vec<f64>, TrainError> {
        let out = self.exec.run(self.eval, self.params, inputs)?.outputs;
        let scores = out.get(AttackGraph::SCORES).ok_or(TrainError::Layout {
            graph: "evaluation",
            what: "outputs",
            got: out.len(),
            want: 2,
        })?;
        let target = inputs.last().ok_or(TrainError::Layout {
            graph: "evaluation",
            what: "inputs",
            got: 0,
            want: 1,
        })?;
        let (loss, pred) = per_sample(scores, target)?;
        let labels: Vec<i64> = target
            .flatten_all()?
            .to_dtype(CDType::I64)?
            .to_vec1::<i64>()?;
        Ok(loss
            .iter()
            .zip(pred.iter().zip(&labels))
            .map(|(l, (p, y))| {
                let wrong = if p != y { 1e30 } else { 0.0 };
                if l.is_nan() {
                    wrong
                } else {
                    wrong + l
                }
            })
            .collect())
    }

    /// Per sample, the stronger of two restarts' inputs.
    fn keep_stronger(
        &self,
        kept: Vec<Tensor>,
        kept_strength: Vec<f64>,
        new: Vec<Tensor>,
        new_strength: Vec<f64>,
        batch: usize,
    ) -> Result<(Vec<Tensor>, Vec<f64>), TrainError> {
        let take: Vec<bool> = (0..batch)
            .map(|b| new_strength.get(b) > kept_strength.get(b))
            .collect();
        let mut merged = kept.clone();
        for &i in &self.graph.attacked {
            let (a, n) = (host(&kept[i])?, host(&new[i])?);
            let per = a.len() / batch.max(1);
            let values = (0..a.len())
                .map(|j| if take[j / per.max(1)] { n[j] } else { a[j] })
                .collect();
            merged[i] = like(values, &kept[i])?;
        }
        let strength = (0..batch)
            .map(|b| {
                if take[b] {
                    new_strength[b]
                } else {
                    kept_strength[b]
                }
            })
            .collect();
        Ok((merged, strength))
    }

    fn assemble(&self, clean: &[Tensor], x: Vec<Vec<f64>>) -> Result<Vec<Tensor>, TrainError> {
        let mut out = clean.to_vec();
        for (&i, values) in self.graph.attacked.iter().zip(x) {
            out[i] = like(values, &clean[i])?;
        }
        Ok(out)
    }

    /// A uniformly random point of the eps-ball around `x0` (in range).
    fn random_start(
        &self,
        x0: &[Vec<f64>],
        batch: usize,
        rng: &mut rand::rngs::StdRng,
    ) -> Vec<Vec<f64>> {
        let eps = self.spec.eps;
        x0.iter()
            .zip(self.ranges)
            .map(|(x, &(lo, hi))| {
                let per = x.len() / batch.max(1);
                let mut out = x.clone();
                match self.spec.norm {
                    Norm::Linf => {
                        for v in &mut out {
                            *v += eps * rng.random_range(-1.0..=1.0);
                        }
                    }
                    Norm::L2 => {
                        for row in out.chunks_mut(per.max(1)) {
                            let d: Vec<f64> = (0..row.len())
                                .map(|_| StandardNormal.sample(&mut *rng))
                                .collect();
                            let n = d.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                            let r = eps * rng.random::<f64>();
                            for (v, dv) in row.iter_mut().zip(&d) {
                                *v += r * dv / n;
                            }
                        }
                    }
                }
                for v in &mut out {
                    *v = v.clamp(lo, hi);
                }
                out
            })
            .collect()
    }

    /// One ascent step of size `size` from `x`, projected onto the eps-ball
    /// around `x0` and the valid range.
    fn step(
        &self,
        x0: &[Vec<f64>],
        x: &[Vec<f64>],
        grads: &[Vec<f64>],
        size: f64,
        batch: usize,
    ) -> Vec<Vec<f64>> {
        // L2 directions are normalized per sample over every attacked input.
        let mut norms = vec![0.0f64; batch.max(1)];
        if self.spec.norm == Norm::L2 {
            for g in grads {
                let per = (g.len() / batch.max(1)).max(1);
                for (j, v) in g.iter().enumerate() {
                    if v.is_finite() {
                        norms[(j / per).min(batch.max(1) - 1)] += v * v;
                    }
                }
            }
        }
        let moved: Vec<Vec<f64>> = x
            .iter()
            .zip(grads)
            .map(|(x, g)| {
                let per = (x.len() / batch.max(1)).max(1);
                x.iter()
                    .zip(g)
                    .enumerate()
                    .map(|(j, (v, gv))| {
                        let gv = if gv.is_finite() { *gv } else { 0.0 };
                        let dir = match self.spec.norm {
                            Norm::Linf => {
                                if gv > 0.0 {
                                    1.0
                                } else if gv < 0.0 {
                                    -1.0
                                } else {
                                    0.0
                                }
                            }
                            Norm::L2 => {
                                let n = norms[(j / per).min(norms.len() - 1)].sqrt();
                                if n > 0.0 {
                                    gv / n
                                } else {
                                    0.0
                                }
                            }
                        };
                        v + size * dir
                    })
                    .collect()
            })
            .collect();
        self.project(x0, moved, batch)
    }

    /// Back into the eps-ball around `x0` and the valid range.
    fn project(&self, x0: &[Vec<f64>], mut x: Vec<Vec<f64>>, batch: usize) -> Vec<Vec<f64>> {
        let eps = self.spec.eps;
        match self.spec.norm {
            Norm::Linf => {
                for (xs, x0s) in x.iter_mut().zip(x0) {
                    for (v, c) in xs.iter_mut().zip(x0s) {
                        *v = v.clamp(c - eps, c + eps);
                    }
                }
            }
            Norm::L2 => {
                let mut norms = vec![0.0f64; batch.max(1)];
                for (xs, x0s) in x.iter().zip(x0) {
                    let per = (xs.len() / batch.max(1)).max(1);
                    for (j, (v, c)) in xs.iter().zip(x0s).enumerate() {
                        norms[(j / per).min(batch.max(1) - 1)] += (v - c) * (v - c);
                    }
                }
                for (xs, x0s) in x.iter_mut().zip(x0) {
                    let per = (xs.len() / batch.max(1)).max(1);
                    for (j, (v, c)) in xs.iter_mut().zip(x0s).enumerate() {
                        let n = norms[(j / per).min(norms.len() - 1)].sqrt();
                        if n > eps {
                            // eps = 0 gives exactly the clean value.
                            *v = c + (*v - c) * (eps / n);
                        }
                    }
                }
            }
        }
        for (xs, &(lo, hi)) in x.iter_mut().zip(self.ranges) {
            for v in xs.iter_mut() {
                *v = v.clamp(lo, hi);
            }
        }
        x
    }
}

/// The distance of each sample's adversarial input from its clean one.
pub fn perturbation(x0: &[Vec<f64>], x: &[Vec<f64>], norm: Norm, batch: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; batch];
    for (a, b) in x0.iter().zip(x) {
        let per = (a.len() / batch.max(1)).max(1);
        for (j, (u, v)) in a.iter().zip(b).enumerate() {
            let k = (j / per).min(batch.saturating_sub(1));
            let d = (u - v).abs();
            match norm {
                Norm::Linf => out[k] = out[k].max(d),
                Norm::L2 => out[k] += d * d,
            }
        }
    }
    if norm == Norm::L2 {
        for v in &mut out {
            *v = v.sqrt();
        }
    }
    out
}
