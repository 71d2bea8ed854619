//! Ops that change a tensor's shape or axis order without selecting:
//! Reshape, Flatten, Squeeze, Unsqueeze (same elements, new shape),
//! Transpose, DepthToSpace, SpaceToDepth (permutations), Expand and Tile
//! (repetitions).
//!
//! The shape rules that inference shares are the `*_dims`/`*_perm` functions;
//! they work on [`Dim`]s so that symbolic dimensions flow through them.

use super::{index_product, ints_of, take, to_i64, transpose_indices};
use crate::interp::util::{input, opt_input};
use crate::{infer::unknown_dim, shape, Attrs, Dim, Error, Op, Result, Tensor};

/// Reshape's output shape: `spec` entries are sizes, `0` copies the input
/// dimension at the same position (unless `allowzero`), and one `-1` is
/// inferred from the element count. Symbolic dimensions that appear on both
/// sides cancel, so `[batch, 128, 384]` reshaped to `[-1, 384]` is
/// `[?, 384]` but reshaped to `[0, -1]` is `[batch, 49152]`.
pub(crate) fn reshape_dims(input: &[Dim], spec: &[i64], allowzero: bool) -> Result<Vec<Dim>> {
    let op = Op::Reshape;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &s) in spec.iter().enumerate() {
        let d = match s {
            -1 => {
                if infer_at.is_some() {
                    return Err(Error::invalid(format!(
                        "{op}: shape {spec:?} has more than one -1"
                    )));
                }
                infer_at = Some(i);
                Dim::Fixed(1)
            }
            0 if !allowzero => input.get(i).cloned().ok_or_else(|| {
                Error::invalid(format!(
                    "{op}: shape {spec:?} copies dimension {i} (a 0) but the input has rank {}",
                    input.len()
                ))
            })?,
            s if s >= 0 => Dim::Fixed(usize::try_from(s).map_err(|_| {
                Error::invalid(format!(
                    "{op}: dimension {s} in shape {spec:?} is too large"
                ))
            })?),
            s => {
                return Err(Error::invalid(format!(
                    "{op}: shape {spec:?} has a negative dimension {s} other than -1"
                )))
            }
        };
        out.push(d);
    }
    if allowzero && infer_at.is_some() && spec.contains(&0) {
        return Err(Error::invalid(format!(
            "{op}: shape {spec:?} has both -1 and 0 with allowzero=1"
        )));
    }
    // Cancel the symbolic dimensions common to both sides ("?" names are
    // distinct unknowns and never cancel).
    let mut in_syms: Vec<&str> = Vec::new();
    let mut in_fixed: u128 = 1;
    for d in input {
        match d {
            Dim::Fixed(n) => in_fixed = in_fixed.saturating_mul(*n as u128),
            Dim::Sym(s) => in_syms.push(s),
        }
    }
    let mut out_fixed: u128 = 1;
    let mut out_unmatched = false;
    for (i, d) in out.iter().enumerate() {
        if Some(i) == infer_at {
            continue;
        }
        match d {
            Dim::Fixed(n) => out_fixed = out_fixed.saturating_mul(*n as u128),
            Dim::Sym(s) => match in_syms.iter().position(|x| x == s && !s.starts_with('?')) {
                Some(p) => {
                    in_syms.swap_remove(p);
                }
                None => out_unmatched = true,
            },
        }
    }
    let mismatch = || {
        let shown: Vec<String> = input.iter().map(|d| d.to_string()).collect();
        Error::invalid(format!(
            "{op}: cannot reshape [{}] to {spec:?} (element counts differ)",
            shown.join(",")
        ))
    };
    match infer_at {
        Some(k) => {
            out[k] = if out_unmatched {
                unknown_dim(op)
            } else if in_syms.is_empty() {
                if out_fixed == 0 || !in_fixed.is_multiple_of(out_fixed) {
                    return Err(mismatch());
                }
                Dim::Fixed((in_fixed / out_fixed) as usize)
            } else if in_syms.len() == 1 && in_fixed == out_fixed && !in_syms[0].starts_with('?') {
                Dim::Sym(in_syms[0].to_string())
            } else {
                unknown_dim(op)
            };
        }
        None => {
            if !out_unmatched && in_syms.is_empty() && in_fixed != out_fixed {
                return Err(mismatch());
            }
        }
    }
    Ok(out)
}

/// Transpose's permutation: the `perm` attribute (default: reversed axes),
/// checked to be a permutation of `0..rank`.
pub(crate) fn transpose_perm(attrs: &Attrs, rank: usize) -> Result<Vec<usize>> {
    let Some(perm) = attrs.ints("perm")? else {
        return Ok((0..rank).rev().collect());
    };
    let bad = || Error::Attr {
        attr: "perm".into(),
        msg: format!("{perm:?} is not a permutation of the {rank} axes of Transpose's input"),
    };
    if perm.len() != rank {
        return Err(bad());
    }
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(rank);
    for &p in perm {
        let a = usize::try_from(p)
            .ok()
            .filter(|&a| a < rank)
            .ok_or_else(bad)?;
        if std::mem::replace(&mut seen[a], true) {
            return Err(bad());
        }
        out.push(a);
    }
    Ok(out)
}

/// Flatten's split point: `axis` (default 1) in `[-rank, rank]`.
pub(crate) fn flatten_axis(attrs: &Attrs, rank: usize) -> Result<usize> {
    let axis = attrs.int_or("axis", 1)?;
    let r = to_i64(rank);
    let a = if axis < 0 { axis + r } else { axis };
    if (0..=r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(Error::Attr {
            attr: "axis".into(),
            msg: format!("Flatten axis {axis} is out of range for rank {rank}"),
        })
    }
}

/// The axes Squeeze removes, ascending: the given ones (each must be 1,
/// symbolic ones are assumed to be), or every dimension of size 1 when `axes`
/// is omitted (then symbolic dimensions make the rank unknowable).
pub(crate) fn squeeze_axes(dims: &[Dim], axes: Option<&[i64]>) -> Result<Vec<usize>> {
    let op = Op::Squeeze;
    if axes.is_none() && dims.iter().any(|d| d.fixed().is_none()) {
        return Err(Error::unsupported(format!(
            "{op} without axes on a symbolic shape: which axes are 1 is unknown"
        )));
    }
    let mut out = match axes {
        None => dims
            .iter()
            .enumerate()
            .filter(|(_, d)| **d == Dim::Fixed(1))
            .map(|(i, _)| i)
            .collect(),
        Some(axes) => crate::interp::util::norm_axes(op, axes, dims.len())?,
    };
    for &a in &out {
        if let Dim::Fixed(n) = dims[a] {
            if n != 1 {
                return Err(Error::invalid(format!(
                    "{op}: cannot squeeze axis {a} of size {n} (it must be 1)"
                )));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Unsqueeze's output shape: `dims` with `one` inserted at each of `axes`,
/// which are positions in the output (of rank `dims.len() + axes.len()`).
pub(crate) fn unsqueeze_dims<D: Clone>(dims: &[D], axes: &[i64], one: D) -> Result<Vec<D>> {
    let rank = dims.len() + axes.len();
    let axes = crate::interp::util::norm_axes(Op::Unsqueeze, axes, rank)?;
    let mut rest = dims.iter();
    Ok((0..rank)
        .map(|i| {
            if axes.contains(&i) {
                Some(one.clone())
            } else {
                rest.next().cloned()
            }
        })
        .collect::<Option<Vec<D>>>()
        .unwrap_or_default())
}

/// Expand's target shape operand as sizes (each must be non-negative).
pub(crate) fn expand_spec(spec: &[i64]) -> Result<Vec<usize>> {
    spec.iter()
        .map(|&s| {
            usize::try_from(s).map_err(|_| {
                Error::invalid(format!(
                    "Expand: shape {spec:?} has a negative dimension {s}"
                ))
            })
        })
        .collect()
}

/// Tile's repeats, one non-negative count per input axis.
pub(crate) fn tile_repeats(repeats: &[i64], rank: usize) -> Result<Vec<usize>> {
    if repeats.len() != rank {
        return Err(Error::invalid(format!(
            "Tile: repeats {repeats:?} must have one entry per axis of the rank-{rank} input"
        )));
    }
    expand_spec(repeats)
        .map_err(|_| Error::invalid(format!("Tile: repeats {repeats:?} must not be negative")))
}

/// DepthToSpace / SpaceToDepth parameters: `(blocksize, crd)` where `crd` is
/// the `mode` attribute being `CRD` (default `DCR`).
pub(crate) fn depth_space_params(op: Op, attrs: &Attrs) -> Result<(usize, bool)> {
    let b = attrs.int("blocksize")?.ok_or_else(|| Error::Attr {
        attr: "blocksize".into(),
        msg: format!("{op} needs it"),
    })?;
    let b = usize::try_from(b)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| Error::Attr {
            attr: "blocksize".into(),
            msg: format!("{op} blocksize must be positive, found {b}"),
        })?;
    let crd = match attrs.str_or("mode", "DCR")? {
        "DCR" => false,
        "CRD" => true,
        m => {
            return Err(Error::Attr {
                attr: "mode".into(),
                msg: format!("{op} mode must be DCR or CRD, found {m:?}"),
            })
        }
    };
    Ok((b, crd))
}

fn fixed(op: Op, dims: Vec<Dim>) -> Result<Vec<usize>> {
    dims.iter()
        .map(Dim::fixed)
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            Error::invalid(format!(
                "{op}: computed a symbolic shape from static inputs"
            ))
        })
}

fn dims_of(t: &Tensor) -> Vec<Dim> {
    t.shape().iter().map(|&n| Dim::Fixed(n)).collect()
}

pub(super) fn reshape(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Reshape;
    let x = input(op, inputs, 0)?;
    let spec = ints_of(op, input(op, inputs, 1)?, "shape")?;
    let allowzero = attrs.int_or("allowzero", 0)? != 0;
    let out = fixed(op, reshape_dims(&dims_of(x), &spec, allowzero)?)?;
    x.clone().reshaped(out)
}

pub(super) fn flatten(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = input(Op::Flatten, inputs, 0)?;
    let a = flatten_axis(attrs, x.rank())?;
    let (outer, inner) = x.shape().split_at(a);
    x.clone()
        .reshaped(vec![outer.iter().product(), inner.iter().product()])
}

pub(super) fn squeeze(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Squeeze;
    let x = input(op, inputs, 0)?;
    let axes = opt_input(inputs, 1)
        .map(|t| ints_of(op, t, "axes"))
        .transpose()?;
    let drop = squeeze_axes(&dims_of(x), axes.as_deref())?;
    let out: Vec<usize> = x
        .shape()
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, &n)| n)
        .collect();
    x.clone().reshaped(out)
}

pub(super) fn unsqueeze(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Unsqueeze;
    let x = input(op, inputs, 0)?;
    let axes = ints_of(op, input(op, inputs, 1)?, "axes")?;
    let out = unsqueeze_dims(x.shape(), &axes, 1)?;
    x.clone().reshaped(out)
}

pub(super) fn transpose(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = input(Op::Transpose, inputs, 0)?;
    let perm = transpose_perm(attrs, x.rank())?;
    let out: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    Tensor::new(out, take(x.data(), &transpose_indices(x.shape(), &perm)))
}

pub(super) fn expand(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Expand;
    let x = input(op, inputs, 0)?;
    let spec = expand_spec(&ints_of(op, input(op, inputs, 1)?, "shape")?)?;
    let out = shape::broadcast_shapes(x.shape(), &spec).ok_or_else(|| {
        Error::invalid(format!(
            "{op}: input {:?} does not broadcast to {spec:?}",
            x.shape()
        ))
    })?;
    super::check_numel(op, &out)?;
    let idx = crate::interp::util::broadcast_indices(x.shape(), &out);
    Tensor::new(out, take(x.data(), &idx))
}

pub(super) fn tile(inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Tile;
    let x = input(op, inputs, 0)?;
    let reps = tile_repeats(&ints_of(op, input(op, inputs, 1)?, "repeats")?, x.rank())?;
    let out: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(d, r)| d.saturating_mul(*r))
        .collect();
    super::check_numel(op, &out)?;
    let st = super::strides(x.shape());
    let tables: Vec<Vec<usize>> = x
        .shape()
        .iter()
        .zip(&reps)
        .zip(&st)
        .map(|((&d, &r), &s)| (0..d * r).map(|c| (c % d) * s).collect())
        .collect();
    Tensor::new(out, take(x.data(), &index_product(&tables)))
}

/// DepthToSpace and SpaceToDepth: a reshape to rank 6, a transpose, a reshape back.
pub(super) fn depth_space(op: Op, attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = input(op, inputs, 0)?;
    let (b, crd) = depth_space_params(op, attrs)?;
    let &[n, c, h, w] = x.shape() else {
        return Err(Error::invalid(format!(
            "{op}: input must have rank 4, found {}",
            x.ty()
        )));
    };
    let (tmp, perm, out) = if op == Op::DepthToSpace {
        if c % (b * b) != 0 {
            return Err(Error::invalid(format!(
                "{op}: channels {c} are not divisible by blocksize² = {}",
                b * b
            )));
        }
        let c2 = c / (b * b);
        if crd {
            (
                vec![n, c2, b, b, h, w],
                vec![0, 1, 4, 2, 5, 3],
                vec![n, c2, h * b, w * b],
            )
        } else {
            (
                vec![n, b, b, c2, h, w],
                vec![0, 3, 4, 1, 5, 2],
                vec![n, c2, h * b, w * b],
            )
        }
    } else {
        if h % b != 0 || w % b != 0 {
            return Err(Error::invalid(format!(
                "{op}: height {h} and width {w} must be divisible by blocksize {b}"
            )));
        }
        let tmp = vec![n, c, h / b, b, w / b, b];
        let perm = if crd {
            vec![0, 1, 3, 5, 2, 4]
        } else {
            vec![0, 3, 5, 1, 2, 4]
        };
        (tmp, perm, vec![n, c * b * b, h / b, w / b])
    };
    Tensor::new(out, take(x.data(), &transpose_indices(&tmp, &perm)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(d: &[usize]) -> Vec<Dim> {
        d.iter().map(|&n| Dim::Fixed(n)).collect()
    }
    fn sym(s: &str) -> Dim {
        Dim::Sym(s.into())
    }

    #[test]
    fn reshape_copies_zeros_and_infers_minus_one() {
        assert_eq!(
            reshape_dims(&f(&[2, 3, 4]), &[0, -1], false).unwrap(),
            f(&[2, 12])
        );
        assert_eq!(
            reshape_dims(&f(&[2, 3, 4]), &[4, 0, -1], false).unwrap(),
            f(&[4, 3, 2])
        );
        // allowzero: a 0 is a real zero-size dimension
        assert_eq!(
            reshape_dims(&f(&[0, 3, 4]), &[3, 4, 0], true).unwrap(),
            f(&[3, 4, 0])
        );
        assert!(reshape_dims(&f(&[2, 3, 4]), &[5, -1], false).is_err());
        assert!(reshape_dims(&f(&[2, 3, 4]), &[-1, -1], false).is_err());
        assert!(reshape_dims(&f(&[2, 3, 4]), &[2, 3, 5], false).is_err());
        assert!(reshape_dims(&f(&[2, 3]), &[0, 0, 0], false).is_err());
        assert!(reshape_dims(&f(&[2, 3]), &[-2, 3], false).is_err());
    }

    #[test]
    fn reshape_cancels_named_symbols() {
        let x = vec![sym("batch"), Dim::Fixed(128), Dim::Fixed(384)];
        assert_eq!(
            reshape_dims(&x, &[0, -1], false).unwrap(),
            vec![sym("batch"), Dim::Fixed(49152)]
        );
        assert_eq!(
            reshape_dims(&x, &[0, 0, 12, -1], false).unwrap(),
            vec![
                sym("batch"),
                Dim::Fixed(128),
                Dim::Fixed(12),
                Dim::Fixed(32)
            ]
        );
        assert_eq!(
            reshape_dims(&x, &[-1, 384], false).unwrap(),
            vec![unknown_dim(Op::Reshape), Dim::Fixed(384)]
        );
        let y = vec![Dim::Fixed(128), sym("batch")];
        assert_eq!(
            reshape_dims(&y, &[-1, 128], false).unwrap(),
            vec![sym("batch"), Dim::Fixed(128)]
        );
    }

    #[test]
    fn squeeze_and_unsqueeze_axes() {
        assert_eq!(squeeze_axes(&f(&[1, 3, 1]), None).unwrap(), vec![0, 2]);
        assert_eq!(squeeze_axes(&f(&[1, 3, 1]), Some(&[-1])).unwrap(), vec![2]);
        assert!(squeeze_axes(&f(&[1, 3, 1]), Some(&[1])).is_err());
        assert_eq!(
            unsqueeze_dims(&[3, 4], &[0, -1], 1).unwrap(),
            vec![1, 3, 4, 1]
        );
        assert_eq!(
            unsqueeze_dims(&[3, 4], &[3, 1], 1).unwrap(),
            vec![3, 1, 4, 1]
        );
        assert!(unsqueeze_dims(&[3, 4], &[4], 1).is_err());
        assert!(unsqueeze_dims(&[3, 4], &[1, 1], 1).is_err());
    }

    #[test]
    fn tile_and_expand_repeat() {
        let x = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
        let r = Tensor::from_vec(vec![1], vec![3i64]).unwrap();
        let y = tile(&[Some(&x), Some(&r)]).unwrap();
        assert_eq!(y.as_slice::<i64>().unwrap(), &[1, 2, 1, 2, 1, 2]);
        let x = Tensor::from_vec(vec![2, 1], vec![1u8, 2]).unwrap();
        let s = Tensor::from_vec(vec![2], vec![1i64, 3]).unwrap();
        let y = expand(&[Some(&x), Some(&s)]).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_slice::<u8>().unwrap(), &[1, 1, 1, 2, 2, 2]);
    }

    #[test]
    fn depth_to_space_dcr_matches_onnx_example() {
        // ONNX doc example: x = arange(16).reshape(1, 4, 2, 2), blocksize 2, DCR
        let x = Tensor::from_vec(vec![1, 4, 2, 2], (0..16).map(|i| i as f32).collect()).unwrap();
        let a = Attrs::new().with("blocksize", crate::Attr::Int(2));
        let y = depth_space(Op::DepthToSpace, &a, &[Some(&x)]).unwrap();
        assert_eq!(y.shape(), &[1, 1, 4, 4]);
        let want = [
            0., 4., 1., 5., 8., 12., 9., 13., 2., 6., 3., 7., 10., 14., 11., 15.,
        ];
        assert_eq!(y.as_slice::<f32>().unwrap(), &want);
        // SpaceToDepth inverts it
        let z = depth_space(Op::SpaceToDepth, &a, &[Some(&y)]).unwrap();
        assert_eq!(z, x);
    }
}
