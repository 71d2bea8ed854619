//! Shape and dtype inference for the Linalg class: MatMul (numpy matmul
//! shapes), Gemm, Einsum (the interpreter's equation parser, with symbolic
//! label sizes), MatMulInteger (→ i32) and QLinearMatMul (→ the output zero
//! point's type). Fixed dimensions are checked as the interpreter checks
//! them; symbolic ones are trusted and checked at run time.

use super::util::{broadcast, operand, opt_operand, ty};
use super::Operand;
use crate::interp::linalg::einsum::Equation;
use crate::{Attrs, DType, Dim, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    _n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let out = match op {
        Op::MatMul => {
            let (a, b) = (operand(op, inputs, 0)?.ty, operand(op, inputs, 1)?.ty);
            if a.dtype != b.dtype {
                return Err(Error::invalid(format!(
                    "{op}: A is {a} but B is {b}; they must have one dtype"
                )));
            }
            use DType::*;
            if !matches!(a.dtype, F32 | F64 | F16 | BF16 | I32 | I64 | U32 | U64) {
                return Err(Error::unsupported(format!("{op} on {} operands", a.dtype)));
            }
            ty(a.dtype, matmul_shape(op, &a.shape, &b.shape)?)
        }
        Op::Gemm => gemm(attrs, inputs)?,
        Op::Einsum => einsum(attrs, inputs)?,
        Op::MatMulInteger => {
            let (a, b) = (int8(op, inputs, 0, "A")?, int8(op, inputs, 1, "B")?);
            ty(DType::I32, matmul_shape(op, &a.shape, &b.shape)?)
        }
        Op::QLinearMatMul => {
            let (a, b) = (int8(op, inputs, 0, "a")?, int8(op, inputs, 3, "b")?);
            for i in [1, 4, 6] {
                operand(op, inputs, i)?;
            }
            let dtype = opt_operand(inputs, 7).map_or(a.dtype, |z| z.ty.dtype);
            if !matches!(dtype, DType::U8 | DType::I8) {
                return Err(Error::unsupported(format!(
                    "{op}: output type {dtype} (expected uint8 or int8)"
                )));
            }
            ty(dtype, matmul_shape(op, &a.shape, &b.shape)?)
        }
        _ => return Err(Error::unsupported(format!("{op} is not a Linalg op"))),
    };
    Ok(vec![out])
}

fn int8<'a>(
    op: Op,
    inputs: &[Option<Operand<'a>>],
    i: usize,
    what: &str,
) -> Result<&'a TensorType> {
    let t = operand(op, inputs, i)?.ty;
    match t.dtype {
        DType::U8 | DType::I8 => Ok(t),
        d => Err(Error::unsupported(format!(
            "{op}: {what} must be uint8 or int8, found {d}"
        ))),
    }
}

/// Whether two dimensions may be equal (symbolic ones always may).
fn compatible(a: &Dim, b: &Dim) -> bool {
    match (a, b) {
        (Dim::Fixed(x), Dim::Fixed(y)) => x == y,
        _ => true,
    }
}

/// numpy matmul's result shape.
pub(crate) fn matmul_shape(op: Op, a: &Shape, b: &Shape) -> Result<Shape> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err(Error::invalid(format!(
            "{op}: operands must have rank at least 1, got shapes {a} and {b}"
        )));
    }
    let one = Dim::Fixed(1);
    let a2: Vec<Dim> = if a.rank() == 1 {
        vec![one.clone(), a.0[0].clone()]
    } else {
        a.0.clone()
    };
    let b2: Vec<Dim> = if b.rank() == 1 {
        vec![b.0[0].clone(), one]
    } else {
        b.0.clone()
    };
    let (ab, ak) = a2.split_at(a2.len() - 2);
    let (bb, bk) = b2.split_at(b2.len() - 2);
    if !compatible(&ak[1], &bk[0]) {
        return Err(Error::invalid(format!(
            "{op}: inner dimensions differ: A is {a} (K = {}) and B is {b} (K = {})",
            ak[1], bk[0]
        )));
    }
    let mut out = broadcast(op, &[&Shape(ab.to_vec()), &Shape(bb.to_vec())])?.0;
    if a.rank() > 1 {
        out.push(ak[0].clone());
    }
    if b.rank() > 1 {
        out.push(bk[1].clone());
    }
    Ok(Shape(out))
}

fn gemm(attrs: &Attrs, inputs: &[Option<Operand>]) -> Result<TensorType> {
    let op = Op::Gemm;
    let (a, b) = (operand(op, inputs, 0)?.ty, operand(op, inputs, 1)?.ty);
    let c = opt_operand(inputs, 2).map(|c| c.ty);
    for t in [Some(b), c].into_iter().flatten() {
        if t.dtype != a.dtype {
            return Err(Error::invalid(format!(
                "{op}: {t} and A {a} must have one dtype"
            )));
        }
    }
    use DType::*;
    if !matches!(a.dtype, F32 | F64 | F16 | BF16 | I32 | I64 | U32 | U64) {
        return Err(Error::unsupported(format!("{op} on {} operands", a.dtype)));
    }
    let ([a0, a1], [b0, b1]) = (a.shape.0.as_slice(), b.shape.0.as_slice()) else {
        return Err(Error::invalid(format!(
            "{op}: A and B must be 2-D, got {a} and {b}"
        )));
    };
    let trans_a = attrs.int_or("transA", 0)? != 0;
    let trans_b = attrs.int_or("transB", 0)? != 0;
    let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
    let (k2, n) = if trans_b { (b1, b0) } else { (b0, b1) };
    if !compatible(k, k2) {
        return Err(Error::invalid(format!(
            "{op}: inner dimensions differ: A {a} (transA={}) and B {b} (transB={})",
            trans_a as u8, trans_b as u8
        )));
    }
    if let Some(c) = c {
        let fits = c.shape.rank() <= 2
            && c.shape
                .0
                .iter()
                .rev()
                .zip([n, m])
                .all(|(d, want)| *d == Dim::Fixed(1) || compatible(d, want));
        if !fits {
            return Err(Error::invalid(format!(
                "{op}: C {c} does not broadcast to [{m}, {n}]"
            )));
        }
    }
    Ok(ty(a.dtype, Shape(vec![m.clone(), n.clone()])))
}

fn einsum(attrs: &Attrs, inputs: &[Option<Operand>]) -> Result<TensorType> {
    let op = Op::Einsum;
    let equation = attrs.str("equation")?.ok_or_else(|| Error::Attr {
        attr: "equation".into(),
        msg: "Einsum requires it".into(),
    })?;
    let ts: Vec<&TensorType> = (0..inputs.len())
        .map(|i| operand(op, inputs, i).map(|o| o.ty))
        .collect::<Result<_>>()?;
    let Some(first) = ts.first() else {
        return Err(Error::invalid("Einsum: needs at least one input"));
    };
    if let Some((i, t)) = ts.iter().enumerate().find(|(_, t)| t.dtype != first.dtype) {
        return Err(Error::invalid(format!(
            "Einsum: input {i} is {t} but input 0 is {}",
            first.dtype
        )));
    }
    if first.dtype == DType::Bool {
        return Err(Error::unsupported("Einsum on bool operands"));
    }
    let ranks: Vec<usize> = ts.iter().map(|t| t.shape.rank()).collect();
    let eq = Equation::parse(equation, &ranks)?;
    // a label's size: its fixed size other than 1 if it has one, else a
    // symbolic size, else 1 (size-1 dimensions broadcast)
    let size = |label: usize| -> Result<Dim> {
        let mut best = Dim::Fixed(1);
        for (labels, t) in eq.inputs.iter().zip(&ts) {
            for (&l, d) in labels.iter().zip(&t.shape.0) {
                if l != label {
                    continue;
                }
                best = match (&best, d) {
                    (_, Dim::Fixed(1)) => best,
                    (Dim::Fixed(1), _) | (Dim::Sym(_), Dim::Fixed(_)) => d.clone(),
                    (Dim::Fixed(x), Dim::Fixed(y)) if x != y => {
                        return Err(Error::invalid(format!(
                            "Einsum: a label has sizes {x} and {y} in `{equation}`"
                        )))
                    }
                    _ => best,
                };
            }
        }
        Ok(best)
    };
    let dims: Vec<Dim> = eq.output.iter().map(|&l| size(l)).collect::<Result<_>>()?;
    Ok(ty(first.dtype, Shape(dims)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn op(t: &TensorType) -> Option<Operand<'_>> {
        Some(Operand { ty: t, value: None })
    }

    fn shape(dims: &[&str]) -> Shape {
        Shape(
            dims.iter()
                .map(|d| {
                    d.parse()
                        .map(Dim::Fixed)
                        .unwrap_or_else(|_| Dim::Sym(d.to_string()))
                })
                .collect(),
        )
    }

    #[test]
    fn matmul_shapes() {
        let a = TensorType {
            dtype: DType::F32,
            shape: shape(&["b", "s", "384"]),
        };
        let w = TensorType {
            dtype: DType::F32,
            shape: shape(&["384", "1536"]),
        };
        let y = infer(Op::MatMul, &Attrs::new(), &[op(&a), op(&w)], 1).unwrap();
        assert_eq!(y[0].shape, shape(&["b", "s", "1536"]));
        let v = TensorType::new(DType::F32, vec![384]);
        let y = infer(Op::MatMul, &Attrs::new(), &[op(&a), op(&v)], 1).unwrap();
        assert_eq!(y[0].shape, shape(&["b", "s"]));
        let bad = TensorType::new(DType::F32, vec![383, 2]);
        assert!(infer(Op::MatMul, &Attrs::new(), &[op(&a), op(&bad)], 1).is_err());
    }

    #[test]
    fn gemm_and_einsum_shapes() {
        let a = TensorType::new(DType::F32, vec![3, 2]);
        let b = TensorType::new(DType::F32, vec![4, 3]);
        let attrs = Attrs::new()
            .with("transA", Attr::Int(1))
            .with("transB", Attr::Int(1));
        let y = infer(Op::Gemm, &attrs, &[op(&a), op(&b)], 1).unwrap();
        assert_eq!(y[0], TensorType::new(DType::F32, vec![2, 4]));
        let x = TensorType {
            dtype: DType::F32,
            shape: shape(&["b", "1", "3"]),
        };
        let z = TensorType {
            dtype: DType::F32,
            shape: shape(&["5", "3"]),
        };
        let attrs = Attrs::new().with("equation", Attr::Str("bij,kj->bik".into()));
        let y = infer(Op::Einsum, &attrs, &[op(&x), op(&z)], 1).unwrap();
        assert_eq!(y[0].shape, shape(&["b", "1", "5"]));
    }

    #[test]
    fn quantized_matmul_types() {
        let a = TensorType::new(DType::U8, vec![2, 3]);
        let b = TensorType::new(DType::I8, vec![3, 4]);
        let y = infer(Op::MatMulInteger, &Attrs::new(), &[op(&a), op(&b)], 1).unwrap();
        assert_eq!(y[0], TensorType::new(DType::I32, vec![2, 4]));
        let s = TensorType::new(DType::F32, vec![]);
        let zi = TensorType::new(DType::I8, vec![]);
        let ins = [
            op(&a),
            op(&s),
            op(&a),
            op(&b),
            op(&s),
            op(&b),
            op(&s),
            op(&zi),
        ];
        let y = infer(Op::QLinearMatMul, &Attrs::new(), &ins, 1).unwrap();
        assert_eq!(y[0], TensorType::new(DType::I8, vec![2, 4]));
    }
}
