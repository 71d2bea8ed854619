//! kiln's fused ops, defined by their decomposition.
//!
//! These ops never come from ONNX (the frontend refuses them); the optimizer
//! creates them. Each is exactly the graph it replaces, so inference and the
//! interpreter both go through the decomposition (`infer_op`/`eval_op` of the
//! parts, and [`crate::expr`] for bodies and epilogues):
//!
//! - `FusedElementwise[expr](x0, ..., xn)` = `expr` with `%i` = `xi`.
//! - `FusedMatMul[transA=0, transB=0, alpha=1.0, epilogue="%0"](A, B, e1, ..., ek)`
//!   = `epilogue(P, e1, ..., ek)` where `P = alpha · MatMul(A', B')`, `A'` is
//!   `A` with its last two axes swapped when `transA` is 1 (same for `B`), and
//!   in the epilogue `%0` is `P` and `%i` is `ei`. The `alpha` scaling is
//!   skipped when alpha is exactly 1.
//! - `FusedConv[<Conv's attributes>, epilogue="%0"](X, W, e1, ..., ek)` =
//!   `epilogue(Conv(X, W), e1, ..., ek)`; a conv bias is an epilogue `Add`
//!   with a `[C,1,1]`-shaped operand.
//!
//! The epilogue's result must have the product's shape (it may change the
//! dtype, e.g. a Cast): a backend applies it to each output tile in registers
//! before the store, so it cannot broadcast the product up.

use crate::expr::{self, Expr};
use crate::infer::{infer_op, Operand};
use crate::interp::eval_op;
use crate::{Attr, Attrs, Error, Op, Result, Tensor, TensorType};

/// The attribute holding a FusedElementwise body.
pub const EXPR: &str = "expr";
/// The attribute holding a FusedMatMul/FusedConv epilogue.
pub const EPILOGUE: &str = "epilogue";
/// Attributes of FusedMatMul beyond the epilogue.
pub const MATMUL_ATTRS: [&str; 3] = ["alpha", "transA", "transB"];

/// The FusedElementwise body or the FusedMatMul/FusedConv epilogue (`%0` when absent).
pub fn body(op: Op, attrs: &Attrs) -> Result<Expr> {
    let (name, default) = match op {
        Op::FusedElementwise => (EXPR, None),
        Op::FusedMatMul | Op::FusedConv => (EPILOGUE, Some("%0")),
        _ => return Err(Error::invalid(format!("{op} is not a fused op"))),
    };
    let src = match (attrs.str(name)?, default) {
        (Some(s), _) => s,
        (None, Some(d)) => d,
        (None, None) => return Err(Error::Attr { attr: name.into(), msg: format!("{op} needs its `{name}` attribute") }),
    };
    let e = Expr::parse(src).map_err(|e| Error::Attr { attr: name.into(), msg: format!("{op}: {e}") })?;
    e.check()?;
    Ok(e)
}

/// The attributes of the plain Conv inside a FusedConv.
pub fn conv_attrs(attrs: &Attrs) -> Attrs {
    let mut a = attrs.clone();
    a.remove(EPILOGUE);
    a
}

/// Builds the attributes of a FusedMatMul.
pub fn matmul_attrs(trans_a: bool, trans_b: bool, alpha: f32, epilogue: &Expr) -> Attrs {
    let mut a = Attrs::new();
    if trans_a {
        a.set("transA", Attr::Int(1));
    }
    if trans_b {
        a.set("transB", Attr::Int(1));
    }
    if alpha != 1.0 {
        a.set("alpha", Attr::Float(alpha));
    }
    if *epilogue != Expr::Input(0) {
        a.set(EPILOGUE, Attr::Str(epilogue.to_string()));
    }
    a
}

fn swap_last_two(ty: &TensorType, op: Op, what: &str) -> Result<TensorType> {
    let r = ty.shape.rank();
    if r < 2 {
        return Err(Error::invalid(format!("{op}: {what} is transposed but has rank {r} (needs at least 2)")));
    }
    let mut t = ty.clone();
    t.shape.0.swap(r - 2, r - 1);
    Ok(t)
}

fn flag(attrs: &Attrs, name: &str) -> Result<bool> {
    Ok(attrs.int_or(name, 0)? != 0)
}

fn check_epilogue_shape(op: Op, product: &TensorType, out: &TensorType) -> Result<()> {
    if product.shape != out.shape {
        return Err(Error::invalid(format!(
            "{op}: the epilogue turns the product {product} into {out}; it must keep the product's shape"
        )));
    }
    Ok(())
}

fn present<'a, T>(op: Op, inputs: &'a [Option<T>]) -> Result<Vec<&'a T>> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, x)| x.as_ref().ok_or_else(|| Error::invalid(format!("{op}: input {i} is missing (fused ops have no optional inputs)"))))
        .collect()
}

pub(crate) fn infer(op: Op, attrs: &Attrs, inputs: &[Option<Operand>]) -> Result<Vec<TensorType>> {
    let ins = present(op, inputs)?;
    let e = body(op, attrs)?;
    let tys: Vec<TensorType> = ins.iter().map(|o| o.ty.clone()).collect();
    let out = match op {
        Op::FusedElementwise => expr::infer(&e, &tys)?,
        Op::FusedMatMul | Op::FusedConv => {
            let product = if op == Op::FusedMatMul {
                let mut a = tys[0].clone();
                let mut b = tys[1].clone();
                if flag(attrs, "transA")? {
                    a = swap_last_two(&a, op, "A")?;
                }
                if flag(attrs, "transB")? {
                    b = swap_last_two(&b, op, "B")?;
                }
                let ops = [Some(Operand { ty: &a, value: None }), Some(Operand { ty: &b, value: None })];
                infer_op(Op::MatMul, &Attrs::new(), &ops, 1)?.remove(0)
            } else {
                let ops = [Some(*ins[0]), Some(*ins[1])];
                infer_op(Op::Conv, &conv_attrs(attrs), &ops, 1)?.remove(0)
            };
            let mut etys = vec![product.clone()];
            etys.extend(tys[2..].iter().cloned());
            let out = expr::infer(&e, &etys)?;
            check_epilogue_shape(op, &product, &out)?;
            out
        }
        _ => return Err(Error::invalid(format!("{op} is not a fused op"))),
    };
    Ok(vec![out])
}

fn transpose_last_two(t: &Tensor) -> Result<Tensor> {
    let r = t.rank();
    let mut perm: Vec<i64> = (0..r as i64).collect();
    perm.swap(r - 2, r - 1);
    let attrs = Attrs::new().with("perm", Attr::Ints(perm));
    Ok(eval_op(Op::Transpose, &attrs, &[Some(t)], 1)?.remove(0))
}

pub(crate) fn eval(op: Op, attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let ins = present(op, inputs)?;
    let e = body(op, attrs)?;
    let out = match op {
        Op::FusedElementwise => {
            let refs: Vec<&Tensor> = ins.iter().map(|t| **t).collect();
            expr::eval(&e, &refs)?
        }
        Op::FusedMatMul | Op::FusedConv => {
            let mut product = if op == Op::FusedMatMul {
                let mut a = (*ins[0]).clone();
                let mut b = (*ins[1]).clone();
                if flag(attrs, "transA")? {
                    if a.rank() < 2 {
                        return Err(Error::invalid(format!("{op}: A is transposed but has rank {}", a.rank())));
                    }
                    a = transpose_last_two(&a)?;
                }
                if flag(attrs, "transB")? {
                    if b.rank() < 2 {
                        return Err(Error::invalid(format!("{op}: B is transposed but has rank {}", b.rank())));
                    }
                    b = transpose_last_two(&b)?;
                }
                eval_op(Op::MatMul, &Attrs::new(), &[Some(&a), Some(&b)], 1)?.remove(0)
            } else {
                eval_op(Op::Conv, &conv_attrs(attrs), &[Some(*ins[0]), Some(*ins[1])], 1)?.remove(0)
            };
            let alpha = attrs.float_or("alpha", 1.0)?;
            if op == Op::FusedMatMul && alpha != 1.0 {
                let s = Tensor::from_f64s(product.dtype(), vec![], &[alpha as f64])?;
                product = eval_op(Op::Mul, &Attrs::new(), &[Some(&product), Some(&s)], 1)?.remove(0);
            }
            let mut refs: Vec<&Tensor> = vec![&product];
            refs.extend(ins[2..].iter().map(|t| **t));
            let out = expr::eval(&e, &refs)?;
            check_epilogue_shape(op, &product.ty(), &out.ty())?;
            out
        }
        _ => return Err(Error::invalid(format!("{op} is not a fused op"))),
    };
    Ok(vec![out])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{text, DType};

    fn t(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn fused_matmul_is_its_decomposition() {
        let a = t(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let bt = t(vec![2, 3], vec![1.0, 0.0, -1.0, 0.5, 0.5, 0.5]); // B transposed: [N=2, K=3]
        let bias = t(vec![2], vec![10.0, -100.0]);
        let ep = Expr::parse("Relu(Add(%0, %1))").unwrap();
        let attrs = matmul_attrs(false, true, 2.0, &ep);
        let y = eval(Op::FusedMatMul, &attrs, &[Some(&a), Some(&bt), Some(&bias)]).unwrap().remove(0);
        // A·Bᵀ = [[-2, 3], [-2, 7.5]]; ·2 = [[-4, 6], [-4, 15]]; + bias; relu
        assert_eq!(y.as_slice::<f32>().unwrap(), &[6.0, 0.0, 6.0, 0.0]);
        let tys: Vec<TensorType> = vec![a.ty(), bt.ty(), bias.ty()];
        let ops: Vec<Option<Operand>> = tys.iter().map(|ty| Some(Operand { ty, value: None })).collect();
        assert_eq!(infer(Op::FusedMatMul, &attrs, &ops).unwrap()[0], TensorType::new(DType::F32, vec![2, 2]));
    }

    #[test]
    fn epilogue_may_not_broadcast_the_product() {
        let a = t(vec![1, 2], vec![1.0, 2.0]);
        let b = t(vec![2, 1], vec![1.0, 1.0]);
        let wide = t(vec![4, 1], vec![0.0; 4]);
        let attrs = matmul_attrs(false, false, 1.0, &Expr::parse("Add(%0, %1)").unwrap());
        let err = eval(Op::FusedMatMul, &attrs, &[Some(&a), Some(&b), Some(&wide)]).unwrap_err().to_string();
        assert!(err.contains("must keep the product's shape"), "{err}");
    }

    #[test]
    fn fused_ops_in_text_form_run() {
        let src = r#"
graph @g {
  in %0 "x": f32[1,1,3,3]
  const %1: f32[1,1,1,1] = [2.0]
  const %2: f32[1,1,1] = [-5.0]
  %3: f32[1,1,3,3] = FusedConv[epilogue="Relu(Add(%0, %1))", kernel_shape=[1,1]](%0, %1, %2) @conv
  %4: f32[1,1,3,3] = FusedElementwise[expr="Mul(%0, %1)"](%3, %0) @mul
  out %4
}"#;
        let g = text::parse(src, "t.kir").unwrap();
        crate::verify::verify_types(&g).unwrap();
        let x = t(vec![1, 1, 3, 3], (0..9).map(|i| i as f32).collect());
        let y = crate::interp::run(&g, &[x]).unwrap();
        // relu(2x - 5) * x
        let want: Vec<f32> = (0..9).map(|i| ((2 * i - 5).max(0) * i) as f32).collect();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), want.as_slice());
        text::check_round_trip(&g).unwrap();
    }
}
