//! Vectorized f32 kernels for the elementwise ops that dominate DEQ cells.
//!
//! Owns `tanh`, `exp`, `sigmoid` and `gelu` (its tanh form) on the CPU in
//! f32. candle evaluates
//! these with scalar libm calls (a fifth of a `mnist_mlp` training step went
//! to `tanhf`); `rten-vecmath` evaluates them with SIMD, dispatched at run
//! time to the best instruction set the CPU has. Guarantees: the result is
//! within a few ULP of the libm value (rten-vecmath tests `tanh` to 3 ULP
//! against `f32::tanh`); any other dtype, device or a strided input falls
//! back to candle's own kernel, so f64 checks are untouched.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use rten_simd::SimdUnaryOp;
use rten_vecmath::ExtendInit;

/// One of the vectorized functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Tanh,
    Exp,
    Sigmoid,
    /// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
    Gelu,
}

impl Func {
    /// `f(x)`, vectorized where possible.
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.dtype() == DType::F32 && matches!(x.device(), Device::Cpu) && x.is_contiguous() {
            return x.apply_op1_no_bwd(&self);
        }
        match self {
            Func::Tanh => x.tanh(),
            Func::Exp => x.exp(),
            Func::Sigmoid => x.neg()?.exp()?.affine(1.0, 1.0)?.recip(),
            Func::Gelu => x.gelu(),
        }
    }

    fn map(self, src: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(src.len());
        out.extend_init(|dest| match self {
            Func::Tanh => rten_vecmath::Tanh {}.map(src, dest),
            Func::Exp => crate::jit::strip::exp_f32(src, dest),
            Func::Sigmoid => crate::jit::strip::sigmoid_f32(src, dest),
            Func::Gelu => crate::jit::strip::gelu_f32(src, dest),
        });
        out
    }
}

impl CustomOp1 for Func {
    fn name(&self) -> &'static str {
        match self {
            Func::Tanh => "simd-tanh",
            Func::Exp => "simd-exp",
            Func::Sigmoid => "simd-sigmoid",
            Func::Gelu => "simd-gelu",
        }
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("{}: expected a contiguous f32 tensor", self.name());
        };
        Ok((
            CpuStorage::F32(self.map(&data[start..end])),
            layout.shape().clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(func: Func, reference: fn(f64) -> f64, abs_floor: f64) {
        let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.005).collect();
        let x = Tensor::from_vec(xs.clone(), xs.len(), &Device::Cpu).unwrap();
        let fast = func.apply(&x).unwrap().to_vec1::<f32>().unwrap();
        for (v, f) in xs.iter().zip(&fast) {
            let exact = reference(*v as f64);
            let err = (*f as f64 - exact).abs() / exact.abs().max(abs_floor);
            assert!(err < 1e-6, "{func:?}({v}) = {f}, exact {exact}");
        }
        // f64 and strided inputs take candle's kernels, unchanged.
        let x64 = x.to_dtype(DType::F64).unwrap();
        let y64 = func.apply(&x64).unwrap().to_vec1::<f64>().unwrap();
        assert!((y64[4100] - reference(xs[4100] as f64)).abs() < 1e-15);
        let m = Tensor::from_vec(xs[..16].to_vec(), (4, 4), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap();
        let strided = func
            .apply(&m)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((strided[1] as f64 - reference(xs[4] as f64)).abs() < 1e-6);
    }

    #[test]
    fn vectorized_functions_match_f64_references() {
        check(Func::Tanh, f64::tanh, 1e-30);
        check(Func::Exp, f64::exp, 1e-30);
        check(Func::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), 1e-30);
        // GELU is compared absolutely where |gelu| < 1: for x < -5 the f32
        // tanh saturates and both f32 kernels return 0 for about -1e-8.
        check(
            Func::Gelu,
            |x| {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            },
            1.0,
        );
    }
}
