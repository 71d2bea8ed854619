//! Sliding-window geometry shared by the Conv and Pool op classes, in the
//! interpreter and in shape inference (so the two cannot disagree).
//!
//! - [`WindowAttrs::read`]: `kernel_shape`, `strides`, `dilations`, `pads` and
//!   `auto_pad`, validated against the number of spatial axes;
//! - [`conv_axis`], [`pool_axis`], [`conv_transpose_axis`]: ONNX's output size
//!   and effective padding along one spatial axis;
//! - [`valid_range`]: along one axis, which positions of a strided sweep land
//!   inside a buffer (the clipping that im2col, col2im and pooling windows do);
//! - [`next_index`]: row-major multi-index stepping;
//! - f32 views of half-precision and 8-bit tensors, for ops that compute in f32.
//!
//! Attribute values are limited to `i32::MAX` so that the geometry arithmetic,
//! done in `i64` with checked operations where sizes meet, cannot overflow.

use crate::{Attrs, DType, Data, Error, Op, Result, Tensor};
use half::{bf16, f16};
use std::borrow::Cow;

/// ONNX's `auto_pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// The window attributes of a Conv or Pool node, for `kernel.len()` spatial axes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WindowAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Explicit pads, `[begin..., end...]` (zeros when absent).
    pub pads: Vec<usize>,
    pub auto_pad: AutoPad,
}

/// Largest accepted value of a window attribute.
const MAX_ATTR: i64 = i32::MAX as i64;

fn attr_err(attr: &str, msg: String) -> Error {
    Error::Attr {
        attr: attr.to_string(),
        msg,
    }
}

/// An ints attribute of `len` values in `min..=MAX_ATTR`, or `default` repeated
/// when absent (or empty, as some exporters write it).
fn ints(
    op: Op,
    attrs: &Attrs,
    name: &str,
    len: usize,
    default: usize,
    min: i64,
) -> Result<Vec<usize>> {
    let v = match attrs.ints(name)? {
        None | Some([]) => return Ok(vec![default; len]),
        Some(v) => v,
    };
    if v.len() != len {
        return Err(attr_err(
            name,
            format!("{op} expects {len} values, found {v:?}"),
        ));
    }
    v.iter()
        .map(|&x| {
            if (min..=MAX_ATTR).contains(&x) {
                Ok(x as usize)
            } else {
                Err(attr_err(
                    name,
                    format!("{op}: value {x} in {v:?} is out of range ({min}..={MAX_ATTR})"),
                ))
            }
        })
        .collect()
}

impl WindowAttrs {
    /// Reads the window attributes for `rank` spatial axes. `kernel_from_w` is
    /// the kernel given by the weight's shape (convolutions): `kernel_shape`
    /// may then be omitted, and must agree with it when present. Pools pass
    /// `None` and require `kernel_shape`.
    pub fn read(
        op: Op,
        attrs: &Attrs,
        rank: usize,
        kernel_from_w: Option<&[usize]>,
    ) -> Result<WindowAttrs> {
        let kernel = match (attrs.ints("kernel_shape")?, kernel_from_w) {
            (None, Some(k)) => k.to_vec(),
            (None, None) => {
                let why = if op.class() == crate::OpClass::Conv {
                    " (the weight's spatial shape is not static)"
                } else {
                    ""
                };
                return Err(attr_err(
                    "kernel_shape",
                    format!("{op} requires kernel_shape{why}"),
                ));
            }
            (Some(_), w) => {
                let k = ints(op, attrs, "kernel_shape", rank, 1, 1)?;
                if let Some(w) = w {
                    if w != k.as_slice() {
                        return Err(attr_err(
                            "kernel_shape",
                            format!("{op}: kernel_shape {k:?} disagrees with the weight's spatial shape {w:?}"),
                        ));
                    }
                }
                k
            }
        };
        if kernel.len() != rank {
            return Err(Error::invalid(format!(
                "{op}: kernel {kernel:?} has {} axes but the input has {rank} spatial axes",
                kernel.len()
            )));
        }
        if let Some(&k) = kernel.iter().find(|&&k| k == 0 || k as i64 > MAX_ATTR) {
            return Err(Error::invalid(format!(
                "{op}: kernel size {k} in {kernel:?} is out of range"
            )));
        }
        let strides = ints(op, attrs, "strides", rank, 1, 1)?;
        let dilations = ints(op, attrs, "dilations", rank, 1, 1)?;
        let pads = ints(op, attrs, "pads", 2 * rank, 0, 0)?;
        let auto_pad =
            match attrs.str_or("auto_pad", "NOTSET")? {
                "NOTSET" | "" => AutoPad::NotSet,
                "SAME_UPPER" => AutoPad::SameUpper,
                "SAME_LOWER" => AutoPad::SameLower,
                "VALID" => AutoPad::Valid,
                other => return Err(attr_err(
                    "auto_pad",
                    format!(
                        "{op}: expected NOTSET, SAME_UPPER, SAME_LOWER or VALID, found {other:?}"
                    ),
                )),
            };
        Ok(WindowAttrs {
            kernel,
            strides,
            dilations,
            pads,
            auto_pad,
        })
    }

    pub fn rank(&self) -> usize {
        self.kernel.len()
    }

    /// Extent of the dilated kernel along axis `i`: `(k - 1) * d + 1`.
    pub fn extent(&self, i: usize) -> i64 {
        (self.kernel[i] as i64 - 1) * self.dilations[i] as i64 + 1
    }
}

/// One spatial axis of a windowed op, fully resolved.
///
/// For a convolution or pool, output `o` and kernel tap `t` read input
/// position `o * stride - pad_begin + t * dilation`; for a transposed
/// convolution, input `i` and tap `t` write output position
/// `i * stride - pad_begin + t * dilation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis {
    pub input: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    /// Negative only for a ConvTranspose whose `output_shape` asks for more
    /// than the natural output size.
    pub pad_begin: i64,
    pub pad_end: i64,
}

fn too_large(op: Op) -> Error {
    Error::invalid(format!("{op}: window geometry overflows"))
}

/// `(in + s - 1) / s`, the SAME output size, and its `(begin, end)` pads.
fn same_pads(op: Op, w: &WindowAttrs, i: usize, input: usize) -> Result<(usize, i64, i64)> {
    let (s, n) = (w.strides[i] as i64, input as i64);
    let out = (n + s - 1) / s;
    let total = ((out - 1)
        .max(0)
        .checked_mul(s)
        .ok_or_else(|| too_large(op))?
        + w.extent(i)
        - n)
        .max(0);
    let begin = match w.auto_pad {
        AutoPad::SameLower => total - total / 2,
        _ => total / 2,
    };
    Ok((out as usize, begin, total - begin))
}

fn axis(
    w: &WindowAttrs,
    i: usize,
    input: usize,
    output: usize,
    pad_begin: i64,
    pad_end: i64,
) -> Axis {
    Axis {
        input,
        output,
        kernel: w.kernel[i],
        stride: w.strides[i],
        dilation: w.dilations[i],
        pad_begin,
        pad_end,
    }
}

/// `(begin, end)` explicit pads of axis `i`.
fn explicit_pads(w: &WindowAttrs, i: usize) -> (i64, i64) {
    (w.pads[i] as i64, w.pads[w.rank() + i] as i64)
}

/// The padded length minus the kernel extent, which must not be negative.
fn room(op: Op, w: &WindowAttrs, i: usize, input: usize, begin: i64, end: i64) -> Result<i64> {
    let r = input as i64 + begin + end - w.extent(i);
    if r < 0 {
        return Err(Error::invalid(format!(
            "{op}: along spatial axis {i} the kernel extent {} (kernel {}, dilation {}) exceeds the padded input {} (input {input}, pads {begin}+{end})",
            w.extent(i),
            w.kernel[i],
            w.dilations[i],
            input as i64 + begin + end
        )));
    }
    Ok(r)
}

/// Axis `i` of a convolution (Conv, ConvInteger, QLinearConv) over `input` elements:
/// `out = floor((in + pads - extent) / stride) + 1`, or `ceil(in / stride)` for SAME.
pub(crate) fn conv_axis(op: Op, w: &WindowAttrs, i: usize, input: usize) -> Result<Axis> {
    let s = w.strides[i] as i64;
    let (out, b, e) = match w.auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => same_pads(op, w, i, input)?,
        AutoPad::Valid => ((room(op, w, i, input, 0, 0)? / s + 1) as usize, 0, 0),
        AutoPad::NotSet => {
            let (b, e) = explicit_pads(w, i);
            ((room(op, w, i, input, b, e)? / s + 1) as usize, b, e)
        }
    };
    Ok(axis(w, i, input, out, b, e))
}

/// Axis `i` of a pool (MaxPool, AveragePool, LpPool). With explicit pads the
/// output size is `floor` (or with `ceil_mode`, `ceil`) of
/// `(in + pads - extent) / stride + 1`, and in ceil mode a last window that
/// would start in the end padding is dropped. SAME gives `ceil(in / stride)`,
/// VALID `floor((in - extent) / stride) + 1` (equal to its ceil-mode formula).
pub(crate) fn pool_axis(
    op: Op,
    w: &WindowAttrs,
    i: usize,
    input: usize,
    ceil_mode: bool,
) -> Result<Axis> {
    let s = w.strides[i] as i64;
    let (out, b, e) = match w.auto_pad {
        AutoPad::SameUpper | AutoPad::SameLower => same_pads(op, w, i, input)?,
        AutoPad::Valid => ((room(op, w, i, input, 0, 0)? / s + 1) as usize, 0, 0),
        AutoPad::NotSet => {
            let (b, e) = explicit_pads(w, i);
            let r = room(op, w, i, input, b, e)?;
            let mut out = if ceil_mode {
                (r + s - 1) / s + 1
            } else {
                r / s + 1
            };
            if ceil_mode && (out - 1) * s >= input as i64 + b {
                out -= 1;
            }
            (out as usize, b, e)
        }
    };
    Ok(axis(w, i, input, out, b, e))
}

/// ConvTranspose's own attributes, beyond the window ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TransposeAttrs {
    pub output_padding: Vec<usize>,
    /// The requested spatial output shape, when given.
    pub output_shape: Option<Vec<usize>>,
}

impl TransposeAttrs {
    pub fn read(op: Op, attrs: &Attrs, rank: usize) -> Result<TransposeAttrs> {
        let output_padding = ints(op, attrs, "output_padding", rank, 0, 0)?;
        let output_shape = match attrs.ints("output_shape")? {
            None | Some([]) => None,
            // Some exporters include the batch and channel dimensions.
            Some(v) if v.len() == rank + 2 => Some(v[2..].to_vec()),
            Some(v) if v.len() == rank => Some(v.to_vec()),
            Some(v) => {
                return Err(attr_err(
                    "output_shape",
                    format!("{op} expects {rank} spatial sizes, found {v:?}"),
                ))
            }
        };
        let output_shape = match output_shape {
            None => None,
            Some(v) => Some(
                v.iter()
                    .map(|&x| {
                        if (0..=MAX_ATTR).contains(&x) {
                            Ok(x as usize)
                        } else {
                            Err(attr_err(
                                "output_shape",
                                format!("{op}: size {x} is out of range"),
                            ))
                        }
                    })
                    .collect::<Result<Vec<usize>>>()?,
            ),
        };
        Ok(TransposeAttrs {
            output_padding,
            output_shape,
        })
    }
}

/// Axis `i` of a ConvTranspose over `input` elements. The natural output is
/// `stride * (in - 1) + output_padding + extent - pads`; with `output_shape`
/// (or SAME, which asks for `in * stride`) the pads are derived from the
/// requested size: SAME_UPPER puts the odd element at the end, otherwise at
/// the beginning (ONNX's formulas, with floor division).
pub(crate) fn conv_transpose_axis(
    op: Op,
    w: &WindowAttrs,
    t: &TransposeAttrs,
    i: usize,
    input: usize,
) -> Result<Axis> {
    let s = w.strides[i] as i64;
    let full = (input as i64 - 1)
        .max(0)
        .checked_mul(s)
        .and_then(|x| x.checked_add(t.output_padding[i] as i64 + w.extent(i)))
        .ok_or_else(|| too_large(op))?;
    let split = |out: i64| -> (i64, i64) {
        let total = full - out;
        let half = total.div_euclid(2);
        if w.auto_pad == AutoPad::SameUpper {
            (half, total - half)
        } else {
            (total - half, half)
        }
    };
    let requested = match (&t.output_shape, w.auto_pad) {
        (Some(shape), _) => Some(shape[i] as i64),
        (None, AutoPad::SameUpper | AutoPad::SameLower) => {
            Some((input as i64).checked_mul(s).ok_or_else(|| too_large(op))?)
        }
        _ => None,
    };
    let (out, b, e) = match (requested, w.auto_pad) {
        (Some(out), _) => {
            let (b, e) = split(out);
            (out, b, e)
        }
        (None, AutoPad::Valid) => (full, 0, 0),
        (None, _) => {
            let (b, e) = explicit_pads(w, i);
            (full - b - e, b, e)
        }
    };
    if out < 0 {
        return Err(Error::invalid(format!(
            "{op}: along spatial axis {i} the pads {b}+{e} exceed the full output size {full}"
        )));
    }
    Ok(axis(w, i, input, out as usize, b, e))
}

/// Along one axis, the range `lo..hi` of `p` in `0..n` for which
/// `p * step + offset` lies in `0..limit`.
pub(crate) fn valid_range(offset: i64, step: usize, limit: usize, n: usize) -> (usize, usize) {
    let step = step as i64;
    // smallest p with p * step + offset >= 0
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + step - 1) / step
    };
    // smallest p with p * step + offset >= limit
    let end = limit as i64 - offset;
    let hi = if end <= 0 { 0 } else { (end + step - 1) / step };
    let hi = (hi.max(0) as u64).min(n as u64) as usize;
    let lo = (lo as u64).min(hi as u64) as usize;
    (lo, hi)
}

/// Advances the row-major multi-index `idx` within `dims`; returns false (with
/// `idx` back at all zeros) once every index has been visited.
pub(crate) fn next_index(idx: &mut [usize], dims: &[usize]) -> bool {
    for ax in (0..idx.len()).rev() {
        idx[ax] += 1;
        if idx[ax] < dims[ax] {
            return true;
        }
        idx[ax] = 0;
    }
    false
}

/// Product of sizes, failing instead of overflowing.
pub(crate) fn checked_numel(op: Op, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::invalid(format!("{op}: output shape {dims:?} is too large")))
}

/// The elements of a f32, f16, bf16, i8 or u8 tensor as f32 (exact for all of them).
pub(crate) fn as_f32(t: &Tensor) -> Option<Cow<'_, [f32]>> {
    Some(match t.data() {
        Data::F32(v) => Cow::Borrowed(v.as_slice()),
        Data::F16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
        Data::BF16(v) => Cow::Owned(v.iter().map(|x| x.to_f32()).collect()),
        Data::I8(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
        Data::U8(v) => Cow::Owned(v.iter().map(|&x| x as f32).collect()),
        _ => return None,
    })
}

/// [`as_f32`], with an error naming the op for other dtypes.
pub(crate) fn f32_values(op: Op, t: &Tensor) -> Result<Cow<'_, [f32]>> {
    as_f32(t).ok_or_else(|| Error::invalid(format!("{op}: unsupported dtype {}", t.dtype())))
}

/// Stores f32 results as `dtype` (f32, f16, bf16 rounding to nearest even;
/// i8 and u8 saturating, for values that came from such a tensor).
pub(crate) fn from_f32(dtype: DType, v: Vec<f32>) -> Data {
    match dtype {
        DType::F16 => Data::F16(v.into_iter().map(f16::from_f32).collect()),
        DType::BF16 => Data::BF16(v.into_iter().map(bf16::from_f32).collect()),
        DType::I8 => Data::I8(v.into_iter().map(|x| x as i8).collect()),
        DType::U8 => Data::U8(v.into_iter().map(|x| x as u8).collect()),
        _ => Data::F32(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn wa(attrs: &Attrs, rank: usize, k: Option<&[usize]>) -> WindowAttrs {
        WindowAttrs::read(Op::Conv, attrs, rank, k).unwrap()
    }

    #[test]
    fn attrs_default_and_validate() {
        let w = wa(&Attrs::new(), 2, Some(&[3, 3]));
        assert_eq!(w.strides, vec![1, 1]);
        assert_eq!(w.dilations, vec![1, 1]);
        assert_eq!(w.pads, vec![0; 4]);
        assert_eq!(w.auto_pad, AutoPad::NotSet);
        let bad = Attrs::new().with("strides", Attr::Ints(vec![1]));
        assert!(WindowAttrs::read(Op::Conv, &bad, 2, Some(&[3, 3])).is_err());
        let bad = Attrs::new().with("strides", Attr::Ints(vec![0, 1]));
        assert!(WindowAttrs::read(Op::Conv, &bad, 2, Some(&[3, 3])).is_err());
        let bad = Attrs::new().with("pads", Attr::Ints(vec![0, -1, 0, 0]));
        assert!(WindowAttrs::read(Op::Conv, &bad, 2, Some(&[3, 3])).is_err());
        let bad = Attrs::new().with("kernel_shape", Attr::Ints(vec![3, 2]));
        assert!(WindowAttrs::read(Op::Conv, &bad, 2, Some(&[3, 3])).is_err());
        assert!(WindowAttrs::read(Op::MaxPool, &Attrs::new(), 2, None).is_err());
        let bad = Attrs::new().with("auto_pad", Attr::Str("SAME".into()));
        assert!(WindowAttrs::read(Op::Conv, &bad, 1, Some(&[3])).is_err());
        let huge = Attrs::new().with("dilations", Attr::Ints(vec![i64::MAX]));
        assert!(WindowAttrs::read(Op::Conv, &huge, 1, Some(&[3])).is_err());
    }

    #[test]
    fn conv_output_sizes() {
        // 5 wide, kernel 3, stride 2, pads 1+1: floor((5 + 2 - 3) / 2) + 1 = 3
        let a = Attrs::new()
            .with("strides", Attr::Ints(vec![2]))
            .with("pads", Attr::Ints(vec![1, 1]));
        let ax = conv_axis(Op::Conv, &wa(&a, 1, Some(&[3])), 0, 5).unwrap();
        assert_eq!((ax.output, ax.pad_begin, ax.pad_end), (3, 1, 1));
        // dilation 2: extent 5 over 5 -> 1
        let a = Attrs::new().with("dilations", Attr::Ints(vec![2]));
        assert_eq!(
            conv_axis(Op::Conv, &wa(&a, 1, Some(&[3])), 0, 5)
                .unwrap()
                .output,
            1
        );
        assert!(conv_axis(Op::Conv, &wa(&a, 1, Some(&[3])), 0, 4).is_err());
        // SAME_LOWER, stride 2, kernel 3 over 5: out 3, total pad 2 -> 1 + 1
        let a = Attrs::new()
            .with("strides", Attr::Ints(vec![2]))
            .with("auto_pad", Attr::Str("SAME_LOWER".into()));
        let ax = conv_axis(Op::Conv, &wa(&a, 1, Some(&[3])), 0, 5).unwrap();
        assert_eq!((ax.output, ax.pad_begin, ax.pad_end), (3, 1, 1));
        // SAME over 6 with kernel 4 stride 1: total 3, upper 1+2, lower 2+1
        let up = Attrs::new().with("auto_pad", Attr::Str("SAME_UPPER".into()));
        let ax = conv_axis(Op::Conv, &wa(&up, 1, Some(&[4])), 0, 6).unwrap();
        assert_eq!((ax.output, ax.pad_begin, ax.pad_end), (6, 1, 2));
        let lo = Attrs::new().with("auto_pad", Attr::Str("SAME_LOWER".into()));
        let ax = conv_axis(Op::Conv, &wa(&lo, 1, Some(&[4])), 0, 6).unwrap();
        assert_eq!((ax.output, ax.pad_begin, ax.pad_end), (6, 2, 1));
    }

    #[test]
    fn pool_ceil_mode() {
        let a = Attrs::new()
            .with("kernel_shape", Attr::Ints(vec![3]))
            .with("strides", Attr::Ints(vec![2]));
        let w = WindowAttrs::read(Op::MaxPool, &a, 1, None).unwrap();
        // 4 wide: floor(1/2)+1 = 1, ceil(1/2)+1 = 2
        assert_eq!(pool_axis(Op::MaxPool, &w, 0, 4, false).unwrap().output, 1);
        assert_eq!(pool_axis(Op::MaxPool, &w, 0, 4, true).unwrap().output, 2);
        // kernel 1 stride 2 over 2, ceil: ceil(1/2)+1 = 2, but window 1 would start at 2 >= 2: 1
        let a = Attrs::new()
            .with("kernel_shape", Attr::Ints(vec![1]))
            .with("strides", Attr::Ints(vec![2]));
        let w = WindowAttrs::read(Op::MaxPool, &a, 1, None).unwrap();
        assert_eq!(pool_axis(Op::MaxPool, &w, 0, 2, true).unwrap().output, 1);
        // kernel 3 stride 3 pads 1+1 over 2, ceil: ceil(1/3)+1 = 2, (2-1)*3 >= 2+1: 1
        let a = Attrs::new()
            .with("kernel_shape", Attr::Ints(vec![3]))
            .with("strides", Attr::Ints(vec![3]))
            .with("pads", Attr::Ints(vec![1, 1]));
        let w = WindowAttrs::read(Op::AveragePool, &a, 1, None).unwrap();
        assert_eq!(
            pool_axis(Op::AveragePool, &w, 0, 2, true).unwrap().output,
            1
        );
    }

    #[test]
    fn conv_transpose_sizes() {
        // in 3, stride 3, kernel 3, output_padding 1: full = 6 + 1 + 3 = 10
        let a = Attrs::new()
            .with("strides", Attr::Ints(vec![3]))
            .with("output_padding", Attr::Ints(vec![1]));
        let w = wa(&a, 1, Some(&[3]));
        let t = TransposeAttrs::read(Op::ConvTranspose, &a, 1).unwrap();
        let ax = conv_transpose_axis(Op::ConvTranspose, &w, &t, 0, 3).unwrap();
        assert_eq!((ax.output, ax.pad_begin, ax.pad_end), (10, 0, 0));
        // output_shape 10 without output_padding: full 9, total -1 -> begin 0, end -1
        let a = Attrs::new()
            .with("strides", Attr::Ints(vec![3]))
            .with("output_shape", Attr::Ints(vec![10]));
        let t = TransposeAttrs::read(Op::ConvTranspose, &a, 1).unwrap();
        let ax = conv_transpose_axis(Op::ConvTranspose, &wa(&a, 1, Some(&[3])), &t, 0, 3).unwrap();
        assert_eq!((ax.output, ax.pad_begin, ax.pad_end), (10, 0, -1));
        // SAME_UPPER stride 2 kernel 3 over 3: out 6, full 4 + 3 = 7, total 1 -> 0 + 1
        let a = Attrs::new()
            .with("strides", Attr::Ints(vec![2]))
            .with("auto_pad", Attr::Str("SAME_UPPER".into()));
        let t = TransposeAttrs::read(Op::ConvTranspose, &a, 1).unwrap();
        let ax = conv_transpose_axis(Op::ConvTranspose, &wa(&a, 1, Some(&[3])), &t, 0, 3).unwrap();
        assert_eq!((ax.output, ax.pad_begin, ax.pad_end), (6, 0, 1));
        // pads larger than the output
        let a = Attrs::new().with("pads", Attr::Ints(vec![3, 3]));
        let t = TransposeAttrs::read(Op::ConvTranspose, &a, 1).unwrap();
        assert!(conv_transpose_axis(Op::ConvTranspose, &wa(&a, 1, Some(&[2])), &t, 0, 2).is_err());
    }

    #[test]
    fn valid_ranges() {
        // p * 2 - 1 in 0..5 for p in 0..4: p = 1, 2 (1, 3); p = 3 gives 5
        assert_eq!(valid_range(-1, 2, 5, 4), (1, 3));
        assert_eq!(valid_range(0, 1, 3, 5), (0, 3));
        assert_eq!(valid_range(7, 1, 3, 5), (0, 0));
        assert_eq!(valid_range(-9, 2, 3, 4), (4, 4));
        assert_eq!(valid_range(-9, 2, 30, 4), (4, 4));
    }

    #[test]
    fn multi_index_steps_row_major() {
        let mut idx = vec![0, 0];
        let mut seen = vec![idx.clone()];
        while next_index(&mut idx, &[2, 3]) {
            seen.push(idx.clone());
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[1], vec![0, 1]);
        assert_eq!(seen[3], vec![1, 0]);
        assert_eq!(idx, vec![0, 0]);
        let mut empty: Vec<usize> = vec![];
        assert!(!next_index(&mut empty, &[]));
    }
}

/// The resolved spatial axes of a convolution (Conv, ConvInteger,
/// QLinearConv, FusedConv's Conv) with input shape `x` = `[N, C, in...]` and
/// weight shape `w` = `[M, C/group, k...]`: the same geometry the interpreter
/// and shape inference use, for schedules and backends.
pub fn conv_axes(op: Op, attrs: &Attrs, x: &[usize], w: &[usize]) -> Result<Vec<Axis>> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(Error::invalid(format!(
            "{op} needs X of rank >= 3 and W of the same rank, found X {x:?} and W {w:?}"
        )));
    }
    let wa = WindowAttrs::read(op, attrs, x.len() - 2, Some(&w[2..]))?;
    x[2..]
        .iter()
        .enumerate()
        .map(|(i, &n)| conv_axis(op, &wa, i, n))
        .collect()
}

/// The resolved spatial axes of a windowed pool (MaxPool, AveragePool,
/// LpPool) over input shape `x` = `[N, C, in...]`, with `ceil_mode`; the
/// interpreter's geometry, for schedules and backends.
pub fn pool_axes(op: Op, attrs: &Attrs, x: &[usize]) -> Result<Vec<Axis>> {
    if x.len() < 3 {
        return Err(Error::invalid(format!(
            "{op} needs an input of shape [N, C, spatial...], found {x:?}"
        )));
    }
    let wa = WindowAttrs::read(op, attrs, x.len() - 2, None)?;
    let ceil_mode = attrs.int_or("ceil_mode", 0)? != 0;
    x[2..]
        .iter()
        .enumerate()
        .map(|(i, &n)| pool_axis(op, &wa, i, n, ceil_mode))
        .collect()
}
