//! Shape and dtype inference for the data-movement ops.
//!
//! The shape rules themselves live next to the interpreter
//! ([`crate::interp::movement`]) and are shared, so inference and evaluation
//! cannot disagree. Here they are applied to possibly symbolic shapes: a
//! dimension that depends on a value inference does not know, or on
//! arithmetic with a symbolic dimension, becomes [`unknown_dim`].
//! When an operand that determines the shape (Reshape's `shape`, Slice's
//! `starts`, ...) is not a known constant, the output rank is still derived
//! where possible, with unknown dimensions.

use super::util::{broadcast, operand, opt_operand, ty};
use super::{unknown_dim, Operand};
use crate::interp::movement::{concat_split, gather, layout, pad, select, slice};
use crate::interp::util::norm_axis;
#[cfg(test)]
use crate::DType;
use crate::{Attrs, Dim, Error, Op, Result, Shape, TensorType};

pub(crate) fn infer(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<Operand>],
    n_outputs: usize,
) -> Result<Vec<TensorType>> {
    let x = operand(op, inputs, 0)?;
    let dims = &x.ty.shape.0;
    let dtype = x.ty.dtype;
    let same = |shape: Vec<Dim>| Ok(vec![ty(dtype, Shape(shape))]);
    match op {
        Op::Reshape => {
            let shape = operand(op, inputs, 1)?;
            match ints_value(op, shape, "shape")? {
                Some(spec) => {
                    let allowzero = attrs.int_or("allowzero", 0)? != 0;
                    same(layout::reshape_dims(dims, &spec, allowzero)?)
                }
                None => same(unknown_dims(op, vector_len(op, shape, "shape")?)),
            }
        }
        Op::Transpose => {
            let perm = layout::transpose_perm(attrs, dims.len())?;
            same(perm.iter().map(|&p| dims[p].clone()).collect())
        }
        Op::Flatten => {
            let a = layout::flatten_axis(attrs, dims.len())?;
            same(vec![product(op, &dims[..a]), product(op, &dims[a..])])
        }
        Op::Squeeze => {
            let drop = match opt_operand(inputs, 1) {
                None => layout::squeeze_axes(dims, None)?,
                Some(axes) => match ints_value(op, axes, "axes")? {
                    Some(a) => layout::squeeze_axes(dims, Some(&a))?,
                    None => {
                        let n = vector_len(op, axes, "axes")?;
                        return same(unknown_dims(op, dims.len().saturating_sub(n)));
                    }
                },
            };
            same(
                dims.iter()
                    .enumerate()
                    .filter(|(i, _)| !drop.contains(i))
                    .map(|(_, d)| d.clone())
                    .collect(),
            )
        }
        Op::Unsqueeze => {
            let axes = operand(op, inputs, 1)?;
            match ints_value(op, axes, "axes")? {
                Some(a) => same(layout::unsqueeze_dims(dims, &a, Dim::Fixed(1))?),
                None => same(unknown_dims(op, dims.len() + vector_len(op, axes, "axes")?)),
            }
        }
        Op::Concat => concat(attrs, inputs),
        Op::Split => split(attrs, inputs, n_outputs),
        Op::Slice => same(slice_dims(inputs, dims)?),
        Op::Gather => {
            let ind = operand(op, inputs, 1)?;
            let axis = norm_axis(op, attrs.int_or("axis", 0)?, dims.len())?;
            same(gather::gather_dims(dims, &ind.ty.shape.0, axis))
        }
        Op::GatherElements => {
            let ind = operand(op, inputs, 1)?;
            norm_axis(op, attrs.int_or("axis", 0)?, dims.len())?;
            if ind.ty.shape.rank() != dims.len() {
                return Err(Error::invalid(format!(
                    "{op}: indices {} must have the rank of data {}",
                    ind.ty, x.ty
                )));
            }
            same(ind.ty.shape.0.clone())
        }
        Op::GatherND => {
            let ind = &operand(op, inputs, 1)?.ty.shape.0;
            let b = gather::gather_nd_rank_check(
                dims.len(),
                ind.len(),
                attrs.int_or("batch_dims", 0)?,
            )?;
            let Some(Dim::Fixed(k)) = ind.last() else {
                return Err(Error::unsupported(format!(
                    "{op}: the last dimension of indices must be static"
                )));
            };
            let tail = dims.get(b + k..).ok_or_else(|| {
                Error::invalid(format!(
                    "{op}: index tuples of {k} exceed data rank {}",
                    dims.len()
                ))
            })?;
            let mut out = ind[..ind.len() - 1].to_vec();
            out.extend_from_slice(tail);
            same(out)
        }
        Op::ScatterElements | Op::ScatterND | Op::Trilu | Op::ReverseSequence => {
            if op == Op::ReverseSequence {
                select::reverse_sequence_axes(attrs, dims.len())?;
            }
            Ok(vec![x.ty.clone()])
        }
        Op::Expand => {
            let shape = operand(op, inputs, 1)?;
            match ints_value(op, shape, "shape")? {
                Some(spec) => {
                    let spec = Shape::from(layout::expand_spec(&spec)?);
                    Ok(vec![ty(dtype, broadcast(op, &[&x.ty.shape, &spec])?)])
                }
                None => same(unknown_dims(
                    op,
                    dims.len().max(vector_len(op, shape, "shape")?),
                )),
            }
        }
        Op::Tile => match ints_value(op, operand(op, inputs, 1)?, "repeats")? {
            Some(r) => {
                let reps = layout::tile_repeats(&r, dims.len())?;
                same(
                    dims.iter()
                        .zip(reps)
                        .map(|(d, r)| scale_dim(op, d, r))
                        .collect(),
                )
            }
            None => same(unknown_dims(op, dims.len())),
        },
        Op::Pad => same(pad_dims(attrs, inputs, dims)?),
        Op::DepthToSpace | Op::SpaceToDepth => {
            let (b, _) = layout::depth_space_params(op, attrs)?;
            let [n, c, h, w] = dims.as_slice() else {
                return Err(Error::invalid(format!(
                    "{op}: input must have rank 4, found {}",
                    x.ty
                )));
            };
            let div = |d: &Dim, k: usize| match d {
                Dim::Fixed(v) if v % k == 0 => Ok(Dim::Fixed(v / k)),
                Dim::Fixed(v) => Err(Error::invalid(format!(
                    "{op}: dimension {v} of {} is not divisible by {k}",
                    x.ty
                ))),
                Dim::Sym(_) => Ok(unknown_dim(op)),
            };
            if op == Op::DepthToSpace {
                same(vec![
                    n.clone(),
                    div(c, b * b)?,
                    scale_dim(op, h, b),
                    scale_dim(op, w, b),
                ])
            } else {
                same(vec![
                    n.clone(),
                    scale_dim(op, c, b * b),
                    div(h, b)?,
                    div(w, b)?,
                ])
            }
        }
        Op::OneHot => {
            let depth = operand(op, inputs, 1)?;
            let values = operand(op, inputs, 2)?;
            let axis = select::one_hot_axis(attrs, dims.len())?;
            let d = match depth.value {
                Some(t) => Dim::Fixed(select::one_hot_depth(t)?),
                None => unknown_dim(op),
            };
            let mut out = dims.clone();
            out.insert(axis, d);
            Ok(vec![ty(values.ty.dtype, Shape(out))])
        }
        _ => Err(Error::invalid(format!("{op} is not a movement op"))),
    }
}

/// The integer contents of an operand whose value is known.
pub(crate) fn ints_value(op: Op, o: Operand, what: &str) -> Result<Option<Vec<i64>>> {
    o.value
        .map(|t| crate::interp::movement::ints_of(op, t, what))
        .transpose()
}

/// The length of a 1-D operand with a static shape (e.g. a shape operand
/// whose values are not known), or `Unsupported`.
pub(crate) fn vector_len(op: Op, o: Operand, what: &str) -> Result<usize> {
    match o.ty.shape.0.as_slice() {
        [Dim::Fixed(n)] => Ok(*n),
        _ => Err(Error::unsupported(format!(
            "{op}: the output rank depends on `{what}` ({}), which is not a static 1-D tensor",
            o.ty
        ))),
    }
}

/// `n` fresh unknown dimensions.
pub(crate) fn unknown_dims(op: Op, n: usize) -> Vec<Dim> {
    (0..n).map(|_| unknown_dim(op)).collect()
}

/// The product of dimensions: exact when all are static; a single symbol
/// times ones is that symbol; a static 0 makes 0.
pub(crate) fn product(op: Op, dims: &[Dim]) -> Dim {
    let mut fixed = 1usize;
    let mut syms = Vec::new();
    for d in dims {
        match d {
            Dim::Fixed(n) => fixed = fixed.saturating_mul(*n),
            Dim::Sym(_) => syms.push(d),
        }
    }
    match (fixed, syms.as_slice()) {
        (0, _) => Dim::Fixed(0),
        (f, []) => Dim::Fixed(f),
        (1, [s]) => (*s).clone(),
        _ => unknown_dim(op),
    }
}

/// `d × k` for a static factor `k`.
fn scale_dim(op: Op, d: &Dim, k: usize) -> Dim {
    match (d, k) {
        (Dim::Fixed(n), k) => Dim::Fixed(n * k),
        (_, 0) => Dim::Fixed(0),
        (s, 1) => s.clone(),
        _ => unknown_dim(op),
    }
}

/// Sum of dimensions (Concat's axis): static zeros vanish, one remaining
/// symbol stays, anything else symbolic is unknown.
fn sum(op: Op, dims: &[&Dim]) -> Dim {
    let fixed: usize = dims.iter().filter_map(|d| d.fixed()).sum();
    let syms: Vec<&&Dim> = dims.iter().filter(|d| d.fixed().is_none()).collect();
    match (fixed, syms.as_slice()) {
        (f, []) => Dim::Fixed(f),
        (0, [s]) => (**s).clone(),
        _ => unknown_dim(op),
    }
}

fn concat(attrs: &Attrs, inputs: &[Option<Operand>]) -> Result<Vec<TensorType>> {
    let op = Op::Concat;
    let xs: Vec<&TensorType> = (0..inputs.len())
        .map(|i| operand(op, inputs, i).map(|o| o.ty))
        .collect::<Result<_>>()?;
    let first = *xs
        .first()
        .ok_or_else(|| Error::invalid(format!("{op} needs inputs")))?;
    let rank = first.shape.rank();
    if rank == 0 {
        return Err(Error::invalid(format!(
            "{op}: inputs must have rank 1 or more"
        )));
    }
    let axis = concat_split::concat_axis(attrs, rank)?;
    let mut out = Vec::with_capacity(rank);
    for k in 0..rank {
        let col: Vec<&Dim> = xs
            .iter()
            .map(|t| t.shape.0.get(k))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::invalid(format!("{op}: inputs must all have rank {rank}")))?;
        out.push(if k == axis {
            sum(op, &col)
        } else {
            unify(op, &col, xs.as_slice())?
        });
    }
    for (i, t) in xs.iter().enumerate() {
        if t.dtype != first.dtype || t.shape.rank() != rank {
            return Err(Error::invalid(format!(
                "{op}: input {i} is {t} but input 0 is {first}"
            )));
        }
    }
    Ok(vec![ty(first.dtype, Shape(out))])
}

/// Dimensions that must be equal: a static one wins over symbols.
fn unify(op: Op, col: &[&Dim], xs: &[&TensorType]) -> Result<Dim> {
    let mut out = col[0].clone();
    for d in &col[1..] {
        match (&out, d) {
            (Dim::Fixed(a), Dim::Fixed(b)) if a != b => {
                let all: Vec<String> = xs.iter().map(|t| t.to_string()).collect();
                return Err(Error::invalid(format!(
                    "{op}: inputs {} disagree",
                    all.join(", ")
                )));
            }
            (Dim::Sym(_), Dim::Fixed(_)) => out = (*d).clone(),
            _ => {}
        }
    }
    Ok(out)
}

fn split(attrs: &Attrs, inputs: &[Option<Operand>], n_outputs: usize) -> Result<Vec<TensorType>> {
    let op = Op::Split;
    let x = operand(op, inputs, 0)?;
    let dims = &x.ty.shape.0;
    let axis = norm_axis(op, attrs.int_or("axis", 0)?, dims.len())?;
    let num_outputs = attrs.int("num_outputs")?;
    let parts: Vec<Dim> = match opt_operand(inputs, 1) {
        Some(s) => match ints_value(op, s, "split")? {
            Some(split) => {
                let total: i64 = split.iter().sum();
                let dim = match &dims[axis] {
                    Dim::Fixed(n) => *n,
                    // The parts fix the size; the interpreter checks it at run time.
                    Dim::Sym(_) => usize::try_from(total).unwrap_or(0),
                };
                concat_split::split_sizes(dim, Some(&split), num_outputs, n_outputs)?
                    .into_iter()
                    .map(Dim::Fixed)
                    .collect()
            }
            None => unknown_dims(op, n_outputs),
        },
        None => match &dims[axis] {
            Dim::Fixed(n) => concat_split::split_sizes(*n, None, num_outputs, n_outputs)?
                .into_iter()
                .map(Dim::Fixed)
                .collect(),
            Dim::Sym(_) => unknown_dims(op, n_outputs),
        },
    };
    Ok(parts
        .into_iter()
        .map(|p| {
            let mut d = dims.clone();
            d[axis] = p;
            ty(x.ty.dtype, Shape(d))
        })
        .collect())
}

/// Whether `start:end:step` surely covers a whole axis of any size.
fn whole_axis(start: i64, end: i64, step: i64) -> bool {
    const BIG: i64 = i32::MAX as i64;
    (step == 1 && start == 0 && end >= BIG) || (step == -1 && start == -1 && end <= -BIG)
}

/// A present optional operand's value: `Some(None)` when the operand is
/// omitted, `None` when present but unknown.
fn opt_ints(
    op: Op,
    inputs: &[Option<Operand>],
    i: usize,
    what: &str,
) -> Result<Option<Option<Vec<i64>>>> {
    match opt_operand(inputs, i) {
        None => Ok(Some(None)),
        Some(o) => Ok(ints_value(op, o, what)?.map(Some)),
    }
}

fn slice_dims(inputs: &[Option<Operand>], dims: &[Dim]) -> Result<Vec<Dim>> {
    let op = Op::Slice;
    let starts_o = operand(op, inputs, 1)?;
    let starts = ints_value(op, starts_o, "starts")?;
    let ends = ints_value(op, operand(op, inputs, 2)?, "ends")?;
    let axes = opt_ints(op, inputs, 3, "axes")?;
    let steps = opt_ints(op, inputs, 4, "steps")?;
    let mut out = dims.to_vec();
    if let (Some(s), Some(e), Some(a), Some(st)) = (starts, ends, &axes, steps) {
        let spec = slice::slice_spec(dims.len(), &s, &e, a.as_deref(), st.as_deref())?;
        for (axis, start, end, step) in spec {
            out[axis] = match &dims[axis] {
                Dim::Fixed(n) => Dim::Fixed(slice::slice_range(*n, start, end, step).1),
                d if whole_axis(start, end, step) => d.clone(),
                _ => unknown_dim(op),
            };
        }
        return Ok(out);
    }
    // The bounds are unknown: the sliced axes (if known) lose their size.
    let sliced: Option<Vec<usize>> = match axes {
        Some(Some(a)) => Some(crate::interp::util::norm_axes(op, &a, dims.len())?),
        Some(None) => vector_len(op, starts_o, "starts")
            .ok()
            .map(|n| (0..n.min(dims.len())).collect()),
        None => None,
    };
    match sliced {
        Some(axes) => axes.into_iter().for_each(|a| out[a] = unknown_dim(op)),
        None => out = unknown_dims(op, dims.len()),
    }
    Ok(out)
}

fn pad_dims(attrs: &Attrs, inputs: &[Option<Operand>], dims: &[Dim]) -> Result<Vec<Dim>> {
    let op = Op::Pad;
    pad::pad_mode(attrs)?;
    let pads = ints_value(op, operand(op, inputs, 1)?, "pads")?;
    match (pads, opt_ints(op, inputs, 3, "axes")?) {
        (Some(p), Some(a)) => {
            let spec = pad::pad_spec(dims.len(), &p, a.as_deref())?;
            dims.iter()
                .zip(spec)
                .map(|(d, (b, e))| match d {
                    Dim::Fixed(n) => pad::padded_dim(*n, (b, e)).map(Dim::Fixed),
                    s if b == 0 && e == 0 => Ok(s.clone()),
                    _ => Ok(unknown_dim(op)),
                })
                .collect()
        }
        _ => Ok(unknown_dims(op, dims.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }

    fn run(op: Op, attrs: &Attrs, ins: &[(TensorType, Option<Tensor>)]) -> Result<Vec<TensorType>> {
        let ops: Vec<Option<Operand>> = ins
            .iter()
            .map(|(t, v)| {
                Some(Operand {
                    ty: t,
                    value: v.as_ref(),
                })
            })
            .collect();
        infer(op, attrs, &ops, 1)
    }

    fn i64s(v: &[i64]) -> (TensorType, Option<Tensor>) {
        let t = Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap();
        (t.ty(), Some(t))
    }

    fn unknown_i64s(n: usize) -> (TensorType, Option<Tensor>) {
        (TensorType::new(DType::I64, vec![n]), None)
    }

    fn data(dims: Vec<Dim>) -> (TensorType, Option<Tensor>) {
        (ty(DType::F32, Shape(dims)), None)
    }

    #[test]
    fn reshape_with_and_without_a_known_shape() {
        let x = data(vec![sym("b"), Dim::Fixed(6)]);
        let out = run(Op::Reshape, &Attrs::new(), &[x.clone(), i64s(&[0, 2, 3])]).unwrap();
        assert_eq!(out[0].shape.0, vec![sym("b"), Dim::Fixed(2), Dim::Fixed(3)]);
        let out = run(Op::Reshape, &Attrs::new(), &[x, unknown_i64s(4)]).unwrap();
        assert_eq!(out[0].shape.rank(), 4);
    }

    #[test]
    fn slice_keeps_symbols_on_whole_axes() {
        let x = data(vec![sym("b"), Dim::Fixed(10)]);
        let ins = [
            x.clone(),
            i64s(&[0, 2]),
            i64s(&[i64::MAX, -1]),
            i64s(&[0, 1]),
        ];
        let out = run(Op::Slice, &Attrs::new(), &ins).unwrap();
        assert_eq!(out[0].shape.0, vec![sym("b"), Dim::Fixed(7)]);
        let ins = [x, unknown_i64s(1), unknown_i64s(1), i64s(&[1])];
        let out = run(Op::Slice, &Attrs::new(), &ins).unwrap();
        assert_eq!(out[0].shape.0, vec![sym("b"), unknown_dim(Op::Slice)]);
    }

    #[test]
    fn concat_sums_axis_and_unifies_the_rest() {
        let a = data(vec![sym("b"), Dim::Fixed(2)]);
        let b = data(vec![Dim::Fixed(3), Dim::Fixed(0)]);
        let attrs = Attrs::new().with("axis", crate::Attr::Int(1));
        let out = run(Op::Concat, &attrs, &[a, b]).unwrap();
        assert_eq!(out[0].shape.0, vec![Dim::Fixed(3), Dim::Fixed(2)]);
    }

    #[test]
    fn flatten_and_expand_with_symbols() {
        let x = data(vec![sym("b"), Dim::Fixed(1), Dim::Fixed(4)]);
        let out = run(Op::Flatten, &Attrs::new(), std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[0].shape.0, vec![sym("b"), Dim::Fixed(4)]);
        let out = run(Op::Expand, &Attrs::new(), &[x, i64s(&[1, 3, 1])]).unwrap();
        assert_eq!(out[0].shape.0, vec![sym("b"), Dim::Fixed(3), Dim::Fixed(4)]);
    }

    #[test]
    fn split_and_pad_with_symbols() {
        let x = data(vec![sym("b"), Dim::Fixed(7)]);
        let a = Attrs::new().with("axis", crate::Attr::Int(0));
        let sp = i64s(&[2, 3]);
        let ins = [
            Some(Operand {
                ty: &x.0,
                value: None,
            }),
            Some(Operand {
                ty: &sp.0,
                value: sp.1.as_ref(),
            }),
        ];
        let out = infer(Op::Split, &a, &ins, 2).unwrap();
        assert_eq!(out[0].shape.0, vec![Dim::Fixed(2), Dim::Fixed(7)]);
        assert_eq!(out[1].shape.0, vec![Dim::Fixed(3), Dim::Fixed(7)]);
        // uneven num_outputs split of a static axis
        let a = Attrs::new()
            .with("axis", crate::Attr::Int(1))
            .with("num_outputs", crate::Attr::Int(2));
        let out = infer(Op::Split, &a, &ins[..1], 2).unwrap();
        assert_eq!(out[1].shape.0, vec![sym("b"), Dim::Fixed(3)]);
        // Pad: an unpadded symbolic axis keeps its name; unknown pads lose all sizes
        let out = run(Op::Pad, &Attrs::new(), &[x.clone(), i64s(&[0, 1, 0, 2])]).unwrap();
        assert_eq!(out[0].shape.0, vec![sym("b"), Dim::Fixed(10)]);
        let out = run(Op::Pad, &Attrs::new(), &[x, unknown_i64s(4)]).unwrap();
        assert_eq!(out[0].shape.0, unknown_dims(Op::Pad, 2));
    }
}
