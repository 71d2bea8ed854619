//! `Cast` between every pair of kernel-IR dtypes, with the interpreter's
//! semantics: float→int truncates toward zero and saturates (NaN → 0);
//! int→int wraps; →bool is `x != 0`; bool→x is 0/1; int→float rounds once
//! (int→f16/bf16 goes through f64, as the interpreter does); f32/f64→f16/bf16
//! round to nearest even (through the `half` crate, called as helpers).
//!
//! Requires: a [`Val`] of any dtype. Establishes: a value of `to` with the
//! same lanes; `f32x4 ↔ i32x4` use SIMD conversions, everything else goes lane
//! by lane.

use super::value::{chunk_ty, scalar_ty, Repr, Val};
use super::Tr;
use crate::error::Result;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use kiln_ir::kernel::Ty;
use kiln_ir::DType;

impl Tr<'_, '_> {
    pub fn cast(&mut self, to: DType, a: Val) -> Result<Val> {
        let from = a.ty.dtype;
        let ty = Ty::vector(to, a.ty.lanes);
        if from == to {
            return Ok(Val { ty, ..a });
        }
        if a.repr == Repr::Chunks {
            // SIMD fast paths.
            let parts = match (from, to) {
                (DType::F32, DType::I32) => Some(
                    a.parts
                        .iter()
                        .map(|&c| self.b.ins().fcvt_to_sint_sat(types::I32X4, c))
                        .collect(),
                ),
                (DType::I32, DType::F32) => Some(
                    a.parts
                        .iter()
                        .map(|&c| self.b.ins().fcvt_from_sint(types::F32X4, c))
                        .collect(),
                ),
                (d, t) if same_bits(d, t) && chunk_ty(d) == chunk_ty(t) => Some(a.parts.clone()),
                _ => None,
            };
            if let Some(parts) = parts {
                return Ok(Val {
                    ty,
                    repr: Repr::Chunks,
                    parts,
                });
            }
        }
        let ls = self.lanes(&a);
        let mut out = Vec::with_capacity(ls.len());
        for x in ls {
            out.push(self.cast_scalar(from, to, x)?);
        }
        Ok(self.from_lanes(ty, out))
    }

    /// f16/bf16 bits (i16) → f32, exactly.
    fn half_to_f32(&mut self, from: DType, x: Value) -> Result<Value> {
        let w = self.b.ins().uextend(types::I32, x);
        if from == DType::BF16 {
            let s = self.b.ins().ishl_imm_s(w, 16);
            Ok(self
                .b
                .ins()
                .bitcast(types::F32, cranelift_codegen::ir::MemFlagsData::new(), s))
        } else {
            self.call("kiln_f16_to_f32", &[w])
        }
    }

    pub fn cast_scalar(&mut self, from: DType, to: DType, x: Value) -> Result<Value> {
        if from == to {
            return Ok(x);
        }
        // f16/bf16 sources: widen exactly to f32 first.
        if matches!(from, DType::F16 | DType::BF16) {
            let f = self.half_to_f32(from, x)?;
            return self.cast_scalar(DType::F32, to, f);
        }
        let st = scalar_ty(to);
        let from_float = matches!(from, DType::F32 | DType::F64);
        Ok(match to {
            DType::Bool => {
                if from_float {
                    let z = self.fconst(from, 0.0);
                    self.b.ins().fcmp(FloatCC::NotEqual, x, z)
                } else {
                    self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
                }
            }
            DType::F32 | DType::F64 => {
                if from_float {
                    if to == DType::F64 {
                        self.b.ins().fpromote(types::F64, x)
                    } else {
                        self.b.ins().fdemote(types::F32, x)
                    }
                } else if from.is_signed_int() {
                    self.b.ins().fcvt_from_sint(st, x)
                } else {
                    self.b.ins().fcvt_from_uint(st, x)
                }
            }
            DType::F16 | DType::BF16 => {
                let name = if to == DType::F16 { "f16" } else { "bf16" };
                let bits = if from == DType::F32 {
                    self.call(&format!("kiln_f32_to_{name}"), &[x])?
                } else {
                    let f = self.cast_scalar(from, DType::F64, x)?;
                    self.call(&format!("kiln_f64_to_{name}"), &[f])?
                };
                self.b.ins().ireduce(types::I16, bits)
            }
            t if from_float => self.float_to_int(from, t, x),
            t => {
                // int/bool → int: extend by the source's signedness, or wrap.
                let (fb, tb) = (from.bits().max(8), t.bits());
                if fb == tb {
                    x
                } else if fb > tb {
                    self.b.ins().ireduce(st, x)
                } else if from.is_signed_int() {
                    self.b.ins().sextend(st, x)
                } else {
                    self.b.ins().uextend(st, x)
                }
            }
        })
    }

    fn float_to_int(&mut self, _from: DType, to: DType, x: Value) -> Value {
        let signed = to.is_signed_int();
        match to.bits() {
            64 => {
                if signed {
                    self.b.ins().fcvt_to_sint_sat(types::I64, x)
                } else {
                    self.b.ins().fcvt_to_uint_sat(types::I64, x)
                }
            }
            32 => {
                if signed {
                    self.b.ins().fcvt_to_sint_sat(types::I32, x)
                } else {
                    self.b.ins().fcvt_to_uint_sat(types::I32, x)
                }
            }
            bits => {
                // Truncate and saturate to i32, clamp to the narrow range, then wrap.
                let st = scalar_ty(to);
                let w = self.b.ins().fcvt_to_sint_sat(types::I32, x);
                let (lo, hi) = if signed {
                    (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1)
                } else {
                    (0, (1i64 << bits) - 1)
                };
                let lo = self.b.ins().iconst(types::I32, lo);
                let hi = self.b.ins().iconst(types::I32, hi);
                let c = self.b.ins().smax(w, lo);
                let c = self.b.ins().smin(c, hi);
                self.b.ins().ireduce(st, c)
            }
        }
    }
}

fn same_bits(a: DType, b: DType) -> bool {
    // int<->int of the same width only (bit-identical reinterpretation).
    a.is_int() && b.is_int() && a.bits() == b.bits()
}
