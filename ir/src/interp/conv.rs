//! Interpreter for the Conv class: Conv, ConvInteger and QLinearConv here,
//! ConvTranspose in [`transpose`].
//!
//! Layout is NCHW-like with any number (>= 1) of spatial axes: `X` is
//! `[N, C, in...]`, `W` is `[M, C / group, k...]`, `Y` is `[N, M, out...]`.
//! Per image and group, the input is unfolded into a `[C/group * taps, out]`
//! column matrix (im2col; skipped for pointwise convolutions, whose columns
//! are the input itself) and multiplied by the group's `[M/group, C/group * taps]`
//! weight rows in i-k-j order over contiguous rows, blocked along `out`, with
//! large products split by rows of `M` across threads. Every output element is
//! accumulated by one thread in index order (channel, then kernel tap in
//! row-major order), and the bias is added last, so results do not depend on
//! the thread count.
//!
//! Numerics: f32 and f64 accumulate in their own type; f16 and bf16 in f32,
//! rounded once. ConvInteger and QLinearConv subtract the zero points (so
//! padding is the zero point) and accumulate in i32, wrapping; QLinearConv
//! then scales by `x_scale * w_scale / y_scale` (computed in f32, applied in
//! f64), rounds half to even, adds `y_zero_point` and saturates.

mod transpose;

use super::util::{input, opt_input};
use super::window::{
    checked_numel, conv_axis, f32_values, from_f32, next_index, valid_range, Axis, WindowAttrs,
};
use crate::{shape, DType, Data, Error, Op, Result, Tensor};
use std::sync::OnceLock;

pub(crate) fn eval(
    op: Op,
    attrs: &crate::Attrs,
    inputs: &[Option<&Tensor>],
    _n_outputs: usize,
) -> Result<Vec<Tensor>> {
    let y = match op {
        Op::Conv => conv(attrs, inputs)?,
        Op::ConvTranspose => transpose::conv_transpose(attrs, inputs)?,
        Op::ConvInteger => conv_integer(attrs, inputs)?,
        Op::QLinearConv => qlinear_conv(attrs, inputs)?,
        _ => return Err(Error::invalid(format!("{op} is not a convolution"))),
    };
    Ok(vec![y])
}

/// The resolved shape of a (non-transposed) convolution.
#[derive(Clone, Debug)]
struct ConvShape {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    group: usize,
    axes: Vec<Axis>,
}

impl ConvShape {
    fn new(op: Op, attrs: &crate::Attrs, x: &[usize], w: &[usize]) -> Result<ConvShape> {
        if x.len() < 3 || w.len() != x.len() {
            return Err(Error::invalid(format!(
                "{op} needs X of rank >= 3 and W of the same rank, found X {x:?} and W {w:?}"
            )));
        }
        let group = read_group(op, attrs)?;
        let (c, m) = (x[1], w[0]);
        if w[1].checked_mul(group) != Some(c) || m % group != 0 {
            return Err(Error::invalid(format!(
                "{op}: X {x:?} and W {w:?} do not match with group {group} (need C = W[1] * group and M divisible by group)"
            )));
        }
        let wa = WindowAttrs::read(op, attrs, x.len() - 2, Some(&w[2..]))?;
        let axes = x[2..]
            .iter()
            .enumerate()
            .map(|(i, &n)| conv_axis(op, &wa, i, n))
            .collect::<Result<Vec<_>>>()?;
        Ok(ConvShape {
            batch: x[0],
            in_channels: c,
            out_channels: m,
            group,
            axes,
        })
    }

    /// `[N, M, out...]`, checking that it and the column buffer have a size.
    fn out_shape(&self, op: Op) -> Result<Vec<usize>> {
        let mut s = vec![self.batch, self.out_channels];
        s.extend(self.axes.iter().map(|a| a.output));
        checked_numel(op, &s)?;
        let mut cols = vec![self.in_channels / self.group];
        cols.extend(self.axes.iter().flat_map(|a| [a.kernel, a.output]));
        checked_numel(op, &cols)?;
        Ok(s)
    }
}

/// The `group` attribute (default 1), which must be positive.
pub(super) fn read_group(op: Op, attrs: &crate::Attrs) -> Result<usize> {
    let g = attrs.int_or("group", 1)?;
    if g < 1 {
        return Err(Error::Attr {
            attr: "group".into(),
            msg: format!("{op}: must be positive, found {g}"),
        });
    }
    usize::try_from(g).map_err(|_| Error::Attr {
        attr: "group".into(),
        msg: format!("{op}: {g} is too large"),
    })
}

/// Element types a convolution accumulates in.
pub(super) trait Acc: Copy + Default + Send + Sync {
    /// `self + a * b` (wrapping for integers; never a fused multiply-add).
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn add(self, b: Self) -> Self;
}

impl Acc for f32 {
    #[inline]
    fn mul_add(self, a: f32, b: f32) -> f32 {
        self + a * b
    }
    #[inline]
    fn add(self, b: f32) -> f32 {
        self + b
    }
}

impl Acc for f64 {
    #[inline]
    fn mul_add(self, a: f64, b: f64) -> f64 {
        self + a * b
    }
    #[inline]
    fn add(self, b: f64) -> f64 {
        self + b
    }
}

impl Acc for i32 {
    #[inline]
    fn mul_add(self, a: i32, b: i32) -> i32 {
        self.wrapping_add(a.wrapping_mul(b))
    }
    #[inline]
    fn add(self, b: i32) -> i32 {
        self.wrapping_add(b)
    }
}

/// The convolution sums without bias: `x` is `[N, C, in...]`, `w` is
/// `[M, C/group, k...]`, the result `[N, M, out...]`.
fn conv_nd<T: Acc>(x: &[T], w: &[T], cs: &ConvShape) -> Vec<T> {
    let axes = &cs.axes;
    let in_size: usize = axes.iter().map(|a| a.input).product();
    let out_size: usize = axes.iter().map(|a| a.output).product();
    let taps: usize = axes.iter().map(|a| a.kernel).product();
    let (cg, mg) = (cs.in_channels / cs.group, cs.out_channels / cs.group);
    let k = cg * taps;
    let mut y = vec![T::default(); cs.batch * cs.out_channels * out_size];
    if y.is_empty() || k == 0 {
        return y;
    }
    // A pointwise convolution's columns are the input itself.
    let pointwise = axes
        .iter()
        .all(|a| a.kernel == 1 && a.stride == 1 && a.pad_begin == 0 && a.pad_end == 0);
    let mut cols = if pointwise {
        Vec::new()
    } else {
        vec![T::default(); k * out_size]
    };
    for n in 0..cs.batch {
        for g in 0..cs.group {
            let xg = &x[(n * cs.in_channels + g * cg) * in_size..][..cg * in_size];
            let wg = &w[g * mg * k..][..mg * k];
            let yg = &mut y[(n * cs.out_channels + g * mg) * out_size..][..mg * out_size];
            if pointwise {
                gemm(wg, xg, yg, mg, k, out_size);
            } else {
                im2col(xg, cg, axes, &mut cols);
                gemm(wg, &cols, yg, mg, k, out_size);
            }
        }
    }
    y
}

/// Unfolds `channels` planes of `x` into `cols[(channel, tap), output position]`,
/// with zeros where a tap falls into the padding.
fn im2col<T: Acc>(x: &[T], channels: usize, axes: &[Axis], cols: &mut [T]) {
    let r = axes.len();
    let in_dims: Vec<usize> = axes.iter().map(|a| a.input).collect();
    let out_dims: Vec<usize> = axes.iter().map(|a| a.output).collect();
    let k_dims: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
    let in_strides = shape::strides(&in_dims);
    let in_size: usize = in_dims.iter().product();
    let out_size: usize = out_dims.iter().product();
    let last = axes[r - 1];
    let row_len = last.output;
    let outer_dims = &out_dims[..r - 1];
    let zero = T::default();
    let mut tap = vec![0usize; r];
    let mut o = vec![0usize; r - 1];
    let mut row = 0;
    for c in 0..channels {
        let xc = &x[c * in_size..][..in_size];
        loop {
            let dst = &mut cols[row * out_size..][..out_size];
            // Along the last axis the valid outputs depend only on the tap.
            let off = (tap[r - 1] * last.dilation) as i64 - last.pad_begin;
            let (lo, hi) = valid_range(off, last.stride, last.input, row_len);
            for seg in dst.chunks_exact_mut(row_len) {
                let mut base = Some(0usize);
                for d in 0..r - 1 {
                    let a = &axes[d];
                    let pos = (o[d] * a.stride + tap[d] * a.dilation) as i64 - a.pad_begin;
                    if pos < 0 || pos >= a.input as i64 {
                        base = None;
                        break;
                    }
                    base = base.map(|b| b + pos as usize * in_strides[d]);
                }
                match base {
                    Some(b) if lo < hi => {
                        seg[..lo].fill(zero);
                        seg[hi..].fill(zero);
                        let start = b + (lo as i64 * last.stride as i64 + off) as usize;
                        if last.stride == 1 {
                            seg[lo..hi].copy_from_slice(&xc[start..][..hi - lo]);
                        } else {
                            let src = xc[start..].iter().step_by(last.stride);
                            for (v, &s) in seg[lo..hi].iter_mut().zip(src) {
                                *v = s;
                            }
                        }
                    }
                    _ => seg.fill(zero),
                }
                next_index(&mut o, outer_dims);
            }
            row += 1;
            if !next_index(&mut tap, &k_dims) {
                break;
            }
        }
    }
}

/// Worker threads for large products (cached `available_parallelism`).
fn threads() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16)
    })
}

/// `c[m, n] += a[m, k] * b[k, n]`, all row-major; rows of `c` are split across
/// threads when the product is large.
pub(super) fn gemm<T: Acc>(a: &[T], b: &[T], c: &mut [T], m: usize, k: usize, n: usize) {
    if m == 0 || k == 0 || n == 0 {
        return;
    }
    let threads = if m.saturating_mul(k).saturating_mul(n) >= 1 << 20 {
        threads().min(m)
    } else {
        1
    };
    if threads <= 1 {
        return gemm_rows(a, b, c, k, n);
    }
    let rows = m.div_ceil(threads);
    std::thread::scope(|s| {
        for (ac, cc) in a[..m * k]
            .chunks(rows * k)
            .zip(c[..m * n].chunks_mut(rows * n))
        {
            s.spawn(move || gemm_rows(ac, b, cc, k, n));
        }
    });
}

/// Single-threaded `c += a * b` over whole rows of `a` and `c`, in i-k-j order,
/// blocked along `n` so a block of `b` stays in cache across the rows of `a`.
fn gemm_rows<T: Acc>(a: &[T], b: &[T], c: &mut [T], k: usize, n: usize) {
    const BLOCK: usize = 256;
    let mut j0 = 0;
    while j0 < n {
        let jb = BLOCK.min(n - j0);
        for (arow, crow) in a.chunks_exact(k).zip(c.chunks_exact_mut(n)) {
            let crow = &mut crow[j0..j0 + jb];
            for (kk, &av) in arow.iter().enumerate() {
                let brow = &b[kk * n + j0..][..jb];
                for (cv, &bv) in crow.iter_mut().zip(brow) {
                    *cv = cv.mul_add(av, bv);
                }
            }
        }
        j0 += jb;
    }
}

/// Adds `bias[m]` to every `[n, m, :]` row of `y` (rows of `row_len`).
pub(super) fn add_bias<T: Acc>(y: &mut [T], bias: &[T], row_len: usize) {
    if row_len == 0 || bias.is_empty() {
        return;
    }
    for (i, row) in y.chunks_exact_mut(row_len).enumerate() {
        let b = bias[i % bias.len()];
        for v in row {
            *v = v.add(b);
        }
    }
}

/// Checks the float operands of Conv and ConvTranspose: X, W and B share a
/// float dtype, and B (if any) has `m` elements.
pub(super) fn check_float_operands(
    op: Op,
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    m: usize,
) -> Result<()> {
    let dt = x.dtype();
    if !dt.is_float() {
        return Err(Error::invalid(format!(
            "{op}: X must be f32, f64, f16 or bf16, found {dt}"
        )));
    }
    if w.dtype() != dt {
        return Err(Error::invalid(format!(
            "{op}: W is {} but X is {dt}",
            w.dtype()
        )));
    }
    if let Some(b) = b {
        if b.dtype() != dt || b.rank() != 1 || b.numel() != m {
            return Err(Error::invalid(format!(
                "{op}: B must be {dt}[{m}] (one per output channel), found {}",
                b.ty()
            )));
        }
    }
    Ok(())
}

fn conv(attrs: &crate::Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::Conv;
    let x = input(op, inputs, 0)?;
    let w = input(op, inputs, 1)?;
    let b = opt_input(inputs, 2);
    let cs = ConvShape::new(op, attrs, x.shape(), w.shape())?;
    check_float_operands(op, x, w, b, cs.out_channels)?;
    let shape = cs.out_shape(op)?;
    let out_size: usize = shape[2..].iter().product();
    let data = match (x.data(), w.data()) {
        (Data::F64(xv), Data::F64(wv)) => {
            let mut y = conv_nd(xv, wv, &cs);
            if let Some(Data::F64(bv)) = b.map(Tensor::data) {
                add_bias(&mut y, bv, out_size);
            }
            Data::F64(y)
        }
        _ => {
            let mut y = conv_nd(&f32_values(op, x)?, &f32_values(op, w)?, &cs);
            if let Some(b) = b {
                add_bias(&mut y, &f32_values(op, b)?, out_size);
            }
            from_f32(x.dtype(), y)
        }
    };
    Tensor::new(shape, data)
}

/// An i8 or u8 tensor widened to i32.
fn int8_values(op: Op, name: &str, t: &Tensor) -> Result<Vec<i32>> {
    match t.data() {
        Data::I8(v) => Ok(v.iter().map(|&x| x as i32).collect()),
        Data::U8(v) => Ok(v.iter().map(|&x| x as i32).collect()),
        _ => Err(Error::invalid(format!(
            "{op}: {name} must be i8 or u8, found {}",
            t.dtype()
        ))),
    }
}

/// A zero point of `of`'s dtype with one element (or `per_channel` elements,
/// when allowed), widened to i32; zeros when absent.
fn zero_points(
    op: Op,
    name: &str,
    zp: Option<&Tensor>,
    of: DType,
    per_channel: Option<usize>,
) -> Result<Vec<i32>> {
    let Some(zp) = zp else { return Ok(vec![0]) };
    let n = zp.numel();
    if zp.dtype() != of || !(n == 1 || Some(n) == per_channel) || zp.rank() > 1 {
        let want = match per_channel {
            Some(m) => format!("a {of} scalar or {of}[{m}]"),
            None => format!("a {of} scalar"),
        };
        return Err(Error::invalid(format!(
            "{op}: {name} must be {want}, found {}",
            zp.ty()
        )));
    }
    int8_values(op, name, zp)
}

/// Integer operands with zero points subtracted: `(x - x_zp, w - w_zp[m])`
/// (the weight's zero point may be per output channel).
fn centred(
    op: Op,
    x: &Tensor,
    x_zp: Option<&Tensor>,
    w: &Tensor,
    w_zp: Option<&Tensor>,
    m: usize,
) -> Result<(Vec<i32>, Vec<i32>)> {
    let mut xi = int8_values(op, "x", x)?;
    let mut wi = int8_values(op, "w", w)?;
    let xz = zero_points(op, "x_zero_point", x_zp, x.dtype(), None)?;
    let wz = zero_points(op, "w_zero_point", w_zp, w.dtype(), Some(m))?;
    xi.iter_mut().for_each(|v| *v -= xz[0]);
    let row = wi.len().checked_div(m).unwrap_or(0);
    if row > 0 {
        for (i, r) in wi.chunks_exact_mut(row).enumerate() {
            let z = wz[if wz.len() == 1 { 0 } else { i }];
            r.iter_mut().for_each(|v| *v -= z);
        }
    }
    Ok((xi, wi))
}

fn conv_integer(attrs: &crate::Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::ConvInteger;
    let x = input(op, inputs, 0)?;
    let w = input(op, inputs, 1)?;
    let cs = ConvShape::new(op, attrs, x.shape(), w.shape())?;
    let (xi, wi) = centred(
        op,
        x,
        opt_input(inputs, 2),
        w,
        opt_input(inputs, 3),
        cs.out_channels,
    )?;
    let y = conv_nd(&xi, &wi, &cs);
    Tensor::new(cs.out_shape(op)?, Data::I32(y))
}

/// An f32 scale with one element, or `per_channel` elements when allowed.
fn scales(op: Op, name: &str, t: &Tensor, per_channel: Option<usize>) -> Result<Vec<f32>> {
    let n = t.numel();
    match t.data() {
        Data::F32(v) if t.rank() <= 1 && (n == 1 || Some(n) == per_channel) => Ok(v.clone()),
        _ => Err(Error::invalid(format!(
            "{op}: {name} must be an f32 scalar{}, found {}",
            per_channel.map_or(String::new(), |m| format!(" or f32[{m}]")),
            t.ty()
        ))),
    }
}

fn qlinear_conv(attrs: &crate::Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::QLinearConv;
    let x = input(op, inputs, 0)?;
    let w = input(op, inputs, 3)?;
    let cs = ConvShape::new(op, attrs, x.shape(), w.shape())?;
    let m = cs.out_channels;
    let x_scale = scales(op, "x_scale", input(op, inputs, 1)?, None)?[0];
    let w_scale = scales(op, "w_scale", input(op, inputs, 4)?, Some(m))?;
    let y_scale = scales(op, "y_scale", input(op, inputs, 6)?, None)?[0];
    let y_zp = input(op, inputs, 7)?;
    let (lo, hi) = match y_zp.dtype() {
        DType::I8 => (i8::MIN as f64, i8::MAX as f64),
        DType::U8 => (0.0, u8::MAX as f64),
        d => {
            return Err(Error::invalid(format!(
                "{op}: y_zero_point must be i8 or u8, found {d}"
            )))
        }
    };
    let y_zero = zero_points(op, "y_zero_point", Some(y_zp), y_zp.dtype(), None)?[0] as f64;
    let (xi, wi) = centred(
        op,
        x,
        Some(input(op, inputs, 2)?),
        w,
        Some(input(op, inputs, 5)?),
        m,
    )?;
    let mut acc = conv_nd(&xi, &wi, &cs);
    let shape = cs.out_shape(op)?;
    let out_size: usize = shape[2..].iter().product();
    if let Some(b) = opt_input(inputs, 8) {
        match b.data() {
            Data::I32(bv) if b.rank() == 1 && bv.len() == m => add_bias(&mut acc, bv, out_size),
            _ => {
                return Err(Error::invalid(format!(
                    "{op}: B must be i32[{m}], found {}",
                    b.ty()
                )))
            }
        }
    }
    let multipliers: Vec<f64> = (0..m)
        .map(|i| (x_scale * w_scale[if w_scale.len() == 1 { 0 } else { i }] / y_scale) as f64)
        .collect();
    let mut q = Vec::with_capacity(acc.len());
    if out_size > 0 && m > 0 {
        for (i, row) in acc.chunks_exact(out_size).enumerate() {
            let mult = multipliers[i % m];
            q.extend(
                row.iter()
                    .map(|&a| ((a as f64 * mult).round_ties_even() + y_zero).clamp(lo, hi)),
            );
        }
    }
    let data = match y_zp.dtype() {
        DType::I8 => Data::I8(q.into_iter().map(|v| v as i8).collect()),
        _ => Data::U8(q.into_iter().map(|v| v as u8).collect()),
    };
    Tensor::new(shape, data)
}

#[cfg(test)]
mod tests;
