//! `weight_norm(w, axis)` and `spectral_norm(w, axis, coeff)`: the weight
//! reparametrizations TorchDEQ applies to the layers inside an equilibrium;
//! `normalize_weight(w, axis, norm, coeff)` picks one by name (`"none"`,
//! `"weight"`, `"spectral"`) for the stdlib layers' `norm` hyper-parameter.
//!
//! Both take a parameter (not an expression) and add one tensor beside it,
//! named after it (`cell.w` gets `cell.w_g` or `cell.w_u`, like PyTorch's
//! `weight_g` and `weight_u`), with one entry per index of `axis`, the
//! weight's output axis (1 for `nn::Linear`'s `[in, out]`, 0 for a
//! convolution's `[out, in, k, k]`). Guarantees:
//! - `weight_norm` is `w * g / ‖w‖`, the norm taken per output unit over
//!   every other axis (PyTorch's `weight_norm` along that axis); the gain
//!   `g` is trained and starts at `‖w‖`, so the layer starts where the plain
//!   layer would;
//! - `spectral_norm` is `w * coeff / σ` with `σ` one power iteration from
//!   the state vector `u`: `v = normalize(Wᵀu)`, `σ = ‖W v‖` (PyTorch's
//!   estimate `u'ᵀ W v` with `u' = normalize(W v)`). `u` is non-trainable
//!   state ([`ParamRole::PowerVector`]): the trainer advances it to `u'`
//!   once per training step (`src/train/normalize.rs`). The gradient flows
//!   through `v` and `σ` as computed (PyTorch detaches `u` and `v`; the two
//!   agree where `u` has converged, since then `dv ⟂ Wᵀu`);
//! - a second call on the same parameter (a layer used twice) reuses the
//!   tensor made by the first.
//!
//! Everything is emitted as elementwise products and sums over axes (no
//! reshapes), so `σ` of a weight inside an equilibrium body depends on no
//! state and the hoist pass computes it once per solve.

use super::Args;
use crate::ir::{Op, ReduceOp};
use crate::sema::dim::Dim;
use crate::sema::elab::{Elab, Value};
use crate::sema::hir::{InstKind, Param, ParamRole, Type, ValueId};
use crate::sema::spec::Init;
use crate::source::Span;

/// The smallest norm divided by when normalizing `Wᵀu` (PyTorch's
/// `F.normalize` default).
pub const NORMALIZE_EPS: f64 = 1e-12;

fn tensor_of(v: Value) -> Option<ValueId> {
    match v {
        Value::Tensor(t) => Some(t),
        _ => None,
    }
}

/// `[w.shape[axis]]` in `w`'s element type.
fn axis_type(ty: &Type, axis: usize) -> Type {
    Type::new(ty.dtype, vec![ty.shape[axis].clone()])
}

/// The shape a per-`axis` vector takes to broadcast against `ty`: its
/// dimension at `axis`, 1 elsewhere.
fn kept_axis_shape(ty: &Type, axis: usize) -> Vec<Dim> {
    (0..ty.rank())
        .map(|d| {
            if d == axis {
                ty.shape[d].clone()
            } else {
                Dim::konst(1)
            }
        })
        .collect()
}

/// Every axis of `ty` but `axis`.
fn other_axes(ty: &Type, axis: usize) -> Vec<usize> {
    (0..ty.rank()).filter(|d| *d != axis).collect()
}

impl Elab<'_> {
    pub(super) fn weight_norm(&mut self, a: &Args, name: &str, span: Span) -> Value {
        let Some((w, ty, weight, axis)) = self.normalized_weight(a, name) else {
            return Value::Unknown;
        };
        let role = ParamRole::NormGain { weight, axis };
        self.weight_norm_ops(w, &ty, weight, axis, role, span)
            .map_or(Value::Unknown, Value::Tensor)
    }

    /// `coeff_at`: the argument that holds `coeff`.
    pub(super) fn spectral_norm(
        &mut self,
        a: &Args,
        coeff_at: usize,
        name: &str,
        span: Span,
    ) -> Value {
        let Some((w, ty, weight, axis)) = self.normalized_weight(a, name) else {
            return Value::Unknown;
        };
        let Some(coeff) = self.float(a, coeff_at) else {
            return Value::Unknown;
        };
        // A float hyper-parameter not known in generic checking reads as 0:
        // only a known coeff can be wrong.
        let known = !matches!(a.get(coeff_at), Value::Float(None));
        if known && !(coeff > 0.0 && coeff.is_finite()) {
            return self.bad_setting(
                a.span(coeff_at),
                name,
                "a positive coeff",
                format!("coeff = {coeff}"),
            );
        }
        let role = ParamRole::PowerVector { weight, axis };
        self.spectral_norm_ops(w, &ty, weight, axis, coeff, role, span)
            .map_or(Value::Unknown, Value::Tensor)
    }

    /// `normalize_weight(w, axis, norm, coeff)`: `w` itself for
    /// `norm = "none"`, else `weight_norm` or `spectral_norm` (how the
    /// stdlib's layers take a `norm` hyper-parameter).
    pub(super) fn normalize_weight(&mut self, a: &Args, name: &str, span: Span) -> Value {
        match a.get(2) {
            Value::Str(s) if s == "none" => match self.tensor(a, 0) {
                Some((w, _)) => Value::Tensor(w),
                None => Value::Unknown,
            },
            Value::Str(s) if s == "weight" => self.weight_norm(a, name, span),
            Value::Str(s) if s == "spectral" => self.spectral_norm(a, 3, name, span),
            Value::Unknown => Value::Unknown,
            other => {
                let found = match other {
                    Value::Str(s) => format!("norm = {s:?}"),
                    other => other.describe(&self.m),
                };
                self.bad_setting(
                    a.span(2),
                    name,
                    "norm = \"none\", \"weight\" or \"spectral\"",
                    found,
                )
            }
        }
    }

    /// The weight argument (a float parameter of rank 2 or more), its type,
    /// its parameter index and the checked axis.
    fn normalized_weight(&mut self, a: &Args, name: &str) -> Option<(ValueId, Type, usize, usize)> {
        let (w, ty) = self.tensor(a, 0)?;
        if !ty.dtype.is_float() || ty.rank() < 2 {
            self.input_rank(name, "a float weight of rank 2 or more", &ty, a.span(0));
            return None;
        }
        let axis = self.axis_arg(a, 1, ty.rank())?;
        let Some(weight) = self.param_behind(w) else {
            self.bad_setting(
                a.span(0),
                name,
                "a parameter declared with `param` (it adds a tensor named after it)",
                "an expression".into(),
            );
            return None;
        };
        Some((w, ty, weight, axis))
    }

    /// The parameter whose use produced `v`, if `v` is one.
    fn param_behind(&self, v: ValueId) -> Option<usize> {
        self.m
            .blocks
            .iter()
            .flat_map(|b| &b.insts)
            .find(|i| i.results.contains(&v))
            .and_then(|i| match i.kind {
                InstKind::Param(p) => Some(p),
                _ => None,
            })
    }

    /// The tensor `{weight path}_{suffix}` of type `pty` (`[w.shape[axis]]`)
    /// with `role`: created at the first call, reused by later ones.
    fn derived_param(
        &mut self,
        weight: usize,
        suffix: &str,
        role: ParamRole,
        init: Init,
        pty: Type,
        span: Span,
    ) -> Option<ValueId> {
        let path = format!("{}_{suffix}", self.m.params[weight].path);
        let index = match self.m.param_index.get(&path) {
            Some(&i) if self.m.params[i].role == role && self.m.params[i].ty == pty => i,
            Some(_) => {
                self.bad_setting(
                    span,
                    if suffix == "g" {
                        "weight_norm"
                    } else {
                        "spectral_norm"
                    },
                    &format!("no other parameter named `{path}` (it adds one of that name)"),
                    format!("`{path}` declared already"),
                );
                return None;
            }
            None => {
                self.m.params.push(Param {
                    path: path.clone(),
                    ty: pty.clone(),
                    init,
                    span,
                    role,
                });
                self.m.param_index.insert(path, self.m.params.len() - 1);
                self.m.params.len() - 1
            }
        };
        tensor_of(self.emit1(InstKind::Param(index), pty, span))
    }

    fn op(&mut self, op: Op, args: Vec<ValueId>, span: Span) -> Option<ValueId> {
        tensor_of(self.emit_op(op, args, span))
    }

    fn sum_over(
        &mut self,
        x: ValueId,
        axes: Vec<usize>,
        keepdim: bool,
        span: Span,
    ) -> Option<ValueId> {
        let op = Op::Reduce {
            op: ReduceOp::Sum,
            axes,
            keepdim,
        };
        self.op(op, vec![x], span)
    }

    fn constant(&mut self, c: f64, ty: &Type, span: Span) -> Option<ValueId> {
        tensor_of(self.emit1(InstKind::Const(c), Type::new(ty.dtype, vec![]), span))
    }

    /// `w * reshape(g, kept) / sqrt(sum(w², every axis but axis))`.
    fn weight_norm_ops(
        &mut self,
        w: ValueId,
        ty: &Type,
        weight: usize,
        axis: usize,
        role: ParamRole,
        span: Span,
    ) -> Option<ValueId> {
        let g = self.derived_param(weight, "g", role, Init::Ones, axis_type(ty, axis), span)?;
        let kept = kept_axis_shape(ty, axis);
        let others = other_axes(ty, axis);
        let sq = self.op(Op::Mul, vec![w, w], span)?;
        let sumsq = self.sum_over(sq, others, true, span)?;
        let norm = self.op(Op::Sqrt, vec![sumsq], span)?;
        let g = self.op(Op::Reshape { shape: kept }, vec![g], span)?;
        let scale = self.op(Op::Div, vec![g, norm], span)?;
        self.op(Op::Mul, vec![w, scale], span)
    }

    /// `w * coeff / σ` with `σ = ‖W normalize(Wᵀu)‖`.
    #[allow(clippy::too_many_arguments)]
    fn spectral_norm_ops(
        &mut self,
        w: ValueId,
        ty: &Type,
        weight: usize,
        axis: usize,
        coeff: f64,
        role: ParamRole,
        span: Span,
    ) -> Option<ValueId> {
        let init = Init::Normal { std: 1.0 };
        let u = self.derived_param(weight, "u", role, init, axis_type(ty, axis), span)?;
        let kept = kept_axis_shape(ty, axis);
        let others = other_axes(ty, axis);
        let all: Vec<usize> = (0..ty.rank()).collect();
        let u = self.op(Op::Reshape { shape: kept }, vec![u], span)?;
        // v = normalize(Wᵀu): contract the output axis.
        let wu = self.op(Op::Mul, vec![w, u], span)?;
        let t = self.sum_over(wu, vec![axis], true, span)?;
        let tt = self.op(Op::Mul, vec![t, t], span)?;
        let tsum = self.sum_over(tt, all.clone(), false, span)?;
        let tnorm = self.op(Op::Sqrt, vec![tsum], span)?;
        let eps = self.constant(NORMALIZE_EPS, ty, span)?;
        let tnorm = self.op(Op::Maximum, vec![tnorm, eps], span)?;
        let v = self.op(Op::Div, vec![t, tnorm], span)?;
        // σ = ‖W v‖: contract every other axis.
        let wv = self.op(Op::Mul, vec![w, v], span)?;
        let s = self.sum_over(wv, others, true, span)?;
        let ss = self.op(Op::Mul, vec![s, s], span)?;
        let ssum = self.sum_over(ss, all, false, span)?;
        let sigma = self.op(Op::Sqrt, vec![ssum], span)?;
        let scaled = if coeff == 1.0 {
            w
        } else {
            let c = self.constant(coeff, ty, span)?;
            self.op(Op::Mul, vec![w, c], span)?
        };
        self.op(Op::Div, vec![scaled, sigma], span)
    }
}
