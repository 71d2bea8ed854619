//! Gather, GatherElements, GatherND: selection by an index tensor. Indices
//! may be negative (counted from the end); out-of-range ones are errors.

use super::{index_product, ints_of, resolve_index, strides, take};
use crate::interp::util::{input, norm_axis};
use crate::{Attrs, Error, Op, Result, Tensor};

/// Gather's output shape: `data[:axis] ++ indices ++ data[axis+1:]`.
pub(crate) fn gather_dims<D: Clone>(data: &[D], indices: &[D], axis: usize) -> Vec<D> {
    let mut out = data[..axis].to_vec();
    out.extend_from_slice(indices);
    out.extend_from_slice(&data[axis + 1..]);
    out
}

/// GatherND's `batch_dims`, checked against the ranks of data and indices.
/// (The output shape is `indices[:-1] ++ data[batch_dims + indices[-1]:]`.)
pub(crate) fn gather_nd_rank_check(
    data_rank: usize,
    indices_rank: usize,
    batch_dims: i64,
) -> Result<usize> {
    let op = Op::GatherND;
    let b = usize::try_from(batch_dims).map_err(|_| Error::Attr {
        attr: "batch_dims".into(),
        msg: format!("{op} batch_dims must not be negative, found {batch_dims}"),
    })?;
    if data_rank < 1 || indices_rank < 1 || b >= data_rank.min(indices_rank) {
        return Err(Error::invalid(format!(
            "{op}: data rank {data_rank} and indices rank {indices_rank} must exceed batch_dims {b}"
        )));
    }
    Ok(b)
}

pub(super) fn gather(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Gather;
    let x = input(op, inputs, 0)?;
    let ind = input(op, inputs, 1)?;
    let axis = norm_axis(op, attrs.int_or("axis", 0)?, x.rank())?;
    let dim = x.shape()[axis];
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let outer: usize = x.shape()[..axis].iter().product();
    let idx: Vec<usize> = ints_of(op, ind, "indices")?
        .into_iter()
        .map(|i| resolve_index(op, i, dim).map(|j| j * inner))
        .collect::<Result<_>>()?;
    let tables = [
        (0..outer).map(|o| o * dim * inner).collect(),
        idx,
        (0..inner).collect::<Vec<usize>>(),
    ];
    let out = gather_dims(x.shape(), ind.shape(), axis);
    Tensor::new(out, take(x.data(), &index_product(&tables)))
}

pub(super) fn gather_elements(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::GatherElements;
    let x = input(op, inputs, 0)?;
    let ind = input(op, inputs, 1)?;
    let axis = norm_axis(op, attrs.int_or("axis", 0)?, x.rank())?;
    let idx = element_indices(op, x, ind, axis)?;
    Tensor::new(ind.shape().to_vec(), take(x.data(), &idx))
}

/// GatherElements' and ScatterElements' addressing: for each element of
/// `ind` (same rank as `x`, no larger off `axis`), the flat index into `x` of
/// the element at the same coordinates with the `axis` coordinate replaced by
/// the index value (negative values count from the end).
pub(super) fn element_indices(op: Op, x: &Tensor, ind: &Tensor, axis: usize) -> Result<Vec<usize>> {
    let ok = ind.rank() == x.rank()
        && ind
            .shape()
            .iter()
            .zip(x.shape())
            .enumerate()
            .all(|(k, (i, d))| k == axis || i <= d);
    if !ok {
        return Err(Error::invalid(format!(
            "{op}: indices {} do not fit data {} (same rank, no larger off axis {axis})",
            ind.ty(),
            x.ty()
        )));
    }
    let st = strides(x.shape());
    let tables: Vec<Vec<usize>> = ind
        .shape()
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            if k == axis {
                vec![0; n]
            } else {
                (0..n).map(|c| c * st[k]).collect()
            }
        })
        .collect();
    let mut idx = index_product(&tables);
    let dim = x.shape()[axis];
    for (p, i) in idx.iter_mut().zip(ints_of(op, ind, "indices")?) {
        *p += resolve_index(op, i, dim)? * st[axis];
    }
    Ok(idx)
}

pub(super) fn gather_nd(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::GatherND;
    let x = input(op, inputs, 0)?;
    let ind = input(op, inputs, 1)?;
    let b = gather_nd_rank_check(x.rank(), ind.rank(), attrs.int_or("batch_dims", 0)?)?;
    let (ds, is) = (x.shape(), ind.shape());
    let k = is[is.len() - 1];
    if ds[..b] != is[..b] || b + k > ds.len() {
        return Err(Error::invalid(format!(
            "{op}: indices {} do not fit data {} with batch_dims {b}",
            ind.ty(),
            x.ty()
        )));
    }
    let batch: usize = ds[..b].iter().product();
    let per_batch: usize = is[b..is.len() - 1].iter().product();
    let slice: usize = ds[b + k..].iter().product();
    let batch_size: usize = ds[b..].iter().product();
    let st = strides(&ds[b..]);
    let vals = ints_of(op, ind, "indices")?;
    let mut idx = Vec::with_capacity(batch * per_batch * slice);
    for t in 0..batch * per_batch {
        let mut base = (t / per_batch) * batch_size;
        for j in 0..k {
            base += resolve_index(op, vals[t * k + j], ds[b + j])? * st[j];
        }
        idx.extend(base..base + slice);
    }
    let mut out = is[..is.len() - 1].to_vec();
    out.extend_from_slice(&ds[b + k..]);
    Tensor::new(out, take(x.data(), &idx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn gather_axis_1_with_negative_index() {
        let x = t(&[2, 3], &[0, 1, 2, 3, 4, 5]);
        let i = t(&[2], &[-1, 0]);
        let a = Attrs::new().with("axis", crate::Attr::Int(1));
        let y = gather(&a, &[Some(&x), Some(&i)]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[2, 0, 5, 3]);
        // scalar index drops the axis
        let s = Tensor::scalar(1i64);
        let y = gather(&Attrs::new(), &[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y.shape(), &[3]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[3, 4, 5]);
        let bad = t(&[1], &[3]);
        assert!(gather(&Attrs::new(), &[Some(&x), Some(&bad)]).is_err());
    }

    #[test]
    fn gather_nd_with_batch_dims() {
        // ONNX example 5: data [[[0,1],[2,3]],[[4,5],[6,7]]], indices [[1],[0]], batch_dims 1
        let x = t(&[2, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7]);
        let i = t(&[2, 1], &[1, 0]);
        let a = Attrs::new().with("batch_dims", crate::Attr::Int(1));
        let y = gather_nd(&a, &[Some(&x), Some(&i)]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(y.as_slice::<i64>().unwrap(), &[2, 3, 4, 5]);
    }

    #[test]
    fn gather_elements_axis_1() {
        let x = t(&[2, 2], &[1, 2, 3, 4]);
        let i = t(&[2, 2], &[0, 0, 1, 0]);
        let a = Attrs::new().with("axis", crate::Attr::Int(1));
        let y = gather_elements(&a, &[Some(&x), Some(&i)]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[1, 1, 4, 3]);
    }
}
