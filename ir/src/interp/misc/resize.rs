//! Resize (opset 19+): `nearest`, `linear` and `cubic` modes, every
//! `coordinate_transformation_mode`, `nearest_mode`, `antialias`, `axes`,
//! `keep_aspect_ratio_policy`, `exclude_outside`, `cubic_coeff_a` and
//! `extrapolation_value`.
//!
//! Interpolation is separable, so the op resizes one axis at a time, in the
//! order of `axes`, exactly as ONNX's reference implementation does. Each
//! output coordinate along an axis maps to a source coordinate `x`; a kernel
//! gives tap weights for the source elements around `x` (edge-clamped).
//! Linear and cubic compute in f64 and convert back once (integers round half
//! to even and saturate); nearest only selects, so it is exact for every dtype.

use crate::interp::movement::{ints_of, take, take_or_fill, FILL};
use crate::interp::util::{input, norm_axes, opt_input};
use crate::{Attrs, DType, Error, Op, Result, Tensor};

const OP: Op = Op::Resize;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// How the output size follows from `sizes` (ignored with `scales`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

fn attr_err(attr: &str, msg: String) -> Error {
    Error::Attr {
        attr: attr.into(),
        msg,
    }
}

pub(crate) fn aspect_policy(attrs: &Attrs) -> Result<AspectPolicy> {
    Ok(match attrs.str_or("keep_aspect_ratio_policy", "stretch")? {
        "stretch" => AspectPolicy::Stretch,
        "not_larger" => AspectPolicy::NotLarger,
        "not_smaller" => AspectPolicy::NotSmaller,
        p => {
            return Err(attr_err(
                "keep_aspect_ratio_policy",
                format!("unknown policy {p:?}"),
            ))
        }
    })
}

/// Resize's `axes` attribute, normalised (default: every axis, in order).
pub(crate) fn resize_axes(attrs: &Attrs, rank: usize) -> Result<Vec<usize>> {
    match attrs.ints("axes")? {
        Some(a) => norm_axes(OP, a, rank),
        None => Ok((0..rank).collect()),
    }
}

/// What determines the output size.
pub(crate) enum Target<'a> {
    Scales(&'a [f32]),
    Sizes(&'a [i64]),
}

/// Per-axis `(scale, output size)` for an input of shape `dims`, resized on
/// `axes` to `target`. Scales give `floor(scale × dim)`; sizes give the scale
/// `size / dim`, and with a keep-aspect policy one common scale (the smallest
/// or largest) and sizes `round_half_up(scale × dim)`.
pub(crate) fn resize_plan(
    dims: &[usize],
    axes: &[usize],
    target: &Target,
    policy: AspectPolicy,
) -> Result<(Vec<f64>, Vec<usize>)> {
    let n = match target {
        Target::Scales(s) => s.len(),
        Target::Sizes(s) => s.len(),
    };
    if n != axes.len() {
        return Err(Error::invalid(format!(
            "{OP}: {} scales/sizes given for {} resized axes",
            n,
            axes.len()
        )));
    }
    let mut scale = vec![1.0f64; dims.len()];
    let mut out = dims.to_vec();
    match target {
        Target::Scales(s) => {
            for (&a, &sc) in axes.iter().zip(s.iter()) {
                if !(sc > 0.0 && sc.is_finite()) {
                    return Err(Error::invalid(format!(
                        "{OP}: scales {s:?} must be positive"
                    )));
                }
                scale[a] = sc as f64;
                out[a] = (sc as f64 * dims[a] as f64).floor() as usize;
            }
        }
        Target::Sizes(s) => {
            for (&a, &sz) in axes.iter().zip(s.iter()) {
                let sz = usize::try_from(sz).map_err(|_| {
                    Error::invalid(format!("{OP}: sizes {s:?} must not be negative"))
                })?;
                if dims[a] == 0 {
                    return Err(Error::invalid(format!(
                        "{OP}: cannot resize an empty axis {a}"
                    )));
                }
                scale[a] = sz as f64 / dims[a] as f64;
                out[a] = sz;
            }
            if policy != AspectPolicy::Stretch {
                let it = axes.iter().map(|&a| scale[a]);
                let common = if policy == AspectPolicy::NotLarger {
                    it.fold(f64::INFINITY, f64::min)
                } else {
                    it.fold(f64::NEG_INFINITY, f64::max)
                };
                for &a in axes {
                    scale[a] = common;
                    out[a] = (common * dims[a] as f64 + 0.5) as usize;
                }
            }
        }
    }
    Ok((scale, out))
}

/// Reads the `scales` or `sizes` operand (an empty tensor counts as absent).
fn target_of<'a>(
    scales: Option<&'a Tensor>,
    sizes: Option<&'a Tensor>,
    sizes_buf: &'a mut Vec<i64>,
) -> Result<Target<'a>> {
    let scales = scales.filter(|t| t.numel() > 0);
    let sizes = sizes.filter(|t| t.numel() > 0);
    match (scales, sizes) {
        (Some(s), None) => s
            .as_slice::<f32>()
            .map(Target::Scales)
            .ok_or_else(|| Error::invalid(format!("{OP}: scales must be f32, found {}", s.ty()))),
        (None, Some(s)) => {
            *sizes_buf = ints_of(OP, s, "sizes")?;
            Ok(Target::Sizes(sizes_buf))
        }
        _ => Err(Error::invalid(format!(
            "{OP}: exactly one of scales and sizes must be given"
        ))),
    }
}

/// Everything about one resized axis that the kernels need.
struct Axis {
    in_len: usize,
    out_len: usize,
    scale: f64,
    roi: Option<(f64, f64)>,
}

struct Params {
    mode: Mode,
    coord: Coord,
    nearest: Nearest,
    antialias: bool,
    cubic_a: f64,
    exclude_outside: bool,
}

impl Axis {
    /// Source coordinate of output coordinate `y`, and whether it lies
    /// outside the input (only `tf_crop_and_resize` extrapolates).
    fn source(&self, y: usize, coord: Coord) -> Result<(f64, bool)> {
        let y = y as f64;
        let (n_in, s) = (self.in_len as f64, self.scale);
        let out_w = s * n_in;
        let x = match coord {
            Coord::HalfPixel => (y + 0.5) / s - 0.5,
            Coord::HalfPixelSymmetric => {
                let adjustment = self.out_len as f64 / out_w;
                let center = n_in / 2.0;
                center * (1.0 - adjustment) + (y + 0.5) / s - 0.5
            }
            Coord::PytorchHalfPixel if out_w == 1.0 => -0.5,
            Coord::PytorchHalfPixel => (y + 0.5) / s - 0.5,
            Coord::AlignCorners if out_w == 1.0 => 0.0,
            Coord::AlignCorners => y * (n_in - 1.0) / (out_w - 1.0),
            Coord::Asymmetric => y / s,
            Coord::TfCropAndResize => {
                let (r0, r1) = self.roi.ok_or_else(|| {
                    Error::invalid(format!("{OP}: tf_crop_and_resize needs the roi input"))
                })?;
                let x = if out_w == 1.0 {
                    (r1 - r0) * (n_in - 1.0) / 2.0
                } else {
                    y * (r1 - r0) * (n_in - 1.0) / (out_w - 1.0)
                };
                let x = x + r0 * (n_in - 1.0);
                return Ok((x, x < 0.0 || x > n_in - 1.0));
            }
        };
        Ok((x, false))
    }

    /// The source index nearest mode picks for coordinate `x`, clamped.
    fn nearest(&self, x: f64, mode: Nearest) -> usize {
        let f = x.floor();
        let r = x - f;
        let up = if r == 0.0 {
            false
        } else {
            match mode {
                Nearest::RoundPreferFloor => r > 0.5,
                Nearest::RoundPreferCeil => r >= 0.5,
                Nearest::Floor => false,
                Nearest::Ceil => true,
            }
        };
        clamp_index(f as i64 + i64::from(up), self.in_len)
    }

    /// Tap indices (edge-clamped) and weights for coordinate `x`.
    fn taps(&self, x: f64, p: &Params) -> Vec<(usize, f64)> {
        let floor = x.floor();
        let ratio = if x == floor { 1.0 } else { x - floor };
        let mut w = match (p.mode, p.antialias) {
            (Mode::Linear, false) => vec![1.0 - ratio, ratio],
            (Mode::Linear, true) => {
                let s = self.scale.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                let n = 2 - 2 * start;
                normalized(
                    (start..start + n)
                        .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                        .collect(),
                )
            }
            (Mode::Cubic, false) => {
                let a = p.cubic_a;
                let (r, q) = (ratio, 1.0 - ratio);
                vec![
                    ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                    ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                    ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                    ((a * (q + 1.0) - 5.0 * a) * (q + 1.0) + 8.0 * a) * (q + 1.0) - 4.0 * a,
                ]
            }
            (Mode::Cubic, true) => {
                let s = self.scale.min(1.0);
                let a = p.cubic_a;
                let start = (-2.0 / s).floor() as i64 + 1;
                let end = 2 - start;
                normalized(
                    (start..end)
                        .map(|i| cubic_kernel(s * (i as f64 - ratio), a))
                        .collect(),
                )
            }
            (Mode::Nearest, _) => vec![1.0],
        };
        // The window: the n source positions nearest x, ties to the smaller
        // (the reference computes this on edge-padded coordinates).
        let n = w.len() as i64;
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let pf = xp.floor();
        let frac = xp - pf;
        let offset = if n % 2 == 0 {
            if frac == 0.0 {
                -(n / 2)
            } else {
                -(n / 2) + 1
            }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 {
                base
            } else {
                base + 1
            }
        };
        let start = pf as i64 + offset - pad;
        let idx: Vec<i64> = (start..start + n).collect();
        if p.exclude_outside {
            for (wi, &i) in w.iter_mut().zip(&idx) {
                if i < 0 || i >= self.in_len as i64 {
                    *wi = 0.0;
                }
            }
            let sum: f64 = w.iter().sum();
            let sum = if sum == 0.0 { 1.0 } else { sum };
            for wi in w.iter_mut() {
                *wi /= sum;
            }
        }
        idx.into_iter()
            .map(|i| clamp_index(i, self.in_len))
            .zip(w)
            .collect()
    }
}

fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    let (x2, x3) = (x * x, x * x * x);
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

fn normalized(w: Vec<f64>) -> Vec<f64> {
    let s: f64 = w.iter().sum();
    w.into_iter().map(|x| x / s).collect()
}

fn clamp_index(i: i64, len: usize) -> usize {
    i.min(len as i64 - 1).max(0) as usize
}

fn parse_params(attrs: &Attrs) -> Result<Params> {
    let mode = match attrs.str_or("mode", "nearest")? {
        "nearest" => Mode::Nearest,
        "linear" => Mode::Linear,
        "cubic" => Mode::Cubic,
        m => return Err(Error::unsupported(format!("{OP} mode {m:?}"))),
    };
    let coord = match attrs.str_or("coordinate_transformation_mode", "half_pixel")? {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_crop_and_resize" => Coord::TfCropAndResize,
        m => {
            return Err(Error::unsupported(format!(
                "{OP} coordinate_transformation_mode {m:?}"
            )))
        }
    };
    let nearest = match attrs.str_or("nearest_mode", "round_prefer_floor")? {
        "round_prefer_floor" => Nearest::RoundPreferFloor,
        "round_prefer_ceil" => Nearest::RoundPreferCeil,
        "floor" => Nearest::Floor,
        "ceil" => Nearest::Ceil,
        m => return Err(Error::unsupported(format!("{OP} nearest_mode {m:?}"))),
    };
    let antialias = attrs.int_or("antialias", 0)? != 0;
    if antialias && mode == Mode::Nearest {
        return Err(attr_err(
            "antialias",
            format!("{OP}: antialias needs linear or cubic mode"),
        ));
    }
    Ok(Params {
        mode,
        coord,
        nearest,
        antialias,
        cubic_a: attrs.float_or("cubic_coeff_a", -0.75)? as f64,
        exclude_outside: attrs.int_or("exclude_outside", 0)? != 0,
    })
}

/// Everything Resize needs besides the data: parameters, the non-identity
/// axes in application order, the output shape and the extrapolation value.
type Prepared = (Params, Vec<(usize, Axis)>, Vec<usize>, f64);

fn prepare(
    attrs: &Attrs,
    shape: &[usize],
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> Result<Prepared> {
    let p = parse_params(attrs)?;
    let r = shape.len();
    let axes = resize_axes(attrs, r)?;
    let mut sizes_buf = Vec::new();
    let target = target_of(scales, sizes, &mut sizes_buf)?;
    let (scale, out) = resize_plan(shape, &axes, &target, aspect_policy(attrs)?)?;
    crate::interp::movement::check_numel(OP, &out)?;
    // roi: starts then ends for the resized axes; the rest default to [0, 1].
    let roi = match roi.filter(|t| t.numel() > 0) {
        None => None,
        Some(t) => {
            let v = t.to_f64_vec();
            if v.len() != 2 * axes.len() {
                return Err(Error::invalid(format!(
                    "{OP}: roi has {} values but {} axes are resized",
                    v.len(),
                    axes.len()
                )));
            }
            let mut full = vec![(0.0, 1.0); r];
            for (i, &a) in axes.iter().enumerate() {
                full[a] = (v[i], v[axes.len() + i]);
            }
            Some(full)
        }
    };
    let extrapolation = attrs.float_or("extrapolation_value", 0.0)? as f64;
    let plan: Vec<(usize, Axis)> = axes
        .iter()
        .map(|&a| {
            let ax = Axis {
                in_len: shape[a],
                out_len: out[a],
                scale: scale[a],
                roi: roi.as_ref().map(|v| v[a]),
            };
            (a, ax)
        })
        .filter(|(_, ax)| !is_identity(ax))
        .collect();
    for (a, ax) in &plan {
        if ax.in_len == 0 && ax.out_len > 0 {
            return Err(Error::invalid(format!(
                "{OP}: cannot resize the empty axis {a}"
            )));
        }
    }
    Ok((p, plan, out, extrapolation))
}

/// Resize's sampling tables for a static input shape, for code generators:
/// what the interpreter computes, as data.
#[derive(Clone, Debug, PartialEq)]
pub struct ResizeTables {
    /// `nearest` mode: a pure selection (each tap list is one source index
    /// with weight 1); otherwise weighted sums in f64, one axis at a time.
    pub nearest: bool,
    pub out_shape: Vec<usize>,
    /// The value of output elements whose source lies outside the input
    /// (`tf_crop_and_resize` only).
    pub extrapolation: f64,
    /// The resized axes in the order the interpreter applies them (axes it
    /// leaves unchanged are omitted): `(axis, taps)` with one entry per output
    /// coordinate, `None` for the extrapolation value, else the
    /// `(source index, weight)` taps, summed in order.
    pub axes: Vec<ResizeAxisTaps>,
}

/// One resized axis of [`ResizeTables`].
pub type ResizeAxisTaps = (usize, Vec<Option<Vec<(usize, f64)>>>);

/// Builds [`ResizeTables`] for an input of `shape` and `dtype` (errors as the
/// interpreter's; `roi`, `scales` and `sizes` are Resize's inputs 1 to 3).
pub fn resize_tables(
    attrs: &Attrs,
    shape: &[usize],
    dtype: DType,
    roi: Option<&Tensor>,
    scales: Option<&Tensor>,
    sizes: Option<&Tensor>,
) -> Result<ResizeTables> {
    let (p, plan, out, extrapolation) = prepare(attrs, shape, roi, scales, sizes)?;
    let nearest = p.mode == Mode::Nearest;
    if !nearest && dtype == DType::Bool {
        return Err(Error::invalid(format!(
            "{OP}: cannot interpolate bool tensors"
        )));
    }
    let mut axes = Vec::with_capacity(plan.len());
    for (a, ax) in &plan {
        let taps = (0..ax.out_len)
            .map(|y| {
                let (xs, outside) = ax.source(y, p.coord)?;
                Ok((!outside).then(|| {
                    if nearest {
                        vec![(ax.nearest(xs, p.nearest), 1.0)]
                    } else {
                        ax.taps(xs, &p)
                    }
                }))
            })
            .collect::<Result<_>>()?;
        axes.push((*a, taps));
    }
    Ok(ResizeTables {
        nearest,
        out_shape: out,
        extrapolation,
        axes,
    })
}

pub(crate) fn resize(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let x = input(OP, inputs, 0)?;
    let (p, plan, _, extrapolation) = prepare(
        attrs,
        x.shape(),
        opt_input(inputs, 1),
        opt_input(inputs, 2),
        opt_input(inputs, 3),
    )?;
    if p.mode == Mode::Nearest {
        nearest(x, &plan, &p, extrapolation)
    } else {
        interpolate(x, &plan, &p, extrapolation)
    }
}

/// Axes the reference skips: scale 1, same size, trivial roi.
fn is_identity(ax: &Axis) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
    close(ax.scale, 1.0)
        && ax.out_len == ax.in_len
        && ax
            .roi
            .is_none_or(|(r0, r1)| close(r0, 0.0) && close(r1, 1.0))
}

/// Nearest mode: a pure selection, so one index map over all axes.
fn nearest(x: &Tensor, plan: &[(usize, Axis)], p: &Params, extrapolation: f64) -> Result<Tensor> {
    let st = crate::shape::strides(x.shape());
    let mut out = x.shape().to_vec();
    let mut tables: Vec<Vec<usize>> = x
        .shape()
        .iter()
        .zip(&st)
        .map(|(&d, &s)| (0..d).map(|c| c * s).collect())
        .collect();
    for (a, ax) in plan {
        out[*a] = ax.out_len;
        tables[*a] = (0..ax.out_len)
            .map(|y| {
                let (xs, outside) = ax.source(y, p.coord)?;
                Ok(if outside {
                    FILL
                } else {
                    ax.nearest(xs, p.nearest) * st[*a]
                })
            })
            .collect::<Result<_>>()?;
    }
    let idx = crate::interp::movement::index_product(&tables);
    let data = if idx.contains(&FILL) {
        let fill = Tensor::from_f64s(x.dtype(), vec![1], &[extrapolation])?;
        take_or_fill(OP, x.data(), &idx, fill.data())?
    } else {
        take(x.data(), &idx)
    };
    Tensor::new(out, data)
}

/// Linear and cubic modes: weighted sums in f64, one axis at a time.
fn interpolate(
    x: &Tensor,
    plan: &[(usize, Axis)],
    p: &Params,
    extrapolation: f64,
) -> Result<Tensor> {
    if x.dtype() == DType::Bool {
        return Err(Error::invalid(format!(
            "{OP}: cannot interpolate bool tensors"
        )));
    }
    let mut shape = x.shape().to_vec();
    let mut cur = x.to_f64_vec();
    for (a, ax) in plan {
        let taps: Vec<Option<Vec<(usize, f64)>>> = (0..ax.out_len)
            .map(|y| {
                let (xs, outside) = ax.source(y, p.coord)?;
                Ok((!outside).then(|| ax.taps(xs, p)))
            })
            .collect::<Result<_>>()?;
        let outer: usize = shape[..*a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let mut next = Vec::with_capacity(outer * ax.out_len * inner);
        for o in 0..outer {
            let src = &cur[o * ax.in_len * inner..(o + 1) * ax.in_len * inner];
            for t in &taps {
                match t {
                    None => next.extend(std::iter::repeat_n(extrapolation, inner)),
                    Some(t) => {
                        let row = next.len();
                        next.resize(row + inner, 0.0);
                        for &(i, w) in t {
                            for (d, s) in next[row..].iter_mut().zip(&src[i * inner..]) {
                                *d += w * s;
                            }
                        }
                    }
                }
            }
        }
        shape[*a] = ax.out_len;
        cur = next;
    }
    let vals: Vec<f64> = if x.dtype().is_float() {
        let max = match x.dtype() {
            DType::F16 => half::f16::MAX.to_f64(),
            DType::BF16 => half::bf16::MAX.to_f64(),
            DType::F32 => f32::MAX as f64,
            _ => f64::MAX,
        };
        cur.into_iter().map(|v| v.clamp(-max, max)).collect()
    } else {
        cur.into_iter().map(f64::round_ties_even).collect()
    };
    Tensor::from_f64s(x.dtype(), shape, &vals)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn run(attrs: &Attrs, x: &Tensor, scales: Option<&[f32]>, sizes: Option<&[i64]>) -> Tensor {
        let sc = scales.map(|s| f32s(&[s.len()], s));
        let sz = sizes.map(|s| Tensor::from_vec(vec![s.len()], s.to_vec()).unwrap());
        resize(attrs, &[Some(x), None, sc.as_ref(), sz.as_ref()]).unwrap()
    }

    #[test]
    fn nearest_upsample_doubles_pixels() {
        let x = f32s(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
        let y = run(&Attrs::new(), &x, Some(&[1., 1., 2., 3.]), None);
        assert_eq!(y.shape(), &[1, 1, 4, 6]);
        let row0 = [1., 1., 1., 2., 2., 2.];
        let row1 = [3., 3., 3., 4., 4., 4.];
        let want: Vec<f32> = [row0, row0, row1, row1].concat();
        assert_eq!(y.as_slice::<f32>().unwrap(), want.as_slice());
    }

    #[test]
    fn linear_half_pixel_upsample_matches_onnx() {
        // test_resize_upsample_scales_linear: first row of the expected output
        let x = f32s(&[1, 1, 2, 2], &[1., 2., 3., 4.]);
        let a = Attrs::new().with("mode", crate::Attr::Str("linear".into()));
        let y = run(&a, &x, Some(&[1., 1., 2., 2.]), None);
        assert_eq!(&y.as_slice::<f32>().unwrap()[..4], &[1.0, 1.25, 1.75, 2.0]);
    }

    #[test]
    fn sizes_with_not_larger_policy_keep_aspect() {
        let (s, o) = resize_plan(
            &[1, 1, 2, 2],
            &[2, 3],
            &Target::Sizes(&[7, 8]),
            AspectPolicy::NotLarger,
        )
        .unwrap();
        assert_eq!(o, vec![1, 1, 7, 7]);
        assert_eq!(s[2], 3.5);
    }
}
