//! Shape and dtype inference: the static counterpart of [`crate::interp`].
//!
//! [`infer_op`] gives the output types of one op from its operands' types and,
//! where known, their values (shape operands such as Reshape's `shape` are
//! usually constants). It must agree with the interpreter: `run` checks every
//! computed output against the inferred type, and the conformance runner
//! exercises both on every node test.
//!
//! A dimension that cannot be known statically (a data-dependent size, or one
//! computed from a symbolic dimension) becomes a fresh [`Dim::Sym`] named
//! `?<op>`, to be bound when the model runs.

mod attention;
mod conv;
mod elementwise;
mod linalg;
mod misc;
mod movement;
mod norm;
mod pool;
mod quant;
mod reduce;
mod shape_ops;
pub mod util;

use crate::{Attrs, Dim, Error, Op, OpClass, Result, Tensor, TensorType};

/// What inference knows about one operand.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub ty: &'a TensorType,
    /// The operand's value, when it is a constant (or was folded from one).
    pub value: Option<&'a Tensor>,
}

/// Output types of `op` applied to `inputs` (ONNX positions, `None` for an
/// omitted optional input), for a node with `n_outputs` outputs.
pub fn infer_op(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    check_arity(op, inputs, n_outputs)?;
    match op.class() {
        OpClass::Elementwise => elementwise::infer(op, attrs, inputs, n_outputs),
        OpClass::Reduction => reduce::infer(op, attrs, inputs, n_outputs),
        OpClass::Normalization => norm::infer(op, attrs, inputs, n_outputs),
        OpClass::Linalg => linalg::infer(op, attrs, inputs, n_outputs),
        OpClass::Conv => conv::infer(op, attrs, inputs, n_outputs),
        OpClass::Pool => pool::infer(op, attrs, inputs, n_outputs),
        OpClass::Movement => movement::infer(op, attrs, inputs, n_outputs),
        OpClass::Shape => shape_ops::infer(op, attrs, inputs, n_outputs),
        OpClass::Quantization => quant::infer(op, attrs, inputs, n_outputs),
        OpClass::Attention => attention::infer(op, attrs, inputs, n_outputs),
        OpClass::Misc => misc::infer(op, attrs, inputs, n_outputs),
        OpClass::Fused => crate::fused::infer(op, attrs, inputs),
    }
}

/// The op's input and output counts, from [`crate::verify::arity`] (ONNX's
/// schemas): too many operands, a missing required one, or an output count
/// out of range is an error, checked here once for every op.
/// The interpreter calls it too, so both see the same rule.
pub(crate) fn check_arity<T>(op: Op, inputs: &[Option<T>], n_outputs: usize) -> Result<()> {
    let a = crate::verify::arity(op);
    if let Some(max) = a.max_inputs {
        if inputs.len() > max {
            return Err(Error::invalid(format!(
                "{op} takes at most {max} inputs, but the node has {}",
                inputs.len()
            )));
        }
    }
    let required = if a.max_inputs.is_none() { inputs.len().max(a.min_inputs) } else { a.min_inputs };
    if let Some(i) = (0..required).find(|&i| inputs.get(i).is_none_or(Option::is_none)) {
        return Err(Error::invalid(format!("{op} needs input {i}, which is missing")));
    }
    let max_out = a.max_outputs.unwrap_or(usize::MAX);
    if n_outputs < a.min_outputs || n_outputs > max_out {
        let range = match a.max_outputs {
            Some(m) if m == a.min_outputs => format!("{m}"),
            Some(m) => format!("{} to {m}", a.min_outputs),
            None => format!("at least {}", a.min_outputs),
        };
        return Err(Error::invalid(format!(
            "{op} has {range} output(s), but the node asks for {n_outputs}"
        )));
    }
    Ok(())
}

/// A fresh unknown dimension produced by `op`.
pub fn unknown_dim(op: Op) -> Dim {
    Dim::Sym(format!("?{}", op.name()))
}
