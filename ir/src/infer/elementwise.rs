//! Shape and dtype inference for the elementwise ops, and their operand rules.
//!
//! This is the one place that says which element types each op accepts (the
//! newest ONNX opset's constraints, slightly widened where the meaning is
//! obvious: comparisons also take bool, Abs/Relu/PRelu/Pow any numeric type),
//! how many operands and outputs it has, and which attribute values are
//! valid. The interpreter runs this inference before computing, so both
//! reject the same nodes with the same messages.
//!
//! Output shapes: unary ops keep the input's shape; binary, variadic and
//! Where broadcast multidirectionally; PRelu broadcasts the slope onto X;
//! Clip keeps X's shape.

use super::util::{broadcast, operand, opt_operand, ty};
use super::Operand;
use crate::{Attrs, DType, Dim, Error, Op, Result, Shape, TensorType};

/// A set of element types, named for error messages.
#[derive(Clone, Copy)]
struct Types {
    what: &'static str,
    ok: fn(DType) -> bool,
}

fn is_signed(d: DType) -> bool {
    d.is_float() || d.is_signed_int()
}

fn is_bool(d: DType) -> bool {
    d == DType::Bool
}

fn any(_: DType) -> bool {
    true
}

const FLOAT: Types = Types {
    what: "a float type (f32, f16, bf16, f64)",
    ok: DType::is_float,
};
const NUMERIC: Types = Types {
    what: "a numeric type",
    ok: DType::is_numeric,
};
const SIGNED: Types = Types {
    what: "a float or signed integer type",
    ok: is_signed,
};
const INT: Types = Types {
    what: "an integer type",
    ok: DType::is_int,
};
const BOOL: Types = Types {
    what: "bool",
    ok: is_bool,
};
const ANY: Types = Types {
    what: "any type",
    ok: any,
};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = operand(op, inputs, 0)?.ty;
    let unary = |types: Types| -> Result<Vec<TensorType>> {
        arity(op, inputs, 1)?;
        check(op, 0, x, types)?;
        Ok(vec![x.clone()])
    };
    match op {
        Op::Abs | Op::Sign => unary(NUMERIC),
        Op::Neg | Op::Relu => unary(SIGNED),
        Op::Not => unary(BOOL),
        Op::BitwiseNot => unary(INT),
        Op::Identity => unary(ANY),
        Op::Sqrt
        | Op::Reciprocal
        | Op::Exp
        | Op::Log
        | Op::Tanh
        | Op::Erf
        | Op::Sigmoid
        | Op::Softplus
        | Op::Softsign
        | Op::Floor
        | Op::Ceil
        | Op::Round
        | Op::Sin
        | Op::Cos
        | Op::Tan
        | Op::Asin
        | Op::Acos
        | Op::Atan
        | Op::Sinh
        | Op::Cosh
        | Op::Asinh
        | Op::Acosh
        | Op::Atanh
        | Op::HardSigmoid
        | Op::HardSwish
        | Op::LeakyRelu
        | Op::Elu
        | Op::Selu
        | Op::Celu
        | Op::ThresholdedRelu
        | Op::Mish => unary(FLOAT),
        Op::Gelu => {
            let a = attrs.str_or("approximate", "none")?;
            if a != "none" && a != "tanh" {
                return Err(Error::Attr {
                    attr: "approximate".into(),
                    msg: format!("Gelu's approximate must be \"none\" or \"tanh\", not {a:?}"),
                });
            }
            unary(FLOAT)
        }
        Op::IsNaN | Op::IsInf => {
            unary(FLOAT)?;
            Ok(vec![ty(DType::Bool, x.shape.clone())])
        }
        Op::Cast => {
            arity(op, inputs, 1)?;
            Ok(vec![ty(cast_target(attrs)?, x.shape.clone())])
        }
        Op::CastLike => {
            arity(op, inputs, 2)?;
            Ok(vec![ty(operand(op, inputs, 1)?.ty.dtype, x.shape.clone())])
        }
        Op::Dropout => {
            arity(op, inputs, 3)?;
            check(op, 0, x, FLOAT)?;
            if let Some(r) = opt_operand(inputs, 1) {
                check(op, 1, r.ty, FLOAT)?;
                scalar(op, 1, r.ty)?;
            }
            if let Some(t) = opt_operand(inputs, 2) {
                check(op, 2, t.ty, BOOL)?;
                scalar(op, 2, t.ty)?;
            }
            let outs = [x.clone(), ty(DType::Bool, x.shape.clone())];
            Ok(outs[..n_outputs].to_vec())
        }
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod => {
            if op == Op::Mod {
                let f = attrs.int_or("fmod", 0)?;
                if f != 0 && f != 1 {
                    return Err(Error::Attr {
                        attr: "fmod".into(),
                        msg: format!("must be 0 or 1, not {f}"),
                    });
                }
            }
            binary(op, inputs, NUMERIC, None)
        }
        Op::Pow => {
            arity(op, inputs, 2)?;
            let e = operand(op, inputs, 1)?.ty;
            check(op, 0, x, NUMERIC)?;
            check(op, 1, e, NUMERIC)?;
            Ok(vec![ty(x.dtype, broadcast(op, &[&x.shape, &e.shape])?)])
        }
        Op::Equal | Op::Greater | Op::Less | Op::GreaterOrEqual | Op::LessOrEqual => {
            binary(op, inputs, ANY, Some(DType::Bool))
        }
        Op::And | Op::Or | Op::Xor => binary(op, inputs, BOOL, None),
        Op::BitwiseAnd | Op::BitwiseOr | Op::BitwiseXor => binary(op, inputs, INT, None),
        Op::BitShift => {
            let d = attrs.str("direction")?;
            if d != Some("LEFT") && d != Some("RIGHT") {
                return Err(Error::Attr {
                    attr: "direction".into(),
                    msg: format!("BitShift needs direction \"LEFT\" or \"RIGHT\", not {d:?}"),
                });
            }
            binary(op, inputs, INT, None)
        }
        Op::PRelu => {
            binary(op, inputs, NUMERIC, None)?;
            let slope = operand(op, inputs, 1)?.ty;
            unidirectional(op, &slope.shape, &x.shape)?;
            Ok(vec![x.clone()])
        }
        Op::Min | Op::Max | Op::Sum | Op::Mean => {
            let types = if matches!(op, Op::Min | Op::Max) {
                NUMERIC
            } else {
                FLOAT
            };
            let all: Vec<&TensorType> = (0..inputs.len())
                .map(|i| operand(op, inputs, i).map(|o| o.ty))
                .collect::<Result<_>>()?;
            for (i, t) in all.iter().enumerate() {
                check(op, i, t, types)?;
                same(op, 0, x, i, t)?;
            }
            let shapes: Vec<&Shape> = all.iter().map(|t| &t.shape).collect();
            Ok(vec![ty(x.dtype, broadcast(op, &shapes)?)])
        }
        Op::Where => {
            arity(op, inputs, 3)?;
            let a = operand(op, inputs, 1)?.ty;
            let b = operand(op, inputs, 2)?.ty;
            check(op, 0, x, BOOL)?;
            same(op, 1, a, 2, b)?;
            Ok(vec![ty(
                a.dtype,
                broadcast(op, &[&x.shape, &a.shape, &b.shape])?,
            )])
        }
        Op::Clip => {
            arity(op, inputs, 3)?;
            check(op, 0, x, NUMERIC)?;
            for i in 1..3 {
                if let Some(b) = opt_operand(inputs, i) {
                    same(op, 0, x, i, b.ty)?;
                    scalar(op, i, b.ty)?;
                }
            }
            Ok(vec![x.clone()])
        }
        _ => Err(Error::invalid(format!("{op} is not an elementwise op"))),
    }
}

/// Cast's `to` attribute as a kiln dtype.
fn cast_target(attrs: &Attrs) -> Result<DType> {
    let code = attrs.int("to")?.ok_or_else(|| Error::Attr {
        attr: "to".into(),
        msg: "Cast needs the target type".into(),
    })?;
    let code32 = i32::try_from(code).unwrap_or(-1);
    DType::from_onnx_code(code32).ok_or_else(|| {
        Error::unsupported(format!(
            "Cast to {} (ONNX type {code}): kiln has no such dtype",
            DType::onnx_code_name(code32)
        ))
    })
}

/// Two operands of one type, broadcast; the output has `out` as its dtype,
/// or the operands' dtype.
fn binary(
    op: Op,
    inputs: &[Option<Operand>],
    types: Types,
    out: Option<DType>,
) -> Result<Vec<TensorType>> {
    arity(op, inputs, 2)?;
    let a = operand(op, inputs, 0)?.ty;
    let b = operand(op, inputs, 1)?.ty;
    check(op, 0, a, types)?;
    same(op, 0, a, 1, b)?;
    Ok(vec![ty(
        out.unwrap_or(a.dtype),
        broadcast(op, &[&a.shape, &b.shape])?,
    )])
}

fn arity(op: Op, inputs: &[Option<Operand>], max: usize) -> Result<()> {
    if inputs.len() > max {
        return Err(Error::invalid(format!(
            "{op} takes at most {max} inputs, but {} were given",
            inputs.len()
        )));
    }
    Ok(())
}

fn check(op: Op, i: usize, t: &TensorType, types: Types) -> Result<()> {
    if (types.ok)(t.dtype) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{op}: input {i} is {t}, but must be {}",
            types.what
        )))
    }
}

fn same(op: Op, i: usize, a: &TensorType, j: usize, b: &TensorType) -> Result<()> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{op}: input {j} is {b} but input {i} is {a}; their element types must match"
        )))
    }
}

/// An operand that must hold one element (when its shape is known).
fn scalar(op: Op, i: usize, t: &TensorType) -> Result<()> {
    match t.shape.numel() {
        Some(n) if n != 1 => Err(Error::invalid(format!(
            "{op}: input {i} must be a scalar, but is {t}"
        ))),
        _ => Ok(()),
    }
}

/// Checks that `from` broadcasts onto `onto` without changing it.
fn unidirectional(op: Op, from: &Shape, onto: &Shape) -> Result<()> {
    let fail = || Error::invalid(format!("{op}: shape {from} does not broadcast onto {onto}"));
    if from.rank() > onto.rank() {
        return Err(fail());
    }
    let off = onto.rank() - from.rank();
    for (d, e) in from.0.iter().zip(&onto.0[off..]) {
        match (d, e) {
            (Dim::Fixed(1), _) => {}
            (Dim::Fixed(a), Dim::Fixed(b)) if a != b => return Err(fail()),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cloned_ref_to_slice_refs)]
mod tests {
    use super::*;
    use crate::Attr;

    fn tt(d: DType, s: &[usize]) -> TensorType {
        TensorType::new(d, s.to_vec())
    }

    fn run(op: Op, attrs: &Attrs, tys: &[Option<TensorType>], n: usize) -> Result<Vec<TensorType>> {
        let ops: Vec<Option<Operand>> = tys
            .iter()
            .map(|t| t.as_ref().map(|ty| Operand { ty, value: None }))
            .collect();
        crate::infer::infer_op(op, attrs, &ops, n)
    }

    #[test]
    fn binary_broadcasts_and_checks_dtypes() {
        let a = Some(tt(DType::F32, &[2, 1, 4]));
        let b = Some(tt(DType::F32, &[3, 1]));
        let r = run(Op::Add, &Attrs::new(), &[a.clone(), b], 1).unwrap();
        assert_eq!(r, vec![tt(DType::F32, &[2, 3, 4])]);
        let c = Some(tt(DType::I64, &[4]));
        let e = run(Op::Add, &Attrs::new(), &[a.clone(), c.clone()], 1).unwrap_err();
        assert!(e.to_string().contains("input 1 is i64[4]"), "{e}");
        let r = run(Op::Less, &Attrs::new(), &[c.clone(), c.clone()], 1).unwrap();
        assert_eq!(r, vec![tt(DType::Bool, &[4])]);
        let r = run(Op::Pow, &Attrs::new(), &[c, a], 1).unwrap();
        assert_eq!(r, vec![tt(DType::I64, &[2, 1, 4])]);
    }

    #[test]
    fn symbolic_dims_broadcast() {
        let a = TensorType {
            dtype: DType::F32,
            shape: Shape(vec![Dim::Sym("batch".into()), Dim::Fixed(1)]),
        };
        let b = Some(tt(DType::F32, &[5]));
        let r = run(Op::Mul, &Attrs::new(), &[Some(a), b], 1).unwrap();
        assert_eq!(
            r[0].shape,
            Shape(vec![Dim::Sym("batch".into()), Dim::Fixed(5)])
        );
    }

    #[test]
    fn cast_types() {
        let x = Some(tt(DType::F32, &[3]));
        let to = |c: i64| Attrs::new().with("to", Attr::Int(c));
        assert_eq!(
            run(Op::Cast, &to(10), &[x.clone()], 1).unwrap(),
            vec![tt(DType::F16, &[3])]
        );
        let e = run(Op::Cast, &to(8), &[x.clone()], 1).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(_)) && e.to_string().contains("STRING"),
            "{e}"
        );
        assert!(run(Op::Cast, &Attrs::new(), &[x.clone()], 1).is_err());
        let like = Some(tt(DType::I8, &[]));
        assert_eq!(
            run(Op::CastLike, &Attrs::new(), &[x, like], 1).unwrap(),
            vec![tt(DType::I8, &[3])]
        );
    }

    #[test]
    fn dropout_mask_and_output_counts() {
        let x = Some(tt(DType::F16, &[2, 3]));
        let r = run(Op::Dropout, &Attrs::new(), &[x.clone()], 2).unwrap();
        assert_eq!(r, vec![tt(DType::F16, &[2, 3]), tt(DType::Bool, &[2, 3])]);
        assert!(run(Op::Dropout, &Attrs::new(), &[x.clone()], 3).is_err());
        assert!(run(Op::Relu, &Attrs::new(), &[x], 2).is_err());
    }

    #[test]
    fn type_rules() {
        let u = Some(tt(DType::U8, &[2]));
        assert!(run(Op::Neg, &Attrs::new(), &[u.clone()], 1).is_err());
        assert!(run(Op::Sqrt, &Attrs::new(), &[u.clone()], 1).is_err());
        assert!(run(Op::Abs, &Attrs::new(), &[u.clone()], 1).is_ok());
        assert!(run(Op::Sum, &Attrs::new(), &[u.clone(), u.clone()], 1).is_err());
        assert!(run(
            Op::Max,
            &Attrs::new(),
            &[u.clone(), u.clone(), u.clone()],
            1
        )
        .is_ok());
        assert!(run(Op::Max, &Attrs::new(), &[u.clone(), None, u.clone()], 1).is_err());
        assert!(run(Op::Not, &Attrs::new(), &[u.clone()], 1).is_err());
        assert!(run(Op::BitShift, &Attrs::new(), &[u.clone(), u.clone()], 1).is_err());
        let left = Attrs::new().with("direction", Attr::Str("LEFT".into()));
        assert!(run(Op::BitShift, &left, &[u.clone(), u.clone()], 1).is_ok());
        assert!(run(Op::Add, &Attrs::new(), &[u.clone(), u.clone(), u], 1).is_err());
    }

    #[test]
    fn where_clip_prelu_shapes() {
        let c = Some(tt(DType::Bool, &[2, 1]));
        let x = Some(tt(DType::I32, &[3]));
        let r = run(
            Op::Where,
            &Attrs::new(),
            &[c.clone(), x.clone(), x.clone()],
            1,
        )
        .unwrap();
        assert_eq!(r, vec![tt(DType::I32, &[2, 3])]);
        assert!(run(
            Op::Where,
            &Attrs::new(),
            &[c, x.clone(), Some(tt(DType::I64, &[3]))],
            1
        )
        .is_err());
        let s = Some(tt(DType::I32, &[]));
        assert_eq!(
            run(Op::Clip, &Attrs::new(), &[x.clone(), None, s], 1).unwrap(),
            vec![tt(DType::I32, &[3])]
        );
        assert!(run(Op::Clip, &Attrs::new(), &[x.clone(), x.clone()], 1).is_err());
        let p = Some(tt(DType::F32, &[2, 3]));
        let slope = Some(tt(DType::F32, &[3]));
        assert_eq!(
            run(Op::PRelu, &Attrs::new(), &[p.clone(), slope], 1).unwrap(),
            vec![tt(DType::F32, &[2, 3])]
        );
        assert!(run(
            Op::PRelu,
            &Attrs::new(),
            &[p, Some(tt(DType::F32, &[4, 1, 3]))],
            1
        )
        .is_err());
    }
}
