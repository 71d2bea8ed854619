//! Interpreter for the elementwise ops: unary math and activations, binary
//! and variadic arithmetic with multidirectional broadcasting, comparisons,
//! logic and bitwise ops, Where, Clip, Cast/CastLike, Identity and
//! inference-mode Dropout.
//!
//! Operand types are validated by [`crate::infer::infer_op`] first, so the
//! type rules live in one place. f16 and bf16 operands are widened to f32
//! (exactly), the op is computed in f32, and results are rounded back to the
//! storage type once. Other numerics follow [`crate::interp`]: f32 in f32,
//! f64 in f64, wrapping integer arithmetic, truncating integer division.
//!
//! Choices where ONNX leaves behaviour undefined:
//! - integer `Div` or `Mod` by zero is an error (naming the op), not a value;
//! - `Cast` from float to integer truncates toward zero and saturates
//!   out-of-range values (NaN becomes 0); integer to integer wraps.

mod binary;
mod cast;
pub(super) mod num;
mod unary;

use super::util::{input, opt_input};
use crate::infer::Operand;
use crate::{Attrs, DType, Data, Error, Op, Result, Tensor, TensorType};
use half::{bf16, f16};

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let want = infer_types(op, attrs, inputs, n_outputs)?;
    let exact = matches!(
        op,
        Op::Cast | Op::CastLike | Op::Identity | Op::Dropout | Op::Where
    );
    let outs = if exact {
        compute(op, attrs, inputs, &want)?
    } else {
        let wide = widen_halves(inputs);
        let args: Vec<Option<&Tensor>> = inputs
            .iter()
            .zip(&wide)
            .map(|(o, w)| w.as_ref().or(*o))
            .collect();
        compute(op, attrs, &args, &want)?
    };
    narrow_to(outs, &want)
}

/// Computes the op; `want` are the inferred output types.
fn compute(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    want: &[TensorType],
) -> Result<Vec<Tensor>> {
    let x = input(op, inputs, 0)?;
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Identity => one(x.clone()),
        Op::Dropout => dropout(op, inputs, want.len()),
        Op::Cast | Op::CastLike => {
            let to = want.first().map_or(x.dtype(), |t| t.dtype);
            one(cast::cast(x, to)?)
        }
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Pow
        | Op::Mod
        | Op::Equal
        | Op::Greater
        | Op::Less
        | Op::GreaterOrEqual
        | Op::LessOrEqual
        | Op::And
        | Op::Or
        | Op::Xor
        | Op::BitShift
        | Op::BitwiseAnd
        | Op::BitwiseOr
        | Op::BitwiseXor
        | Op::PRelu => one(binary::eval(op, attrs, x, input(op, inputs, 1)?)?),
        Op::Min | Op::Max | Op::Sum | Op::Mean => {
            let all: Vec<&Tensor> = inputs
                .iter()
                .enumerate()
                .map(|(i, _)| input(op, inputs, i))
                .collect::<Result<_>>()?;
            one(binary::variadic(op, &all)?)
        }
        Op::Where => one(binary::where_(
            op,
            x,
            input(op, inputs, 1)?,
            input(op, inputs, 2)?,
        )?),
        Op::Clip => one(binary::clip(
            op,
            x,
            opt_input(inputs, 1),
            opt_input(inputs, 2),
        )?),
        _ => one(unary::eval(op, attrs, x)?),
    }
}

/// Dropout in inference mode: the output is the input, the mask all true.
/// Training mode with a positive ratio is random, so it is not supported.
fn dropout(op: Op, inputs: &[Option<&Tensor>], n_outputs: usize) -> Result<Vec<Tensor>> {
    let x = input(op, inputs, 0)?;
    let training = match opt_input(inputs, 2) {
        Some(t) => scalar_f64(op, "training_mode", t)? != 0.0,
        None => false,
    };
    if training {
        let ratio = match opt_input(inputs, 1) {
            Some(t) => scalar_f64(op, "ratio", t)?,
            None => 0.5,
        };
        if ratio > 0.0 {
            return Err(Error::unsupported(format!(
                "{op} in training mode with ratio {ratio} is random; only inference mode (or ratio 0) is supported"
            )));
        }
    }
    let mut outs = vec![x.clone()];
    if n_outputs > 1 {
        outs.push(Tensor::new(
            x.shape().to_vec(),
            Data::Bool(vec![true; x.numel()]),
        )?);
    }
    Ok(outs)
}

/// The single element of a scalar operand, as f64.
fn scalar_f64(op: Op, what: &str, t: &Tensor) -> Result<f64> {
    match t.to_f64_vec().as_slice() {
        [v] => Ok(*v),
        _ => Err(Error::invalid(format!(
            "{op}: `{what}` must hold one element, but has shape {:?}",
            t.shape()
        ))),
    }
}

/// Output types from shape inference, which also validates operand dtypes,
/// arity and attributes.
pub(super) fn infer_types(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let tys: Vec<Option<TensorType>> = inputs.iter().map(|o| o.map(Tensor::ty)).collect();
    let operands: Vec<Option<Operand>> = tys
        .iter()
        .zip(inputs)
        .map(|(ty, t)| ty.as_ref().map(|ty| Operand { ty, value: *t }))
        .collect();
    crate::infer::infer_op(op, attrs, &operands, n_outputs)
}

/// f32 copies of the f16 and bf16 operands (`None` for the others).
pub(super) fn widen_halves(inputs: &[Option<&Tensor>]) -> Vec<Option<Tensor>> {
    inputs
        .iter()
        .map(|o| {
            let t = (*o)?;
            let v: Vec<f32> = match t.data() {
                Data::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
                Data::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
                _ => return None,
            };
            Tensor::new(t.shape().to_vec(), Data::F32(v)).ok()
        })
        .collect()
}

/// Rounds f32 results back to f16 or bf16 where the inferred type says so.
pub(super) fn narrow_to(outs: Vec<Tensor>, want: &[TensorType]) -> Result<Vec<Tensor>> {
    outs.into_iter()
        .zip(
            want.iter()
                .map(|t| t.dtype)
                .chain(std::iter::repeat(DType::F32)),
        )
        .map(|(t, d)| {
            if t.dtype() != DType::F32 || !matches!(d, DType::F16 | DType::BF16) {
                return Ok(t);
            }
            let shape = t.shape().to_vec();
            let data = match (t.into_data(), d) {
                (Data::F32(v), DType::F16) => Data::F16(v.into_iter().map(f16::from_f32).collect()),
                (Data::F32(v), _) => Data::BF16(v.into_iter().map(bf16::from_f32).collect()),
                (other, _) => other,
            };
            Tensor::new(shape, data)
        })
        .collect()
}
