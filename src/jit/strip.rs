//! The registered `extern "C"` strip functions that every compiled kernel
//! calls for its transcendentals, and their scalar references.
//!
//! Owns one function per (function, float type), each mapping `n`
//! consecutive elements. Guarantees: f32 `exp`, `tanh`, `sigmoid`, `gelu`
//! (as `x · sigmoid(2u)`, see [`gelu_f32`]), `sin` and `cos` use
//! rten-vecmath's SIMD kernels (the same ones the plain executor uses for
//! the first four, see `exec::kernels::simd`); f32 `log`,
//! `softplus`, `pow` and every f64 function use Rust's own float methods with
//! the plain executor's formulas, so fused f64 results match the plain path
//! to rounding. rten-vecmath has no `log` and no f64 routines, which is why
//! those are scalar.

use std::mem::MaybeUninit;

use rten_simd::SimdUnaryOp;

use super::{Binary, Cmp, KType, Unary};

/// A transcendental with a strip function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Func {
    Exp,
    Log,
    Tanh,
    Sigmoid,
    Gelu,
    Softplus,
    Sin,
    Cos,
}

/// `dst[i] = f(src[i])` for `i < n`.
pub type UnaryStrip = unsafe extern "C" fn(*const u8, *mut u8, i64);
/// `dst[i] = a[i * sa] ^ b[i * sb]` for `i < n` (strides 0 or 1).
pub type PowStrip = unsafe extern "C" fn(*const u8, i64, *const u8, i64, *mut u8, i64);

use crate::autodiff::vjp::{GELU_C, GELU_K};

fn gelu64(v: f64) -> f64 {
    // candle's own formula, so that f64 results match the plain path.
    0.5 * v * (1.0 + f64::tanh(GELU_C * v * (1.0 + GELU_K * v * v)))
}

fn softplus64(x: f64) -> f64 {
    x.max(0.0) + ((-x.abs()).exp() + 1.0).ln()
}

fn softplus32(x: f32) -> f32 {
    x.max(0.0) + ((-x.abs()).exp() + 1.0).ln()
}

fn scalar64(f: Func, x: f64) -> f64 {
    match f {
        Func::Exp => x.exp(),
        Func::Log => x.ln(),
        Func::Tanh => x.tanh(),
        Func::Sigmoid => 1.0 / ((-x).exp() + 1.0),
        Func::Gelu => gelu64(x),
        Func::Softplus => softplus64(x),
        Func::Sin => x.sin(),
        Func::Cos => x.cos(),
    }
}

/// # Safety
/// `src` and `dst` hold `n` f32 values each and do not overlap.
unsafe fn map32(f: Func, src: *const u8, dst: *mut u8, n: i64) {
    let n = n.max(0) as usize;
    let src = std::slice::from_raw_parts(src as *const f32, n);
    let out = std::slice::from_raw_parts_mut(dst as *mut MaybeUninit<f32>, n);
    match f {
        Func::Exp => {
            exp_f32(src, out);
        }
        Func::Tanh => {
            let _ = rten_vecmath::Tanh {}.map(src, out);
        }
        Func::Sigmoid => {
            sigmoid_f32(src, out);
        }
        Func::Gelu => {
            gelu_f32(src, out);
        }
        Func::Sin => {
            let _ = rten_vecmath::Sin::new().map(src, out);
        }
        Func::Cos => {
            let _ = rten_vecmath::Cos::new().map(src, out);
        }
        Func::Log => {
            for (o, x) in out.iter_mut().zip(src) {
                o.write(x.ln());
            }
        }
        Func::Softplus => {
            for (o, x) in out.iter_mut().zip(src) {
                o.write(softplus32(*x));
            }
        }
    }
}

/// Inputs beyond this magnitude give `exp` 0 or infinity and `sigmoid` 0
/// or 1 in f32 already; clamping them there changes no result.
const EXP_INPUT_BOUND: f32 = 150.0;

/// rten-vecmath's `exp` (and `sigmoid`, through it) takes a path about ten
/// times slower per element for huge inputs, such as the `-1e9` that masks
/// an attention score; clamped to [`EXP_INPUT_BOUND`] they take the fast
/// path with the same results (NaN stays NaN).
fn map_bounded<'a>(
    src: &[f32],
    out: &'a mut [MaybeUninit<f32>],
    map_in_place: impl Fn(&mut [f32]),
) -> &'a [f32] {
    assert!(out.len() >= src.len(), "output shorter than input");
    let out = &mut out[..src.len()];
    for (o, x) in out.iter_mut().zip(src) {
        // `clamp` passes NaN through.
        o.write(x.clamp(-EXP_INPUT_BOUND, EXP_INPUT_BOUND));
    }
    // SAFETY: the loop above initialized every element of `out`.
    let out = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), src.len()) };
    // In place: no staging buffer to fill or zero first.
    map_in_place(out);
    out
}

/// f32 `exp` with rten-vecmath, huge inputs clamped (see `map_bounded`).
pub fn exp_f32<'a>(src: &[f32], out: &'a mut [MaybeUninit<f32>]) -> &'a [f32] {
    map_bounded(src, out, |x| rten_vecmath::Exp {}.map_mut(x))
}

/// f32 `sigmoid` with rten-vecmath, huge inputs clamped.
pub fn sigmoid_f32<'a>(src: &[f32], out: &'a mut [MaybeUninit<f32>]) -> &'a [f32] {
    map_bounded(src, out, |x| rten_vecmath::Sigmoid {}.map_mut(x))
}

/// f32 GELU (tanh form) as `x · sigmoid(2u)`, `u = c (x + k x³)`: the same
/// function, since `0.5 (1 + tanh u) = sigmoid(2u)`, with one `exp` and a
/// reciprocal where rten-vecmath's `ApproxGelu` evaluates a whole `tanh`
/// (0.44–0.53 against 0.66–0.71 ns a value on an AVX-512 machine of
/// December 2026), and closer to the f64 formula where `tanh` saturates (`1 + tanh`
/// cancels there). `2u` is clamped to ±`EXP_INPUT_BOUND`, where f32
/// `sigmoid` is 0 or 1 already, so huge inputs take `exp`'s fast path.
pub fn gelu_f32<'a>(src: &[f32], out: &'a mut [MaybeUninit<f32>]) -> &'a [f32] {
    SigmoidGelu.map(src, out)
}

struct SigmoidGelu;

impl SimdUnaryOp<f32> for SigmoidGelu {
    #[inline(always)]
    fn eval<I: rten_simd::Isa>(&self, isa: I, x: I::F32) -> I::F32 {
        use rten_simd::ops::{BitOps, FloatOps, NumOps};
        let ops = isa.f32();
        let kx2 = ops.mul(ops.mul(x, x), ops.splat(GELU_K as f32));
        let inner = ops.mul_add(kx2, x, x);
        let two_u = ops.mul(inner, ops.splat((2.0 * GELU_C) as f32));
        let bound = ops.splat(EXP_INPUT_BOUND);
        let two_u = ops.min(ops.max(two_u, ops.neg(bound)), bound);
        ops.mul(x, rten_vecmath::Sigmoid::apply(isa, two_u))
    }
}

/// # Safety
/// `src` and `dst` hold `n` f64 values each.
unsafe fn map64(f: Func, src: *const u8, dst: *mut u8, n: i64) {
    let n = n.max(0) as usize;
    let src = src as *const f64;
    let dst = dst as *mut f64;
    for i in 0..n {
        *dst.add(i) = scalar64(f, *src.add(i));
    }
}

macro_rules! strips {
    ($($name32:ident, $name64:ident => $f:path;)*) => {
        $(
            unsafe extern "C" fn $name32(src: *const u8, dst: *mut u8, n: i64) {
                map32($f, src, dst, n)
            }
            unsafe extern "C" fn $name64(src: *const u8, dst: *mut u8, n: i64) {
                map64($f, src, dst, n)
            }
        )*
        /// The strip function of `f` in type `ty`.
        pub fn unary(f: Func, ty: KType) -> UnaryStrip {
            match (f, ty) {
                $(
                    ($f, KType::F32) => $name32,
                    ($f, KType::F64) => $name64,
                )*
            }
        }
    };
}

strips! {
    exp32, exp64 => Func::Exp;
    log32, log64 => Func::Log;
    tanh32, tanh64 => Func::Tanh;
    sigmoid32, sigmoid64 => Func::Sigmoid;
    gelu32, gelu64_strip => Func::Gelu;
    softplus32_strip, softplus64_strip => Func::Softplus;
    sin32, sin64 => Func::Sin;
    cos32, cos64 => Func::Cos;
}

unsafe extern "C" fn pow32(a: *const u8, sa: i64, b: *const u8, sb: i64, dst: *mut u8, n: i64) {
    let (a, b, dst) = (a as *const f32, b as *const f32, dst as *mut f32);
    for i in 0..n.max(0) as isize {
        *dst.offset(i) = (*a.offset(i * sa as isize)).powf(*b.offset(i * sb as isize));
    }
}

unsafe extern "C" fn pow64(a: *const u8, sa: i64, b: *const u8, sb: i64, dst: *mut u8, n: i64) {
    let (a, b, dst) = (a as *const f64, b as *const f64, dst as *mut f64);
    for i in 0..n.max(0) as isize {
        *dst.offset(i) = (*a.offset(i * sa as isize)).powf(*b.offset(i * sb as isize));
    }
}

/// The strip function of `pow` in type `ty`.
pub fn pow(ty: KType) -> PowStrip {
    match ty {
        KType::F32 => pow32,
        KType::F64 => pow64,
    }
}

/// A function of a whole row, which a kernel calls once per row after the
/// pass that writes its operand (see `codegen`), instead of building it
/// from row reductions and elementwise steps at cranelift's 4-lane width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowFunc {
    /// `exp(x - max) / sum(exp(x - max))` along the row.
    Softmax,
}

pub use super::RowStrip;

/// rten-vecmath's softmax (AVX-512 or AVX2 where the CPU has them, chosen
/// at run time): about 50 ns for a row of 64 on this project's machines,
/// against about 120 ns for the same steps at 4 lanes. A row with a NaN, a
/// `+inf` or only `-inf` comes out NaN throughout, as the 4-lane steps
/// gave.
///
/// # Safety
/// `src` and `dst` hold `n` f32 values each and are the same or disjoint.
unsafe extern "C" fn softmax_row32(src: *const u8, dst: *mut u8, n: i64) {
    use rten_simd::SimdOp;
    let n = n.max(0) as usize;
    if std::ptr::eq(src, dst) {
        let row = std::slice::from_raw_parts_mut(dst as *mut f32, n);
        rten_vecmath::Softmax::new_mut(row).dispatch();
    } else {
        let from = std::slice::from_raw_parts(src as *const f32, n);
        let out = std::slice::from_raw_parts_mut(dst as *mut MaybeUninit<f32>, n);
        rten_vecmath::Softmax::new(from, out).dispatch();
    }
}

/// Softmax in f64 as the plain executor computes it: the row's maximum
/// (NaN if any element is), `exp` of the differences, their sum in order,
/// and each exponential times the sum's reciprocal.
///
/// # Safety
/// `src` and `dst` hold `n` f64 values each and are the same or disjoint.
unsafe extern "C" fn softmax_row64(src: *const u8, dst: *mut u8, n: i64) {
    let n = n.max(0) as isize;
    let (src, dst) = (src as *const f64, dst as *mut f64);
    let mut max = f64::NEG_INFINITY;
    for i in 0..n {
        let x = *src.offset(i);
        if x.is_nan() || max.is_nan() {
            max = f64::NAN;
        } else if x > max {
            max = x;
        }
    }
    let mut sum = 0.0;
    for i in 0..n {
        let e = (*src.offset(i) - max).exp();
        *dst.offset(i) = e;
        sum += e;
    }
    let r = 1.0 / sum;
    for i in 0..n {
        *dst.offset(i) *= r;
    }
}

/// The row function `f` in type `ty`.
pub fn row(f: RowFunc, ty: KType) -> RowStrip {
    match (f, ty) {
        (RowFunc::Softmax, KType::F32) => softmax_row32,
        (RowFunc::Softmax, KType::F64) => softmax_row64,
    }
}

/// The reference value of a row function: the function itself, on a copy
/// of the row in the kernel's type.
pub fn reference_row(f: RowFunc, x: &[f64], ty: KType) -> Vec<f64> {
    let n = x.len() as i64;
    match ty {
        KType::F32 => {
            let mut v: Vec<f32> = x.iter().map(|v| *v as f32).collect();
            let p = v.as_mut_ptr() as *mut u8;
            // SAFETY: `v` holds `n` values, read and written in place.
            unsafe { row(f, ty)(p, p, n) };
            v.into_iter().map(f64::from).collect()
        }
        KType::F64 => {
            let mut v = x.to_vec();
            let p = v.as_mut_ptr() as *mut u8;
            // SAFETY: as above.
            unsafe { row(f, ty)(p, p, n) };
            v
        }
    }
}

/// The reference value of a unary function (for [`super::Kernel::eval_row`]).
pub fn reference_unary(u: Unary, x: f64, ty: KType) -> f64 {
    let via_strip = |f: Func| match ty {
        KType::F64 => scalar64(f, x),
        KType::F32 => {
            let src = [x as f32];
            let mut dst = [0f32];
            // SAFETY: one element each, distinct buffers.
            unsafe { map32(f, src.as_ptr() as *const u8, dst.as_mut_ptr() as *mut u8, 1) };
            dst[0] as f64
        }
    };
    match u {
        Unary::Neg => -x,
        Unary::Abs => x.abs(),
        Unary::Sqrt => x.sqrt(),
        Unary::Relu => x.max(0.0),
        Unary::LeakyRelu(s) => {
            let r = x.max(0.0);
            r + s * (x - r)
        }
        Unary::Clamp(lo, hi) => x.max(lo).min(hi),
        Unary::Strip(f) => via_strip(f),
    }
}

/// The reference value of a binary function.
pub fn reference_binary(b: Binary, x: f64, y: f64) -> f64 {
    let bit = |c: bool| if c { 1.0 } else { 0.0 };
    match b {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
        Binary::Max => x.max(y),
        Binary::Min => x.min(y),
        Binary::Pow => x.powf(y),
        Binary::Cmp(c) => bit(match c {
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clamping huge inputs changes no bit of `exp` or `sigmoid`, NaN and
    /// infinities included, over a range that straddles the bound.
    #[test]
    fn bounded_inputs_give_rtens_own_results() {
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.1).collect();
        xs.extend([
            -1e9,
            1e9,
            -1e30,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -150.0,
            -150.5,
            149.9,
            f32::MIN,
            f32::MAX,
        ]);
        type Map = dyn Fn(&[f32], &mut [MaybeUninit<f32>]);
        let run = |f: &Map| {
            let mut out = vec![MaybeUninit::<f32>::uninit(); xs.len()];
            f(&xs, &mut out);
            // SAFETY: both maps initialize every output.
            out.iter()
                .map(|v| unsafe { v.assume_init() }.to_bits())
                .collect::<Vec<u32>>()
        };
        let pairs: [(&Map, &Map); 2] = [
            (
                &|s, o| {
                    exp_f32(s, o);
                },
                &|s, o| {
                    rten_vecmath::Exp {}.map(s, o);
                },
            ),
            (
                &|s, o| {
                    sigmoid_f32(s, o);
                },
                &|s, o| {
                    rten_vecmath::Sigmoid {}.map(s, o);
                },
            ),
        ];
        for (bounded, plain) in pairs {
            let (a, b) = (run(bounded), run(plain));
            for ((x, p), q) in xs.iter().zip(&a).zip(&b) {
                let same = p == q || (f32::from_bits(*p).is_nan() && f32::from_bits(*q).is_nan());
                assert!(
                    same,
                    "x = {x}: {} vs {}",
                    f32::from_bits(*p),
                    f32::from_bits(*q)
                );
            }
        }
    }

    /// `gelu_f32` (as `x · sigmoid(2u)`) against the f64 tanh form: within
    /// 2e-6 relative (absolute below |gelu| = 1e-3, where the tanh form
    /// itself cancels), and the tanh form's values at the extremes.
    #[test]
    fn gelu_matches_the_tanh_form() {
        let xs: Vec<f32> = (-12000..=12000).map(|i| i as f32 * 1e-3).collect();
        let mut out = vec![MaybeUninit::<f32>::uninit(); xs.len()];
        let got = gelu_f32(&xs, &mut out);
        for (x, g) in xs.iter().zip(got) {
            let exact = gelu64(*x as f64);
            let err = (*g as f64 - exact).abs() / exact.abs().max(1e-3);
            assert!(err < 2e-6, "gelu({x}) = {g}, exact {exact}");
        }
        let extremes = [
            1e9,
            -1e9,
            1e30,
            -1e30,
            f32::MAX,
            -30.0,
            30.0,
            0.0,
            f32::INFINITY,
        ];
        let mut out = vec![MaybeUninit::<f32>::uninit(); extremes.len()];
        let got = gelu_f32(&extremes, &mut out);
        for (x, g) in extremes.iter().zip(got) {
            let expected = if *x > 0.0 { *x } else { 0.0 };
            assert!(*g == expected, "gelu({x}) = {g}, expected {expected}");
        }
        let mut out = vec![MaybeUninit::<f32>::uninit(); 1];
        assert!(gelu_f32(&[f32::NAN], &mut out)[0].is_nan());
    }

    /// The row softmax against a plain f64 softmax, in place and not, and
    /// rows that come out NaN.
    #[test]
    fn row_softmax_matches_the_formula() {
        for n in [1usize, 3, 17, 64, 100] {
            let x: Vec<f64> = (0..n)
                .map(|i| {
                    if i % 5 == 4 {
                        -1e9
                    } else {
                        (i as f64 * 0.37).sin() * 6.0
                    }
                })
                .collect();
            let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = x.iter().map(|v| (v - max).exp()).sum();
            let want: Vec<f64> = x.iter().map(|v| (v - max).exp() / sum).collect();
            for ty in [KType::F32, KType::F64] {
                let got = reference_row(RowFunc::Softmax, &x, ty);
                let tol = if ty == KType::F32 { 1e-6 } else { 1e-15 };
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() <= tol, "{ty:?} n {n}: {g} vs {w}");
                }
            }
            // Out of place: the source is left alone.
            let from: Vec<f32> = x.iter().map(|v| *v as f32).collect();
            let mut out = vec![0f32; n];
            // SAFETY: `n` values each, disjoint.
            unsafe {
                softmax_row32(
                    from.as_ptr() as *const u8,
                    out.as_mut_ptr() as *mut u8,
                    n as i64,
                )
            };
            let inplace = reference_row(RowFunc::Softmax, &x, KType::F32);
            assert_eq!(out.iter().map(|v| *v as f64).collect::<Vec<_>>(), inplace);
        }
        for row in [
            vec![1.0, f64::NAN, 2.0],
            vec![1.0, f64::INFINITY, 2.0],
            vec![f64::NEG_INFINITY; 3],
        ] {
            for ty in [KType::F32, KType::F64] {
                let got = reference_row(RowFunc::Softmax, &row, ty);
                assert!(got.iter().all(|v| v.is_nan()), "{ty:?} {row:?}: {got:?}");
            }
        }
    }
}
