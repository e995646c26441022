//! Gradient checking: derived gradients against central finite differences.
//!
//! Owns the procedure behind `deqc gradcheck` and the gradient tests: the
//! graph's outputs are reduced to a scalar by a fixed random projection
//! (`loss = sum_k sum(out_k * r_k)`), the derived gradient of the loss with
//! respect to every parameter and float input is computed by executing the
//! gradient graph, and each element is compared with
//! `(loss(v + eps) - loss(v - eps)) / (2 eps)`.
//!
//! The reported error of a tensor is `max |derived - numeric|` divided by
//! `max(max |derived|, max |numeric|, SCALE_FLOOR)` (relative to the
//! tensor's scale, so elements near zero do not dominate, and absolute for
//! gradients that are zero up to rounding); both equal gives 0. Run it in
//! f64.

use std::collections::BTreeMap;

use candle_core::{DType as CDType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};

use crate::exec::{DimEnv, ExecError, Executor};
use crate::ir::{Graph, GraphInput, NodeId, Op, ReduceOp};
use crate::types::{DType, Type};

use super::AdError;

/// The comparison for one parameter or input.
#[derive(Debug, Clone)]
pub struct GradCheck {
    /// `param NAME` or `input NAME`.
    pub name: String,
    pub max_rel_error: f64,
    pub derived: Vec<f64>,
    pub numeric: Vec<f64>,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CheckError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Autodiff(#[from] AdError),
    #[error("{0}")]
    #[diagnostic(code(deq::gradcheck))]
    Other(String),
}

fn tensor_err(e: candle_core::Error) -> CheckError {
    CheckError::Other(e.to_string())
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>, CheckError> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(CDType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .map_err(tensor_err)
}

/// Gradients whose largest element is below this are compared absolutely
/// (an exactly-zero gradient is computed as rounding noise, e.g. 1e-16).
pub const SCALE_FLOOR: f64 = 1e-3;

/// The relative error measure described in the module docs.
pub fn rel_error(derived: &[f64], numeric: &[f64]) -> f64 {
    let diff = derived
        .iter()
        .zip(numeric)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = derived
        .iter()
        .chain(numeric)
        .map(|v| v.abs())
        .fold(0.0, f64::max);
    if diff == 0.0 {
        0.0
    } else if !diff.is_finite() {
        f64::INFINITY
    } else {
        diff / scale.max(SCALE_FLOOR)
    }
}

/// The scalar-loss graph: `graph` plus one projection input per output.
/// Returns it and the loss node.
fn with_projection(graph: &Graph) -> Result<(Graph, NodeId), CheckError> {
    let mut g = graph.clone();
    let mut terms = Vec::new();
    for (k, out) in graph.outputs().iter().enumerate() {
        let ty = g.ty(*out).clone();
        if !ty.dtype.is_float() {
            continue;
        }
        let idx = g.inputs.len();
        g.inputs.push(GraphInput {
            name: format!("__projection{k}"),
            ty: ty.clone(),
        });
        let r = g.add(Op::Input(idx), ty.clone(), &[], None);
        let prod = g
            .add_inferred(Op::Mul, &[*out, r], None)
            .map_err(AdError::from)?;
        let axes: Vec<usize> = (0..ty.rank()).collect();
        let s = g
            .add_inferred(
                Op::Reduce {
                    op: ReduceOp::Sum,
                    axes,
                    keepdim: false,
                },
                &[prod],
                None,
            )
            .map_err(AdError::from)?;
        terms.push(s);
    }
    let mut loss = *terms
        .first()
        .ok_or_else(|| CheckError::Other("the graph has no float output".into()))?;
    for t in &terms[1..] {
        loss = g
            .add_inferred(Op::Add, &[loss, *t], None)
            .map_err(AdError::from)?;
    }
    g.set_outputs(vec![loss]);
    Ok((g, loss))
}

/// Random f64 values of a type (normal with the given std; ids uniform in
/// `0..id_bound`) under the dim bindings.
pub fn random_tensor(
    ty: &Type,
    dims: &DimEnv,
    rng: &mut impl Rng,
    std: f64,
    id_bound: i64,
) -> Result<Tensor, CheckError> {
    let shape = dims.shape(&ty.shape, None)?;
    let n: usize = shape.iter().product();
    let t = match ty.dtype {
        DType::I64 => {
            let v: Vec<i64> = (0..n)
                .map(|_| rng.random_range(0..id_bound.max(1)))
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
        DType::F32 | DType::F64 => {
            let normal = Normal::new(0.0, std).map_err(|e| CheckError::Other(e.to_string()))?;
            let v: Vec<f64> = (0..n).map(|_| normal.sample(rng)).collect();
            Tensor::from_vec(v, shape, &Device::Cpu)
        }
    };
    t.map_err(tensor_err)
}

/// For each i64 input used as embedding ids, the table's row count.
pub fn id_bounds(graph: &Graph) -> BTreeMap<usize, i64> {
    let mut out = BTreeMap::new();
    for id in graph.node_ids() {
        if let Op::Embedding = graph.op(id) {
            let ops = graph.operands(id);
            if let (Some(ids), Some(table)) = (ops.first(), ops.get(1)) {
                if let (Op::Input(i), Some(rows)) =
                    (graph.op(*ids), graph.ty(*table).shape[0].as_const())
                {
                    let e = out.entry(*i).or_insert(rows);
                    *e = (*e).min(rows);
                }
            }
        }
    }
    out
}

/// Check every parameter and float input of `graph` at the given values.
/// `exec` should compute in f64. With `samples`, at most that many
/// elements of each tensor (chosen at random) are compared.
pub fn check_graph(
    graph: &Graph,
    params: &[Tensor],
    inputs: &[Tensor],
    exec: &Executor,
    eps: f64,
    seed: u64,
    samples: Option<usize>,
) -> Result<Vec<GradCheck>, CheckError> {
    let dims = exec.bind_inputs(graph, inputs)?;
    let (fwd, loss) = with_projection(graph)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut all_inputs: Vec<Tensor> = inputs.to_vec();
    for inp in &fwd.inputs[graph.inputs.len()..] {
        all_inputs.push(random_tensor(&inp.ty, &dims, &mut rng, 1.0, 1)?);
    }
    // What to differentiate: every used trainable parameter (state such as
    // spectral normalization's vector gets no gradient) and float input.
    let mut targets: Vec<(String, NodeId, bool, usize)> = Vec::new();
    for id in fwd.node_ids() {
        match fwd.op(id) {
            Op::Param(i) if fwd.params[*i].role.is_state() => {}
            Op::Param(i) => targets.push((format!("param {}", fwd.params[*i].path), id, true, *i)),
            Op::Input(i) if *i < graph.inputs.len() && fwd.ty(id).dtype.is_float() => {
                targets.push((format!("input {}", fwd.inputs[*i].name), id, false, *i))
            }
            _ => {}
        }
    }
    targets.sort_by_key(|t| (!t.2, t.3));
    let mut bwd = fwd.clone();
    let wrt: Vec<NodeId> = targets.iter().map(|t| t.1).collect();
    // Equilibria are differentiated by their own backward mode.
    let grads = crate::autodiff::grad_with(&mut bwd, loss, &wrt, &crate::deq::DeqVjp)?;
    bwd.set_outputs(grads);
    let derived = exec.run(&bwd, params, &all_inputs)?.outputs;
    let eval = |params: &[Tensor], inputs: &[Tensor]| -> Result<f64, CheckError> {
        let out = exec.run(&fwd, params, inputs)?.outputs;
        let v = to_vec(
            out.first()
                .ok_or_else(|| CheckError::Other("no loss".into()))?,
        )?;
        Ok(v[0])
    };
    let mut report = Vec::new();
    for ((name, _, is_param, i), d) in targets.iter().zip(&derived) {
        let base = if *is_param {
            &params[*i]
        } else {
            &all_inputs[*i]
        };
        let shape = base.dims().to_vec();
        let values = to_vec(base)?;
        let mut chosen: Vec<usize> = (0..values.len()).collect();
        if let Some(n) = samples {
            if n < chosen.len() {
                use rand::seq::SliceRandom;
                chosen.shuffle(&mut rng);
                chosen.truncate(n);
                chosen.sort();
            }
        }
        let mut numeric = Vec::with_capacity(chosen.len());
        for &k in &chosen {
            let at = |delta: f64| -> Result<f64, CheckError> {
                let mut v = values.clone();
                v[k] += delta;
                let t = Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).map_err(tensor_err)?;
                if *is_param {
                    let mut ps = params.to_vec();
                    ps[*i] = t;
                    eval(&ps, &all_inputs)
                } else {
                    let mut xs = all_inputs.clone();
                    xs[*i] = t;
                    eval(params, &xs)
                }
            };
            let (hi, lo) = (at(eps)?, at(-eps)?);
            numeric.push((hi - lo) / (2.0 * eps));
        }
        let all = to_vec(d)?;
        let derived: Vec<f64> = chosen.iter().map(|&k| all[k]).collect();
        report.push(GradCheck {
            name: name.clone(),
            max_rel_error: rel_error(&derived, &numeric),
            derived,
            numeric,
        });
    }
    Ok(report)
}
