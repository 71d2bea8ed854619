//! Kernel IR → Cranelift IR: one Cranelift function per kernel.
//!
//! Requires: a verified kernel [`Program`]. Establishes: for each kernel a
//! function `fn(bufs: *const *mut u8, begin: i64, end: i64, scratch: *mut u8)`
//! (the platform's C calling convention) that runs the grid points
//! `begin..end` of the flattened `Grid` axes, in order. `bufs[i]` is the
//! address of program buffer `i`; `scratch` is a per-call region of at least
//! [`KernelInfo::scratch_bytes`] bytes (64-byte aligned) that holds the large
//! kernel-local buffers.
//!
//! `Block` axes run as sequential loops inside a grid point. A body with
//! barriers runs each top-level segment between barriers as its own loop over
//! the block points; a variable or private buffer bound in one segment and used
//! in a later one is rejected (it would need per-thread storage). Shared
//! buffers get one zeroed copy per grid point.
//!
//! Sub-modules: [`value`] (the value representation and arithmetic),
//! [`cast`] (conversions), [`memory`] (loads, stores, buffers, allocs, tiles).

pub mod cast;
pub mod memory;
pub mod value;

use crate::error::{Error, Result};
use crate::helpers::Sig;
use cranelift_codegen::ir::{types, AbiParam, FuncRef, InstBuilder, Signature, Type, Value};
use cranelift_frontend::{FunctionBuilder, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module};
use kiln_ir::kernel::{BufId, Expr, IndexExpr, Kernel, ParLevel, Program, Scope, Stmt, Ty, Var};
use kiln_ir::DType;
use std::collections::HashMap;
use value::{scalar_ty, Repr, Val};

/// What the runtime needs to know about a compiled kernel.
#[derive(Clone, Debug)]
pub struct KernelInfo {
    /// Number of grid points (product of the `Grid` axes).
    pub grid_points: u64,
    /// Bytes of per-call scratch the kernel needs.
    pub scratch_bytes: usize,
}

/// The signature of every kernel function.
pub fn kernel_signature(module: &JITModule) -> Signature {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(types::I64));
    sig.params.push(AbiParam::new(ptr));
    sig
}

/// The Cranelift signature of a helper.
pub fn helper_signature(module: &JITModule, s: Sig) -> Signature {
    use types::*;
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    let (ps, r): (&[Type], Option<Type>) = match s {
        Sig::F32F32 => (&[F32], Some(F32)),
        Sig::F64F64 => (&[F64], Some(F64)),
        Sig::F32F32F32 => (&[F32, F32], Some(F32)),
        Sig::F64F64F64 => (&[F64, F64], Some(F64)),
        Sig::I64I64I64 => (&[I64, I64], Some(I64)),
        Sig::F32Bits => (&[F32], Some(I32)),
        Sig::F64Bits => (&[F64], Some(I32)),
        Sig::BitsF32 => (&[I32], Some(F32)),
        Sig::PtrLen => (&[ptr, I64], None),
    };
    for &p in ps {
        sig.params.push(AbiParam::new(p));
    }
    if let Some(r) = r {
        sig.returns.push(AbiParam::new(r));
    }
    sig
}

/// A binding of a kernel-IR variable.
#[derive(Clone, Debug)]
pub enum Binding {
    /// An i64 index variable (grid axis, loop).
    Index(Variable),
    /// An immutable value (`let`).
    Val(Val),
    /// A mutable local: its type, representation and one variable per part.
    Mut(Ty, Repr, Vec<Variable>),
}

/// A buffer as the function sees it.
#[derive(Clone, Copy, Debug)]
pub struct BufRef {
    pub base: Value,
    pub dtype: DType,
}

/// The translator of one kernel.
pub struct Tr<'a, 'b> {
    pub kernel: &'a Kernel,
    pub prog: &'a Program,
    pub b: FunctionBuilder<'b>,
    pub module: &'a mut JITModule,
    pub imports: &'a HashMap<&'static str, FuncId>,
    pub frefs: HashMap<String, FuncRef>,
    pub ptr_ty: Type,
    pub bufs: HashMap<BufId, BufRef>,
    pub vars: HashMap<Var, Binding>,
    pub scratch: Value,
    pub scratch_bytes: usize,
    pub stack_bytes: usize,
    /// Use the inline vectorised exp for f32 vectors (within 2 ulp of libm
    /// instead of bit-identical).
    pub fast_exp: bool,
    /// Set while translating segments after a barrier (for error messages).
    pub after_barrier: bool,
}

/// Largest kernel-local buffer put on the stack; larger ones go to scratch.
const STACK_ALLOC_MAX: usize = 16 * 1024;
/// Total stack bytes per kernel for kernel-local buffers.
const STACK_TOTAL_MAX: usize = 64 * 1024;

impl<'a, 'b> Tr<'a, 'b> {
    pub fn unsupported(&self, what: String) -> Error {
        Error::Unsupported {
            kernel: self.kernel.name.clone(),
            what,
        }
    }
    pub fn malformed(&self, msg: String) -> Error {
        Error::Malformed {
            kernel: self.kernel.name.clone(),
            msg,
        }
    }

    /// Calls helper `name` with `args`; returns its result (or a dummy 0 for
    /// helpers without one).
    pub fn call(&mut self, name: &str, args: &[Value]) -> Result<Value> {
        let fref = match self.frefs.get(name) {
            Some(f) => *f,
            None => {
                let id = *self
                    .imports
                    .get(name)
                    .ok_or_else(|| self.malformed(format!("no runtime helper `{name}`")))?;
                let f = self.module.declare_func_in_func(id, self.b.func);
                self.frefs.insert(name.to_string(), f);
                f
            }
        };
        let inst = self.b.ins().call(fref, args);
        Ok(self
            .b
            .inst_results(inst)
            .first()
            .copied()
            .unwrap_or(args[0]))
    }

    /// Translates the whole kernel into the builder's function.
    pub fn translate(&mut self) -> Result<KernelInfo> {
        let k = self.kernel;
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (bufs_ptr, begin, end, scratch) = (params[0], params[1], params[2], params[3]);
        self.scratch = scratch;
        // Base addresses of the program buffers the kernel touches.
        for p in &k.params {
            let buf = self.prog.buffer(p.buf).ok_or_else(|| {
                self.malformed(format!("parameter {} is not a program buffer", p.buf))
            })?;
            let off = (p.buf.index() * self.ptr_ty.bytes() as usize) as i32;
            let base = self.b.ins().load(
                self.ptr_ty,
                cranelift_codegen::ir::MemFlagsData::trusted(),
                bufs_ptr,
                off,
            );
            self.bufs.insert(
                p.buf,
                BufRef {
                    base,
                    dtype: buf.dtype,
                },
            );
        }
        // Shared buffers: one copy per grid point, placed up front.
        let mut shared = Vec::new();
        collect_shared(&k.body, &mut shared);
        let mut shared_refs = Vec::new();
        for (buf, dtype, len) in shared {
            let bytes = len * dtype.size_bytes();
            let base = self.local_storage(bytes)?;
            self.bufs.insert(buf, BufRef { base, dtype });
            shared_refs.push((base, bytes));
        }

        let grid: Vec<_> = k
            .grid
            .iter()
            .filter(|a| a.level == ParLevel::Grid)
            .copied()
            .collect();
        let block: Vec<_> = k
            .grid
            .iter()
            .filter(|a| a.level == ParLevel::Block)
            .copied()
            .collect();
        let grid_points: u64 = grid.iter().map(|a| a.extent).product();

        // for g in begin..end
        let gv = self.b.declare_var(types::I64);
        self.b.def_var(gv, begin);
        let header = self.b.create_block();
        let body = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let g = self.b.use_var(gv);
        let c = self.b.ins().icmp(
            cranelift_codegen::ir::condcodes::IntCC::SignedLessThan,
            g,
            end,
        );
        self.b.ins().brif(c, body, &[], exit, &[]);
        self.b.switch_to_block(body);
        // Unflatten g into the grid variables.
        let mut stride: u64 = 1;
        for a in grid.iter().rev() {
            let q = self.udiv_const(g, stride);
            let i = self.urem_const(q, a.extent);
            let v = self.b.declare_var(types::I64);
            self.b.def_var(v, i);
            self.vars.insert(a.var, Binding::Index(v));
            stride = stride.saturating_mul(a.extent.max(1));
        }
        for &(base, bytes) in &shared_refs {
            self.zero(base, bytes)?;
        }
        // The body: segments between barriers, each over the block points.
        let segments: Vec<&[Stmt]> = k.body.split(|s| matches!(s, Stmt::Barrier)).collect();
        if block.is_empty() {
            for seg in &segments {
                self.stmts(seg)?;
            }
        } else {
            for (si, seg) in segments.iter().enumerate() {
                self.after_barrier = si > 0;
                let before: Vec<Var> = self.vars.keys().copied().collect();
                let before_bufs: Vec<BufId> = self.bufs.keys().copied().collect();
                self.block_loops(&block, seg)?;
                if segments.len() > 1 {
                    // Values of one segment do not survive into the next.
                    self.vars.retain(|v, _| before.contains(v));
                    self.bufs.retain(|b, _| before_bufs.contains(b));
                }
            }
        }
        let g = self.b.use_var(gv);
        let g1 = self.b.ins().iadd_imm_s(g, 1);
        self.b.def_var(gv, g1);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        self.b.ins().return_(&[]);
        self.b.seal_all_blocks();
        Ok(KernelInfo {
            grid_points,
            scratch_bytes: self.scratch_bytes,
        })
    }

    fn block_loops(&mut self, axes: &[kiln_ir::kernel::ParAxis], seg: &[Stmt]) -> Result<()> {
        let Some((a, rest)) = axes.split_first() else {
            return self.stmts(seg);
        };
        let start = self.b.ins().iconst(types::I64, 0);
        let end = self.b.ins().iconst(types::I64, a.extent as i64);
        self.counted_loop(a.var, start, end, 1, |t| t.block_loops(rest, seg))
    }

    /// `for var in (start..end).step_by(step) { body }`.
    pub fn counted_loop(
        &mut self,
        var: Var,
        start: Value,
        end: Value,
        step: i64,
        body: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let v = self.b.declare_var(types::I64);
        self.b.def_var(v, start);
        let header = self.b.create_block();
        let bb = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(v);
        let c = self.b.ins().icmp(
            cranelift_codegen::ir::condcodes::IntCC::SignedLessThan,
            i,
            end,
        );
        self.b.ins().brif(c, bb, &[], exit, &[]);
        self.b.switch_to_block(bb);
        self.vars.insert(var, Binding::Index(v));
        body(self)?;
        let i = self.b.use_var(v);
        let i1 = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(v, i1);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        self.vars.remove(&var);
        Ok(())
    }

    pub fn udiv_const(&mut self, x: Value, k: u64) -> Value {
        if k <= 1 {
            x
        } else if k.is_power_of_two() {
            self.b.ins().ushr_imm_s(x, k.trailing_zeros() as i64)
        } else {
            let c = self.b.ins().iconst(types::I64, k as i64);
            self.b.ins().udiv(x, c)
        }
    }

    pub fn urem_const(&mut self, x: Value, k: u64) -> Value {
        if k <= 1 {
            self.b.ins().iconst(types::I64, 0)
        } else if k.is_power_of_two() {
            self.b.ins().band_imm_s(x, (k - 1) as i64)
        } else {
            let c = self.b.ins().iconst(types::I64, k as i64);
            self.b.ins().urem(x, c)
        }
    }

    pub fn stmts(&mut self, ss: &[Stmt]) -> Result<()> {
        for s in ss {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<()> {
        match s {
            Stmt::For {
                var,
                start,
                end,
                step,
                body,
            } => {
                if *step <= 0 {
                    return Err(self.malformed(format!("loop {var} has step {step}")));
                }
                let a = self.index(start)?;
                let e = self.index(end)?;
                self.counted_loop(*var, a, e, *step, |t| t.stmts(body))
            }
            Stmt::Let { var, value } => {
                let v = self.expr(value)?;
                self.vars.insert(*var, Binding::Val(v));
                Ok(())
            }
            Stmt::Local { var, ty, init } => {
                let v = self.expr(init)?;
                if v.ty != *ty {
                    return Err(self.malformed(format!(
                        "local {var}: declared {ty}, initialised with {}",
                        v.ty
                    )));
                }
                let v = self.canon(v);
                let vars: Vec<Variable> = v
                    .parts
                    .iter()
                    .map(|&p| {
                        let t = self.ty_of(p);
                        let x = self.b.declare_var(t);
                        self.b.def_var(x, p);
                        x
                    })
                    .collect();
                self.vars.insert(*var, Binding::Mut(*ty, v.repr, vars));
                Ok(())
            }
            Stmt::Assign { var, value } => {
                let v = self.expr(value)?;
                let Some(Binding::Mut(ty, _, vars)) = self.vars.get(var).cloned() else {
                    return Err(self.malformed(format!(
                        "assignment to {var}, which is not a local in scope"
                    )));
                };
                if v.ty != ty {
                    return Err(
                        self.malformed(format!("assignment of {} to {var} of type {ty}", v.ty))
                    );
                }
                let v = self.canon(v);
                for (x, p) in vars.iter().zip(v.parts) {
                    self.b.def_var(*x, p);
                }
                Ok(())
            }
            Stmt::Store { buf, index, value } => {
                let i = self.index(index)?;
                let v = self.expr(value)?;
                self.store(*buf, i, v)
            }
            Stmt::If { cond, then, els } => {
                let c = self.expr(cond)?;
                if c.ty != Ty::BOOL {
                    return Err(
                        self.malformed(format!("if condition must be scalar bool, is {}", c.ty))
                    );
                }
                let tb = self.b.create_block();
                let eb = self.b.create_block();
                let join = self.b.create_block();
                self.b.ins().brif(c.parts[0], tb, &[], eb, &[]);
                self.b.switch_to_block(tb);
                self.stmts(then)?;
                self.b.ins().jump(join, &[]);
                self.b.switch_to_block(eb);
                self.stmts(els)?;
                self.b.ins().jump(join, &[]);
                self.b.switch_to_block(join);
                Ok(())
            }
            Stmt::Barrier => {
                Err(self.malformed("barrier below the top level of the kernel body".to_string()))
            }
            Stmt::Alloc {
                buf,
                scope,
                dtype,
                len,
            } => {
                if *scope == Scope::Shared {
                    // Placed and zeroed once per grid point (see `translate`).
                    return Ok(());
                }
                let bytes = len * dtype.size_bytes();
                let base = self.local_storage(bytes)?;
                self.zero(base, bytes)?;
                self.bufs.insert(
                    *buf,
                    BufRef {
                        base,
                        dtype: *dtype,
                    },
                );
                Ok(())
            }
            Stmt::TileMatMul(t) => self.tile_matmul(t),
        }
    }

    /// An i64 value for an index expression.
    pub fn index(&mut self, e: &IndexExpr) -> Result<Value> {
        Ok(match e {
            IndexExpr::Const(c) => self.b.ins().iconst(types::I64, *c),
            IndexExpr::Var(v) => {
                let x = self.var(*v)?;
                if x.ty.lanes != 1 || !(x.ty.dtype.is_int() || x.ty.dtype == DType::Bool) {
                    return Err(self.malformed(format!("{v} of type {} used as an index", x.ty)));
                }
                self.to_i64(x.ty.dtype, x.parts[0])
            }
            IndexExpr::Add(a, b) => {
                let (a, b) = (self.index(a)?, self.index(b)?);
                self.b.ins().iadd(a, b)
            }
            IndexExpr::Mul(a, k) => {
                let a = self.index(a)?;
                self.b.ins().imul_imm_s(a, *k)
            }
            IndexExpr::Div(a, k) | IndexExpr::Mod(a, k) => {
                let k = *k;
                if k <= 0 {
                    return Err(self.malformed(format!("index division by {k}")));
                }
                let x = self.index(a)?;
                let is_div = matches!(e, IndexExpr::Div(..));
                if k == 1 {
                    if is_div {
                        x
                    } else {
                        self.b.ins().iconst(types::I64, 0)
                    }
                } else if (k as u64).is_power_of_two() {
                    // Floor division and Euclidean remainder, also for negatives.
                    if is_div {
                        self.b.ins().sshr_imm_s(x, k.trailing_zeros() as i64)
                    } else {
                        self.b.ins().band_imm_s(x, k - 1)
                    }
                } else {
                    use cranelift_codegen::ir::condcodes::IntCC;
                    let kc = self.b.ins().iconst(types::I64, k);
                    let r = self.b.ins().srem(x, kc);
                    let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
                    if is_div {
                        let q = self.b.ins().sdiv(x, kc);
                        let q1 = self.b.ins().iadd_imm_s(q, -1);
                        self.b.ins().select(neg, q1, q)
                    } else {
                        let rk = self.b.ins().iadd_imm_s(r, k);
                        self.b.ins().select(neg, rk, r)
                    }
                }
            }
            IndexExpr::Min(a, b) => {
                let (a, b) = (self.index(a)?, self.index(b)?);
                self.b.ins().smin(a, b)
            }
            IndexExpr::Max(a, b) => {
                let (a, b) = (self.index(a)?, self.index(b)?);
                self.b.ins().smax(a, b)
            }
            IndexExpr::Dyn(x) => {
                let v = self.expr(x)?;
                if v.ty.lanes != 1 || !(v.ty.dtype.is_int() || v.ty.dtype == DType::Bool) {
                    return Err(self.malformed(format!(
                        "dynamic index must be a scalar integer, is {}",
                        v.ty
                    )));
                }
                self.to_i64(v.ty.dtype, v.parts[0])
            }
        })
    }

    /// A variable's current value.
    pub fn var(&mut self, v: Var) -> Result<Val> {
        match self.vars.get(&v).cloned() {
            Some(Binding::Index(x)) => Ok(Self::scalar(DType::I64, self.b.use_var(x))),
            Some(Binding::Val(x)) => Ok(x),
            Some(Binding::Mut(ty, repr, xs)) => {
                let parts = xs.iter().map(|x| self.b.use_var(*x)).collect();
                Ok(Val { ty, repr, parts })
            }
            None if self.after_barrier => Err(self.unsupported(format!(
                "{v} is used after a barrier in a kernel with block axes (values do not cross barriers on the CPU)"
            ))),
            None => Err(self.malformed(format!("{v} is unbound"))),
        }
    }

    pub fn expr(&mut self, e: &Expr) -> Result<Val> {
        match e {
            Expr::Float { dtype, value } => {
                if !matches!(dtype, DType::F32 | DType::F64) {
                    return Err(self.malformed(format!("float constant of {dtype}")));
                }
                let v = self.fconst(*dtype, *value);
                Ok(Self::scalar(*dtype, v))
            }
            Expr::Int { dtype, value } => {
                if !(dtype.is_int() || *dtype == DType::Bool) {
                    return Err(self.malformed(format!("integer constant of {dtype}")));
                }
                let v = if *dtype == DType::Bool {
                    (*value != 0) as i64
                } else {
                    *value
                };
                let v = self.b.ins().iconst(scalar_ty(*dtype), v);
                Ok(Self::scalar(*dtype, v))
            }
            Expr::Var(v) => self.var(*v),
            Expr::Index(ix) => {
                let v = self.index(ix)?;
                Ok(Self::scalar(DType::I64, v))
            }
            Expr::Load { buf, index, lanes } => {
                // `x + c`: the constant goes into the load's displacement.
                if let IndexExpr::Add(x, c) = index {
                    if let IndexExpr::Const(c) = **c {
                        let i = self.index(x)?;
                        return self.load_at(*buf, i, c, *lanes);
                    }
                }
                let i = self.index(index)?;
                self.load(*buf, i, *lanes)
            }
            Expr::Unary { op, arg } => {
                let a = self.expr(arg)?;
                self.unary(*op, a)
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.expr(lhs)?;
                let b = self.expr(rhs)?;
                self.binary(*op, a, b)
            }
            Expr::Fma { a, b, c } => {
                let (a, b, c) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                self.fma(a, b, c)
            }
            Expr::Cmp { op, lhs, rhs } => {
                let a = self.expr(lhs)?;
                let b = self.expr(rhs)?;
                self.cmp(*op, a, b)
            }
            Expr::Select { cond, then, els } => {
                let c = self.expr(cond)?;
                let t = self.expr(then)?;
                let e = self.expr(els)?;
                self.select(c, t, e)
            }
            Expr::Cast { to, arg } => {
                let a = self.expr(arg)?;
                self.cast(*to, a)
            }
            Expr::Splat { lanes, arg } => {
                let a = self.expr(arg)?;
                if a.ty.lanes != 1 || *lanes == 0 {
                    return Err(self.malformed(format!("splat of {} to {lanes} lanes", a.ty)));
                }
                Ok(self.splat_val(*lanes, a))
            }
            Expr::ReduceLanes { op, arg } => {
                let a = self.expr(arg)?;
                self.reduce_lanes(*op, a)
            }
        }
    }

    /// Storage for a kernel-local buffer of `bytes` bytes: a stack slot when
    /// small, otherwise a region of the per-call scratch.
    pub fn local_storage(&mut self, bytes: usize) -> Result<Value> {
        let bytes = bytes.max(1);
        if bytes <= STACK_ALLOC_MAX && self.stack_bytes + bytes <= STACK_TOTAL_MAX {
            self.stack_bytes += bytes;
            let slot = self
                .b
                .create_sized_stack_slot(cranelift_codegen::ir::StackSlotData::new(
                    cranelift_codegen::ir::StackSlotKind::ExplicitSlot,
                    bytes as u32,
                    6,
                ));
            Ok(self.b.ins().stack_addr(self.ptr_ty, slot, 0))
        } else {
            let off = self.scratch_bytes;
            self.scratch_bytes = (off + bytes).div_ceil(64) * 64;
            Ok(self.b.ins().iadd_imm_s(self.scratch, off as i64))
        }
    }

    /// Zeroes `bytes` bytes at `base`.
    pub fn zero(&mut self, base: Value, bytes: usize) -> Result<()> {
        if bytes <= 128 && bytes.is_multiple_of(8) {
            let z = self.b.ins().iconst(types::I64, 0);
            for o in (0..bytes).step_by(8) {
                self.b.ins().store(
                    cranelift_codegen::ir::MemFlagsData::trusted(),
                    z,
                    base,
                    o as i32,
                );
            }
            Ok(())
        } else if bytes <= 32 {
            let z = self.b.ins().iconst(types::I8, 0);
            for o in 0..bytes {
                self.b.ins().store(
                    cranelift_codegen::ir::MemFlagsData::trusted(),
                    z,
                    base,
                    o as i32,
                );
            }
            Ok(())
        } else {
            let n = self.b.ins().iconst(types::I64, bytes as i64);
            self.call("kiln_memzero", &[base, n]).map(|_| ())
        }
    }
}

fn collect_shared(ss: &[Stmt], out: &mut Vec<(BufId, DType, usize)>) {
    for s in ss {
        match s {
            Stmt::Alloc {
                buf,
                scope: Scope::Shared,
                dtype,
                len,
            } => out.push((*buf, *dtype, *len)),
            Stmt::For { body, .. } => collect_shared(body, out),
            Stmt::If { then, els, .. } => {
                collect_shared(then, out);
                collect_shared(els, out);
            }
            _ => {}
        }
    }
}
