//! Patterns that name groups of [`Op`](super::Op) variants.
//!
//! The stages that need code per op (shape rules, kernels, VJP rules, the
//! fusion pass, the scheduler) match on `Op` exhaustively, and several treat
//! the same variants alike: the four sources, the plain binary arithmetic,
//! the layout ops. Each such group is written once here, as a macro usable in
//! pattern position (`binary_math_ops!() => ...`), so that the matches stay
//! exhaustive (a new op still fails to compile until every stage places it)
//! while a group is not listed again in every stage. A new variant added to
//! a group reaches every stage that uses the group, so a group holds only
//! variants that those stages really treat alike.

/// The values fed from outside the graph or the equilibrium body:
/// [`OpClass::Source`](super::OpClass::Source).
macro_rules! source_ops {
    () => {
        $crate::ir::Op::Input(_)
            | $crate::ir::Op::Param(_)
            | $crate::ir::Op::State(_)
            | $crate::ir::Op::Capture(_)
    };
}

/// An equilibrium node and the projections of its results
/// ([`OpClass::Equilibrium`](super::OpClass::Equilibrium)): the executor
/// solves them and the reverse sweep differentiates them, never a kernel or
/// a VJP rule of their own.
macro_rules! equilibrium_ops {
    () => {
        $crate::ir::Op::Equilibrium(_) | $crate::ir::Op::Project(_)
    };
}

/// Elementwise unary ops without attributes (`LeakyRelu` and `Clamp`, which
/// carry some, are left to each stage).
macro_rules! unary_math_ops {
    () => {
        $crate::ir::Op::Neg
            | $crate::ir::Op::Exp
            | $crate::ir::Op::Log
            | $crate::ir::Op::Sqrt
            | $crate::ir::Op::Abs
            | $crate::ir::Op::Tanh
            | $crate::ir::Op::Sigmoid
            | $crate::ir::Op::Relu
            | $crate::ir::Op::Gelu
            | $crate::ir::Op::Softplus
            | $crate::ir::Op::Sin
            | $crate::ir::Op::Cos
    };
}

/// Elementwise binary ops of two broadcast operands of one dtype (`Where`,
/// with its mask, is left to each stage).
macro_rules! binary_math_ops {
    () => {
        $crate::ir::Op::Add
            | $crate::ir::Op::Sub
            | $crate::ir::Op::Mul
            | $crate::ir::Op::Div
            | $crate::ir::Op::Pow
            | $crate::ir::Op::Maximum
            | $crate::ir::Op::Minimum
            | $crate::ir::Op::Compare(_)
    };
}

/// Ops that move or copy elements without arithmetic:
/// [`OpClass::Layout`](super::OpClass::Layout).
macro_rules! layout_ops {
    () => {
        $crate::ir::Op::Reshape { .. }
            | $crate::ir::Op::Permute { .. }
            | $crate::ir::Op::Concat { .. }
            | $crate::ir::Op::BroadcastTo { .. }
            | $crate::ir::Op::Slice { .. }
    };
}

/// Tensors made from attributes alone, no operands (`Const`, a scalar, is
/// left to each stage).
macro_rules! constructor_ops {
    () => {
        $crate::ir::Op::Eye { .. }
            | $crate::ir::Op::Fill { .. }
            | $crate::ir::Op::Arange { .. }
            | $crate::ir::Op::CausalMask { .. }
            | $crate::ir::Op::DropoutMask { .. }
            | $crate::ir::Op::Probe { .. }
    };
}

/// Library calls of the networks: matrix products, convolutions, pooling,
/// upsampling, lookups ([`OpClass::Network`](super::OpClass::Network)).
macro_rules! network_ops {
    () => {
        $crate::ir::Op::MatMul
            | $crate::ir::Op::Conv(_)
            | $crate::ir::Op::AvgPool2d { .. }
            | $crate::ir::Op::MaxPool2d { .. }
            | $crate::ir::Op::UpsampleNearest2d { .. }
            | $crate::ir::Op::Embedding
    };
}

/// The adjoints of [`network_ops`]: library calls that autodiff makes.
macro_rules! network_adjoint_ops {
    () => {
        $crate::ir::Op::ConvInputGrad { .. }
            | $crate::ir::Op::ConvWeightGrad { .. }
            | $crate::ir::Op::AvgPool2dBackward { .. }
            | $crate::ir::Op::MaxPool2dBackward { .. }
            | $crate::ir::Op::MaxPool2dSelect { .. }
            | $crate::ir::Op::EmbeddingBackward { .. }
    };
}

pub(crate) use {
    binary_math_ops, constructor_ops, equilibrium_ops, layout_ops, network_adjoint_ops,
    network_ops, source_ops, unary_math_ops,
};
