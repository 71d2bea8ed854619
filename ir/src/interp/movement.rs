//! Interpreter for the data-movement ops: the output is a rearrangement or a
//! selection of the input's elements (Reshape, Transpose, Slice, Gather,
//! Scatter*, Pad, ...).
//!
//! Movement ops are type-agnostic. Almost all of them are written as "compute
//! a flat source index for every output element, then gather" ([`take`]), so
//! one code path serves all thirteen dtypes. The index maps are built axis by
//! axis with [`index_product`]: for each output axis, a table giving the
//! offset (already multiplied by the source stride) contributed by each output
//! coordinate. Transpose, Expand, Tile, Slice, Pad and nearest Resize are all
//! a choice of those tables.
//!
//! The submodules also export the pure shape computations (Reshape's target
//! shape, Slice's ranges, Split's sizes, ...) that shape inference reuses, so
//! the interpreter and inference cannot disagree.

pub(crate) mod concat_split;
pub(crate) mod gather;
pub(crate) mod layout;
pub(crate) mod pad;
pub(crate) mod scatter;
pub(crate) mod select;
pub(crate) mod slice;

use crate::{map_data, Attrs, Data, Error, Op, Result, Tensor};

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let one = |t: Result<Tensor>| t.map(|t| vec![t]);
    match op {
        Op::Reshape => one(layout::reshape(attrs, inputs)),
        Op::Transpose => one(layout::transpose(attrs, inputs)),
        Op::Flatten => one(layout::flatten(attrs, inputs)),
        Op::Squeeze => one(layout::squeeze(inputs)),
        Op::Unsqueeze => one(layout::unsqueeze(inputs)),
        Op::Expand => one(layout::expand(inputs)),
        Op::Tile => one(layout::tile(inputs)),
        Op::DepthToSpace | Op::SpaceToDepth => one(layout::depth_space(op, attrs, inputs)),
        Op::Concat => one(concat_split::concat(attrs, inputs)),
        Op::Split => concat_split::split(attrs, inputs, n_outputs),
        Op::Slice => one(slice::slice(inputs)),
        Op::Gather => one(gather::gather(attrs, inputs)),
        Op::GatherElements => one(gather::gather_elements(attrs, inputs)),
        Op::GatherND => one(gather::gather_nd(attrs, inputs)),
        Op::ScatterElements => one(scatter::scatter_elements(attrs, inputs)),
        Op::ScatterND => one(scatter::scatter_nd(attrs, inputs)),
        Op::Pad => one(pad::pad(attrs, inputs)),
        Op::Trilu => one(select::trilu(attrs, inputs)),
        Op::ReverseSequence => one(select::reverse_sequence(attrs, inputs)),
        Op::OneHot => one(select::one_hot(attrs, inputs)),
        _ => Err(Error::invalid(format!("{op} is not a movement op"))),
    }
}

/// The elements of `data` at the flat indices `idx`, in order. Every index
/// must be in range (callers build them from validated shapes).
pub(crate) fn take(data: &Data, idx: &[usize]) -> Data {
    map_data!(data, v => idx.iter().map(|&i| v[i]).collect())
}

/// Marks an output element that comes from no input element (padding).
pub(crate) const FILL: usize = usize::MAX;

/// Like [`take`], but an index of [`FILL`] takes element 0 of `fill` (a
/// tensor of the same dtype with at least one element).
pub(crate) fn take_or_fill(op: Op, data: &Data, idx: &[usize], fill: &Data) -> Result<Data> {
    fn go<T: crate::Element>(v: &[T], idx: &[usize], fill: &Data) -> Option<Data> {
        let f = *T::slice(fill)?.first()?;
        Some(T::wrap(
            idx.iter()
                .map(|&i| if i == FILL { f } else { v[i] })
                .collect(),
        ))
    }
    crate::with_data!(data, v => go(v, idx, fill)).ok_or_else(|| {
        Error::invalid(format!(
            "{op}: the fill value must be one {} element, found {} with {} elements",
            data.dtype(),
            fill.dtype(),
            fill.len()
        ))
    })
}

/// Flat indices of the cartesian product of per-axis offset tables:
/// `out[flat(c_0, .., c_k)] = tables[0][c_0] + .. + tables[k][c_k]`, in
/// row-major order of the coordinates. A [`FILL`] entry makes the whole sum
/// [`FILL`]. No tables gives one element (a scalar) at offset 0.
pub(crate) fn index_product(tables: &[Vec<usize>]) -> Vec<usize> {
    if tables.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let n: usize = tables.iter().map(Vec::len).product();
    let mut out = Vec::with_capacity(n);
    out.push(0usize);
    for t in tables {
        let prev = std::mem::take(&mut out);
        out.reserve(prev.len() * t.len());
        for &p in &prev {
            for &o in t {
                out.push(if p == FILL || o == FILL { FILL } else { p + o });
            }
        }
    }
    out
}

/// Row-major strides of `dims`.
pub(crate) fn strides(dims: &[usize]) -> Vec<usize> {
    crate::shape::strides(dims)
}

/// Flat source indices of `perm`uting the axes of a tensor of shape `dims`
/// (output axis `k` is input axis `perm[k]`).
pub(crate) fn transpose_indices(dims: &[usize], perm: &[usize]) -> Vec<usize> {
    let st = strides(dims);
    let tables: Vec<Vec<usize>> = perm
        .iter()
        .map(|&p| (0..dims[p]).map(|c| c * st[p]).collect())
        .collect();
    index_product(&tables)
}

/// The i64 contents of an integer operand (shapes, axes, indices), with an
/// error naming the op and input.
pub(crate) fn ints_of(op: Op, t: &Tensor, what: &str) -> Result<Vec<i64>> {
    t.to_i64_vec().map_err(|_| {
        Error::invalid(format!(
            "{op}: `{what}` must be an integer tensor, found {}",
            t.ty()
        ))
    })
}

/// A dimension count as i64 (tensor dimensions always fit).
pub(crate) fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The most elements an op here will materialise: more is surely a bug in
/// the model (and would abort on allocation instead of failing cleanly).
pub(crate) const MAX_ELEMENTS: usize = 1 << 34;

/// Checks that a computed output shape is not absurdly large.
pub(crate) fn check_numel(op: Op, dims: &[usize]) -> Result<()> {
    match dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Error::invalid(format!(
            "{op}: output shape {dims:?} is too large"
        ))),
    }
}

/// Resolves a possibly negative index against `dim`, or fails naming the op.
pub(crate) fn resolve_index(op: Op, i: i64, dim: usize) -> Result<usize> {
    let d = to_i64(dim);
    let j = if i < 0 { i + d } else { i };
    if (0..d).contains(&j) {
        Ok(j as usize)
    } else {
        Err(Error::invalid(format!(
            "{op}: index {i} is out of range for a dimension of {dim}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_product_is_row_major_sum() {
        assert_eq!(
            index_product(&[vec![0, 10], vec![1, 2, 3]]),
            vec![1, 2, 3, 11, 12, 13]
        );
        assert_eq!(index_product(&[]), vec![0]);
        assert_eq!(
            index_product(&[vec![0, FILL], vec![0, 1]]),
            vec![0, 1, FILL, FILL]
        );
        assert_eq!(index_product(&[vec![], vec![1]]), Vec::<usize>::new());
    }

    #[test]
    fn transpose_indices_of_2x3() {
        // [[0,1,2],[3,4,5]]^T = [[0,3],[1,4],[2,5]]
        assert_eq!(transpose_indices(&[2, 3], &[1, 0]), vec![0, 3, 1, 4, 2, 5]);
    }
}
