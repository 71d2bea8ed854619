//! Memory operations of the kernel IR in Cranelift: loads and stores (scalar
//! and vector) through flat element indices, the register-tile matrix
//! multiply ([`TileMatMul`]), and the inline vectorised `exp`.
//!
//! Requires: buffers bound in the translator (parameters, allocs in scope).
//! Establishes: a load of `lanes` elements reads them at `base + index *
//! size` (128-bit unaligned vector loads when the type is chunked, scalar
//! loads otherwise; bool bytes normalised to 0/1); a store writes the value's
//! lanes the same way. No bounds checks: the kernel IR's producers guarantee
//! in-bounds indices (the interpreter checks them).

use super::value::{chunk_of, scalar_ty, Repr, Val};
use super::{BufRef, Tr};
use crate::error::Result;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;
use kiln_ir::kernel::{BufId, TileMatMul, Ty};
use kiln_ir::DType;

fn mflags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl Tr<'_, '_> {
    fn buf(&self, b: BufId) -> Result<BufRef> {
        match self.bufs.get(&b) {
            Some(r) => Ok(*r),
            None if self.after_barrier => Err(self.unsupported(format!(
                "{b} is used after a barrier in a kernel with block axes (private buffers do not cross barriers on the CPU)"
            ))),
            None => Err(self.malformed(format!("{b} is neither a parameter of the kernel nor an alloc in scope"))),
        }
    }

    /// Address of element `index` of a buffer of `dtype`.
    fn addr(&mut self, base: Value, dtype: DType, index: Value) -> Value {
        let off = self.b.ins().imul_imm_s(index, dtype.size_bytes() as i64);
        let off = if self.ptr_ty == types::I64 {
            off
        } else {
            self.b.ins().ireduce(self.ptr_ty, off)
        };
        self.b.ins().iadd(base, off)
    }

    pub fn load(&mut self, buf: BufId, index: Value, lanes: u32) -> Result<Val> {
        self.load_at(buf, index, 0, lanes)
    }

    /// A load at element `index + off`, with `off` folded into the
    /// instructions' displacement when it fits (so that loads at constant
    /// distances from one index share its address arithmetic).
    pub fn load_at(&mut self, buf: BufId, index: Value, off: i64, lanes: u32) -> Result<Val> {
        let r = self.buf(buf)?;
        if lanes == 0 {
            return Err(self.malformed(format!("load of 0 lanes from {buf}")));
        }
        let size = r.dtype.size_bytes() as i64;
        let disp = off
            .checked_mul(size)
            .and_then(|d| i32::try_from(d).ok())
            .filter(|d| d.checked_add(lanes as i32 * size as i32).is_some());
        let (index, disp) = match disp {
            Some(d) => (index, d),
            None => (self.b.ins().iadd_imm_s(index, off), 0),
        };
        let addr = self.addr(r.base, r.dtype, index);
        let ty = Ty::vector(r.dtype, lanes);
        if let Some(ct) = chunk_of(ty) {
            let n = lanes / ct.lane_count();
            let parts = (0..n)
                .map(|c| {
                    let o = disp + (c * 16) as i32;
                    self.b.ins().load(ct, mflags(), addr, o)
                })
                .collect();
            return Ok(Val {
                ty,
                repr: Repr::Chunks,
                parts,
            });
        }
        let st = scalar_ty(r.dtype);
        let size = size as i32;
        let parts = (0..lanes as i32)
            .map(|l| {
                let x = self.b.ins().load(st, mflags(), addr, disp + l * size);
                if r.dtype == DType::Bool {
                    self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
                } else {
                    x
                }
            })
            .collect();
        Ok(Val {
            ty,
            repr: Repr::Lanes,
            parts,
        })
    }

    pub fn store(&mut self, buf: BufId, index: Value, v: Val) -> Result<()> {
        let r = self.buf(buf)?;
        if r.dtype != v.ty.dtype {
            return Err(self.malformed(format!("store of {} into {buf} of {}", v.ty, r.dtype)));
        }
        let addr = self.addr(r.base, r.dtype, index);
        let v = self.canon(v);
        match v.repr {
            Repr::Chunks => {
                for (c, &p) in v.parts.iter().enumerate() {
                    self.b.ins().store(mflags(), p, addr, (c * 16) as i32);
                }
            }
            Repr::Lanes => {
                let size = r.dtype.size_bytes() as i32;
                for (l, &p) in v.parts.iter().enumerate() {
                    self.b.ins().store(mflags(), p, addr, l as i32 * size);
                }
            }
        }
        Ok(())
    }

    /// One element of a tile operand as f32 (f16/bf16 exactly, others by Cast).
    fn tile_elem(&mut self, r: BufRef, index: Value) -> Result<Value> {
        let addr = self.addr(r.base, r.dtype, index);
        let x = self.b.ins().load(scalar_ty(r.dtype), mflags(), addr, 0);
        let x = if r.dtype == DType::Bool {
            self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
        } else {
            x
        };
        self.cast_scalar(r.dtype, DType::F32, x)
    }

    /// `acc[i*n + j] += sum_p A(i, p) * B(p, j)`, fused multiply-adds in `p` order.
    pub fn tile_matmul(&mut self, t: &TileMatMul) -> Result<()> {
        let acc = self.buf(t.acc)?;
        if acc.dtype != DType::F32 {
            return Err(self.malformed(format!(
                "tile accumulator {} must be f32, is {}",
                t.acc, acc.dtype
            )));
        }
        let ar = self.buf(t.a.buf)?;
        let br = self.buf(t.b.buf)?;
        for (r, b) in [(ar, t.a.buf), (br, t.b.buf)] {
            if !r.dtype.is_float() && !r.dtype.is_int() {
                return Err(self.unsupported(format!("tile operand {b} of {}", r.dtype)));
            }
        }
        let k = self.index(&t.k)?;
        let abase = self.index(&t.a.base)?;
        let bbase = self.index(&t.b.base)?;
        let (m, n) = (t.m as usize, t.n as usize);
        let fast = br.dtype == DType::F32
            && t.b.col_stride == 1
            && n % 4 == 0
            && m * (n / 4) <= 16
            && m > 0;
        if fast {
            // The whole tile in f32x4 registers for the k loop.
            let nv = n / 4;
            let mut accs: Vec<Variable> = Vec::new();
            for i in 0..m {
                for v in 0..nv {
                    let ix = self.b.ins().iconst(types::I64, (i * n + v * 4) as i64);
                    let x = self.load(t.acc, ix, 4)?.parts[0];
                    let var = self.b.declare_var(types::F32X4);
                    self.b.def_var(var, x);
                    accs.push(var);
                }
            }
            let zero = self.b.ins().iconst(types::I64, 0);
            let pv = kiln_ir::kernel::Var(u32::MAX);
            let (a_rs, a_cs, b_rs) = (t.a.row_stride, t.a.col_stride, t.b.row_stride);
            self.counted_loop(pv, zero, k, 1, |tr| {
                let p = tr.var(pv)?.parts[0];
                let pb = tr.b.ins().imul_imm_s(p, b_rs);
                let brow = tr.b.ins().iadd(bbase, pb);
                let bvecs: Vec<Value> = (0..nv)
                    .map(|v| {
                        let a = tr.addr(br.base, DType::F32, brow);
                        tr.b.ins().load(types::F32X4, mflags(), a, (v * 16) as i32)
                    })
                    .collect();
                let pa = tr.b.ins().imul_imm_s(p, a_cs);
                let acol = tr.b.ins().iadd(abase, pa);
                for i in 0..m {
                    let ai = tr.b.ins().iadd_imm_s(acol, i as i64 * a_rs);
                    let a = tr.tile_elem(ar, ai)?;
                    let a = tr.b.ins().splat(types::F32X4, a);
                    for v in 0..nv {
                        let var = accs[i * nv + v];
                        let c = tr.b.use_var(var);
                        let r = tr.b.ins().fma(a, bvecs[v], c);
                        tr.b.def_var(var, r);
                    }
                }
                Ok(())
            })?;
            for i in 0..m {
                for v in 0..nv {
                    let x = self.b.use_var(accs[i * nv + v]);
                    let ix = self.b.ins().iconst(types::I64, (i * n + v * 4) as i64);
                    self.store(
                        t.acc,
                        ix,
                        Val {
                            ty: Ty::vector(DType::F32, 4),
                            repr: Repr::Chunks,
                            parts: vec![x],
                        },
                    )?;
                }
            }
            return Ok(());
        }
        // General form: scalar loops over i, j and p.
        let (iv, jv, pv) = (
            kiln_ir::kernel::Var(u32::MAX - 2),
            kiln_ir::kernel::Var(u32::MAX - 1),
            kiln_ir::kernel::Var(u32::MAX),
        );
        let zero = self.b.ins().iconst(types::I64, 0);
        let me = self.b.ins().iconst(types::I64, m as i64);
        let ne = self.b.ins().iconst(types::I64, n as i64);
        let tt = t.clone();
        self.counted_loop(iv, zero, me, 1, |tr| {
            tr.counted_loop(jv, zero, ne, 1, |tr| {
                let i = tr.var(iv)?.parts[0];
                let j = tr.var(jv)?.parts[0];
                let ni = tr.b.ins().imul_imm_s(i, n as i64);
                let ci = tr.b.ins().iadd(ni, j);
                let init = tr.load(tt.acc, ci, 1)?.parts[0];
                let accv = tr.b.declare_var(types::F32);
                tr.b.def_var(accv, init);
                tr.counted_loop(pv, zero, k, 1, |tr| {
                    let p = tr.var(pv)?.parts[0];
                    let i = tr.var(iv)?.parts[0];
                    let j = tr.var(jv)?.parts[0];
                    let ia = tr.b.ins().imul_imm_s(i, tt.a.row_stride);
                    let pa = tr.b.ins().imul_imm_s(p, tt.a.col_stride);
                    let x = tr.b.ins().iadd(ia, pa);
                    let x = tr.b.ins().iadd(abase, x);
                    let pb = tr.b.ins().imul_imm_s(p, tt.b.row_stride);
                    let jb = tr.b.ins().imul_imm_s(j, tt.b.col_stride);
                    let y = tr.b.ins().iadd(pb, jb);
                    let y = tr.b.ins().iadd(bbase, y);
                    let a = tr.tile_elem(ar, x)?;
                    let b = tr.tile_elem(br, y)?;
                    let c = tr.b.use_var(accv);
                    let r = tr.b.ins().fma(a, b, c);
                    tr.b.def_var(accv, r);
                    Ok(())
                })?;
                let r = tr.b.use_var(accv);
                tr.store(tt.acc, ci, Self::scalar(DType::F32, r))
            })
        })
    }

    /// exp on an f32x4, inline (Cephes-style range reduction and a degree-5
    /// polynomial): within a few ulp of libm's `expf` for normal results;
    /// NaN stays NaN, overflow gives +inf, results below 2^-126 flush to 0.
    #[allow(clippy::excessive_precision)] // Cephes constants, as published
    pub fn exp_f32x4(&mut self, x: Value) -> Value {
        let f = types::F32X4;
        let sp = |tr: &mut Self, v: f32| {
            let c = tr.b.ins().f32const(v);
            tr.b.ins().splat(f, c)
        };
        let hi = sp(self, 88.3762626647949);
        let lo = sp(self, -87.3365447505531);
        let xc = self.b.ins().fmin(x, hi);
        let xc = self.b.ins().fmax(xc, lo);
        let log2e = sp(self, std::f32::consts::LOG2_E);
        let fx = self.b.ins().fmul(xc, log2e);
        let fx = self.b.ins().nearest(fx);
        let c1 = sp(self, 0.693359375);
        let c2 = sp(self, -2.12194440e-4);
        let t = self.b.ins().fmul(fx, c1);
        let r = self.b.ins().fsub(xc, t);
        let t = self.b.ins().fmul(fx, c2);
        let r = self.b.ins().fsub(r, t);
        let coeffs = [
            1.9875691500e-4f32,
            1.3981999507e-3,
            8.3334519073e-3,
            4.1665795894e-2,
            1.6666665459e-1,
            5.0000001201e-1,
        ];
        let mut y = sp(self, coeffs[0]);
        for &c in &coeffs[1..] {
            let cv = sp(self, c);
            y = self.b.ins().fma(y, r, cv);
        }
        let r2 = self.b.ins().fmul(r, r);
        let one = sp(self, 1.0);
        let r1 = self.b.ins().fadd(r, one);
        let y = self.b.ins().fma(y, r2, r1);
        let n = self.b.ins().fcvt_to_sint_sat(types::I32X4, fx);
        let c127 = self.b.ins().iconst(types::I32, 127);
        let c127 = self.b.ins().splat(types::I32X4, c127);
        let e = self.b.ins().iadd(n, c127);
        let e = self.b.ins().ishl_imm_s(e, 23);
        let p2 = self.b.ins().bitcast(f, super::value::vflags(), e);
        let y = self.b.ins().fmul(y, p2);
        // Overflow to +inf, underflow to 0.
        let inf = sp(self, f32::INFINITY);
        let zero = sp(self, 0.0);
        let over = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        let under = self.b.ins().fcmp(FloatCC::LessThan, x, lo);
        let over = self.b.ins().bitcast(f, super::value::vflags(), over);
        let under = self.b.ins().bitcast(f, super::value::vflags(), under);
        let y = self.b.ins().bitselect(over, inf, y);
        self.b.ins().bitselect(under, zero, y)
    }
}
