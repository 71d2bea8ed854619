//! Cast between any two kiln dtypes, element by element.
//!
//! - float to float rounds to nearest, ties to even, once (f64 to f16/bf16
//!   goes through a round-to-odd f32, which makes the single rounding exact);
//! - float to integer truncates toward zero and saturates at the type's
//!   range; NaN becomes 0 (ONNX leaves both undefined);
//! - integer to integer keeps the low bits (wraps), like C and numpy;
//! - integer to float rounds to nearest, ties to even;
//! - to bool is `x != 0` (NaN is true); from bool is 0 or 1.

use crate::{DType, Data, Element, Result, Tensor};
use half::{bf16, f16};

/// A source element, seen as one of three kinds of number.
#[derive(Clone, Copy)]
enum Val {
    F(f64),
    I(i128),
    B(bool),
}

trait Source: Copy {
    fn val(self) -> Val;
}

macro_rules! source {
    (float: $($t:ty),*) => { $(impl Source for $t { fn val(self) -> Val { Val::F(self.to_f64()) } })* };
    (int: $($t:ty),*) => { $(impl Source for $t { fn val(self) -> Val { Val::I(self as i128) } })* };
}
source!(float: f32, f64, f16, bf16);
source!(int: i8, u8, i16, u16, i32, u32, i64, u64);
impl Source for bool {
    fn val(self) -> Val {
        Val::B(self)
    }
}

trait Dest: Element {
    fn from_val(v: Val) -> Self;
}

macro_rules! dest_int {
    ($($t:ty),*) => {$(
        impl Dest for $t {
            fn from_val(v: Val) -> Self {
                match v {
                    // `as` truncates toward zero and saturates; NaN gives 0
                    Val::F(x) => x as $t,
                    Val::I(x) => x as $t,
                    Val::B(b) => b as $t,
                }
            }
        }
    )*};
}
dest_int!(i8, u8, i16, u16, i32, u32, i64, u64);

impl Dest for f32 {
    fn from_val(v: Val) -> Self {
        match v {
            Val::F(x) => x as f32,
            Val::I(x) => x as f32,
            Val::B(b) => b as u8 as f32,
        }
    }
}

impl Dest for f64 {
    fn from_val(v: Val) -> Self {
        match v {
            Val::F(x) => x,
            Val::I(x) => x as f64,
            Val::B(b) => b as u8 as f64,
        }
    }
}

impl Dest for f16 {
    fn from_val(v: Val) -> Self {
        f16::from_f32(odd_f32(v))
    }
}

impl Dest for bf16 {
    fn from_val(v: Val) -> Self {
        bf16::from_f32(odd_f32(v))
    }
}

impl Dest for bool {
    fn from_val(v: Val) -> Self {
        match v {
            Val::F(x) => x != 0.0,
            Val::I(x) => x != 0,
            Val::B(b) => b,
        }
    }
}

/// The value rounded to f32 with round-to-odd: inexact results are truncated
/// toward zero and get their last mantissa bit set. A later
/// round-to-nearest-even to a format with at most 22 mantissa bits (f16,
/// bf16) then equals rounding the original value directly.
fn odd_f32(v: Val) -> f32 {
    match v {
        Val::F(x) => f64_to_odd_f32(x),
        Val::I(x) => f64_to_odd_f32(i128_to_odd_f64(x)),
        Val::B(b) => b as u8 as f32,
    }
}

fn f64_to_odd_f32(x: f64) -> f32 {
    let y = x as f32;
    if y.is_nan() || y as f64 == x {
        return y;
    }
    let mut bits = y.to_bits();
    if (y as f64).abs() > x.abs() {
        bits -= 1; // rounded away from zero (possibly to infinity): step back
    }
    f32::from_bits(bits | 1)
}

fn i128_to_odd_f64(x: i128) -> f64 {
    let y = x as f64;
    if y as i128 == x {
        return y;
    }
    let mut bits = y.to_bits();
    if (y as i128).unsigned_abs() > x.unsigned_abs() {
        bits -= 1;
    }
    f64::from_bits(bits | 1)
}

fn convert<S: Source, D: Dest>(v: &[S]) -> Vec<D> {
    v.iter().map(|&x| D::from_val(x.val())).collect()
}

fn convert_to<S: Source>(v: &[S], to: DType) -> Data {
    match to {
        DType::F32 => Data::F32(convert(v)),
        DType::F16 => Data::F16(convert(v)),
        DType::BF16 => Data::BF16(convert(v)),
        DType::F64 => Data::F64(convert(v)),
        DType::I8 => Data::I8(convert(v)),
        DType::U8 => Data::U8(convert(v)),
        DType::I16 => Data::I16(convert(v)),
        DType::U16 => Data::U16(convert(v)),
        DType::I32 => Data::I32(convert(v)),
        DType::U32 => Data::U32(convert(v)),
        DType::I64 => Data::I64(convert(v)),
        DType::U64 => Data::U64(convert(v)),
        DType::Bool => Data::Bool(convert(v)),
    }
}

/// `x` converted to `to`, same shape.
pub(crate) fn cast(x: &Tensor, to: DType) -> Result<Tensor> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    let data = crate::with_data!(x.data(), v => convert_to(v, to));
    Tensor::new(x.shape().to_vec(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<S: Element, D: Element>(v: Vec<S>, to: DType) -> Vec<D> {
        let t = Tensor::from_vec(vec![v.len()], v).unwrap();
        cast(&t, to).unwrap().as_slice::<D>().unwrap().to_vec()
    }

    #[test]
    fn float_to_int_truncates_and_saturates() {
        let got: Vec<i8> = c(vec![2.7f32, -2.7, 300.0, -300.0, f32::NAN], DType::I8);
        assert_eq!(got, vec![2, -2, 127, -128, 0]);
        let got: Vec<u8> = c(vec![-1.5f64, 255.9], DType::U8);
        assert_eq!(got, vec![0, 255]);
    }

    #[test]
    fn int_to_int_wraps() {
        let got: Vec<u8> = c(vec![-1i32, 256, 257], DType::U8);
        assert_eq!(got, vec![255, 0, 1]);
        let got: Vec<i64> = c(vec![u64::MAX], DType::I64);
        assert_eq!(got, vec![-1]);
    }

    #[test]
    fn bool_conversions() {
        let got: Vec<bool> = c(vec![0.0f32, -0.0, 0.5, f32::NAN], DType::Bool);
        assert_eq!(got, vec![false, false, true, true]);
        let got: Vec<f16> = c(vec![true, false], DType::F16);
        assert_eq!(got, vec![f16::ONE, f16::ZERO]);
    }

    #[test]
    fn f64_to_f16_rounds_once() {
        // 1 + 2^-11 is a tie between 1 and 1 + 2^-10 in f16: to even (1).
        // Just above the tie (by 2^-40, lost by a naive truncation) rounds up.
        let tie = 1.0 + 2f64.powi(-11);
        let above = tie + 2f64.powi(-40);
        let got: Vec<f16> = c(vec![tie, above, 1e6, -1e-10], DType::F16);
        assert_eq!(got[0], f16::ONE);
        assert_eq!(got[1], f16::from_f64(1.0 + 2f64.powi(-10)));
        assert_eq!(got[2], f16::INFINITY);
        assert_eq!(got[3].to_f64(), 0.0);
        assert!(got[3].is_sign_negative());
    }

    #[test]
    fn f32_to_bf16_is_nearest_even() {
        // 0x3F808000 is halfway between bf16 0x3F80 and 0x3F81: to even.
        let tie = f32::from_bits(0x3F80_8000);
        let up = f32::from_bits(0x3F81_8000);
        let got: Vec<bf16> = c(vec![tie, up, f32::NAN], DType::BF16);
        assert_eq!(got[0].to_bits(), 0x3F80);
        assert_eq!(got[1].to_bits(), 0x3F82);
        assert!(got[2].is_nan());
    }

    #[test]
    fn large_ints_to_halves() {
        let got: Vec<bf16> = c(vec![i64::MAX, (1i64 << 40) + (1 << 32) + 1], DType::BF16);
        assert_eq!(got[0].to_f64(), 2f64.powi(63));
        // 2^40 + 2^32 + 1: above the tie 2^40 + 2^32 between bf16 neighbours, rounds up
        assert_eq!(got[1].to_f64(), 2f64.powi(40) + 2f64.powi(33));
        let got: Vec<f16> = c(vec![65519u32, 65520], DType::F16);
        assert_eq!(got[0].to_f64(), 65504.0);
        assert!(got[1].is_infinite());
    }
}
