//! Scalar arithmetic the elementwise and reduction kernels are written against:
//! [`Float`] (f32 and f64; f16 and bf16 are widened to f32 before they get
//! here), [`Int`] (the eight integer types, wrapping arithmetic), an `erf` for
//! f64, and dispatch macros that run a generic kernel on whichever typed
//! buffer a [`crate::Data`] holds.

use crate::Element;
use std::ops::{Add, BitAnd, BitOr, BitXor, Div, Mul, Neg, Not, Rem, Sub};

/// f32 or f64: the types float ops compute in.
pub(crate) trait Float:
    Element
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Rem<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const INFINITY: Self;
    const NEG_INFINITY: Self;
    /// Converts a constant or attribute (rounds to nearest for f32).
    fn of(x: f64) -> Self;
    fn abs(self) -> Self;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn exp_m1(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn tanh(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tan(self) -> Self;
    fn asin(self) -> Self;
    fn acos(self) -> Self;
    fn atan(self) -> Self;
    fn sinh(self) -> Self;
    fn cosh(self) -> Self;
    fn asinh(self) -> Self;
    fn acosh(self) -> Self;
    fn atanh(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn round_ties_even(self) -> Self;
    fn copysign(self, sign: Self) -> Self;
    fn is_nan(self) -> bool;
    /// The error function (f32 is computed in f64 and rounded).
    fn erf(self) -> Self;
}

macro_rules! impl_float {
    ($t:ty, $erf:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = <$t>::INFINITY;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn of(x: f64) -> Self {
                x as $t
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn exp_m1(self) -> Self {
                <$t>::exp_m1(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            fn tan(self) -> Self {
                <$t>::tan(self)
            }
            fn asin(self) -> Self {
                <$t>::asin(self)
            }
            fn acos(self) -> Self {
                <$t>::acos(self)
            }
            fn atan(self) -> Self {
                <$t>::atan(self)
            }
            fn sinh(self) -> Self {
                <$t>::sinh(self)
            }
            fn cosh(self) -> Self {
                <$t>::cosh(self)
            }
            fn asinh(self) -> Self {
                <$t>::asinh(self)
            }
            fn acosh(self) -> Self {
                <$t>::acosh(self)
            }
            fn atanh(self) -> Self {
                <$t>::atanh(self)
            }
            fn floor(self) -> Self {
                <$t>::floor(self)
            }
            fn ceil(self) -> Self {
                <$t>::ceil(self)
            }
            fn round_ties_even(self) -> Self {
                <$t>::round_ties_even(self)
            }
            fn copysign(self, sign: Self) -> Self {
                <$t>::copysign(self, sign)
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn erf(self) -> Self {
                let f: fn($t) -> $t = $erf;
                f(self)
            }
        }
    };
}

impl_float!(f32, |x| erf_f64(x as f64) as f32);
impl_float!(f64, erf_f64);

/// `max` that propagates NaN (numpy's `maximum`).
pub(crate) fn fmax<F: Float>(a: F, b: F) -> F {
    if a.is_nan() || a >= b {
        a
    } else {
        b
    }
}

/// `min` that propagates NaN (numpy's `minimum`).
pub(crate) fn fmin<F: Float>(a: F, b: F) -> F {
    if a.is_nan() || a <= b {
        a
    } else {
        b
    }
}

/// The error function in f64, accurate to a few ulps.
///
/// For |x| < 3 it sums the series `erf(x) = 2/sqrt(pi) * exp(-x^2) *
/// sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))`, whose terms are all positive (no
/// cancellation); beyond that it evaluates the continued fraction of
/// `erfc` and returns `1 - erfc(x)`.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        let x2 = a * a;
        let mut term = a;
        let mut sum = a;
        let mut k = 1.0;
        while term > sum * 1e-17 {
            k += 2.0;
            term *= 2.0 * x2 / k;
            sum += term;
        }
        std::f64::consts::FRAC_2_SQRT_PI * (-x2).exp() * sum
    } else if a < 6.5 {
        1.0 - erfc_cf(a)
    } else {
        1.0
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// `erfc(x)` for x >= 3 by the continued fraction
/// `exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`,
/// evaluated with the modified Lentz method.
fn erfc_cf(x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut f = x;
    let mut c = x;
    let mut d = 0.0;
    for n in 1..500 {
        let an = n as f64 / 2.0;
        d = x + an * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = x + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (-x * x).exp() / (f * std::f64::consts::PI.sqrt())
}

/// The integer element types, with wrapping (two's complement) arithmetic.
pub(crate) trait Int:
    Element
    + Ord
    + Eq
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
    + BitXor<Output = Self>
    + Not<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const MIN: Self;
    const MAX: Self;
    const BITS: u32;
    fn wadd(self, b: Self) -> Self;
    fn wsub(self, b: Self) -> Self;
    fn wmul(self, b: Self) -> Self;
    /// Truncating division; the caller rules out a zero divisor.
    fn wdiv(self, b: Self) -> Self;
    /// Truncated remainder (sign of the dividend); the caller rules out zero.
    fn wrem(self, b: Self) -> Self;
    fn wneg(self) -> Self;
    fn wabs(self) -> Self;
    fn signum(self) -> Self;
    /// `self << n`, for `n < BITS`.
    fn shl(self, n: u32) -> Self;
    /// `self >> n` (arithmetic for signed types), for `n < BITS`.
    fn shr(self, n: u32) -> Self;
    fn to_i128(self) -> i128;
}

macro_rules! impl_int {
    ($t:ty, $abs:expr, $signum:expr) => {
        impl Int for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const MIN: Self = <$t>::MIN;
            const MAX: Self = <$t>::MAX;
            const BITS: u32 = <$t>::BITS;
            fn wadd(self, b: Self) -> Self {
                self.wrapping_add(b)
            }
            fn wsub(self, b: Self) -> Self {
                self.wrapping_sub(b)
            }
            fn wmul(self, b: Self) -> Self {
                self.wrapping_mul(b)
            }
            fn wdiv(self, b: Self) -> Self {
                if b == 0 {
                    0
                } else {
                    self.wrapping_div(b)
                }
            }
            fn wrem(self, b: Self) -> Self {
                if b == 0 {
                    0
                } else {
                    self.wrapping_rem(b)
                }
            }
            fn wneg(self) -> Self {
                self.wrapping_neg()
            }
            fn wabs(self) -> Self {
                let f: fn($t) -> $t = $abs;
                f(self)
            }
            fn signum(self) -> Self {
                let f: fn($t) -> $t = $signum;
                f(self)
            }
            fn shl(self, n: u32) -> Self {
                self.wrapping_shl(n)
            }
            fn shr(self, n: u32) -> Self {
                self.wrapping_shr(n)
            }
            fn to_i128(self) -> i128 {
                self as i128
            }
        }
    };
}

impl_int!(i8, |x| x.wrapping_abs(), |x| x.signum());
impl_int!(i16, |x| x.wrapping_abs(), |x| x.signum());
impl_int!(i32, |x| x.wrapping_abs(), |x| x.signum());
impl_int!(i64, |x| x.wrapping_abs(), |x| x.signum());
impl_int!(u8, |x| x, |x| (x != 0) as u8);
impl_int!(u16, |x| x, |x| (x != 0) as u16);
impl_int!(u32, |x| x, |x| (x != 0) as u32);
impl_int!(u64, |x| x, |x| (x != 0) as u64);

/// `base^e` with wrapping multiplication, for any non-negative exponent.
pub(crate) fn int_pow<I: Int>(base: I, mut e: u128) -> I {
    let mut acc = I::ONE;
    let mut b = base;
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wmul(b);
        }
        b = b.wmul(b);
        e >>= 1;
    }
    acc
}

/// Matches a [`crate::Data`] on its integer variants, binding the typed slice
/// to `$v` and evaluating `$body` (usually a call of a generic kernel); any
/// other variant evaluates `$other`.
macro_rules! match_int {
    ($data:expr, $v:ident => $body:expr, _ => $other:expr) => {
        match $data {
            $crate::Data::I8($v) => $body,
            $crate::Data::U8($v) => $body,
            $crate::Data::I16($v) => $body,
            $crate::Data::U16($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::U32($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::U64($v) => $body,
            #[allow(unreachable_patterns)]
            _ => $other,
        }
    };
}
pub(crate) use match_int;

/// Like [`match_int!`] for two operands of one integer type.
macro_rules! match_int2 {
    ($a:expr, $b:expr, $x:ident, $y:ident => $body:expr, _ => $other:expr) => {
        match ($a, $b) {
            ($crate::Data::I8($x), $crate::Data::I8($y)) => $body,
            ($crate::Data::U8($x), $crate::Data::U8($y)) => $body,
            ($crate::Data::I16($x), $crate::Data::I16($y)) => $body,
            ($crate::Data::U16($x), $crate::Data::U16($y)) => $body,
            ($crate::Data::I32($x), $crate::Data::I32($y)) => $body,
            ($crate::Data::U32($x), $crate::Data::U32($y)) => $body,
            ($crate::Data::I64($x), $crate::Data::I64($y)) => $body,
            ($crate::Data::U64($x), $crate::Data::U64($y)) => $body,
            #[allow(unreachable_patterns)]
            _ => $other,
        }
    };
}
pub(crate) use match_int2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        // Values from Python's math.erf.
        let cases = [
            (0.0, 0.0),
            (1e-10, 1.1283791670955126e-10),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (-1.5, -0.9661051464753108),
            (2.9, 0.9999589021219005),
            (3.0, 0.9999779095030014),
            (3.5, 0.9999992569016276),
            (5.0, 0.9999999999984626),
            (7.0, 1.0),
        ];
        for (x, want) in cases {
            let got = erf_f64(x);
            assert!(
                (got - want).abs() <= 4.0 * f64::EPSILON * want.abs().max(1e-300),
                "erf({x}) = {got}, want {want}"
            );
        }
        assert!(erf_f64(f64::NAN).is_nan());
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert_eq!(erf_f64(f64::NEG_INFINITY), -1.0);
    }

    #[test]
    fn int_helpers_wrap() {
        assert_eq!(int_pow(3i8, 5), 3i8.wrapping_pow(5));
        assert_eq!(int_pow(2u64, 64), 0);
        assert_eq!(int_pow(-1i32, u128::MAX), -1);
        assert_eq!(i32::MIN.wdiv(-1), i32::MIN);
        assert_eq!(i32::MIN.wrem(-1), 0);
        assert_eq!((-7i32).wdiv(2), -3);
        assert_eq!((-7i32).wrem(2), -1);
        assert_eq!(i8::MIN.wabs(), i8::MIN);
        assert_eq!((-8i16).shr(1), -4);
    }

    #[test]
    fn nan_propagating_min_max() {
        assert!(fmax(f32::NAN, 1.0).is_nan());
        assert!(fmax(1.0, f32::NAN).is_nan());
        assert!(fmin(1.0f64, f64::NAN).is_nan());
        assert_eq!(fmin(1.0f64, 2.0), 1.0);
    }
}
