//! Runtime helpers that compiled kernels call: the math functions Cranelift
//! has no instruction for (exp, log, tanh, erf, the trigonometric family,
//! pow, fmod), the f16/bf16 conversions, integer power and memory zeroing.
//!
//! Requires: nothing. Establishes: every helper computes exactly what
//! `kiln_ir::kernel::interp` computes for the same operation (the same std
//! functions, the same `erf` algorithm, the `half` crate's round-to-nearest-
//! even conversions), so compiled code matches the interpreter bit for bit on
//! these operations. [`symbols`] lists them by the names the lowering imports.

use half::{bf16, f16};

/// A helper's signature, in the types the lowering passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    /// f32 -> f32
    F32F32,
    /// f64 -> f64
    F64F64,
    /// (f32, f32) -> f32
    F32F32F32,
    /// (f64, f64) -> f64
    F64F64F64,
    /// (i64, i64) -> i64
    I64I64I64,
    /// f32 -> u32 (16-bit pattern in the low bits)
    F32Bits,
    /// f64 -> u32 (16-bit pattern in the low bits)
    F64Bits,
    /// u32 (16-bit pattern) -> f32
    BitsF32,
    /// (ptr, len) -> ()
    PtrLen,
}

macro_rules! un32 {
    ($name:ident, $f:expr) => {
        extern "C" fn $name(x: f32) -> f32 {
            let f: fn(f32) -> f32 = $f;
            f(x)
        }
    };
}
macro_rules! un64 {
    ($name:ident, $f:expr) => {
        extern "C" fn $name(x: f64) -> f64 {
            let f: fn(f64) -> f64 = $f;
            f(x)
        }
    };
}

un32!(kiln_exp_f32, f32::exp);
un32!(kiln_log_f32, f32::ln);
un32!(kiln_tanh_f32, f32::tanh);
un32!(kiln_erf_f32, |x| erf_f64(x as f64) as f32);
un32!(kiln_sin_f32, f32::sin);
un32!(kiln_cos_f32, f32::cos);
un32!(kiln_tan_f32, f32::tan);
un32!(kiln_asin_f32, f32::asin);
un32!(kiln_acos_f32, f32::acos);
un32!(kiln_atan_f32, f32::atan);
un32!(kiln_sinh_f32, f32::sinh);
un32!(kiln_cosh_f32, f32::cosh);
un32!(kiln_asinh_f32, f32::asinh);
un32!(kiln_acosh_f32, f32::acosh);
un32!(kiln_atanh_f32, f32::atanh);
un64!(kiln_exp_f64, f64::exp);
un64!(kiln_log_f64, f64::ln);
un64!(kiln_tanh_f64, f64::tanh);
un64!(kiln_erf_f64, erf_f64);
un64!(kiln_sin_f64, f64::sin);
un64!(kiln_cos_f64, f64::cos);
un64!(kiln_tan_f64, f64::tan);
un64!(kiln_asin_f64, f64::asin);
un64!(kiln_acos_f64, f64::acos);
un64!(kiln_atan_f64, f64::atan);
un64!(kiln_sinh_f64, f64::sinh);
un64!(kiln_cosh_f64, f64::cosh);
un64!(kiln_asinh_f64, f64::asinh);
un64!(kiln_acosh_f64, f64::acosh);
un64!(kiln_atanh_f64, f64::atanh);

extern "C" fn kiln_pow_f32(a: f32, b: f32) -> f32 {
    a.powf(b)
}
extern "C" fn kiln_pow_f64(a: f64, b: f64) -> f64 {
    a.powf(b)
}
extern "C" fn kiln_rem_f32(a: f32, b: f32) -> f32 {
    a % b
}
extern "C" fn kiln_rem_f64(a: f64, b: f64) -> f64 {
    a % b
}
extern "C" fn kiln_f32_to_f16(x: f32) -> u32 {
    f16::from_f32(x).to_bits() as u32
}
extern "C" fn kiln_f64_to_f16(x: f64) -> u32 {
    f16::from_f64(x).to_bits() as u32
}
extern "C" fn kiln_f16_to_f32(x: u32) -> f32 {
    f16::from_bits(x as u16).to_f32()
}
extern "C" fn kiln_f32_to_bf16(x: f32) -> u32 {
    bf16::from_f32(x).to_bits() as u32
}
extern "C" fn kiln_f64_to_bf16(x: f64) -> u32 {
    bf16::from_f64(x).to_bits() as u32
}
extern "C" fn kiln_bf16_to_f32(x: u32) -> f32 {
    bf16::from_bits(x as u16).to_f32()
}

/// Wrapping integer power; negative exponents give 0 except for bases ±1
/// (the kernel IR's `Pow` on integers).
extern "C" fn kiln_ipow(a: i64, b: i64) -> i64 {
    if b < 0 {
        return match a {
            1 => 1,
            -1 => {
                if b % 2 == 0 {
                    1
                } else {
                    -1
                }
            }
            _ => 0,
        };
    }
    let mut r: i64 = 1;
    let mut base = a;
    let mut e = b as u64;
    while e > 0 {
        if e & 1 == 1 {
            r = r.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    r
}

/// Zeroes `len` bytes at `ptr` (kernel-local buffers are zero-initialised).
extern "C" fn kiln_memzero(ptr: *mut u8, len: u64) {
    // SAFETY: the compiled kernel passes the address and size of one of its
    // own stack slots or scratch regions, which it owns exclusively.
    unsafe { std::ptr::write_bytes(ptr, 0, len as usize) }
}

/// erf in f64: the graph interpreter's own function, so that native code and
/// both oracles agree bit for bit.
pub use kiln_ir::interp::erf_f64;

/// Every helper: (symbol name, address, signature).
pub fn symbols() -> Vec<(&'static str, *const u8, Sig)> {
    use Sig::*;
    macro_rules! s {
        ($f:ident, $sig:expr) => {
            (stringify!($f), $f as *const u8, $sig)
        };
    }
    vec![
        s!(kiln_exp_f32, F32F32),
        s!(kiln_log_f32, F32F32),
        s!(kiln_tanh_f32, F32F32),
        s!(kiln_erf_f32, F32F32),
        s!(kiln_sin_f32, F32F32),
        s!(kiln_cos_f32, F32F32),
        s!(kiln_tan_f32, F32F32),
        s!(kiln_asin_f32, F32F32),
        s!(kiln_acos_f32, F32F32),
        s!(kiln_atan_f32, F32F32),
        s!(kiln_sinh_f32, F32F32),
        s!(kiln_cosh_f32, F32F32),
        s!(kiln_asinh_f32, F32F32),
        s!(kiln_acosh_f32, F32F32),
        s!(kiln_atanh_f32, F32F32),
        s!(kiln_exp_f64, F64F64),
        s!(kiln_log_f64, F64F64),
        s!(kiln_tanh_f64, F64F64),
        s!(kiln_erf_f64, F64F64),
        s!(kiln_sin_f64, F64F64),
        s!(kiln_cos_f64, F64F64),
        s!(kiln_tan_f64, F64F64),
        s!(kiln_asin_f64, F64F64),
        s!(kiln_acos_f64, F64F64),
        s!(kiln_atan_f64, F64F64),
        s!(kiln_sinh_f64, F64F64),
        s!(kiln_cosh_f64, F64F64),
        s!(kiln_asinh_f64, F64F64),
        s!(kiln_acosh_f64, F64F64),
        s!(kiln_atanh_f64, F64F64),
        s!(kiln_pow_f32, F32F32F32),
        s!(kiln_pow_f64, F64F64F64),
        s!(kiln_rem_f32, F32F32F32),
        s!(kiln_rem_f64, F64F64F64),
        s!(kiln_f32_to_f16, F32Bits),
        s!(kiln_f64_to_f16, F64Bits),
        s!(kiln_f16_to_f32, BitsF32),
        s!(kiln_f32_to_bf16, F32Bits),
        s!(kiln_f64_to_bf16, F64Bits),
        s!(kiln_bf16_to_f32, BitsF32),
        s!(kiln_ipow, I64I64I64),
        s!(kiln_memzero, PtrLen),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversions_round_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and the next f16: ties to even (1.0).
        assert_eq!(kiln_f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(kiln_f16_to_f32(0x3c01), 1.0 + 2f32.powi(-10));
        assert_eq!(kiln_f32_to_bf16(1.0), 0x3f80);
    }

    #[test]
    fn ipow_wraps_and_handles_negative_exponents() {
        assert_eq!(kiln_ipow(3, 4), 81);
        assert_eq!(kiln_ipow(2, -1), 0);
        assert_eq!(kiln_ipow(-1, -3), -1);
        assert_eq!(kiln_ipow(2, 64), 0);
    }
}
