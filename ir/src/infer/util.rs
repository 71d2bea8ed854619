//! Helpers shared by the inference modules.

use crate::{Dim, Error, Op, Result, Shape, Tensor, TensorType};

use super::Operand;

/// Operand `i`, which the op requires.
pub fn operand<'a>(op: Op, inputs: &[Option<Operand<'a>>], i: usize) -> Result<Operand<'a>> {
    inputs.get(i).copied().flatten().ok_or_else(|| {
        Error::invalid(format!("{op} needs input {i} but only {} were given", inputs.len()))
    })
}

/// Optional operand `i`.
pub fn opt_operand<'a>(inputs: &[Option<Operand<'a>>], i: usize) -> Option<Operand<'a>> {
    inputs.get(i).copied().flatten()
}

/// The constant value of operand `i`, which inference needs (e.g. Reshape's shape).
pub fn const_value<'a>(op: Op, inputs: &[Option<Operand<'a>>], i: usize) -> Result<Option<&'a Tensor>> {
    Ok(operand(op, inputs, i)?.value)
}

/// Multidirectional broadcasting of possibly symbolic shapes. A symbolic
/// dimension against 1 stays symbolic; against a fixed n > 1 it becomes n
/// (the only value that would not fail at run time).
pub fn broadcast(op: Op, shapes: &[&Shape]) -> Result<Shape> {
    let rank = shapes.iter().map(|s| s.rank()).max().unwrap_or(0);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let mut d = Dim::Fixed(1);
        for s in shapes {
            let off = rank - s.rank();
            if i < off {
                continue;
            }
            let e = &s.0[i - off];
            d = match (&d, e) {
                (Dim::Fixed(1), _) => e.clone(),
                (_, Dim::Fixed(1)) => d,
                (Dim::Fixed(a), Dim::Fixed(b)) if a == b => d,
                (Dim::Fixed(a), Dim::Fixed(b)) => {
                    let all: Vec<String> = shapes.iter().map(|s| s.to_string()).collect();
                    return Err(Error::invalid(format!(
                        "{op}: shapes {} do not broadcast (dimension {i}: {a} vs {b})",
                        all.join(", ")
                    )));
                }
                (Dim::Fixed(_), Dim::Sym(_)) => d,
                (Dim::Sym(_), Dim::Fixed(_)) => e.clone(),
                (Dim::Sym(a), Dim::Sym(b)) if a == b => d,
                (Dim::Sym(_), Dim::Sym(_)) => super::unknown_dim(op),
            };
        }
        out.push(d);
    }
    Ok(Shape(out))
}

/// Shorthand for a type.
pub fn ty(dtype: crate::DType, shape: Shape) -> TensorType {
    TensorType { dtype, shape }
}
