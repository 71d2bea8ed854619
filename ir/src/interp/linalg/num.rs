//! Numeric helpers shared by the linalg, normalization, quantization and
//! attention interpreters.
//!
//! - [`Real`]: the float type a kernel computes in. f32, f16 and bf16 tensors
//!   compute in `f32` (rounded to the storage type once, when written back);
//!   f64 tensors compute in `f64`. [`Real::read`] and [`Real::write`] convert
//!   whole tensors, [`Real::round_to`] emulates an intermediate rounding to a
//!   16-bit storage type where an op's definition casts mid-way.
//! - [`Ring`]: the element arithmetic of the matrix kernels: plain IEEE
//!   operations for floats, two's-complement wrapping for integers.
//! - [`matmul_acc`]: the one matrix-product kernel, `out += a · b`, with
//!   contiguous row updates in the inner loop.

use crate::{with_data, DType, Data, Element, Error, Result, Tensor};
use half::{bf16, f16};
use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub};

/// A float type kernels compute in: `f32` or `f64` (`ZERO` and `ONE` come from [`Ring`]).
pub(crate) trait Real:
    Ring
    + Copy
    + PartialOrd
    + Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + Send
    + Sync
    + 'static
{
    const NEG_INFINITY: Self;
    fn of(x: f64) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn abs(self) -> Self;
    fn is_nan(self) -> bool;
    /// Rounds through `dtype`'s storage format when it is f16 or bf16
    /// (identity for every other dtype).
    fn round_to(self, dtype: DType) -> Self;
    /// Every element of `t`, converted.
    fn read(t: &Tensor) -> Vec<Self>;
    /// Stores `v` as a tensor of float dtype `dtype`, rounding once.
    fn write(v: Vec<Self>, dtype: DType, shape: Vec<usize>) -> Result<Tensor>;

    /// NaN-propagating maximum (like numpy's `max`).
    fn nan_max(self, other: Self) -> Self {
        if self.is_nan() || self >= other {
            self
        } else {
            other
        }
    }
}

fn not_float(dtype: DType) -> Error {
    Error::invalid(format!("internal: cannot store a float result as {dtype}"))
}

impl Real for f32 {
    const NEG_INFINITY: f32 = f32::NEG_INFINITY;
    fn of(x: f64) -> f32 {
        x as f32
    }
    fn exp(self) -> f32 {
        f32::exp(self)
    }
    fn ln(self) -> f32 {
        f32::ln(self)
    }
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    fn tanh(self) -> f32 {
        f32::tanh(self)
    }
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn round_to(self, dtype: DType) -> f32 {
        match dtype {
            DType::F16 => f16::from_f32(self).to_f32(),
            DType::BF16 => bf16::from_f32(self).to_f32(),
            _ => self,
        }
    }
    fn read(t: &Tensor) -> Vec<f32> {
        match t.data() {
            Data::F32(v) => v.clone(),
            Data::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            other => with_data!(other, v => v.iter().map(|x| x.to_f64() as f32).collect()),
        }
    }
    fn write(v: Vec<f32>, dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let data = match dtype {
            DType::F32 => Data::F32(v),
            DType::F16 => Data::F16(v.into_iter().map(f16::from_f32).collect()),
            DType::BF16 => Data::BF16(v.into_iter().map(bf16::from_f32).collect()),
            DType::F64 => Data::F64(v.into_iter().map(f64::from).collect()),
            d => return Err(not_float(d)),
        };
        Tensor::new(shape, data)
    }
}

impl Real for f64 {
    const NEG_INFINITY: f64 = f64::NEG_INFINITY;
    fn of(x: f64) -> f64 {
        x
    }
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    fn tanh(self) -> f64 {
        f64::tanh(self)
    }
    fn abs(self) -> f64 {
        f64::abs(self)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn round_to(self, dtype: DType) -> f64 {
        match dtype {
            DType::F16 => f16::from_f64(self).to_f64(),
            DType::BF16 => bf16::from_f64(self).to_f64(),
            DType::F32 => self as f32 as f64,
            _ => self,
        }
    }
    fn read(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec()
    }
    fn write(v: Vec<f64>, dtype: DType, shape: Vec<usize>) -> Result<Tensor> {
        let data = match dtype {
            DType::F64 => Data::F64(v),
            DType::F32 => Data::F32(v.into_iter().map(|x| x as f32).collect()),
            DType::F16 => Data::F16(v.into_iter().map(f16::from_f64).collect()),
            DType::BF16 => Data::BF16(v.into_iter().map(bf16::from_f64).collect()),
            d => return Err(not_float(d)),
        };
        Tensor::new(shape, data)
    }
}

/// Element arithmetic for matrix kernels: IEEE for floats, wrapping for integers.
pub(crate) trait Ring: Copy + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}

macro_rules! ring_float {
    ($($t:ty),*) => {$(
        impl Ring for $t {
            const ZERO: $t = 0.0;
            const ONE: $t = 1.0;
            #[inline(always)]
            fn add(self, o: $t) -> $t { self + o }
            #[inline(always)]
            fn mul(self, o: $t) -> $t { self * o }
        }
    )*};
}
macro_rules! ring_int {
    ($($t:ty),*) => {$(
        impl Ring for $t {
            const ZERO: $t = 0;
            const ONE: $t = 1;
            #[inline(always)]
            fn add(self, o: $t) -> $t { self.wrapping_add(o) }
            #[inline(always)]
            fn mul(self, o: $t) -> $t { self.wrapping_mul(o) }
        }
    )*};
}
ring_float!(f32, f64);
ring_int!(i8, u8, i16, u16, i32, u32, i64, u64);

/// `out[m×n] += a[m×k] · b[k×n]`; all three row-major and contiguous.
/// Each output element accumulates its k products in index order.
pub(crate) fn matmul_acc<T: Ring>(a: &[T], b: &[T], out: &mut [T], m: usize, k: usize, n: usize) {
    if m == 0 || k == 0 || n == 0 {
        return;
    }
    for (a_row, o_row) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)).take(m) {
        // four rows of b per pass over the output row (fewer loads and
        // stores of it); the sum is still ((o + x0·y0) + x1·y1) + ...
        let (a4, a_rest) = a_row.split_at(k - k % 4);
        let (b4, b_rest) = b.split_at(a4.len() * n);
        for (xs, bs) in a4.chunks_exact(4).zip(b4.chunks_exact(4 * n)) {
            let (b0, bs) = bs.split_at(n);
            let (b1, bs) = bs.split_at(n);
            let (b2, b3) = bs.split_at(n);
            let (x0, x1, x2, x3) = (xs[0], xs[1], xs[2], xs[3]);
            for ((((o, &y0), &y1), &y2), &y3) in o_row.iter_mut().zip(b0).zip(b1).zip(b2).zip(b3) {
                let mut v = Ring::add(*o, Ring::mul(x0, y0));
                v = Ring::add(v, Ring::mul(x1, y1));
                v = Ring::add(v, Ring::mul(x2, y2));
                *o = Ring::add(v, Ring::mul(x3, y3));
            }
        }
        for (&x, b_row) in a_rest.iter().zip(b_rest.chunks_exact(n)) {
            for (o, &y) in o_row.iter_mut().zip(b_row) {
                *o = Ring::add(*o, Ring::mul(x, y));
            }
        }
    }
}

/// Swaps the two axes of a row-major `rows × cols` matrix.
pub(crate) fn transpose<T: Copy>(x: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    for c in 0..cols {
        for r in 0..rows {
            out.push(x[r * cols + c]);
        }
    }
    out
}

/// A tensor's elements as `&[T]`, with an error naming the op and input when
/// the dtype is not `T`'s.
pub(crate) fn typed<'a, T: Element>(op: crate::Op, t: &'a Tensor, what: &str) -> Result<&'a [T]> {
    t.as_slice::<T>().ok_or_else(|| {
        Error::invalid(format!(
            "{op}: {what} must be {} but is {}",
            T::DTYPE,
            t.dtype()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_kernel_multiplies() {
        // [1 2 3; 4 5 6] · [7 8; 9 10; 11 12] = [58 64; 139 154]
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut out = [0.0f32; 4];
        matmul_acc(&a, &b, &mut out, 2, 3, 2);
        assert_eq!(out, [58.0, 64.0, 139.0, 154.0]);
        let mut empty: [f32; 0] = [];
        matmul_acc(&a[..0], &b[..0], &mut empty, 0, 3, 2);
    }

    #[test]
    fn integer_kernel_wraps() {
        let a = [i32::MAX, 1];
        let b = [2, 0];
        let mut out = [0i32; 1];
        matmul_acc(&a, &b, &mut out, 1, 2, 1);
        assert_eq!(out, [i32::MAX.wrapping_mul(2)]);
    }

    #[test]
    fn half_round_trip() {
        let t = Tensor::from_vec(vec![2], vec![f16::from_f32(1.5), f16::from_f32(-2.0)]).unwrap();
        let v = f32::read(&t);
        assert_eq!(v, vec![1.5, -2.0]);
        let back = f32::write(v, DType::F16, vec![2]).unwrap();
        assert!(back.bit_eq(&t));
        assert_eq!((1.0f32 + 1.0 / 1024.0).round_to(DType::BF16), 1.0);
        assert_eq!(transpose(&[1, 2, 3, 4, 5, 6], 2, 3), vec![1, 4, 2, 5, 3, 6]);
    }
}
