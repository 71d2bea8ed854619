//! Shape and dtype inference for the reductions: ReduceX (axes as an optional
//! i64 input, `keepdims`, `noop_with_empty_axes`), ArgMax/ArgMin (`axis`,
//! `keepdims`; i64 output) and CumSum (same type and shape as its input).
//!
//! Operand rules (newest ONNX opset, widened where the meaning is obvious):
//! ReduceLogSum and ReduceLogSumExp take floats; ReduceMax and ReduceMin any
//! numeric type or bool; the other reductions, ArgMax/ArgMin and CumSum any
//! numeric type. When the axes input is not a constant the output rank is
//! still known with `keepdims=1` (reduced dimensions become unknown);
//! otherwise inference fails.

use super::util::{operand, opt_operand, ty};
use crate::interp::util::norm_axes;
use super::{unknown_dim, Operand};
use crate::{shape, Attrs, DType, Dim, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    _n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = operand(op, inputs, 0)?.ty;
    let max_inputs = if matches!(op, Op::ArgMax | Op::ArgMin) {
        1
    } else {
        2
    };
    if inputs.len() > max_inputs {
        return Err(Error::invalid(format!(
            "{op} takes at most {max_inputs} inputs, but {} were given",
            inputs.len()
        )));
    }
    let ok = match op {
        Op::ReduceLogSum | Op::ReduceLogSumExp => x.dtype.is_float(),
        Op::ReduceMax | Op::ReduceMin => true,
        _ => x.dtype.is_numeric(),
    };
    if !ok {
        return Err(Error::invalid(format!(
            "{op}: input 0 is {x}, which {op} does not accept"
        )));
    }
    let rank = x.shape.rank();
    match op {
        Op::ArgMax | Op::ArgMin => {
            let axis = attrs.int_or("axis", 0)?;
            let a = shape::normalize_axis(axis, rank).ok_or_else(|| Error::Attr {
                attr: "axis".into(),
                msg: format!("{op}: axis {axis} is out of range for {x}"),
            })?;
            let keep = attrs.int_or("keepdims", 1)? != 0;
            Ok(vec![ty(DType::I64, reduced(&x.shape, &[a], keep))])
        }
        Op::CumSum => {
            let axis = operand(op, inputs, 1)?;
            if !axis.ty.dtype.is_int() || axis.ty.shape.numel().is_some_and(|n| n != 1) {
                return Err(Error::invalid(format!(
                    "{op}: the axis (input 1) must be an integer scalar, but is {}",
                    axis.ty
                )));
            }
            if let Some(v) = axis.value {
                let a = v.to_i64_vec()?.first().copied().unwrap_or(0);
                if shape::normalize_axis(a, rank).is_none() {
                    return Err(Error::invalid(format!(
                        "{op}: axis {a} is out of range for {x}"
                    )));
                }
            }
            Ok(vec![x.clone()])
        }
        _ => {
            let keep = attrs.int_or("keepdims", 1)? != 0;
            let noop = attrs.int_or("noop_with_empty_axes", 0)? != 0;
            // number of runtime axes, when only their count is known
            let n_axes = opt_operand(inputs, 1).and_then(|a| a.ty.shape.numel());
            let axes = match opt_operand(inputs, 1) {
                None => Some(Vec::new()),
                Some(a) => {
                    if !a.ty.dtype.is_int() || a.ty.shape.rank() > 1 {
                        return Err(Error::invalid(format!(
                            "{op}: axes (input 1) must be a 1-D integer tensor, but is {}",
                            a.ty
                        )));
                    }
                    match (a.value, a.ty.shape.numel()) {
                        (Some(v), _) => Some(v.to_i64_vec()?),
                        (None, Some(0)) => Some(Vec::new()),
                        (None, _) => None,
                    }
                }
            };
            let out = match axes {
                Some(axes) if axes.is_empty() && noop => x.shape.clone(),
                Some(axes) if axes.is_empty() => {
                    reduced(&x.shape, &(0..rank).collect::<Vec<_>>(), keep)
                }
                Some(axes) => reduced(&x.shape, &norm_axes(op, &axes, rank)?, keep),
                None if keep => Shape(
                    x.shape
                        .0
                        .iter()
                        .map(|d| {
                            if *d == Dim::Fixed(1) {
                                d.clone()
                            } else {
                                unknown_dim(op)
                            }
                        })
                        .collect(),
                ),
                // k runtime axes (k > 0 here): rank - k dims, none of them known
                None => match n_axes {
                    Some(k) if k <= rank => Shape((0..rank - k).map(|_| unknown_dim(op)).collect()),
                    Some(k) => {
                        return Err(Error::invalid(format!(
                            "{op}: {k} axes given for {x}, which has rank {rank}"
                        )))
                    }
                    None => {
                        return Err(Error::unsupported(format!(
                            "{op} with keepdims=0 needs axes of static length to know its output rank"
                        )))
                    }
                },
            };
            Ok(vec![ty(x.dtype, out)])
        }
    }
}

/// `s` with `axes` set to 1 (`keep`) or removed.
fn reduced(s: &Shape, axes: &[usize], keep: bool) -> Shape {
    let mut out = Vec::with_capacity(s.rank());
    for (i, d) in s.0.iter().enumerate() {
        if !axes.contains(&i) {
            out.push(d.clone());
        } else if keep {
            out.push(Dim::Fixed(1));
        }
    }
    Shape(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, Tensor};

    fn tt(d: DType, s: &[usize]) -> TensorType {
        TensorType::new(d, s.to_vec())
    }

    fn run(
        op: Op,
        attrs: &Attrs,
        x: TensorType,
        axes: Option<(&TensorType, Option<&Tensor>)>,
    ) -> Result<TensorType> {
        let mut ops = vec![Some(Operand {
            ty: &x,
            value: None,
        })];
        if let Some((ty, value)) = axes {
            ops.push(Some(Operand { ty, value }));
        }
        Ok(infer(op, attrs, &ops, 1)?.remove(0))
    }

    #[test]
    fn reduce_with_constant_axes() {
        let axes = Tensor::from_vec(vec![2], vec![-1i64, 0]).unwrap();
        let aty = axes.ty();
        let x = tt(DType::F32, &[2, 3, 4]);
        let keep = run(
            Op::ReduceSum,
            &Attrs::new(),
            x.clone(),
            Some((&aty, Some(&axes))),
        )
        .unwrap();
        assert_eq!(keep, tt(DType::F32, &[1, 3, 1]));
        let drop = Attrs::new().with("keepdims", Attr::Int(0));
        assert_eq!(
            run(Op::ReduceMax, &drop, x.clone(), Some((&aty, Some(&axes)))).unwrap(),
            tt(DType::F32, &[3])
        );
        assert_eq!(
            run(Op::ReduceMean, &drop, x.clone(), None).unwrap(),
            tt(DType::F32, &[])
        );
        let noop = Attrs::new().with("noop_with_empty_axes", Attr::Int(1));
        assert_eq!(run(Op::ReduceL2, &noop, x.clone(), None).unwrap(), x);
        let dup = Tensor::from_vec(vec![2], vec![1i64, -2]).unwrap();
        assert!(run(
            Op::ReduceSum,
            &Attrs::new(),
            x,
            Some((&dup.ty(), Some(&dup)))
        )
        .is_err());
    }

    #[test]
    fn reduce_with_unknown_axes() {
        let x = tt(DType::F32, &[2, 1, 4]);
        let aty = tt(DType::I64, &[1]);
        let r = run(Op::ReduceSum, &Attrs::new(), x.clone(), Some((&aty, None))).unwrap();
        assert_eq!(
            r.shape,
            Shape(vec![
                unknown_dim(Op::ReduceSum),
                Dim::Fixed(1),
                unknown_dim(Op::ReduceSum)
            ])
        );
        // keepdims=0 with k runtime axes: rank - k dims, all unknown
        let drop = Attrs::new().with("keepdims", Attr::Int(0));
        let r = run(Op::ReduceSum, &drop, x.clone(), Some((&aty, None))).unwrap();
        assert_eq!(r.shape, Shape(vec![unknown_dim(Op::ReduceSum); 2]));
        // more axes than dims is an error; axes of unknown length are unsupported
        let too_many = tt(DType::I64, &[4]);
        assert!(run(Op::ReduceSum, &drop, x.clone(), Some((&too_many, None))).is_err());
        let sym = TensorType { dtype: DType::I64, shape: Shape(vec![Dim::Sym("k".into())]) };
        let e = run(Op::ReduceSum, &drop, x, Some((&sym, None))).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)));
    }

    #[test]
    fn reduce_type_rules() {
        assert!(run(Op::ReduceLogSum, &Attrs::new(), tt(DType::I32, &[2]), None).is_err());
        assert!(run(Op::ReduceMax, &Attrs::new(), tt(DType::Bool, &[2]), None).is_ok());
        assert!(run(Op::ReduceSum, &Attrs::new(), tt(DType::Bool, &[2]), None).is_err());
    }

    #[test]
    fn argmax_and_cumsum() {
        let x = tt(DType::F16, &[2, 3]);
        let a = Attrs::new().with("axis", Attr::Int(-1));
        assert_eq!(
            run(Op::ArgMax, &a, x.clone(), None).unwrap(),
            tt(DType::I64, &[2, 1])
        );
        let a = a.with("keepdims", Attr::Int(0));
        assert_eq!(
            run(Op::ArgMin, &a, x.clone(), None).unwrap(),
            tt(DType::I64, &[2])
        );
        let bad = Attrs::new().with("axis", Attr::Int(2));
        assert!(run(Op::ArgMax, &bad, x.clone(), None).is_err());
        let axis = Tensor::scalar(1i32);
        assert_eq!(
            run(
                Op::CumSum,
                &Attrs::new(),
                x.clone(),
                Some((&axis.ty(), Some(&axis)))
            )
            .unwrap(),
            x
        );
        let axis = Tensor::scalar(2i64);
        assert!(run(
            Op::CumSum,
            &Attrs::new(),
            x,
            Some((&axis.ty(), Some(&axis)))
        )
        .is_err());
    }
}
