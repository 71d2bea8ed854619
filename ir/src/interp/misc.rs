//! Interpreter for the miscellaneous ops: Resize (in [`resize`]), TopK and
//! NonZero.

pub(crate) mod resize;

use super::movement::{ints_of, to_i64};
use crate::interp::util::{input, norm_axis};
use crate::{with_data, Attrs, Data, Element, Error, Op, Result, Tensor};
use std::cmp::Ordering;

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    match op {
        Op::Resize => resize::resize(attrs, inputs).map(|t| vec![t]),
        Op::TopK => {
            let mut outs = top_k(attrs, inputs)?;
            outs.truncate(n_outputs.max(1));
            Ok(outs)
        }
        Op::NonZero => non_zero(input(op, inputs, 0)?).map(|t| vec![t]),
        _ => Err(Error::invalid(format!("{op} is not a misc op"))),
    }
}

/// TopK's `K` operand: one non-negative integer.
pub(crate) fn top_k_k(k: &Tensor) -> Result<usize> {
    let op = Op::TopK;
    match ints_of(op, k, "K")?.as_slice() {
        [k] if *k >= 0 => Ok(*k as usize),
        v => Err(Error::invalid(format!(
            "{op}: K must be one non-negative integer, found {v:?}"
        ))),
    }
}

/// Orders NaN above every number (numpy's sort order), equal otherwise-unordered pairs.
fn nan_last<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    #[allow(clippy::eq_op)]
    a.partial_cmp(b).unwrap_or_else(|| (a != a).cmp(&(b != b)))
}

fn top_k(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let op = Op::TopK;
    let x = input(op, inputs, 0)?;
    let k = top_k_k(input(op, inputs, 1)?)?;
    if x.rank() == 0 {
        return Err(Error::invalid(format!("{op}: input must have rank >= 1")));
    }
    let axis = norm_axis(op, attrs.int_or("axis", -1)?, x.rank())?;
    let largest = attrs.int_or("largest", 1)? != 0;
    let dim = x.shape()[axis];
    if k > dim {
        return Err(Error::invalid(format!(
            "{op}: K = {k} exceeds the axis size {dim} of {}",
            x.ty()
        )));
    }
    let outer: usize = x.shape()[..axis].iter().product();
    let inner: usize = x.shape()[axis + 1..].iter().product();
    // Source positions of the selected elements, in output order.
    let mut pos = Vec::with_capacity(outer * k * inner);
    let mut indices = Vec::with_capacity(outer * k * inner);
    fn order<T: PartialOrd + Element>(
        v: &[T],
        (outer, dim, inner, k, largest): (usize, usize, usize, usize, bool),
        pos: &mut Vec<usize>,
        indices: &mut Vec<i64>,
    ) {
        let mut row: Vec<usize> = Vec::with_capacity(dim);
        let mut block = vec![0usize; k * inner];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * dim + j) * inner + i;
                row.clear();
                row.extend(0..dim);
                // Stable sort: ties keep the smaller index first.
                if largest {
                    row.sort_by(|&a, &b| nan_last(&v[at(b)], &v[at(a)]));
                } else {
                    row.sort_by(|&a, &b| nan_last(&v[at(a)], &v[at(b)]));
                }
                for (j, &r) in row.iter().take(k).enumerate() {
                    block[j * inner + i] = r;
                }
            }
            for (p, &r) in block.iter().enumerate() {
                pos.push((o * dim + r) * inner + p % inner);
                indices.push(r as i64);
            }
        }
    }
    let params = (outer, dim, inner, k, largest);
    with_data!(x.data(), v => order(v, params, &mut pos, &mut indices));
    let mut shape = x.shape().to_vec();
    shape[axis] = k;
    let values = Tensor::new(shape.clone(), super::movement::take(x.data(), &pos))?;
    Ok(vec![values, Tensor::from_vec(shape, indices)?])
}

fn non_zero(x: &Tensor) -> Result<Tensor> {
    fn nz<T: Element>(v: &[T]) -> Vec<usize> {
        let zero = T::from_f64(0.0);
        v.iter()
            .enumerate()
            .filter(|(_, &e)| e != zero)
            .map(|(i, _)| i)
            .collect()
    }
    let hits: Vec<usize> = with_data!(x.data(), v => nz(v));
    let r = x.rank();
    let n = hits.len();
    let st = super::movement::strides(x.shape());
    let mut out = vec![0i64; r * n];
    for (j, &p) in hits.iter().enumerate() {
        for a in 0..r {
            out[a * n + j] = to_i64((p / st[a]) % x.shape()[a]);
        }
    }
    Tensor::new(vec![r, n], Data::I64(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_breaks_ties_by_index() {
        let x = Tensor::from_vec(vec![2, 3], vec![1.0f32, 3.0, 3.0, f32::NAN, 0.0, 2.0]).unwrap();
        let k = Tensor::from_vec(vec![1], vec![2i64]).unwrap();
        let out = top_k(&Attrs::new(), &[Some(&x), Some(&k)]).unwrap();
        let v = out[0].as_slice::<f32>().unwrap();
        assert_eq!(&v[..2], &[3.0, 3.0]);
        assert!(v[2].is_nan() && v[3] == 2.0);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[1, 2, 0, 2]);
        let smallest = Attrs::new().with("largest", crate::Attr::Int(0));
        let out = top_k(&smallest, &[Some(&x), Some(&k)]).unwrap();
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 1, 1, 2]);
    }

    #[test]
    fn top_k_on_axis_0() {
        let x = Tensor::from_vec(vec![3, 2], vec![1i32, 6, 5, 2, 3, 4]).unwrap();
        let k = Tensor::from_vec(vec![1], vec![2i64]).unwrap();
        let a = Attrs::new().with("axis", crate::Attr::Int(0));
        let out = top_k(&a, &[Some(&x), Some(&k)]).unwrap();
        assert_eq!(out[0].as_slice::<i32>().unwrap(), &[5, 6, 3, 4]);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[1, 0, 2, 2]);
    }

    #[test]
    fn non_zero_lists_coordinates_per_axis() {
        let x = Tensor::from_vec(vec![2, 2], vec![true, false, true, true]).unwrap();
        let y = non_zero(&x).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[0, 1, 1, 0, 0, 1]);
        let y = non_zero(&Tensor::scalar(-0.0f32)).unwrap();
        assert_eq!(y.shape(), &[0, 0]);
        let y = non_zero(&Tensor::scalar(f32::NAN)).unwrap();
        assert_eq!(y.shape(), &[0, 1]);
    }
}
