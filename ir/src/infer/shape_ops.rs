//! Shape and dtype inference for Shape, Size, ConstantOfShape, Range and EyeLike.

use super::movement::{ints_value, unknown_dims, vector_len};
use super::util::{operand, ty};
use super::{unknown_dim, Operand};
use crate::interp::shape_ops;
use crate::{Attrs, DType, Dim, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    _n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = operand(op, inputs, 0)?;
    let out = match op {
        Op::Shape => {
            let (s, e) = shape_ops::shape_range(attrs, x.ty.shape.rank())?;
            ty(DType::I64, Shape(vec![Dim::Fixed(e - s)]))
        }
        Op::Size => ty(DType::I64, Shape::scalar()),
        Op::ConstantOfShape => {
            let dtype = shape_ops::constant_of_shape_value(attrs)?.dtype();
            let dims = match ints_value(op, x, "input")? {
                Some(v) => shape_ops::dims_from_values(op, &v)?
                    .into_iter()
                    .map(Dim::Fixed)
                    .collect(),
                None => unknown_dims(op, vector_len(op, x, "input")?),
            };
            ty(dtype, Shape(dims))
        }
        Op::Range => {
            let types: Vec<DType> = (0..3)
                .map(|i| operand(op, inputs, i).map(|o| o.ty.dtype))
                .collect::<Result<_>>()?;
            if types.iter().any(|&d| d != types[0]) {
                return Err(Error::invalid(format!(
                    "{op}: start, limit and delta must share a type, found {}, {}, {}",
                    types[0], types[1], types[2]
                )));
            }
            let known: Option<Vec<&crate::Tensor>> = (0..3)
                .map(|i| operand(op, inputs, i).map(|o| o.value))
                .collect::<Result<_>>()?;
            match known {
                // The length depends on the values: compute it without building the range.
                Some(v) => {
                    let n = shape_ops::range_len_of(v[0], v[1], v[2])?;
                    ty(x.ty.dtype, Shape(vec![Dim::Fixed(n)]))
                }
                None => ty(x.ty.dtype, Shape(vec![unknown_dim(op)])),
            }
        }
        Op::EyeLike => {
            if x.ty.shape.rank() != 2 {
                return Err(Error::invalid(format!(
                    "{op}: input must be 2-D, found {}",
                    x.ty
                )));
            }
            ty(
                shape_ops::eye_like_dtype(attrs, x.ty.dtype)?,
                x.ty.shape.clone(),
            )
        }
        _ => return Err(Error::invalid(format!("{op} is not a shape op"))),
    };
    Ok(vec![out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    #[test]
    fn shape_of_a_symbolic_tensor_is_static() {
        let t = ty(DType::F32, Shape(vec![Dim::Sym("b".into()), Dim::Fixed(3)]));
        let ins = [Some(Operand {
            ty: &t,
            value: None,
        })];
        let out = infer(Op::Shape, &Attrs::new(), &ins, 1).unwrap();
        assert_eq!(out[0], TensorType::new(DType::I64, vec![2]));
    }

    #[test]
    fn range_and_constant_of_shape_use_known_values() {
        let (s, l, d) = (
            Tensor::scalar(0i64),
            Tensor::scalar(10i64),
            Tensor::scalar(3i64),
        );
        let (ts, tl, td) = (s.ty(), l.ty(), d.ty());
        let ins = [
            Some(Operand {
                ty: &ts,
                value: Some(&s),
            }),
            Some(Operand {
                ty: &tl,
                value: Some(&l),
            }),
            Some(Operand {
                ty: &td,
                value: None,
            }),
        ];
        let out = infer(Op::Range, &Attrs::new(), &ins, 1).unwrap();
        assert_eq!(out[0].shape.0, vec![unknown_dim(Op::Range)]);
        let ins = [
            ins[0],
            ins[1],
            Some(Operand {
                ty: &td,
                value: Some(&d),
            }),
        ];
        let out = infer(Op::Range, &Attrs::new(), &ins, 1).unwrap();
        assert_eq!(out[0], TensorType::new(DType::I64, vec![4]));
        // a huge range is an error, found without building it
        let big = Tensor::scalar(i64::MAX);
        let huge = [ins[0], Some(Operand { ty: &td, value: Some(&big) }), ins[2]];
        assert!(infer(Op::Range, &Attrs::new(), &huge, 1).is_err());
        let shape = Tensor::from_vec(vec![2], vec![2i64, 5]).unwrap();
        let st = shape.ty();
        let ins = [Some(Operand {
            ty: &st,
            value: Some(&shape),
        })];
        let out = infer(Op::ConstantOfShape, &Attrs::new(), &ins, 1).unwrap();
        assert_eq!(out[0], TensorType::new(DType::F32, vec![2, 5]));
    }
}
