//! What one model compiles to for training, and its parameters.
//!
//! Owns the set of graphs a run executes ([`Compiled`]: the lowered model,
//! the step, evaluation and regularization graphs after the optimization
//! pipeline (evaluation with `eval_solver` when given; the pretraining
//! phase's set from the unrolled model), and the stability graph for
//! spectral radii), and the model's parameters as tensors: seeded initial
//! values, their shapes, and loading them from a checkpoint. Guarantees: every graph a run executes went
//! through the same pass pipeline; initial values depend only on the seed
//! and each parameter's path.

use std::path::Path;

use candle_core::{DType as CDType, Device, Tensor};

use super::checkpoint;
use super::program::{
    eval_graph, jacobian_step_frozen, step_graph_frozen, JacobianStep, StepGraph,
};
use super::solve_report::EqName;
use super::TrainError;
use crate::exec::Executor;
use crate::ir::{lower::lower_model, Graph};
use crate::sema::hir::Model;
use crate::sema::spec::TrainConfig;

/// Everything compiled for one model.
pub struct Compiled {
    pub graph: Graph,
    pub step: StepGraph,
    pub eval: StepGraph,
    pub jacobian: Option<JacobianStep>,
    /// The model with each top-level equilibrium's fixed points and
    /// captures as outputs, for spectral-radius estimates in the logs.
    pub stability: Graph,
    /// `frozen[i]`: parameter `i` is covered by `freeze`, or is
    /// non-trainable state: no gradient, never updated by the optimizer.
    pub frozen: Vec<bool>,
}

/// Spectral radius estimates (max over samples) of each top-level
/// equilibrium of `compiled` on one batch of inputs, with the
/// equilibrium's state names and span.
pub fn spectral_radii(
    exec: &Executor,
    compiled: &Compiled,
    params: &[Tensor],
    inputs: &[Tensor],
) -> Result<Vec<(EqName, f64)>, TrainError> {
    let values = exec.run(&compiled.stability, params, inputs)?.outputs;
    let mut out = Vec::new();
    let mut at = 0;
    for eq in crate::deq::jacobian::top_level_equilibria(&compiled.graph) {
        let crate::ir::Op::Equilibrium(node) = compiled.graph.op(eq) else {
            continue;
        };
        let (k, n) = (node.num_states(), node.num_captures());
        let zstar = &values[at..at + k];
        let caps = &values[at + k..at + k + n];
        at += k + n;
        let r = crate::deq::jacobian::spectral_radius(exec, node, zstar, caps, 20, 0)?;
        out.push((
            (node.state_names.clone(), compiled.graph.span(eq)),
            r.into_iter().fold(0.0, f64::max),
        ));
    }
    Ok(out)
}

fn stability_graph(graph: &Graph) -> Graph {
    let mut g = graph.clone();
    let mut outs = Vec::new();
    for eq in crate::deq::jacobian::top_level_equilibria(&g) {
        let crate::ir::Op::Equilibrium(node) = g.op(eq).clone() else {
            continue;
        };
        let span = g.span(eq);
        for (i, ty) in node.state_types.iter().enumerate() {
            outs.push(g.add(crate::ir::Op::Project(i), ty.clone(), &[eq], span));
        }
        outs.extend(g.operands(eq)[..node.num_captures()].iter().copied());
    }
    g.set_outputs(outs);
    g
}

pub fn compile(model: &Model, cfg: &TrainConfig) -> Result<Compiled, TrainError> {
    let graph = lower_model(model)?;
    let frozen = frozen_mask(&graph, cfg);
    let mut step = step_graph_frozen(&graph, &cfg.loss, &frozen)?;
    // `eval_solver` changes the solvers of evaluation only.
    let mut eval = match &cfg.workflow.eval_solver {
        Some(solver) => eval_graph(
            &lower_model(&super::pretrain::with_solver(model, solver))?,
            &cfg.loss,
        )?,
        None => eval_graph(&graph, &cfg.loss)?,
    };
    let mut jacobian = match cfg.jacobian_reg {
        Some(_) => jacobian_step_frozen(&graph, &frozen)?,
        None => None,
    };
    // Optimize what runs: folding, CSE, hoisting out of solver loops, DCE.
    let pipeline = crate::passes::Pipeline::default();
    pipeline.run(&mut step.graph)?;
    pipeline.run(&mut eval.graph)?;
    if let Some(j) = &mut jacobian {
        pipeline.run(&mut j.graph)?;
    }
    let stability = stability_graph(&graph);
    Ok(Compiled {
        graph,
        step,
        eval,
        jacobian,
        stability,
        frozen,
    })
}

/// The graphs of the pretraining phase: `model` with each equilibrium
/// unrolled `depth` times (see [`super::pretrain`]); evaluation in this
/// phase runs the unrolled network too, whatever `eval_solver` says.
pub fn compile_pretrain(
    model: &Model,
    cfg: &TrainConfig,
    depth: usize,
) -> Result<Compiled, TrainError> {
    let mut cfg = cfg.clone();
    cfg.workflow.eval_solver = None;
    compile(&super::pretrain::unrolled(model, depth), &cfg)
}

/// `true` for each parameter of `graph` that a `freeze` entry of `cfg`
/// covers, and for each non-trainable state tensor (same order as
/// `graph.params`).
pub fn frozen_mask(graph: &Graph, cfg: &TrainConfig) -> Vec<bool> {
    graph
        .params
        .iter()
        .map(|p| {
            p.role.is_state()
                || cfg
                    .freeze
                    .iter()
                    .any(|(entry, _)| crate::sema::freeze_covers(entry, &p.path))
        })
        .collect()
}

/// Initial parameters from the program's initializers, seeded; the
/// tensors of `weight_norm` and `spectral_norm` derived from their weights'
/// initial values (`train/normalize.rs`).
pub fn init_params(
    graph: &Graph,
    seed: u64,
    device: &Device,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    let mut params = seeded_params(graph, seed, device)?;
    super::normalize::init_derived(graph, &mut params, &[])?;
    Ok(params)
}

fn seeded_params(
    graph: &Graph,
    seed: u64,
    device: &Device,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    graph
        .params
        .iter()
        .map(|p| {
            let shape: Vec<usize> =
                p.ty.shape
                    .iter()
                    .map(|d| d.as_const().unwrap_or(0).max(0) as usize)
                    .collect();
            let t = super::init::init_tensor(&p.init, &shape, seed, &p.path, device)?;
            let t = t.to_dtype(match p.ty.dtype {
                crate::sema::hir::DType::F64 => CDType::F64,
                _ => CDType::F32,
            })?;
            Ok((p.path.clone(), t))
        })
        .collect()
}

/// `(path, shape)` of every parameter.
pub fn param_shapes(graph: &Graph) -> Vec<(String, Vec<usize>)> {
    graph
        .params
        .iter()
        .map(|p| {
            (
                p.path.clone(),
                p.ty.shape
                    .iter()
                    .map(|d| d.as_const().unwrap_or(0).max(0) as usize)
                    .collect(),
            )
        })
        .collect()
}

/// Load a checkpoint's parameters for `graph`, from a folder or a
/// `model.safetensors` file. Every parameter of `graph` must be there, with
/// its shape; tensors that `graph` does not use are left out, so a model
/// that shares some layer instances with the trained one (a flow's inverse,
/// without the classifier head) reads its parameters by checkpoint path.
pub fn load_weights(
    graph: &Graph,
    path: &Path,
    device: &Device,
) -> Result<Vec<(String, Tensor)>, TrainError> {
    let shapes = param_shapes(graph);
    let file = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    let (mut tensors, _) = checkpoint::read_tensors(&file, device)?;
    let found = |ts: &[(String, Tensor)]| -> Vec<(String, Vec<usize>)> {
        ts.iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect()
    };
    let all = found(&tensors);
    tensors.retain(|(k, _)| shapes.iter().any(|(n, _)| n == k));
    if checkpoint::check_keys(&file, &found(&tensors), &shapes).is_err() {
        // Not this model's parameters: list every difference, extra
        // tensors included, so that the mismatch is plain.
        checkpoint::check_keys(&file, &all, &shapes)?;
    }
    let mut ordered = Vec::with_capacity(shapes.len());
    for (k, _) in &shapes {
        if let Some(i) = tensors.iter().position(|(n, _)| n == k) {
            ordered.push(tensors.swap_remove(i));
        }
    }
    Ok(ordered)
}
