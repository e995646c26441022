//! Fused attention: one step computes `softmax(mask(scale(q @ kt))) @ v`
//! batch entry by batch entry, in cache, and another its backward pass
//! ([`BoundBackward`]).
//!
//! Owns [`BoundAttention`] (a [`passes::attention::Attention`] bound to
//! concrete shapes) and its kernel (`forward`). For each batch entry (a
//! sample's head) the queries (times the scale) and the transposed keys are
//! copied into small contiguous blocks, the scores are computed eight rows
//! at a time into one block that never leaves the cache, each row is masked
//! and normalized there (rten-vecmath's `exp`, the registered f32 one; the
//! fused kernels' row softmax in f64), and the weights times the values
//! (read in place when their rows allow) go straight to the output, in the
//! order its users permute it to (as `kernels::matmul` stores products).
//! The vector pieces live in `lanes`.
//!
//! Guarantees:
//! - the values of the unfused steps up to rounding: the summation order of
//!   the products (each dot runs over its axis in order), the scale applied
//!   to the queries instead of the scores, and f32 weights below about
//!   `exp(-87.7)` of a row's largest flushed to 0 as the row softmax does
//!   (tested against the plain path in f64 and f32, and by finite
//!   differences);
//! - with a causal mask whose masked scores `fill` lie more than 1000 below
//!   a row's first score (where `exp` gives exactly 0 in f32 and f64), the
//!   masked part of the row is neither computed nor summed: its weights are
//!   0, as the unfused softmax gives them, and a NaN or infinite value only
//!   reaches the rows that weigh it (the unfused product also multiplies
//!   the zero weights by it). Any other row (a mild `fill`) is masked with
//!   `fill` and normalized whole, as unfused; a row with a NaN or an
//!   infinite score comes out NaN throughout, as unfused;
//! - the weights are written out only when a later step reads them;
//! - batch entries run in parallel blocks when the pool has threads and the
//!   work pays for them; each entry's numbers do not depend on the split.
//!
//! [`passes::attention::Attention`]: crate::passes::attention::Attention

use candle_core::{DType as CDType, Device, Storage, Tensor};
use rayon::prelude::*;

use crate::ir::{Graph, NodeId, Op};
use crate::jit::KType;
use crate::passes::attention::Attention;

use super::kernels::matmul::{operand, Operand, OutLayout, SendPtr};
use super::DimEnv;

mod backward;
mod forward;
mod lanes;

pub use backward::BoundBackward;

use forward::{entry, Operands, Scratch, Shape};
use lanes::{Lane, Out};

/// Multiply-adds from which the batch entries are split over threads.
pub(super) const THREADED_MACS: usize = 1 << 18;

/// An attention bound to one set of dims.
#[derive(Debug)]
pub struct BoundAttention {
    pub plan: Attention,
    ty: KType,
    batch: Vec<usize>,
    tq: usize,
    tk: usize,
    dh: usize,
    dv: usize,
}

#[cfg(test)]
thread_local! {
    /// Set by tests: this thread runs the portable kernels, as a CPU
    /// without AVX-512 would.
    static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread must run the portable kernels (only tests say so).
fn portable_only() -> bool {
    #[cfg(test)]
    return PORTABLE.with(|p| p.get());
    #[cfg(not(test))]
    false
}

/// A CPU tensor's elements seen as a batch (`b`) of strided matrices,
/// every addressed element checked to lie in its storage.
fn view<'d, T: Lane>(
    storage: &'d Storage,
    l: &candle_core::Layout,
    b: &[usize],
) -> candle_core::Result<Operand<'d, T>> {
    let Storage::Cpu(c) = storage else {
        candle_core::bail!("fused attention runs on the CPU only");
    };
    let d = T::cpu_storage_as_slice(c)?;
    operand(d, l.start_offset(), l.dims(), l.stride(), b)
        .ok_or_else(|| candle_core::Error::Msg("an operand lies outside its storage".into()))
}

/// The kernel type of IR type `d` when IR f32 runs as `float`.
pub(super) fn kind(d: crate::sema::hir::DType, float: CDType) -> Option<KType> {
    match (d, float) {
        (crate::sema::hir::DType::F32, CDType::F32) => Some(KType::F32),
        (crate::sema::hir::DType::F32, CDType::F64) | (crate::sema::hir::DType::F64, _) => {
            Some(KType::F64)
        }
        _ => None,
    }
}

impl BoundAttention {
    /// Bind `a` to `dims`; `Err` (the steps then run unfused) when a shape
    /// is not bound or the types do not fit.
    pub fn new(g: &Graph, a: &Attention, dims: &DimEnv, float: CDType) -> Result<Self, String> {
        let shape = |n: NodeId| dims.shape(&g.ty(n).shape, None).map_err(|e| e.to_string());
        let (q, kt, v) = (shape(a.q)?, shape(a.kt)?, shape(a.v)?);
        let r = q.len();
        let batch = q[..r - 2].to_vec();
        let (tq, dh, tk, dv) = (q[r - 2], q[r - 1], kt[r - 1], v[r - 1]);
        if kt[..r - 2] != batch[..] || v[..r - 2] != batch[..] || kt[r - 2] != dh || v[r - 2] != tk
        {
            return Err("the attention's operands do not fit".into());
        }
        if let Some((m, _)) = a.mask {
            if shape(m)? != [tq, tk] {
                return Err("the causal mask does not fit the scores".into());
            }
        }
        let types: Vec<_> = [a.q, a.kt, a.v, a.weights, a.mixed]
            .iter()
            .map(|n| g.ty(*n).dtype)
            .collect();
        if types.iter().any(|t| *t != types[0]) {
            return Err("mixed types".into());
        }
        let ty = kind(types[0], float).ok_or("not a float attention")?;
        debug_assert!(matches!(g.op(a.mixed), Op::MatMul));
        Ok(BoundAttention {
            plan: a.clone(),
            ty,
            batch,
            tq,
            tk,
            dh,
            dv,
        })
    }

    /// The shape of the mixed values, for `deqc bench --ops`.
    pub fn describe(&self) -> String {
        let mut s = self.batch.clone();
        s.extend([self.tq, self.tk, self.dh]);
        let causal = if self.plan.mask.is_some() {
            " causal"
        } else {
            ""
        };
        format!("attention{causal} {s:?}")
    }

    /// Run the step: the mixed values (stored in `order` when given) and,
    /// when kept, the weights.
    pub fn run(
        &self,
        lookup: &dyn Fn(NodeId) -> Option<Tensor>,
        order: Option<&[usize]>,
    ) -> Result<Vec<(NodeId, Tensor)>, String> {
        let get = |n: NodeId| lookup(n).ok_or_else(|| format!("operand {n} is not live"));
        let (q, kt, v) = (get(self.plan.q)?, get(self.plan.kt)?, get(self.plan.v)?);
        match self.ty {
            KType::F32 => self.typed::<f32>(&q, &kt, &v, order),
            KType::F64 => self.typed::<f64>(&q, &kt, &v, order),
        }
        .map_err(|e| e.to_string())
    }

    fn typed<T: Lane>(
        &self,
        q: &Tensor,
        kt: &Tensor,
        v: &Tensor,
        order: Option<&[usize]>,
    ) -> candle_core::Result<Vec<(NodeId, Tensor)>> {
        let (sq, lq) = q.storage_and_layout();
        let (sk, lk) = kt.storage_and_layout();
        let (sv, lv) = v.storage_and_layout();
        let b = &self.batch;
        let (q, kt, v) = (
            view::<T>(&sq, lq, b)?,
            view::<T>(&sk, lk, b)?,
            view::<T>(&sv, lv, b)?,
        );
        let entries: usize = b.iter().product();
        let mut mixed_shape = b.clone();
        mixed_shape.extend([self.tq, self.dv]);
        let layout = order.and_then(|o| OutLayout::permuted(&mixed_shape, o));
        let (starts, rs, cs) = match &layout {
            Some(l) => l.entries(b),
            None => (
                (0..entries).map(|e| e * self.tq * self.dv).collect(),
                self.dv,
                1,
            ),
        };
        let mixed_len = entries * self.tq * self.dv;
        let weights_len = entries * self.tq * self.tk;
        let mut mixed: Vec<T> = Vec::with_capacity(mixed_len);
        let mut weights: Vec<T> = if self.plan.keeps_weights {
            Vec::with_capacity(weights_len)
        } else {
            Vec::new()
        };
        let shape = Shape {
            tq: self.tq,
            tk: self.tk,
            dh: self.dh,
            dv: self.dv,
            scale: self.plan.scale,
            fill: self.plan.mask.map(|(_, f)| f),
        };
        let (mixed_ptr, weights_ptr) = (SendPtr(mixed.as_mut_ptr()), SendPtr(weights.as_mut_ptr()));
        let keeps = self.plan.keeps_weights;
        let run_block = |lo: usize, hi: usize| {
            let mut scratch = Scratch::<T>::new(&shape);
            #[allow(clippy::needless_range_loop)]
            for e in lo..hi {
                let (mp, wp) = (&mixed_ptr, &weights_ptr);
                let out = Out {
                    // SAFETY: each entry's start lies inside the output
                    // (the layout permutes its elements).
                    ptr: unsafe { mp.0.add(starts[e]) },
                    rs,
                    cs,
                };
                let w = keeps.then(|| unsafe { wp.0.add(e * shape.tq * shape.tk) });
                let at = [q.offsets[e], kt.offsets[e], v.offsets[e]];
                let ops = Operands {
                    q: (q.data, at[0], q.rs, q.cs),
                    kt: (kt.data, at[1], kt.rs, kt.cs),
                    v: (v.data, at[2], v.rs, v.cs),
                };
                // SAFETY: `operand` checked every element the views
                // address; `out` and `w` address this entry's own elements.
                unsafe { entry(&shape, &mut scratch, &ops, &out, w) };
            }
        };
        let threads = crate::threads::available().max(1);
        let macs = entries * self.tq * self.tk * (self.dh + self.dv);
        if threads > 1 && entries >= threads && macs >= THREADED_MACS {
            let per = entries.div_ceil(threads);
            (0..entries.div_ceil(per))
                .into_par_iter()
                .for_each(|k| run_block(k * per, ((k + 1) * per).min(entries)));
        } else {
            run_block(0, entries);
        }
        // SAFETY: every entry wrote all of its mixed values (and weights
        // when kept), and the entries cover the outputs.
        unsafe {
            mixed.set_len(mixed_len);
            if keeps {
                weights.set_len(weights_len);
            }
        }
        let stored: Vec<usize> = match &layout {
            Some(l) => l.order.iter().map(|a| mixed_shape[*a]).collect(),
            None => mixed_shape.clone(),
        };
        let mut t = Tensor::from_vec(mixed, stored, &Device::Cpu)?;
        if let Some(l) = &layout {
            t = t.permute(l.inverse.clone())?;
        }
        let mut out = vec![(self.plan.mixed, t)];
        if keeps {
            let mut ws = b.clone();
            ws.extend([self.tq, self.tk]);
            out.push((
                self.plan.weights,
                Tensor::from_vec(weights, ws, &Device::Cpu)?,
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    //! The portable kernels (a CPU without AVX-512) against the AVX-512 ones
    //! and against candle's ops, forward and backward, in f32 and f64. The
    //! integration tests (`tests/attention.rs`) cover the rest on the
    //! machine's own kernels.

    use super::*;
    use crate::passes::attention::Scale;
    use crate::passes::attention_backward::AttentionBackward;
    use crate::passes::fuse::Step;

    fn node(i: usize) -> NodeId {
        NodeId(petgraph::graph::NodeIndex::new(i))
    }

    fn sample(shape: &[usize], seed: f64, dt: CDType) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::arange(0f64, n as f64, &Device::Cpu)
            .and_then(|t| ((t * 0.611)? + seed)?.sin())
            .and_then(|t| t.reshape(shape))
            .and_then(|t| t.to_dtype(dt))
            .expect("sample")
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        let flat = |t: &Tensor| {
            t.to_dtype(CDType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .expect("values")
        };
        flat(a)
            .iter()
            .zip(flat(b))
            .fold(0.0, |m, (x, y)| m.max((x - y).abs()))
    }

    /// softmax(where(causal, q @ kt / c, -1e9)) @ v and its gradients by
    /// candle's ops; the step's results in the portable and wide kernels.
    fn check(dt: CDType, tol: f64) {
        let (b, t, dh, dv, c) = (2usize, 21usize, 16usize, 32usize, 4.0);
        let q = sample(&[b, t, dh], 0.1, dt);
        let kt = sample(&[b, dh, t], 0.7, dt);
        let v = sample(&[b, t, dv], 1.3, dt);
        let d_out = sample(&[b, t, dv], 2.9, dt);
        let mask = Tensor::tril2(t, dt, &Device::Cpu).expect("mask");
        let s = (q.matmul(&kt).expect("s") / c).expect("scale");
        let filled = Tensor::full(-1e9f64, s.dims(), &Device::Cpu)
            .and_then(|f| f.to_dtype(dt))
            .expect("fill");
        let masked = mask
            .broadcast_as(s.dims())
            .and_then(|m| m.ne(0.0))
            .and_then(|m| m.where_cond(&s, &filled))
            .expect("where");
        let p = candle_nn_softmax(&masked);
        let mixed = p.matmul(&v).expect("mixed");
        // Backward by the VJP formulas.
        let dp = d_out.matmul(&v.t().expect("vt")).expect("dp");
        let sum = (&dp * &p).and_then(|x| x.sum_keepdim(2)).expect("sum");
        let ds = (&p * dp.broadcast_sub(&sum).expect("sub")).expect("ds");
        let ds = (mask.broadcast_as(ds.dims()).expect("m") * ds).expect("mask ds");
        let ds = (ds / c).expect("ds scale");
        let dv_want = p.t().and_then(|pt| pt.matmul(&d_out)).expect("dv");
        let dq_want = ds.matmul(&kt.t().expect("k")).expect("dq");
        let dkt_want = q.t().and_then(|qt| qt.matmul(&ds)).expect("dkt");
        let a = Attention {
            q: node(0),
            kt: node(1),
            v: node(2),
            scores: node(3),
            group: 0,
            weights: node(4),
            mixed: node(5),
            scale: Some(Scale::Div(c)),
            mask: Some((node(6), -1e9)),
            keeps_weights: true,
        };
        let ty = if dt == CDType::F32 {
            KType::F32
        } else {
            KType::F64
        };
        let fwd = BoundAttention {
            plan: a.clone(),
            ty,
            batch: vec![b],
            tq: t,
            tk: t,
            dh,
            dv,
        };
        let bwd = backward::BoundBackward::for_test(
            AttentionBackward {
                forward: 0,
                d_mixed: node(7),
                d_weights: node(8),
                group: 1,
                d_scores: node(9),
                d_values: node(10),
                d_queries: node(11),
                d_keys_t: node(12),
                unfused: vec![Step::Node(node(8))],
            },
            a,
            ty,
            (vec![b], t, dh, dv),
        );
        for portable in [true, false] {
            PORTABLE.with(|f| f.set(portable));
            let values = [(0, &q), (1, &kt), (2, &v), (7, &d_out)];
            let lookup = |n: NodeId| {
                values
                    .iter()
                    .find(|(i, _)| node(*i) == n)
                    .map(|(_, t)| (*t).clone())
            };
            let outs = fwd.run(&lookup, None).expect("forward");
            assert!(
                max_diff(&outs[0].1, &mixed) <= tol,
                "mixed, portable {portable}"
            );
            assert!(
                max_diff(&outs[1].1, &p) <= tol,
                "weights, portable {portable}"
            );
            let w = outs[1].1.clone();
            let lookup = |n: NodeId| {
                if n == node(4) {
                    return Some(w.clone());
                }
                values
                    .iter()
                    .find(|(i, _)| node(*i) == n)
                    .map(|(_, t)| (*t).clone())
            };
            let grads = bwd.run(&lookup, [None, None, None]).expect("backward");
            for ((_, got), want) in grads.iter().zip([&dv_want, &dq_want, &dkt_want]) {
                assert!(max_diff(got, want) <= tol, "gradient, portable {portable}");
            }
        }
        PORTABLE.with(|f| f.set(false));
    }

    fn candle_nn_softmax(x: &Tensor) -> Tensor {
        let max = x.max_keepdim(2).expect("max");
        let e = x.broadcast_sub(&max).and_then(|d| d.exp()).expect("exp");
        let s = e.sum_keepdim(2).expect("sum");
        e.broadcast_div(&s).expect("div")
    }

    #[test]
    fn portable_and_wide_kernels_equal_candles_ops() {
        check(CDType::F64, 1e-12);
        check(CDType::F32, 2e-5);
    }
}
