//! Helpers shared by the interpreter's op modules: operand access with good
//! errors, broadcasting, axis lists.

use crate::{shape, Error, Op, Result, Tensor};

/// Operand `i`, which the op requires.
pub fn input<'a>(op: Op, inputs: &[Option<&'a Tensor>], i: usize) -> Result<&'a Tensor> {
    inputs.get(i).copied().flatten().ok_or_else(|| {
        Error::invalid(format!("{op} needs input {i} but only {} were given", inputs.len()))
    })
}

/// Optional operand `i`.
pub fn opt_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Broadcast shape of several static shapes, with an error naming them.
pub fn broadcast_all(op: Op, shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let mut out: Vec<usize> = Vec::new();
    for s in shapes {
        out = shape::broadcast_shapes(&out, s).ok_or_else(|| {
            Error::invalid(format!("{op}: shapes {:?} do not broadcast", shapes))
        })?;
    }
    Ok(out)
}

/// For each element of `out_shape` in row-major order, the flat index of the
/// element of an operand of `in_shape` that broadcasts onto it.
pub fn broadcast_indices(in_shape: &[usize], out_shape: &[usize]) -> Vec<usize> {
    let n: usize = out_shape.iter().product();
    let rank = out_shape.len();
    let offset = rank - in_shape.len();
    let in_strides = shape::strides(in_shape);
    // stride per output axis, 0 on broadcast axes
    let st: Vec<usize> = (0..rank)
        .map(|i| if i < offset || in_shape[i - offset] == 1 { 0 } else { in_strides[i - offset] })
        .collect();
    let mut idx = vec![0usize; rank];
    let mut out = Vec::with_capacity(n);
    let mut flat = 0usize;
    for _ in 0..n {
        out.push(flat);
        // increment the multi-index
        for ax in (0..rank).rev() {
            idx[ax] += 1;
            flat += st[ax];
            if idx[ax] < out_shape[ax] {
                break;
            }
            flat -= st[ax] * idx[ax];
            idx[ax] = 0;
        }
    }
    out
}

/// Normalises a list of possibly negative axes, rejecting duplicates and out-of-range ones.
pub fn norm_axes(op: Op, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = shape::normalize_axis(a, rank).ok_or_else(|| {
            Error::invalid(format!("{op}: axis {a} is out of range for rank {rank}"))
        })?;
        if out.contains(&n) {
            return Err(Error::invalid(format!("{op}: axis {a} is repeated")));
        }
        out.push(n);
    }
    Ok(out)
}

/// One possibly negative axis.
pub fn norm_axis(op: Op, axis: i64, rank: usize) -> Result<usize> {
    shape::normalize_axis(axis, rank)
        .ok_or_else(|| Error::invalid(format!("{op}: axis {axis} is out of range for rank {rank}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_indices_repeat_rows_and_columns() {
        assert_eq!(broadcast_indices(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_indices(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(broadcast_indices(&[], &[2]), vec![0, 0]);
        assert_eq!(broadcast_indices(&[2, 2], &[2, 2]), vec![0, 1, 2, 3]);
    }
}
