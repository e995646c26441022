//! Compiled kernels against the scalar reference ([`Kernel::eval_row`]).

use super::strip::Func;
use super::*;

/// Deterministic values in [-3, 3).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 6.0 - 3.0
        })
        .collect()
}

/// Run `k` on one row of `len` and compare every output with the
/// reference to `tol` (relative, with an absolute floor of `tol`).
fn check(k: &Kernel, len: usize, tol: f64) {
    let inputs: Vec<Vec<f64>> = k
        .inputs
        .iter()
        .enumerate()
        .map(|(i, kind)| match kind {
            InputKind::Row => values(len, i as u64 + 1),
            InputKind::Scalar => values(1, i as u64 + 100),
        })
        .collect();
    let refs: Vec<&[f64]> = inputs.iter().map(|v| v.as_slice()).collect();
    let expected = k.eval_row(&refs, len);
    let levels = k.levels();
    let compiled = compile(k).expect("compiles");
    let got: Vec<Vec<f64>> = match k.ty {
        KType::F32 => {
            let mut ins: Vec<Vec<f32>> = inputs
                .iter()
                .map(|v| v.iter().map(|x| *x as f32).collect())
                .collect();
            let mut outs: Vec<Vec<f32>> = k
                .outputs
                .iter()
                .map(|o| vec![f32::NAN; if levels[*o] == Level::Full { len } else { 1 }])
                .collect();
            let mut ptrs: Vec<*mut u8> =
                ins.iter_mut().map(|v| v.as_mut_ptr() as *mut u8).collect();
            ptrs.extend(outs.iter_mut().map(|v| v.as_mut_ptr() as *mut u8));
            unsafe { call(&compiled, &ptrs, len) };
            outs.iter()
                .map(|v| v.iter().map(|x| *x as f64).collect())
                .collect()
        }
        KType::F64 => {
            let mut ins = inputs.clone();
            let mut outs: Vec<Vec<f64>> = k
                .outputs
                .iter()
                .map(|o| vec![f64::NAN; if levels[*o] == Level::Full { len } else { 1 }])
                .collect();
            let mut ptrs: Vec<*mut u8> =
                ins.iter_mut().map(|v| v.as_mut_ptr() as *mut u8).collect();
            ptrs.extend(outs.iter_mut().map(|v| v.as_mut_ptr() as *mut u8));
            unsafe { call(&compiled, &ptrs, len) };
            outs
        }
    };
    for (o, (e, g)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(e.len(), g.len(), "output {o} length");
        for (i, (a, b)) in e.iter().zip(g).enumerate() {
            let err = (a - b).abs() / a.abs().max(1.0);
            assert!(
                a == b || err <= tol || (a.is_nan() && b.is_nan()),
                "{:?} len {len}: output {o}[{i}] = {b}, reference {a}",
                k.ty
            );
        }
    }
}

fn both(build: impl Fn(KType) -> Kernel) {
    // Lengths: empty, below one vector, tails, one strip and beyond.
    for len in [0, 1, 3, 4, 7, 64, 129, 300] {
        check(&build(KType::F64), len, 1e-12);
        check(&build(KType::F32), len, 1e-4);
    }
}

#[test]
fn arithmetic_with_a_broadcast_scalar() {
    both(|ty| Kernel {
        ty,
        inputs: vec![InputKind::Row, InputKind::Scalar, InputKind::Row],
        insts: vec![
            Inst::Input(0),
            Inst::Input(1),
            Inst::Input(2),
            Inst::Binary(Binary::Mul, 0, 1),
            Inst::Binary(Binary::Add, 3, 2),
            Inst::Binary(Binary::Sub, 4, 1),
            Inst::Binary(Binary::Div, 5, 1),
            Inst::Binary(Binary::Max, 6, 2),
            Inst::Binary(Binary::Min, 7, 0),
            Inst::Const(0.5),
            Inst::Binary(Binary::Mul, 8, 9),
        ],
        outputs: vec![10, 4],
    });
}

#[test]
fn every_unary_function() {
    let all = [
        Unary::Neg,
        Unary::Abs,
        Unary::Sqrt,
        Unary::Relu,
        Unary::Strip(Func::Exp),
        Unary::Strip(Func::Log),
        Unary::Strip(Func::Tanh),
        Unary::Strip(Func::Sigmoid),
        Unary::Strip(Func::Gelu),
        Unary::Strip(Func::Softplus),
        Unary::Strip(Func::Sin),
        Unary::Strip(Func::Cos),
        Unary::LeakyRelu(0.1),
        Unary::Clamp(-1.0, 0.5),
    ];
    for u in all {
        both(|ty| {
            // Log and sqrt of |x| + 0.1, so that both are defined.
            let positive = matches!(u, Unary::Strip(Func::Log) | Unary::Sqrt);
            let mut insts = vec![Inst::Input(0)];
            if positive {
                insts.push(Inst::Unary(Unary::Abs, 0));
                insts.push(Inst::Const(0.1));
                insts.push(Inst::Binary(Binary::Add, 1, 2));
            }
            let x = insts.len() - 1;
            insts.push(Inst::Unary(u, x));
            Kernel {
                ty,
                inputs: vec![InputKind::Row],
                outputs: vec![insts.len() - 1],
                insts,
            }
        });
    }
}

#[test]
fn compares_selects_and_pow() {
    for c in [Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::Eq, Cmp::Ne] {
        both(|ty| Kernel {
            ty,
            inputs: vec![InputKind::Row, InputKind::Row],
            insts: vec![
                Inst::Input(0),
                Inst::Input(1),
                Inst::Binary(Binary::Cmp(c), 0, 1),
                Inst::Select(2, 0, 1),
                Inst::Unary(Unary::Abs, 0),
                Inst::Const(1.5),
                Inst::Binary(Binary::Pow, 4, 5),
                Inst::Const(2.0),
                Inst::Binary(Binary::Pow, 1, 7),
            ],
            outputs: vec![2, 3, 6, 8],
        });
    }
}

#[test]
fn row_reductions_and_their_consumers() {
    // Layer norm: (x - mean) / sqrt(var + eps) * g, with the row statistics
    // as outputs too.
    both(|ty| Kernel {
        ty,
        inputs: vec![InputKind::Row, InputKind::Row],
        insts: vec![
            Inst::Input(0),
            Inst::Reduce(RowReduce::Sum, 0),
            Inst::Const(0.01),
            Inst::Binary(Binary::Mul, 1, 2),
            Inst::Binary(Binary::Sub, 0, 3),
            Inst::Binary(Binary::Mul, 4, 4),
            Inst::Reduce(RowReduce::Sum, 5),
            Inst::Binary(Binary::Mul, 6, 2),
            Inst::Const(1e-5),
            Inst::Binary(Binary::Add, 7, 8),
            Inst::Unary(Unary::Sqrt, 9),
            Inst::Binary(Binary::Div, 4, 10),
            Inst::Input(1),
            Inst::Binary(Binary::Mul, 11, 12),
        ],
        outputs: vec![13, 3, 10, 4],
    });
}

#[test]
fn softmax_logsumexp_max_and_min() {
    both(|ty| Kernel {
        ty,
        inputs: vec![InputKind::Row],
        insts: vec![
            Inst::Input(0),
            Inst::Reduce(RowReduce::Max, 0),
            Inst::Binary(Binary::Sub, 0, 1),
            Inst::Unary(Unary::Strip(Func::Exp), 2),
            Inst::Reduce(RowReduce::Sum, 3),
            Inst::Binary(Binary::Div, 3, 4),
            Inst::Unary(Unary::Strip(Func::Log), 4),
            Inst::Binary(Binary::Add, 6, 1),
            Inst::Reduce(RowReduce::Min, 0),
            Inst::Binary(Binary::Sub, 2, 6),
        ],
        outputs: vec![5, 7, 8, 9],
    });
}

#[test]
fn per_row_transcendentals_and_scalar_inputs() {
    both(|ty| Kernel {
        ty,
        inputs: vec![InputKind::Row, InputKind::Scalar],
        insts: vec![
            Inst::Input(0),
            Inst::Input(1),
            Inst::Reduce(RowReduce::Sum, 0),
            Inst::Binary(Binary::Mul, 2, 1),
            Inst::Unary(Unary::Strip(Func::Tanh), 3),
            Inst::Binary(Binary::Pow, 4, 1),
            Inst::Binary(Binary::Mul, 0, 5),
        ],
        outputs: vec![6, 5],
    });
}

#[test]
fn kernels_compile_once() {
    let k = Kernel {
        ty: KType::F64,
        inputs: vec![InputKind::Row],
        insts: vec![
            Inst::Input(0),
            Inst::Const(3.25),
            Inst::Binary(Binary::Mul, 0, 1),
        ],
        outputs: vec![2],
    };
    let first = compile(&k).expect("compiles").func as usize;
    for _ in 0..3 {
        assert_eq!(compile(&k).expect("compiles").func as usize, first);
    }
    assert!(compile_stats().kernels >= 1);
}

#[test]
fn malformed_kernels_are_refused() {
    let k = Kernel {
        ty: KType::F32,
        inputs: vec![],
        insts: vec![Inst::Input(0)],
        outputs: vec![0],
    };
    assert!(compile(&k).is_err());
    let k = Kernel {
        ty: KType::F32,
        inputs: vec![InputKind::Scalar],
        insts: vec![Inst::Input(0), Inst::Reduce(RowReduce::Sum, 0)],
        outputs: vec![1],
    };
    assert!(compile(&k).is_err());
}

/// Attention's masked softmax: `softmax(where(mask, x / c, -1e9))`, the
/// exponentials stashed in the output between the sum and the quotient.
fn masked_softmax(ty: KType, outputs: Vec<KValue>) -> Kernel {
    Kernel {
        ty,
        inputs: vec![InputKind::Row, InputKind::Row],
        insts: vec![
            Inst::Input(0),
            Inst::Input(1),
            Inst::Const(5.656854),
            Inst::Binary(Binary::Div, 0, 2),
            Inst::Const(-1e9),
            Inst::Const(0.0),
            Inst::Binary(Binary::Cmp(Cmp::Gt), 1, 5),
            Inst::Select(6, 3, 4),
            Inst::Reduce(RowReduce::Max, 7),
            Inst::Binary(Binary::Sub, 7, 8),
            Inst::Unary(Unary::Strip(Func::Exp), 9),
            Inst::Reduce(RowReduce::Sum, 10),
            Inst::Binary(Binary::Div, 10, 11),
            Inst::Binary(Binary::Mul, 10, 11),
            Inst::Unary(Unary::Strip(Func::Log), 12),
        ],
        outputs,
    }
}

#[test]
fn stashed_exponentials_match_the_reference() {
    // The quotient alone; twice (two buffers); beside a second reader of
    // the exponentials in the last pass; beside a strip call on the output.
    for outputs in [
        vec![12],
        vec![12, 12],
        vec![12, 13],
        vec![14, 12],
        vec![10, 12],
    ] {
        both(|ty| masked_softmax(ty, outputs.clone()));
    }
}

#[test]
fn stash_only_where_the_consumer_alone_reads_it() {
    let stash =
        |outputs: Vec<KValue>| codegen::passes::stash_of(&masked_softmax(KType::F32, outputs));
    // `exp` (10) lives in the quotient's (12) buffer, output slot 2 (after
    // the two inputs).
    assert_eq!(stash(vec![12]), vec![(10, 2)]);
    assert_eq!(stash(vec![12, 12]), vec![(10, 2)]);
    assert_eq!(stash(vec![14, 12]), vec![(10, 3)]);
    // A second reader in the last pass, or `exp` an output itself: none.
    assert_eq!(stash(vec![12, 13]), vec![]);
    assert_eq!(stash(vec![10, 12]), vec![]);
    // Only the row maximum: nothing to keep.
    assert_eq!(stash(vec![8]), vec![]);
}

/// Attention's masked softmax as a row function: `where(mask, x / c,
/// -1e9)` written by the first pass into the softmax's buffer, the row
/// call in place, then readers of the result; and a softmax of an input
/// read in place from it.
fn row_softmax(ty: KType, outputs: Vec<KValue>) -> Kernel {
    use super::strip::RowFunc;
    // `masked_softmax`'s first eight instructions: the masked scores (7).
    let mut insts = masked_softmax(ty, vec![]).insts;
    insts.truncate(8);
    insts.extend([
        Inst::RowFn(RowFunc::Softmax, 7),
        Inst::Binary(Binary::Mul, 8, 0),
        Inst::Reduce(RowReduce::Sum, 9),
        Inst::Binary(Binary::Sub, 8, 10),
    ]);
    // Every row function is an output: the input's softmax is there only
    // when it is asked for.
    if outputs.contains(&12) {
        insts.push(Inst::RowFn(RowFunc::Softmax, 0));
    }
    Kernel {
        ty,
        inputs: vec![InputKind::Row, InputKind::Row],
        insts,
        outputs,
    }
}

#[test]
fn row_functions_match_the_reference() {
    // The softmax alone; twice (a copy to the second buffer); with its
    // operand an output too; read in a later pass by a product, by a row
    // sum and what follows it; of an input, beside the other.
    for outputs in [
        vec![8],
        vec![8, 8],
        vec![7, 8],
        vec![8, 9],
        vec![8, 11],
        vec![12, 8],
        vec![12, 8, 11],
    ] {
        both(|ty| row_softmax(ty, outputs.clone()));
    }
    // A row function must be an output (its buffer holds it).
    let mut k = row_softmax(KType::F32, vec![9]);
    assert!(k.validate().is_err());
    assert!(compile(&k).is_err());
    k.outputs = vec![8, 9];
    assert!(k.validate().is_ok());
}

/// Run `k` (f32, one row input) on `row`; its per-row outputs.
fn row_outputs_f32(k: &Kernel, row: &[f32]) -> Vec<f32> {
    let compiled = compile(k).expect("compiles");
    let mut input = row.to_vec();
    let mut outs = vec![f32::NAN; k.outputs.len()];
    let mut ptrs: Vec<*mut u8> = vec![input.as_mut_ptr() as *mut u8];
    for o in outs.iter_mut() {
        ptrs.push(o as *mut f32 as *mut u8);
    }
    unsafe { call(&compiled, &ptrs, row.len()) };
    outs
}

/// An f32 kernel over one row input whose outputs are `reductions` of it,
/// in order.
fn reductions_of_a_row(reductions: &[RowReduce]) -> Kernel {
    let mut insts = vec![Inst::Input(0)];
    insts.extend(reductions.iter().map(|r| Inst::Reduce(*r, 0)));
    Kernel {
        ty: KType::F32,
        inputs: vec![InputKind::Row],
        insts,
        outputs: (1..=reductions.len()).collect(),
    }
}

/// Max and min keep several vector accumulators (an unrolled loop); they
/// must still give what one accumulator gives: the exact extreme, `+0`
/// over `-0` for max and `-0` for min wherever the zeros sit, and NaN
/// from a NaN in any slot, in the single-vector loop or in the tail, of
/// rows that span one strip or several.
#[test]
fn max_and_min_do_not_depend_on_their_accumulators() {
    let k = reductions_of_a_row(&[RowReduce::Max, RowReduce::Min]);
    for len in [1, 5, 16, 23, 64, 77, 128, 300] {
        let values: Vec<f32> = values(len, 7).iter().map(|v| *v as f32).collect();
        let got = row_outputs_f32(&k, &values);
        let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = values.iter().copied().fold(f32::INFINITY, f32::min);
        assert_eq!(got, vec![max, min], "len {len}");
        for at in 0..len {
            // Zeros of both signs, one `+0` (or `-0`) at `at`.
            let mut zeros = vec![-0.0f32; len];
            zeros[at] = 0.0;
            let got = row_outputs_f32(&k, &zeros);
            assert_eq!(
                got[0].to_bits(),
                0f32.to_bits(),
                "max, len {len}, +0 at {at}"
            );
            let mut zeros = vec![0.0f32; len];
            zeros[at] = -0.0;
            let got = row_outputs_f32(&k, &zeros);
            assert_eq!(
                got[1].to_bits(),
                (-0f32).to_bits(),
                "min, len {len}, -0 at {at}"
            );
            let mut nan = values.clone();
            nan[at] = f32::NAN;
            let got = row_outputs_f32(&k, &nan);
            assert!(got[0].is_nan() && got[1].is_nan(), "len {len}, NaN at {at}");
        }
    }
}

/// A sum's order, as `codegen::loops` documents it: per strip of 128
/// values, four vector accumulators over the unrolled steps (the single
/// vectors after them into the first), the scalar tail apart; the strips'
/// accumulators added up slot by slot; then the slots in order, their
/// lanes, and the tail. A max beside the sum does not change it.
#[test]
fn a_sum_adds_up_in_its_documented_order() {
    fn documented(row: &[f32]) -> f32 {
        let (mut slots, mut tail) = ([[0f32; 4]; 4], 0f32);
        for strip in row.chunks(128) {
            let (mut local, mut local_tail) = ([[0f32; 4]; 4], 0f32);
            let vectors = strip.len() / 4;
            let unrolled = strip.len() / 16 * 4;
            for v in 0..vectors {
                let slot = if v < unrolled { v % 4 } else { 0 };
                for l in 0..4 {
                    local[slot][l] += strip[v * 4 + l];
                }
            }
            for x in &strip[vectors * 4..] {
                local_tail += *x;
            }
            for s in 0..4 {
                for l in 0..4 {
                    slots[s][l] += local[s][l];
                }
            }
            tail += local_tail;
        }
        let mut v = slots[0];
        for slot in &slots[1..] {
            for l in 0..4 {
                v[l] += slot[l];
            }
        }
        let mut out = tail;
        for x in v {
            out += x;
        }
        out
    }
    let sum_only = reductions_of_a_row(&[RowReduce::Sum]);
    let with_max = reductions_of_a_row(&[RowReduce::Sum, RowReduce::Max]);
    for len in [3, 8, 16, 23, 64, 100, 128, 150, 300] {
        let row: Vec<f32> = values(len, 11).iter().map(|v| (*v * 1e3) as f32).collect();
        let want = documented(&row).to_bits();
        assert_eq!(
            row_outputs_f32(&sum_only, &row)[0].to_bits(),
            want,
            "len {len}"
        );
        assert_eq!(
            row_outputs_f32(&with_max, &row)[0].to_bits(),
            want,
            "len {len}"
        );
    }
}

/// The attention softmax's kernel shape: scaled, masked, softmax.
fn masked_row_softmax(extra: Option<Inst>) -> Kernel {
    let mut insts = vec![
        Inst::Input(0),
        Inst::Const(0.125),
        Inst::Binary(Binary::Mul, 0, 1),
        Inst::Input(1),
        Inst::Const(-1e9),
        Inst::Select(3, 2, 4),
        Inst::RowFn(strip::RowFunc::Softmax, 5),
    ];
    let mut outputs = vec![6];
    if let Some(i) = extra {
        insts.push(i);
        outputs.push(insts.len() - 1);
    }
    Kernel {
        ty: KType::F32,
        inputs: vec![InputKind::Row; 2],
        insts,
        outputs,
    }
}

/// Only a row function that nothing else in the kernel reads, of an
/// operand the kernel computes, is left to the caller.
#[test]
fn row_functions_are_deferred_only_when_nothing_reads_them() {
    assert_eq!(
        masked_row_softmax(None).deferred_row(),
        Some((strip::RowFunc::Softmax, 0))
    );
    // Read by a later instruction: called inside the kernel.
    let read = masked_row_softmax(Some(Inst::Binary(Binary::Mul, 6, 0)));
    assert_eq!(read.deferred_row(), None);
    // Another output beside it: still deferred, at its own index.
    let beside = masked_row_softmax(Some(Inst::Binary(Binary::Add, 0, 3)));
    assert_eq!(beside.deferred_row(), Some((strip::RowFunc::Softmax, 0)));
    // Of an input: no pass writes it, nothing to defer.
    let of_input = Kernel {
        ty: KType::F32,
        inputs: vec![InputKind::Row],
        insts: vec![Inst::Input(0), Inst::RowFn(strip::RowFunc::Softmax, 0)],
        outputs: vec![1],
    };
    assert_eq!(of_input.deferred_row(), None);
    for k in [&read, &beside, &of_input] {
        check(k, 64, 1e-5);
    }
    check(&masked_row_softmax(None), 64, 1e-5);
}

/// Rows run with the row function a row late give the bits of rows run
/// one at a time, for every row including the last.
#[test]
fn lagged_rows_match_rows_run_alone() {
    for (extra, len) in [(None, 64), (Some(Inst::Binary(Binary::Add, 0, 3)), 37)] {
        let k = masked_row_softmax(extra);
        let compiled = compile(&k).expect("compiles");
        let rows = 9;
        let outs = k.outputs.len();
        let x: Vec<f32> = values(rows * len, 7).iter().map(|v| *v as f32).collect();
        let mask: Vec<f32> = (0..rows * len)
            .map(|i| if i % len <= i / len { 1.0 } else { 0.0 })
            .collect();
        let run = |lagged: bool| {
            let mut out = vec![vec![f32::NAN; rows * len]; outs];
            let mut pending = None;
            for r in 0..rows {
                let mut ptrs = vec![
                    x[r * len..].as_ptr() as *mut u8,
                    mask[r * len..].as_ptr() as *mut u8,
                ];
                ptrs.extend(out.iter_mut().map(|o| o[r * len..].as_mut_ptr() as *mut u8));
                if lagged {
                    unsafe { call_lagged(&compiled, &ptrs, len, &mut pending) };
                } else {
                    unsafe { call(&compiled, &ptrs, len) };
                }
            }
            unsafe { finish_lagged(&compiled, len, &mut pending) };
            out
        };
        let (alone, lagged) = (run(false), run(true));
        for (a, b) in alone.iter().zip(&lagged) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
            assert!(a.iter().all(|v| v.is_finite()));
        }
    }
}
