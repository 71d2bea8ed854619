//! Values of the kernel IR as Cranelift values, and the operations on them.
//!
//! Requires: the translator's builder positioned in a block. Establishes: a
//! kernel-IR value of type `Ty` is a [`Val`]: either one Cranelift scalar per
//! lane ([`Repr::Lanes`]; bool is `i8` 0/1, f16/bf16 are `i16` bit patterns)
//! or 128-bit vector chunks ([`Repr::Chunks`]: `f32x4`, `i32x4`, `f64x2`,
//! ...; for bool vectors, comparison masks whose lanes are all ones or zero).
//! Operations use SIMD instructions when every operand is in chunks and the
//! instruction exists for the chunk type, and otherwise go lane by lane with
//! exactly the interpreter's per-lane semantics.

use super::Tr;
use crate::error::Result;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use kiln_ir::kernel::{BinOp, CmpOp, LaneOp, Ty, UnOp};
use kiln_ir::DType;

/// How a [`Val`]'s lanes are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repr {
    /// One Cranelift scalar per lane.
    Lanes,
    /// 128-bit vectors, lanes in order.
    Chunks,
}

/// A kernel-IR value.
#[derive(Clone, Debug)]
pub struct Val {
    pub ty: Ty,
    pub repr: Repr,
    pub parts: Vec<Value>,
}

/// The Cranelift scalar type holding one lane of `d`.
pub fn scalar_ty(d: DType) -> Type {
    match d {
        DType::F32 => types::F32,
        DType::F64 => types::F64,
        DType::F16 | DType::BF16 | DType::I16 | DType::U16 => types::I16,
        DType::I8 | DType::U8 | DType::Bool => types::I8,
        DType::I32 | DType::U32 => types::I32,
        DType::I64 | DType::U64 => types::I64,
    }
}

/// The 128-bit vector type for `d` (none for bool, whose vectors are masks).
pub fn chunk_ty(d: DType) -> Option<Type> {
    Some(match d {
        DType::F32 => types::F32X4,
        DType::F64 => types::F64X2,
        DType::F16 | DType::BF16 | DType::I16 | DType::U16 => types::I16X8,
        DType::I8 | DType::U8 => types::I8X16,
        DType::I32 | DType::U32 => types::I32X4,
        DType::I64 | DType::U64 => types::I64X2,
        DType::Bool => return None,
    })
}

/// Whether values of `ty` are held in chunks.
pub fn chunked(ty: Ty) -> bool {
    chunk_of(ty).is_some()
}

/// The chunk type when values of `ty` are held in 128-bit chunks.
pub fn chunk_of(ty: Ty) -> Option<Type> {
    chunk_ty(ty.dtype).filter(|c| ty.lanes > 1 && ty.lanes.is_multiple_of(c.lane_count()))
}

pub fn vflags() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

fn is_signed(d: DType) -> bool {
    d.is_signed_int()
}

impl Tr<'_, '_> {
    pub fn ty_of(&self, v: Value) -> Type {
        self.b.func.dfg.value_type(v)
    }

    /// The lanes of `v` as scalars.
    pub fn lanes(&mut self, v: &Val) -> Vec<Value> {
        match v.repr {
            Repr::Lanes => v.parts.clone(),
            Repr::Chunks => {
                let mut out = Vec::with_capacity(v.ty.lanes as usize);
                for &c in &v.parts {
                    let ct = self.ty_of(c);
                    for l in 0..ct.lane_count() {
                        let x = self.b.ins().extractlane(c, l as u8);
                        let x = if v.ty.dtype == DType::Bool {
                            let x = if ct.lane_type() != types::I8 {
                                self.b.ins().ireduce(types::I8, x)
                            } else {
                                x
                            };
                            self.b.ins().band_imm_s(x, 1)
                        } else {
                            x
                        };
                        out.push(x);
                    }
                }
                out
            }
        }
    }

    /// Builds a value of `ty` from scalar lanes, in its canonical form.
    pub fn from_lanes(&mut self, ty: Ty, lanes: Vec<Value>) -> Val {
        if let Some(ct) = chunk_of(ty) {
            let n = ct.lane_count() as usize;
            let parts = lanes
                .chunks(n)
                .map(|ls| {
                    let mut c = self.b.ins().splat(ct, ls[0]);
                    for (i, &l) in ls.iter().enumerate().skip(1) {
                        c = self.b.ins().insertlane(c, l, i as u8);
                    }
                    c
                })
                .collect();
            Val {
                ty,
                repr: Repr::Chunks,
                parts,
            }
        } else {
            Val {
                ty,
                repr: Repr::Lanes,
                parts: lanes,
            }
        }
    }

    /// `v` in the canonical form of its type (chunks for chunkable types,
    /// lanes for scalars and bool vectors).
    pub fn canon(&mut self, v: Val) -> Val {
        let want = if chunked(v.ty) {
            Repr::Chunks
        } else {
            Repr::Lanes
        };
        if v.repr == want {
            return v;
        }
        let ls = self.lanes(&v);
        self.from_lanes(v.ty, ls)
    }

    /// A scalar value.
    pub fn scalar(ty: DType, v: Value) -> Val {
        Val {
            ty: Ty::scalar(ty),
            repr: Repr::Lanes,
            parts: vec![v],
        }
    }

    /// Widens a scalar integer/bool lane of `d` to i64.
    pub fn to_i64(&mut self, d: DType, v: Value) -> Value {
        let t = self.ty_of(v);
        if t == types::I64 {
            return v;
        }
        if is_signed(d) {
            self.b.ins().sextend(types::I64, v)
        } else {
            self.b.ins().uextend(types::I64, v)
        }
    }

    pub fn splat_val(&mut self, lanes: u32, a: Val) -> Val {
        let ty = Ty::vector(a.ty.dtype, lanes);
        let x = a.parts[0];
        if let Some(ct) = chunk_of(ty) {
            let c = self.b.ins().splat(ct, x);
            let n = (lanes / ct.lane_count()) as usize;
            Val {
                ty,
                repr: Repr::Chunks,
                parts: vec![c; n],
            }
        } else {
            Val {
                ty,
                repr: Repr::Lanes,
                parts: vec![x; lanes as usize],
            }
        }
    }

    // ------------------------------------------------------------ unary

    pub fn unary(&mut self, op: UnOp, a: Val) -> Result<Val> {
        let d = a.ty.dtype;
        let out_ty = match op {
            UnOp::IsNan | UnOp::IsInf => Ty::vector(DType::Bool, a.ty.lanes),
            _ => a.ty,
        };
        if a.repr == Repr::Chunks && d != DType::Bool {
            if let Some(parts) = self.unary_chunks(op, d, &a.parts) {
                return Ok(Val {
                    ty: out_ty,
                    repr: Repr::Chunks,
                    parts,
                });
            }
        }
        if a.repr == Repr::Chunks && d == DType::Bool && op == UnOp::Not {
            let parts = a.parts.iter().map(|&c| self.b.ins().bnot(c)).collect();
            return Ok(Val {
                ty: out_ty,
                repr: Repr::Chunks,
                parts,
            });
        }
        let ls = self.lanes(&a);
        let mut out = Vec::with_capacity(ls.len());
        for x in ls {
            out.push(self.unary_scalar(op, d, x)?);
        }
        Ok(self.from_lanes(out_ty, out))
    }

    fn unary_chunks(&mut self, op: UnOp, d: DType, parts: &[Value]) -> Option<Vec<Value>> {
        let mut out = Vec::with_capacity(parts.len());
        for &c in parts {
            let ct = self.ty_of(c);
            let r = if d.is_float() && matches!(d, DType::F32 | DType::F64) {
                match op {
                    UnOp::Neg => self.b.ins().fneg(c),
                    UnOp::Abs => self.b.ins().fabs(c),
                    UnOp::Sqrt => self.b.ins().sqrt(c),
                    UnOp::Floor => self.b.ins().floor(c),
                    UnOp::Ceil => self.b.ins().ceil(c),
                    UnOp::Trunc => self.b.ins().trunc(c),
                    UnOp::Round => self.b.ins().nearest(c),
                    UnOp::Recip | UnOp::Rsqrt => {
                        let one = self.fconst(d, 1.0);
                        let one = self.b.ins().splat(ct, one);
                        let den = if op == UnOp::Rsqrt {
                            self.b.ins().sqrt(c)
                        } else {
                            c
                        };
                        self.b.ins().fdiv(one, den)
                    }
                    UnOp::IsNan => self.b.ins().fcmp(FloatCC::Unordered, c, c),
                    UnOp::IsInf => {
                        let inf = self.fconst(d, f64::INFINITY);
                        let inf = self.b.ins().splat(ct, inf);
                        let ab = self.b.ins().fabs(c);
                        self.b.ins().fcmp(FloatCC::Equal, ab, inf)
                    }
                    UnOp::Exp if d == DType::F32 && self.fast_exp => self.exp_f32x4(c),
                    _ => return None,
                }
            } else if d.is_int() {
                match op {
                    UnOp::Not => self.b.ins().bnot(c),
                    UnOp::Neg => self.b.ins().ineg(c),
                    UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc => c,
                    UnOp::Abs if d.is_unsigned_int() => c,
                    _ => return None,
                }
            } else {
                return None;
            };
            out.push(r);
        }
        Some(out)
    }

    pub fn fconst(&mut self, d: DType, v: f64) -> Value {
        if d == DType::F64 {
            self.b.ins().f64const(v)
        } else {
            self.b.ins().f32const(v as f32)
        }
    }

    fn unary_scalar(&mut self, op: UnOp, d: DType, x: Value) -> Result<Value> {
        let bad = |s: &Self| s.unsupported(format!("{op:?} of {d}"));
        Ok(match d {
            DType::F32 | DType::F64 => {
                let sfx = if d == DType::F32 { "f32" } else { "f64" };
                match op {
                    UnOp::Neg => self.b.ins().fneg(x),
                    UnOp::Abs => self.b.ins().fabs(x),
                    UnOp::Sqrt => self.b.ins().sqrt(x),
                    UnOp::Rsqrt => {
                        let one = self.fconst(d, 1.0);
                        let s = self.b.ins().sqrt(x);
                        self.b.ins().fdiv(one, s)
                    }
                    UnOp::Recip => {
                        let one = self.fconst(d, 1.0);
                        self.b.ins().fdiv(one, x)
                    }
                    UnOp::Floor => self.b.ins().floor(x),
                    UnOp::Ceil => self.b.ins().ceil(x),
                    UnOp::Trunc => self.b.ins().trunc(x),
                    UnOp::Round => self.b.ins().nearest(x),
                    UnOp::IsNan => self.b.ins().fcmp(FloatCC::Unordered, x, x),
                    UnOp::IsInf => {
                        let inf = self.fconst(d, f64::INFINITY);
                        let ab = self.b.ins().fabs(x);
                        self.b.ins().fcmp(FloatCC::Equal, ab, inf)
                    }
                    UnOp::Not => return Err(bad(self)),
                    _ => {
                        let name = match op {
                            UnOp::Exp => "exp",
                            UnOp::Log => "log",
                            UnOp::Tanh => "tanh",
                            UnOp::Erf => "erf",
                            UnOp::Sin => "sin",
                            UnOp::Cos => "cos",
                            UnOp::Tan => "tan",
                            UnOp::Asin => "asin",
                            UnOp::Acos => "acos",
                            UnOp::Atan => "atan",
                            UnOp::Sinh => "sinh",
                            UnOp::Cosh => "cosh",
                            UnOp::Asinh => "asinh",
                            UnOp::Acosh => "acosh",
                            UnOp::Atanh => "atanh",
                            _ => return Err(bad(self)),
                        };
                        let f = format!("kiln_{name}_{sfx}");
                        self.call(&f, &[x])?
                    }
                }
            }
            DType::Bool => match op {
                UnOp::Not => self.b.ins().bxor_imm_s(x, 1),
                _ => return Err(bad(self)),
            },
            d if d.is_int() => match op {
                UnOp::Neg => self.b.ins().ineg(x),
                UnOp::Abs if d.is_signed_int() => self.b.ins().iabs(x),
                UnOp::Abs | UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc => x,
                UnOp::Not => self.b.ins().bnot(x),
                _ => return Err(bad(self)),
            },
            _ => {
                return Err(self.unsupported(format!(
                    "{op:?} of {d} (f16/bf16 must be cast to f32 first)"
                )))
            }
        })
    }

    // ------------------------------------------------------------ binary

    pub fn binary(&mut self, op: BinOp, a: Val, b: Val) -> Result<Val> {
        if a.ty != b.ty {
            return Err(self.malformed(format!("{op:?} of {} and {}", a.ty, b.ty)));
        }
        let d = a.ty.dtype;
        if a.repr == Repr::Chunks && b.repr == Repr::Chunks && d != DType::Bool {
            if let Some(parts) = self.binary_chunks(op, d, &a.parts, &b.parts) {
                return Ok(Val {
                    ty: a.ty,
                    repr: Repr::Chunks,
                    parts,
                });
            }
        }
        let (la, lb) = (self.lanes(&a), self.lanes(&b));
        let mut out = Vec::with_capacity(la.len());
        for (x, y) in la.into_iter().zip(lb) {
            out.push(self.binary_scalar(op, d, x, y)?);
        }
        Ok(self.from_lanes(a.ty, out))
    }

    fn binary_chunks(
        &mut self,
        op: BinOp,
        d: DType,
        a: &[Value],
        b: &[Value],
    ) -> Option<Vec<Value>> {
        let mut out = Vec::with_capacity(a.len());
        for (&x, &y) in a.iter().zip(b) {
            let ct = self.ty_of(x);
            let r = if matches!(d, DType::F32 | DType::F64) {
                match op {
                    BinOp::Add => self.b.ins().fadd(x, y),
                    BinOp::Sub => self.b.ins().fsub(x, y),
                    BinOp::Mul => self.b.ins().fmul(x, y),
                    BinOp::Div => self.b.ins().fdiv(x, y),
                    BinOp::Min | BinOp::Max => {
                        let cc = if op == BinOp::Min {
                            FloatCC::LessThanOrEqual
                        } else {
                            FloatCC::GreaterThanOrEqual
                        };
                        let c1 = self.b.ins().fcmp(cc, x, y);
                        let c2 = self.b.ins().fcmp(FloatCC::Unordered, x, x);
                        let m = self.b.ins().bor(c1, c2);
                        let m = self.b.ins().bitcast(ct, vflags(), m);
                        self.b.ins().bitselect(m, x, y)
                    }
                    _ => return None,
                }
            } else if d.is_int() {
                let narrow = ct.lane_bits() <= 32;
                match op {
                    BinOp::Add => self.b.ins().iadd(x, y),
                    BinOp::Sub => self.b.ins().isub(x, y),
                    BinOp::Mul if ct == types::I32X4 || ct == types::I16X8 => {
                        self.b.ins().imul(x, y)
                    }
                    BinOp::And => self.b.ins().band(x, y),
                    BinOp::Or => self.b.ins().bor(x, y),
                    BinOp::Xor => self.b.ins().bxor(x, y),
                    BinOp::Min if narrow && d.is_signed_int() => self.b.ins().smin(x, y),
                    BinOp::Max if narrow && d.is_signed_int() => self.b.ins().smax(x, y),
                    BinOp::Min if narrow => self.b.ins().umin(x, y),
                    BinOp::Max if narrow => self.b.ins().umax(x, y),
                    _ => return None,
                }
            } else {
                return None;
            };
            out.push(r);
        }
        Some(out)
    }

    fn binary_scalar(&mut self, op: BinOp, d: DType, x: Value, y: Value) -> Result<Value> {
        let bad = |s: &Self| s.unsupported(format!("{op:?} of {d}"));
        let st = scalar_ty(d);
        Ok(match d {
            DType::F32 | DType::F64 => {
                let sfx = if d == DType::F32 { "f32" } else { "f64" };
                match op {
                    BinOp::Add => self.b.ins().fadd(x, y),
                    BinOp::Sub => self.b.ins().fsub(x, y),
                    BinOp::Mul => self.b.ins().fmul(x, y),
                    BinOp::Div => self.b.ins().fdiv(x, y),
                    BinOp::Rem => self.call(&format!("kiln_rem_{sfx}"), &[x, y])?,
                    BinOp::Pow => self.call(&format!("kiln_pow_{sfx}"), &[x, y])?,
                    BinOp::Min | BinOp::Max => {
                        let cc = if op == BinOp::Min {
                            FloatCC::LessThanOrEqual
                        } else {
                            FloatCC::GreaterThanOrEqual
                        };
                        let c1 = self.b.ins().fcmp(cc, x, y);
                        let c2 = self.b.ins().fcmp(FloatCC::Unordered, x, x);
                        let c = self.b.ins().bor(c1, c2);
                        self.b.ins().select(c, x, y)
                    }
                    _ => return Err(bad(self)),
                }
            }
            DType::Bool => match op {
                BinOp::And | BinOp::Min | BinOp::Mul => self.b.ins().band(x, y),
                BinOp::Or | BinOp::Max => self.b.ins().bor(x, y),
                BinOp::Xor => self.b.ins().bxor(x, y),
                _ => return Err(bad(self)),
            },
            d if d.is_int() => {
                let signed = d.is_signed_int();
                let bits = d.bits() as i64;
                match op {
                    BinOp::Add => self.b.ins().iadd(x, y),
                    BinOp::Sub => self.b.ins().isub(x, y),
                    BinOp::Mul => self.b.ins().imul(x, y),
                    BinOp::And => self.b.ins().band(x, y),
                    BinOp::Or => self.b.ins().bor(x, y),
                    BinOp::Xor => self.b.ins().bxor(x, y),
                    BinOp::Min if signed => self.b.ins().smin(x, y),
                    BinOp::Max if signed => self.b.ins().smax(x, y),
                    BinOp::Min => self.b.ins().umin(x, y),
                    BinOp::Max => self.b.ins().umax(x, y),
                    BinOp::Div | BinOp::Rem => {
                        // Division by zero is undefined in compiled code (0 here,
                        // never a trap); MIN / -1 wraps as the interpreter does.
                        let zero = self.b.ins().iconst(st, 0);
                        let one = self.b.ins().iconst(st, 1);
                        let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                        if signed {
                            let ism1 = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                            let badd = self.b.ins().bor(is0, ism1);
                            let ys = self.b.ins().select(badd, one, y);
                            if op == BinOp::Div {
                                let q = self.b.ins().sdiv(x, ys);
                                let q = self.b.ins().select(is0, zero, q);
                                let n = self.b.ins().ineg(x);
                                self.b.ins().select(ism1, n, q)
                            } else {
                                let r = self.b.ins().srem(x, ys);
                                self.b.ins().select(badd, zero, r)
                            }
                        } else {
                            let ys = self.b.ins().select(is0, one, y);
                            let q = if op == BinOp::Div {
                                self.b.ins().udiv(x, ys)
                            } else {
                                self.b.ins().urem(x, ys)
                            };
                            self.b.ins().select(is0, zero, q)
                        }
                    }
                    BinOp::Pow => {
                        let (a, b) = (self.to_i64(d, x), self.to_i64(d, y));
                        let r = self.call("kiln_ipow", &[a, b])?;
                        if st == types::I64 {
                            r
                        } else {
                            self.b.ins().ireduce(st, r)
                        }
                    }
                    BinOp::Shl | BinOp::Shr => {
                        let over =
                            self.b
                                .ins()
                                .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, y, bits);
                        if op == BinOp::Shl {
                            let s = self.b.ins().ishl(x, y);
                            let zero = self.b.ins().iconst(st, 0);
                            self.b.ins().select(over, zero, s)
                        } else if signed {
                            let maxs = self.b.ins().iconst(st, bits - 1);
                            let amt = self.b.ins().select(over, maxs, y);
                            self.b.ins().sshr(x, amt)
                        } else {
                            let s = self.b.ins().ushr(x, y);
                            let zero = self.b.ins().iconst(st, 0);
                            self.b.ins().select(over, zero, s)
                        }
                    }
                }
            }
            _ => {
                return Err(self.unsupported(format!(
                    "{op:?} of {d} (f16/bf16 must be cast to f32 first)"
                )))
            }
        })
    }

    // ------------------------------------------------------------ fma, cmp, select

    pub fn fma(&mut self, a: Val, b: Val, c: Val) -> Result<Val> {
        if a.ty != b.ty || a.ty != c.ty || !matches!(a.ty.dtype, DType::F32 | DType::F64) {
            return Err(self.malformed(format!("fma of {}, {} and {}", a.ty, b.ty, c.ty)));
        }
        if a.repr == Repr::Chunks && b.repr == Repr::Chunks && c.repr == Repr::Chunks {
            let parts = (0..a.parts.len())
                .map(|i| self.b.ins().fma(a.parts[i], b.parts[i], c.parts[i]))
                .collect();
            return Ok(Val {
                ty: a.ty,
                repr: Repr::Chunks,
                parts,
            });
        }
        let (la, lb, lc) = (self.lanes(&a), self.lanes(&b), self.lanes(&c));
        let out = (0..la.len())
            .map(|i| self.b.ins().fma(la[i], lb[i], lc[i]))
            .collect();
        Ok(self.from_lanes(a.ty, out))
    }

    pub fn cmp(&mut self, op: CmpOp, a: Val, b: Val) -> Result<Val> {
        if a.ty != b.ty {
            return Err(self.malformed(format!("{op:?} of {} and {}", a.ty, b.ty)));
        }
        let mut d = a.ty.dtype;
        let out_ty = Ty::vector(DType::Bool, a.ty.lanes);
        let (a, b) = if matches!(d, DType::F16 | DType::BF16) {
            // Exact widening: comparing in f32 gives the same answers.
            let a = self.cast(DType::F32, a)?;
            let b = self.cast(DType::F32, b)?;
            d = DType::F32;
            (a, b)
        } else {
            (a, b)
        };
        let fcc = match op {
            CmpOp::Eq => FloatCC::Equal,
            CmpOp::Ne => FloatCC::NotEqual,
            CmpOp::Lt => FloatCC::LessThan,
            CmpOp::Le => FloatCC::LessThanOrEqual,
            CmpOp::Gt => FloatCC::GreaterThan,
            CmpOp::Ge => FloatCC::GreaterThanOrEqual,
        };
        let signed = d.is_signed_int();
        let icc = match (op, signed) {
            (CmpOp::Eq, _) => IntCC::Equal,
            (CmpOp::Ne, _) => IntCC::NotEqual,
            (CmpOp::Lt, true) => IntCC::SignedLessThan,
            (CmpOp::Le, true) => IntCC::SignedLessThanOrEqual,
            (CmpOp::Gt, true) => IntCC::SignedGreaterThan,
            (CmpOp::Ge, true) => IntCC::SignedGreaterThanOrEqual,
            (CmpOp::Lt, false) => IntCC::UnsignedLessThan,
            (CmpOp::Le, false) => IntCC::UnsignedLessThanOrEqual,
            (CmpOp::Gt, false) => IntCC::UnsignedGreaterThan,
            (CmpOp::Ge, false) => IntCC::UnsignedGreaterThanOrEqual,
        };
        let is_float = matches!(d, DType::F32 | DType::F64);
        if a.repr == Repr::Chunks && b.repr == Repr::Chunks && d != DType::Bool {
            let vec_ok =
                is_float || (matches!(op, CmpOp::Eq | CmpOp::Ne) || signed) && d.bits() <= 32;
            if vec_ok {
                let parts = (0..a.parts.len())
                    .map(|i| {
                        if is_float {
                            self.b.ins().fcmp(fcc, a.parts[i], b.parts[i])
                        } else {
                            self.b.ins().icmp(icc, a.parts[i], b.parts[i])
                        }
                    })
                    .collect();
                return Ok(Val {
                    ty: out_ty,
                    repr: Repr::Chunks,
                    parts,
                });
            }
        }
        let (la, lb) = (self.lanes(&a), self.lanes(&b));
        let out = (0..la.len())
            .map(|i| {
                if is_float {
                    self.b.ins().fcmp(fcc, la[i], lb[i])
                } else {
                    self.b.ins().icmp(icc, la[i], lb[i])
                }
            })
            .collect();
        Ok(Val {
            ty: out_ty,
            repr: Repr::Lanes,
            parts: out,
        })
    }

    pub fn select(&mut self, c: Val, t: Val, e: Val) -> Result<Val> {
        if t.ty != e.ty
            || c.ty.dtype != DType::Bool
            || (c.ty.lanes != 1 && c.ty.lanes != t.ty.lanes)
        {
            return Err(self.malformed(format!("select({}, {}, {})", c.ty, t.ty, e.ty)));
        }
        if c.ty.lanes == 1 {
            let cv = c.parts[0];
            let (t, e) = if t.repr == e.repr {
                (t, e)
            } else {
                (self.canon(t), self.canon(e))
            };
            let parts = (0..t.parts.len())
                .map(|i| self.b.ins().select(cv, t.parts[i], e.parts[i]))
                .collect();
            return Ok(Val {
                ty: t.ty,
                repr: t.repr,
                parts,
            });
        }
        let t = self.canon(t);
        let e = self.canon(e);
        if c.repr == Repr::Chunks && t.repr == Repr::Chunks && c.parts.len() == t.parts.len() {
            let ct = self.ty_of(t.parts[0]);
            let mt = self.ty_of(c.parts[0]);
            if mt.lane_count() == ct.lane_count() {
                let parts = (0..t.parts.len())
                    .map(|i| {
                        let m = if mt == ct {
                            c.parts[i]
                        } else {
                            self.b.ins().bitcast(ct, vflags(), c.parts[i])
                        };
                        self.b.ins().bitselect(m, t.parts[i], e.parts[i])
                    })
                    .collect();
                return Ok(Val {
                    ty: t.ty,
                    repr: Repr::Chunks,
                    parts,
                });
            }
        }
        let (lc, lt, le) = (self.lanes(&c), self.lanes(&t), self.lanes(&e));
        let out = (0..lt.len())
            .map(|i| self.b.ins().select(lc[i], lt[i], le[i]))
            .collect();
        Ok(self.from_lanes(t.ty, out))
    }

    pub fn reduce_lanes(&mut self, op: LaneOp, a: Val) -> Result<Val> {
        let bop = match op {
            LaneOp::Add => BinOp::Add,
            LaneOp::Mul => BinOp::Mul,
            LaneOp::Min => BinOp::Min,
            LaneOp::Max => BinOp::Max,
        };
        let d = a.ty.dtype;
        let ls = self.lanes(&a);
        let mut acc = ls[0];
        for &x in &ls[1..] {
            acc = self.binary_scalar(bop, d, acc, x)?;
        }
        Ok(Self::scalar(d, acc))
    }
}
