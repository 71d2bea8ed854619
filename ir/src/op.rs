//! The closed set of graph operators and their classification.
//!
//! Op names are ONNX's names, and each op means what the newest ONNX opset
//! kiln knows (onnx 1.23) says it means. The frontend rewrites older opsets'
//! forms (an attribute that later became an input, changed defaults) into that
//! one form, so the interpreter, the passes and the backends see one schema per
//! op. kiln's own fused ops will join this enum as further classes.
//!
//! Attributes keep their ONNX names and types (see [`crate::Attrs`]); inputs
//! keep their ONNX positions, with `None` for an omitted optional input.

use std::fmt;

/// What kind of computation an op is. Passes and backends dispatch on this
/// instead of listing ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// Output element i depends only on input elements i (after broadcasting).
    Elementwise,
    /// Reduces (or scans) along axes.
    Reduction,
    /// Row-wise normalisations: Softmax, LayerNorm, BatchNorm, ...
    Normalization,
    /// Matrix products.
    Linalg,
    /// Convolutions.
    Conv,
    /// Pooling windows.
    Pool,
    /// Data movement: the output is a rearrangement or selection of the input.
    Movement,
    /// Ops that compute or materialise shapes and index ranges.
    Shape,
    /// Quantize / dequantize.
    Quantization,
    /// Scaled dot-product attention.
    Attention,
    /// Everything else (resampling, sorting, data-dependent output shapes).
    Misc,
    /// kiln's own fused ops, created by the optimizer and defined by their
    /// decomposition (see [`crate::fused`]); never imported from ONNX.
    Fused,
}

macro_rules! define_ops {
    ($( $class:ident : [ $($op:ident),* $(,)? ] ),* $(,)?) => {
        /// A graph operator.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op { $($($op,)*)* }

        impl Op {
            /// Every op, grouped by class.
            pub const ALL: &'static [Op] = &[$($(Op::$op,)*)*];

            /// The op's name: ONNX's, and the text IR's.
            pub fn name(self) -> &'static str {
                match self { $($(Op::$op => stringify!($op),)*)* }
            }

            pub fn class(self) -> OpClass {
                match self { $($(Op::$op => OpClass::$class,)*)* }
            }
        }
    };
}

define_ops! {
    Elementwise: [
        // unary
        Abs, Neg, Sqrt, Reciprocal, Exp, Log, Tanh, Erf, Relu, Sigmoid, Softplus, Softsign,
        Floor, Ceil, Round, Sign, Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh,
        Atanh, Not, IsNaN, IsInf, HardSigmoid, HardSwish, LeakyRelu, Elu, Selu, Celu,
        ThresholdedRelu, Gelu, Mish, Identity, BitwiseNot, Cast, CastLike, Dropout,
        // binary and variadic, with multidirectional broadcasting
        Add, Sub, Mul, Div, Pow, Mod, Min, Max, Sum, Mean, Equal, Greater, Less,
        GreaterOrEqual, LessOrEqual, And, Or, Xor, BitShift, BitwiseAnd, BitwiseOr,
        BitwiseXor, PRelu,
        // ternary
        Where, Clip,
    ],
    Reduction: [
        ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
        ReduceLogSum, ReduceLogSumExp, ReduceSumSquare, ArgMax, ArgMin, CumSum,
    ],
    Normalization: [
        Softmax, LogSoftmax, Hardmax, LayerNormalization, RMSNormalization,
        BatchNormalization, InstanceNormalization, GroupNormalization, LpNormalization,
        MeanVarianceNormalization,
    ],
    Linalg: [MatMul, Gemm, Einsum, MatMulInteger, QLinearMatMul],
    Conv: [Conv, ConvTranspose, ConvInteger, QLinearConv],
    Pool: [MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, LpPool],
    Movement: [
        Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Concat, Split, Slice, Gather,
        GatherElements, GatherND, ScatterElements, ScatterND, Expand, Tile, Pad,
        DepthToSpace, SpaceToDepth, Trilu, ReverseSequence, OneHot,
    ],
    Shape: [Shape, Size, ConstantOfShape, Range, EyeLike],
    Quantization: [QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear],
    Attention: [Attention],
    Misc: [Resize, TopK, NonZero],
    Fused: [FusedElementwise, FusedMatMul, FusedConv],
}

impl Op {
    /// Looks an op up by its (ONNX) name.
    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.name() == name)
    }

    pub fn is_elementwise(self) -> bool {
        self.class() == OpClass::Elementwise
    }

    pub fn is_reduction(self) -> bool {
        self.class() == OpClass::Reduction
    }

    /// kiln's own ops (not ONNX's): the frontend refuses them in a model.
    pub fn is_internal(self) -> bool {
        self.class() == OpClass::Fused
    }

    pub fn is_movement(self) -> bool {
        self.class() == OpClass::Movement
    }

    /// Binary ops with `f(a, b) == f(b, a)`.
    pub fn is_commutative(self) -> bool {
        matches!(
            self,
            Op::Add
                | Op::Mul
                | Op::Min
                | Op::Max
                | Op::Sum
                | Op::Mean
                | Op::Equal
                | Op::And
                | Op::Or
                | Op::Xor
                | Op::BitwiseAnd
                | Op::BitwiseOr
                | Op::BitwiseXor
        )
    }

    /// Ops whose output shape depends on input *values*, not only input shapes.
    pub fn has_data_dependent_shape(self) -> bool {
        matches!(self, Op::NonZero)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &op in Op::ALL {
            assert_eq!(Op::from_name(op.name()), Some(op));
            assert!(seen.insert(op.name()));
        }
    }
}
