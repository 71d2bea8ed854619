//! The kernel-IR interpreter: slow, simple, and the backend-independent
//! oracle. It executes a [`Program`] on input [`Tensor`]s and returns the
//! output tensors.
//!
//! Requires: a program that passes [`super::verify::verify`] (it checks
//! types again as it goes and fails with [`KernelError::Run`] rather than
//! panicking). Establishes: the outputs the program computes, with every
//! memory access bounds-checked. Temps with planned arena offsets share one
//! byte arena exactly as planned, so a wrong memory plan shows up as wrong
//! results. [`Options::reverse_grid`] runs grid points in reverse order, which
//! exposes kernels whose grid points are not independent.
//!
//! Numerics: f32 arithmetic in f32, f64 in f64; `Fma` rounds once; f16/bf16
//! only convert; integers wrap to their width.

use super::*;
use half::{bf16, f16};
use std::collections::HashMap;

/// Interpreter options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Visit grid points last to first (to test their independence).
    pub reverse_grid: bool,
}

/// Runs `prog` on `inputs` (in input order) and returns its outputs.
pub fn run(prog: &Program, inputs: &[Tensor]) -> Result<Vec<Tensor>, KernelError> {
    run_with(prog, inputs, Options::default())
}

/// [`run`] with options.
pub fn run_with(
    prog: &Program,
    inputs: &[Tensor],
    opts: Options,
) -> Result<Vec<Tensor>, KernelError> {
    let perr = |msg: String| KernelError::Run {
        kernel: format!("<program {}>", prog.name),
        msg,
    };
    let in_ids = prog.inputs();
    if in_ids.len() != inputs.len() {
        return Err(perr(format!(
            "takes {} inputs but {} were given",
            in_ids.len(),
            inputs.len()
        )));
    }
    let mut mem = Memory {
        own: HashMap::new(),
        arena: vec![0u8; prog.arena_bytes],
        places: HashMap::new(),
    };
    for b in &prog.buffers {
        match &b.kind {
            BufKind::Input(i) => {
                let t = &inputs[*i];
                if t.dtype() != b.dtype || t.numel() != b.len() {
                    return Err(perr(format!(
                        "input {i} ({}) must be {}{:?}, got {}",
                        b.id,
                        b.dtype,
                        b.shape,
                        t.ty()
                    )));
                }
                mem.own.insert(b.id, t.to_le_bytes());
            }
            BufKind::Const(t) => {
                mem.own.insert(b.id, t.to_le_bytes());
            }
            BufKind::Output(_) | BufKind::Temp { offset: None } => {
                mem.own.insert(b.id, vec![0u8; b.bytes()]);
            }
            BufKind::Temp { offset: Some(off) } => {
                if off + b.bytes() > prog.arena_bytes {
                    return Err(perr(format!(
                        "{} at arena offset {off} with {} bytes overruns the {}-byte arena",
                        b.id,
                        b.bytes(),
                        prog.arena_bytes
                    )));
                }
                mem.places.insert(b.id, *off);
            }
        }
    }
    let dtypes: HashMap<BufId, (DType, usize)> = prog
        .buffers
        .iter()
        .map(|b| (b.id, (b.dtype, b.len())))
        .collect();
    for k in &prog.kernels {
        run_kernel(k, &mut mem, &dtypes, opts).map_err(|msg| KernelError::Run {
            kernel: k.name.clone(),
            msg,
        })?;
    }
    prog.outputs()
        .into_iter()
        .map(|id| {
            let b = &prog.buffers[id.index()];
            let bytes = mem.own.get(&id).cloned().unwrap_or_default();
            Tensor::from_le_bytes(b.dtype, b.shape.clone(), &bytes).map_err(|e| perr(e.to_string()))
        })
        .collect()
}

struct Memory {
    own: HashMap<BufId, Vec<u8>>,
    arena: Vec<u8>,
    places: HashMap<BufId, usize>,
}

/// One lane of a value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sc {
    F32(f32),
    F64(f64),
    F16(f16),
    BF16(bf16),
    /// Signed integers (normalised to their width).
    I(i64),
    /// Unsigned integers (normalised to their width).
    U(u64),
    B(bool),
}

#[derive(Clone, Debug, PartialEq)]
struct Value {
    ty: Ty,
    lanes: Vec<Sc>,
}

type R<T> = std::result::Result<T, String>;

fn wrap_i(d: DType, x: i64) -> i64 {
    match d {
        DType::I8 => x as i8 as i64,
        DType::I16 => x as i16 as i64,
        DType::I32 => x as i32 as i64,
        _ => x,
    }
}

fn wrap_u(d: DType, x: u64) -> u64 {
    match d {
        DType::U8 => x as u8 as u64,
        DType::U16 => x as u16 as u64,
        DType::U32 => x as u32 as u64,
        _ => x,
    }
}

fn decode(d: DType, b: &[u8]) -> Sc {
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    let u = u64::from_le_bytes(a);
    match d {
        DType::F32 => Sc::F32(f32::from_bits(u as u32)),
        DType::F64 => Sc::F64(f64::from_bits(u)),
        DType::F16 => Sc::F16(f16::from_bits(u as u16)),
        DType::BF16 => Sc::BF16(bf16::from_bits(u as u16)),
        DType::I8 => Sc::I(u as u8 as i8 as i64),
        DType::I16 => Sc::I(u as u16 as i16 as i64),
        DType::I32 => Sc::I(u as u32 as i32 as i64),
        DType::I64 => Sc::I(u as i64),
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => Sc::U(u),
        DType::Bool => Sc::B(u != 0),
    }
}

fn encode(s: Sc, out: &mut [u8]) {
    let u: u64 = match s {
        Sc::F32(x) => x.to_bits() as u64,
        Sc::F64(x) => x.to_bits(),
        Sc::F16(x) => x.to_bits() as u64,
        Sc::BF16(x) => x.to_bits() as u64,
        Sc::I(x) => x as u64,
        Sc::U(x) => x,
        Sc::B(x) => x as u64,
    };
    let n = out.len();
    out.copy_from_slice(&u.to_le_bytes()[..n]);
}

/// Converts one lane to `to` with the IR's Cast semantics.
fn cast_sc(s: Sc, to: DType) -> Sc {
    let as_f64 = match s {
        Sc::F32(x) => x as f64,
        Sc::F64(x) => x,
        Sc::F16(x) => x.to_f64(),
        Sc::BF16(x) => x.to_f64(),
        Sc::I(x) => x as f64,
        Sc::U(x) => x as f64,
        Sc::B(x) => x as u8 as f64,
    };
    let is_float = matches!(s, Sc::F32(_) | Sc::F64(_) | Sc::F16(_) | Sc::BF16(_));
    match to {
        DType::F32 => Sc::F32(match s {
            Sc::I(x) => x as f32,
            Sc::U(x) => x as f32,
            Sc::F32(x) => x,
            Sc::F16(x) => x.to_f32(),
            Sc::BF16(x) => x.to_f32(),
            _ => as_f64 as f32,
        }),
        DType::F64 => Sc::F64(as_f64),
        DType::F16 => Sc::F16(match s {
            Sc::F32(x) => f16::from_f32(x),
            _ => f16::from_f64(as_f64),
        }),
        DType::BF16 => Sc::BF16(match s {
            Sc::F32(x) => bf16::from_f32(x),
            _ => bf16::from_f64(as_f64),
        }),
        DType::Bool => Sc::B(match s {
            Sc::I(x) => x != 0,
            Sc::U(x) => x != 0,
            Sc::B(x) => x,
            _ => as_f64 != 0.0,
        }),
        d if d.is_signed_int() => Sc::I(match s {
            Sc::I(x) => wrap_i(d, x),
            Sc::U(x) => wrap_i(d, x as i64),
            Sc::B(x) => x as i64,
            _ if is_float => match d {
                DType::I8 => as_f64 as i8 as i64,
                DType::I16 => as_f64 as i16 as i64,
                DType::I32 => as_f64 as i32 as i64,
                _ => as_f64 as i64,
            },
            _ => 0,
        }),
        d => Sc::U(match s {
            Sc::I(x) => wrap_u(d, x as u64),
            Sc::U(x) => wrap_u(d, x),
            Sc::B(x) => x as u64,
            _ => match d {
                DType::U8 => as_f64 as u8 as u64,
                DType::U16 => as_f64 as u16 as u64,
                DType::U32 => as_f64 as u32 as u64,
                _ => as_f64 as u64,
            },
        }),
    }
}

struct Frame<'a> {
    vars: Vec<Option<Value>>,
    /// Kernel-local buffers visible to this thread (private and global scope).
    local: HashMap<BufId, (DType, Vec<u8>)>,
    dtypes: &'a HashMap<BufId, (DType, usize)>,
}

fn run_kernel(
    k: &Kernel,
    mem: &mut Memory,
    dtypes: &HashMap<BufId, (DType, usize)>,
    opts: Options,
) -> R<()> {
    let grid: Vec<&ParAxis> = k
        .grid
        .iter()
        .filter(|a| a.level == ParLevel::Grid)
        .collect();
    let block: Vec<&ParAxis> = k
        .grid
        .iter()
        .filter(|a| a.level == ParLevel::Block)
        .collect();
    let total: u64 = grid.iter().map(|a| a.extent).product();
    let threads: u64 = block.iter().map(|a| a.extent).product();
    let nvars = max_var(k) + 1;
    // Top-level segments between barriers.
    let mut segments: Vec<&[Stmt]> = Vec::new();
    let mut start = 0;
    for (i, s) in k.body.iter().enumerate() {
        if matches!(s, Stmt::Barrier) {
            segments.push(&k.body[start..i]);
            start = i + 1;
        }
    }
    segments.push(&k.body[start..]);
    for step in 0..total {
        let g = if opts.reverse_grid {
            total - 1 - step
        } else {
            step
        };
        let gidx = unflatten(g, grid.iter().map(|a| a.extent));
        let mut shared: HashMap<BufId, (DType, Vec<u8>)> = HashMap::new();
        let mut frames: Vec<Frame> = (0..threads)
            .map(|t| {
                let mut f = Frame {
                    vars: vec![None; nvars],
                    local: HashMap::new(),
                    dtypes,
                };
                for (a, &i) in grid.iter().zip(&gidx) {
                    f.vars[a.var.0 as usize] = Some(Value {
                        ty: Ty::INDEX,
                        lanes: vec![Sc::I(i as i64)],
                    });
                }
                let tidx = unflatten(t, block.iter().map(|a| a.extent));
                for (a, &i) in block.iter().zip(&tidx) {
                    f.vars[a.var.0 as usize] = Some(Value {
                        ty: Ty::INDEX,
                        lanes: vec![Sc::I(i as i64)],
                    });
                }
                f
            })
            .collect();
        for seg in &segments {
            for f in frames.iter_mut() {
                let mut ctx = Ctx {
                    mem,
                    shared: &mut shared,
                    f,
                };
                ctx.block(seg)?;
            }
        }
    }
    Ok(())
}

fn unflatten(
    mut g: u64,
    extents: impl DoubleEndedIterator<Item = u64> + ExactSizeIterator,
) -> Vec<u64> {
    let ext: Vec<u64> = extents.collect();
    let mut idx = vec![0; ext.len()];
    for (i, &e) in ext.iter().enumerate().rev() {
        idx[i] = g % e.max(1);
        g /= e.max(1);
    }
    idx
}

fn max_var(k: &Kernel) -> usize {
    let mut m = 0u32;
    for a in &k.grid {
        m = m.max(a.var.0);
    }
    fn walk(ss: &[Stmt], m: &mut u32) {
        for s in ss {
            match s {
                Stmt::For { var, body, .. } => {
                    *m = (*m).max(var.0);
                    walk(body, m);
                }
                Stmt::Let { var, .. } | Stmt::Local { var, .. } | Stmt::Assign { var, .. } => {
                    *m = (*m).max(var.0)
                }
                Stmt::If { then, els, .. } => {
                    walk(then, m);
                    walk(els, m);
                }
                _ => {}
            }
        }
    }
    walk(&k.body, &mut m);
    m as usize
}

struct Ctx<'a, 'b> {
    mem: &'a mut Memory,
    shared: &'a mut HashMap<BufId, (DType, Vec<u8>)>,
    f: &'a mut Frame<'b>,
}

impl Ctx<'_, '_> {
    fn block(&mut self, ss: &[Stmt]) -> R<()> {
        for s in ss {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> R<()> {
        match s {
            Stmt::For {
                var,
                start,
                end,
                step,
                body,
            } => {
                if *step <= 0 {
                    return Err(format!("loop {var} has step {step}"));
                }
                let a = self.index(start)?;
                let b = self.index(end)?;
                let mut i = a;
                while i < b {
                    self.f.vars[var.0 as usize] = Some(Value {
                        ty: Ty::INDEX,
                        lanes: vec![Sc::I(i)],
                    });
                    self.block(body)?;
                    i += step;
                }
                self.f.vars[var.0 as usize] = None;
                Ok(())
            }
            Stmt::Let { var, value } => {
                let v = self.expr(value)?;
                self.f.vars[var.0 as usize] = Some(v);
                Ok(())
            }
            Stmt::Local { var, ty, init } => {
                let v = self.expr(init)?;
                if v.ty != *ty {
                    return Err(format!(
                        "local {var}: declared {ty}, initialised with {}",
                        v.ty
                    ));
                }
                self.f.vars[var.0 as usize] = Some(v);
                Ok(())
            }
            Stmt::Assign { var, value } => {
                let v = self.expr(value)?;
                let old = self.f.vars[var.0 as usize]
                    .as_ref()
                    .ok_or_else(|| format!("assignment to unbound {var}"))?;
                if old.ty != v.ty {
                    return Err(format!(
                        "assignment of {} to {var} of type {}",
                        v.ty, old.ty
                    ));
                }
                self.f.vars[var.0 as usize] = Some(v);
                Ok(())
            }
            Stmt::Store { buf, index, value } => {
                let i = self.index(index)?;
                let v = self.expr(value)?;
                self.store(*buf, i, &v)
            }
            Stmt::If { cond, then, els } => {
                let c = self.expr(cond)?;
                match c.lanes.as_slice() {
                    [Sc::B(b)] => {
                        if *b {
                            self.block(then)
                        } else {
                            self.block(els)
                        }
                    }
                    _ => Err(format!("if condition must be scalar bool, is {}", c.ty)),
                }
            }
            Stmt::Barrier => Err("barrier below the top level of a kernel".to_string()),
            Stmt::Alloc {
                buf,
                scope,
                dtype,
                len,
            } => {
                let storage = (*dtype, vec![0u8; len * dtype.size_bytes()]);
                if *scope == Scope::Shared {
                    self.shared.entry(*buf).or_insert(storage);
                } else {
                    self.f.local.insert(*buf, storage);
                }
                Ok(())
            }
            Stmt::TileMatMul(t) => self.tile(t),
        }
    }

    fn tile(&mut self, t: &TileMatMul) -> R<()> {
        let k = self.index(&t.k)?;
        let ab = self.index(&t.a.base)?;
        let bb = self.index(&t.b.base)?;
        let (m, n) = (t.m as i64, t.n as i64);
        for i in 0..m {
            for j in 0..n {
                let ci = i * n + j;
                let mut acc = match self.load(t.acc, ci, 1)?.lanes[0] {
                    Sc::F32(x) => x,
                    other => {
                        return Err(format!(
                            "tile accumulator {} must be f32, holds {other:?}",
                            t.acc
                        ))
                    }
                };
                for p in 0..k {
                    let a = self
                        .load(t.a.buf, ab + i * t.a.row_stride + p * t.a.col_stride, 1)?
                        .lanes[0];
                    let b = self
                        .load(t.b.buf, bb + p * t.b.row_stride + j * t.b.col_stride, 1)?
                        .lanes[0];
                    let (Sc::F32(a), Sc::F32(b)) = (cast_sc(a, DType::F32), cast_sc(b, DType::F32))
                    else {
                        return Err("tile operands must be floats".to_string());
                    };
                    acc = a.mul_add(b, acc);
                }
                self.store(
                    t.acc,
                    ci,
                    &Value {
                        ty: Ty::scalar(DType::F32),
                        lanes: vec![Sc::F32(acc)],
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Storage for a buffer: (dtype, bytes, byte offset).
    fn storage(&mut self, b: BufId) -> R<(DType, &mut [u8])> {
        if let Some((d, v)) = self.f.local.get_mut(&b) {
            return Ok((*d, v.as_mut_slice()));
        }
        if let Some((d, v)) = self.shared.get_mut(&b) {
            return Ok((*d, v.as_mut_slice()));
        }
        let d = self
            .f
            .dtypes
            .get(&b)
            .ok_or_else(|| format!("unknown buffer {b}"))?
            .0;
        if let Some(v) = self.mem.own.get_mut(&b) {
            return Ok((d, v.as_mut_slice()));
        }
        if let Some(&off) = self.mem.places.get(&b) {
            return Ok((d, &mut self.mem.arena[off..]));
        }
        Err(format!("buffer {b} has no storage"))
    }

    fn load(&mut self, b: BufId, i: i64, lanes: u32) -> R<Value> {
        let len = self.len_of(b)?;
        let (d, bytes) = self.storage(b)?;
        let s = d.size_bytes();
        if i < 0 || (i as usize) + lanes as usize > len {
            return Err(format!(
                "load of {lanes} lane(s) at {b}[{i}] is out of bounds (length {len})"
            ));
        }
        let lanes_v = (0..lanes as usize)
            .map(|l| {
                let o = (i as usize + l) * s;
                decode(d, &bytes[o..o + s])
            })
            .collect();
        Ok(Value {
            ty: Ty::vector(d, lanes),
            lanes: lanes_v,
        })
    }

    fn store(&mut self, b: BufId, i: i64, v: &Value) -> R<()> {
        let len = self.len_of(b)?;
        let (d, bytes) = self.storage(b)?;
        if d != v.ty.dtype {
            return Err(format!("store of {} into {b} of {d}", v.ty));
        }
        let s = d.size_bytes();
        if i < 0 || (i as usize) + v.lanes.len() > len {
            return Err(format!(
                "store of {} lane(s) at {b}[{i}] is out of bounds (length {len})",
                v.lanes.len()
            ));
        }
        for (l, x) in v.lanes.iter().enumerate() {
            let o = (i as usize + l) * s;
            encode(*x, &mut bytes[o..o + s]);
        }
        Ok(())
    }

    fn len_of(&mut self, b: BufId) -> R<usize> {
        if let Some((d, v)) = self.f.local.get(&b).or_else(|| self.shared.get(&b)) {
            return Ok(v.len() / d.size_bytes());
        }
        self.f
            .dtypes
            .get(&b)
            .map(|x| x.1)
            .ok_or_else(|| format!("unknown buffer {b}"))
    }

    fn index(&mut self, e: &IndexExpr) -> R<i64> {
        Ok(match e {
            IndexExpr::Const(c) => *c,
            IndexExpr::Var(v) => match self.f.vars.get(v.0 as usize).and_then(|x| x.as_ref()) {
                Some(Value { lanes, .. }) => match lanes.as_slice() {
                    [Sc::I(x)] => *x,
                    [Sc::U(x)] => *x as i64,
                    _ => return Err(format!("{v} is not a scalar integer")),
                },
                None => return Err(format!("{v} is unbound")),
            },
            IndexExpr::Add(a, b) => self.index(a)?.wrapping_add(self.index(b)?),
            IndexExpr::Mul(a, k) => self.index(a)?.wrapping_mul(*k),
            IndexExpr::Div(a, k) => {
                if *k <= 0 {
                    return Err(format!("index division by {k}"));
                }
                self.index(a)?.div_euclid(*k)
            }
            IndexExpr::Mod(a, k) => {
                if *k <= 0 {
                    return Err(format!("index remainder by {k}"));
                }
                self.index(a)?.rem_euclid(*k)
            }
            IndexExpr::Min(a, b) => self.index(a)?.min(self.index(b)?),
            IndexExpr::Max(a, b) => self.index(a)?.max(self.index(b)?),
            IndexExpr::Dyn(x) => {
                let v = self.expr(x)?;
                match v.lanes.as_slice() {
                    [Sc::I(x)] => *x,
                    [Sc::U(x)] => *x as i64,
                    [Sc::B(x)] => *x as i64,
                    _ => {
                        return Err(format!(
                            "dynamic index must be a scalar integer, is {}",
                            v.ty
                        ))
                    }
                }
            }
        })
    }

    fn expr(&mut self, e: &Expr) -> R<Value> {
        match e {
            Expr::Float { dtype, value } => Ok(Value {
                ty: Ty::scalar(*dtype),
                lanes: vec![match dtype {
                    DType::F32 => Sc::F32(*value as f32),
                    DType::F64 => Sc::F64(*value),
                    d => return Err(format!("float constant of {d}")),
                }],
            }),
            Expr::Int { dtype, value } => Ok(Value {
                ty: Ty::scalar(*dtype),
                lanes: vec![match dtype {
                    DType::Bool => Sc::B(*value != 0),
                    d if d.is_signed_int() => Sc::I(wrap_i(*d, *value)),
                    d if d.is_unsigned_int() => Sc::U(wrap_u(*d, *value as u64)),
                    d => return Err(format!("integer constant of {d}")),
                }],
            }),
            Expr::Var(v) => self
                .f
                .vars
                .get(v.0 as usize)
                .and_then(|x| x.clone())
                .ok_or_else(|| format!("{v} is unbound")),
            Expr::Index(ix) => Ok(Value {
                ty: Ty::INDEX,
                lanes: vec![Sc::I(self.index(ix)?)],
            }),
            Expr::Load { buf, index, lanes } => {
                let i = self.index(index)?;
                self.load(*buf, i, *lanes)
            }
            Expr::Unary { op, arg } => {
                let a = self.expr(arg)?;
                let ty = match op {
                    UnOp::IsNan | UnOp::IsInf => Ty::vector(DType::Bool, a.ty.lanes),
                    _ => a.ty,
                };
                let lanes = a
                    .lanes
                    .iter()
                    .map(|&x| unary(*op, a.ty.dtype, x))
                    .collect::<R<_>>()?;
                Ok(Value { ty, lanes })
            }
            Expr::Binary { op, lhs, rhs } => {
                let a = self.expr(lhs)?;
                let b = self.expr(rhs)?;
                if a.ty != b.ty {
                    return Err(format!("{op:?} of {} and {}", a.ty, b.ty));
                }
                let lanes = a
                    .lanes
                    .iter()
                    .zip(&b.lanes)
                    .map(|(&x, &y)| binary(*op, a.ty.dtype, x, y))
                    .collect::<R<_>>()?;
                Ok(Value { ty: a.ty, lanes })
            }
            Expr::Fma { a, b, c } => {
                let (a, b, c) = (self.expr(a)?, self.expr(b)?, self.expr(c)?);
                if a.ty != b.ty || a.ty != c.ty {
                    return Err(format!("fma of {}, {} and {}", a.ty, b.ty, c.ty));
                }
                let lanes = (0..a.lanes.len())
                    .map(|i| match (a.lanes[i], b.lanes[i], c.lanes[i]) {
                        (Sc::F32(x), Sc::F32(y), Sc::F32(z)) => Ok(Sc::F32(x.mul_add(y, z))),
                        (Sc::F64(x), Sc::F64(y), Sc::F64(z)) => Ok(Sc::F64(x.mul_add(y, z))),
                        _ => Err(format!("fma of {}", a.ty)),
                    })
                    .collect::<R<_>>()?;
                Ok(Value { ty: a.ty, lanes })
            }
            Expr::Cmp { op, lhs, rhs } => {
                let a = self.expr(lhs)?;
                let b = self.expr(rhs)?;
                if a.ty != b.ty {
                    return Err(format!("{op:?} of {} and {}", a.ty, b.ty));
                }
                let lanes = a
                    .lanes
                    .iter()
                    .zip(&b.lanes)
                    .map(|(&x, &y)| Sc::B(compare(*op, x, y)))
                    .collect();
                Ok(Value {
                    ty: Ty::vector(DType::Bool, a.ty.lanes),
                    lanes,
                })
            }
            Expr::Select { cond, then, els } => {
                let c = self.expr(cond)?;
                let t = self.expr(then)?;
                let e = self.expr(els)?;
                if t.ty != e.ty
                    || c.ty.dtype != DType::Bool
                    || (c.ty.lanes != 1 && c.ty.lanes != t.ty.lanes)
                {
                    return Err(format!("select({}, {}, {})", c.ty, t.ty, e.ty));
                }
                let lanes = (0..t.lanes.len())
                    .map(|i| {
                        let ci = if c.ty.lanes == 1 { 0 } else { i };
                        if c.lanes[ci] == Sc::B(true) {
                            t.lanes[i]
                        } else {
                            e.lanes[i]
                        }
                    })
                    .collect();
                Ok(Value { ty: t.ty, lanes })
            }
            Expr::Cast { to, arg } => {
                let a = self.expr(arg)?;
                Ok(Value {
                    ty: Ty::vector(*to, a.ty.lanes),
                    lanes: a.lanes.iter().map(|&x| cast_sc(x, *to)).collect(),
                })
            }
            Expr::Splat { lanes, arg } => {
                let a = self.expr(arg)?;
                if a.ty.lanes != 1 {
                    return Err(format!("splat of a vector {}", a.ty));
                }
                Ok(Value {
                    ty: Ty::vector(a.ty.dtype, *lanes),
                    lanes: vec![a.lanes[0]; *lanes as usize],
                })
            }
            Expr::ReduceLanes { op, arg } => {
                let a = self.expr(arg)?;
                let bop = match op {
                    LaneOp::Add => BinOp::Add,
                    LaneOp::Mul => BinOp::Mul,
                    LaneOp::Min => BinOp::Min,
                    LaneOp::Max => BinOp::Max,
                };
                let mut acc = a.lanes[0];
                for &x in &a.lanes[1..] {
                    acc = binary(bop, a.ty.dtype, acc, x)?;
                }
                Ok(Value {
                    ty: Ty::scalar(a.ty.dtype),
                    lanes: vec![acc],
                })
            }
        }
    }
}

fn compare(op: CmpOp, x: Sc, y: Sc) -> bool {
    use std::cmp::Ordering::*;
    let ord = match (x, y) {
        (Sc::F32(a), Sc::F32(b)) => a.partial_cmp(&b),
        (Sc::F64(a), Sc::F64(b)) => a.partial_cmp(&b),
        (Sc::F16(a), Sc::F16(b)) => a.partial_cmp(&b),
        (Sc::BF16(a), Sc::BF16(b)) => a.partial_cmp(&b),
        (Sc::I(a), Sc::I(b)) => Some(a.cmp(&b)),
        (Sc::U(a), Sc::U(b)) => Some(a.cmp(&b)),
        (Sc::B(a), Sc::B(b)) => Some(a.cmp(&b)),
        _ => None,
    };
    match (op, ord) {
        (CmpOp::Ne, None) => true,
        (_, None) => false,
        (CmpOp::Eq, Some(o)) => o == Equal,
        (CmpOp::Ne, Some(o)) => o != Equal,
        (CmpOp::Lt, Some(o)) => o == Less,
        (CmpOp::Le, Some(o)) => o != Greater,
        (CmpOp::Gt, Some(o)) => o == Greater,
        (CmpOp::Ge, Some(o)) => o != Less,
    }
}


fn unary(op: UnOp, d: DType, x: Sc) -> R<Sc> {
    macro_rules! fl {
        ($x:expr, $t:ty, $ctor:path) => {{
            let v: $t = $x;
            Ok($ctor(match op {
                UnOp::Neg => -v,
                UnOp::Abs => v.abs(),
                UnOp::Sqrt => v.sqrt(),
                UnOp::Rsqrt => 1.0 / v.sqrt(),
                UnOp::Recip => 1.0 / v,
                UnOp::Exp => v.exp(),
                UnOp::Log => v.ln(),
                UnOp::Tanh => v.tanh(),
                UnOp::Erf => crate::interp::erf_f64(v as f64) as $t,
                UnOp::Sin => v.sin(),
                UnOp::Cos => v.cos(),
                UnOp::Tan => v.tan(),
                UnOp::Asin => v.asin(),
                UnOp::Acos => v.acos(),
                UnOp::Atan => v.atan(),
                UnOp::Sinh => v.sinh(),
                UnOp::Cosh => v.cosh(),
                UnOp::Asinh => v.asinh(),
                UnOp::Acosh => v.acosh(),
                UnOp::Atanh => v.atanh(),
                UnOp::Floor => v.floor(),
                UnOp::Ceil => v.ceil(),
                UnOp::Round => v.round_ties_even(),
                UnOp::Trunc => v.trunc(),
                UnOp::IsNan => return Ok(Sc::B(v.is_nan())),
                UnOp::IsInf => return Ok(Sc::B(v.is_infinite())),
                UnOp::Not => return Err(format!("not of {d}")),
            }))
        }};
    }
    match x {
        Sc::F32(v) => fl!(v, f32, Sc::F32),
        Sc::F64(v) => fl!(v, f64, Sc::F64),
        Sc::I(v) => Ok(Sc::I(wrap_i(
            d,
            match op {
                UnOp::Neg => v.wrapping_neg(),
                UnOp::Abs => v.wrapping_abs(),
                UnOp::Not => !v,
                UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc => v,
                _ => return Err(format!("{op:?} of {d}")),
            },
        ))),
        Sc::U(v) => Ok(Sc::U(wrap_u(
            d,
            match op {
                UnOp::Neg => v.wrapping_neg(),
                UnOp::Abs | UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc => v,
                UnOp::Not => !v,
                _ => return Err(format!("{op:?} of {d}")),
            },
        ))),
        Sc::B(v) => match op {
            UnOp::Not => Ok(Sc::B(!v)),
            _ => Err(format!("{op:?} of bool")),
        },
        Sc::F16(_) | Sc::BF16(_) => {
            Err(format!("{op:?} of {d}: f16/bf16 must be cast to f32 first"))
        }
    }
}

fn binary(op: BinOp, d: DType, x: Sc, y: Sc) -> R<Sc> {
    macro_rules! fl {
        ($a:expr, $b:expr, $ctor:path) => {{
            let (a, b) = ($a, $b);
            Ok($ctor(match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                BinOp::Rem => a % b,
                // NaN-propagating, like the graph interpreter's fmin/fmax.
                BinOp::Min => {
                    if a.is_nan() || a <= b {
                        a
                    } else {
                        b
                    }
                }
                BinOp::Max => {
                    if a.is_nan() || a >= b {
                        a
                    } else {
                        b
                    }
                }
                BinOp::Pow => a.powf(b),
                _ => return Err(format!("{op:?} of {d}")),
            }))
        }};
    }
    match (x, y) {
        (Sc::F32(a), Sc::F32(b)) => fl!(a, b, Sc::F32),
        (Sc::F64(a), Sc::F64(b)) => fl!(a, b, Sc::F64),
        (Sc::I(a), Sc::I(b)) => {
            let bits = d.bits() as i64;
            Ok(Sc::I(wrap_i(
                d,
                match op {
                    BinOp::Add => a.wrapping_add(b),
                    BinOp::Sub => a.wrapping_sub(b),
                    BinOp::Mul => a.wrapping_mul(b),
                    BinOp::Div | BinOp::Rem if b == 0 => {
                        return Err(format!("integer {op:?} by zero"))
                    }
                    BinOp::Div => a.wrapping_div(b),
                    BinOp::Rem => a.wrapping_rem(b),
                    BinOp::Min => a.min(b),
                    BinOp::Max => a.max(b),
                    BinOp::Pow => ipow(a, b),
                    BinOp::And => a & b,
                    BinOp::Or => a | b,
                    BinOp::Xor => a ^ b,
                    BinOp::Shl => {
                        if b < 0 || b >= bits {
                            0
                        } else {
                            a.wrapping_shl(b as u32)
                        }
                    }
                    BinOp::Shr => {
                        if b < 0 || b >= bits {
                            if a < 0 {
                                -1
                            } else {
                                0
                            }
                        } else {
                            a >> b
                        }
                    }
                },
            )))
        }
        (Sc::U(a), Sc::U(b)) => {
            let bits = d.bits() as u64;
            Ok(Sc::U(wrap_u(
                d,
                match op {
                    BinOp::Add => a.wrapping_add(b),
                    BinOp::Sub => a.wrapping_sub(b),
                    BinOp::Mul => a.wrapping_mul(b),
                    BinOp::Div | BinOp::Rem if b == 0 => {
                        return Err(format!("integer {op:?} by zero"))
                    }
                    BinOp::Div => a / b,
                    BinOp::Rem => a % b,
                    BinOp::Min => a.min(b),
                    BinOp::Max => a.max(b),
                    BinOp::Pow => ipow(a as i64, b as i64) as u64,
                    BinOp::And => a & b,
                    BinOp::Or => a | b,
                    BinOp::Xor => a ^ b,
                    BinOp::Shl => {
                        if b >= bits {
                            0
                        } else {
                            a << b
                        }
                    }
                    BinOp::Shr => {
                        if b >= bits {
                            0
                        } else {
                            a >> b
                        }
                    }
                },
            )))
        }
        (Sc::B(a), Sc::B(b)) => Ok(Sc::B(match op {
            BinOp::And | BinOp::Min | BinOp::Mul => a & b,
            BinOp::Or | BinOp::Max => a | b,
            BinOp::Xor => a ^ b,
            _ => return Err(format!("{op:?} of bool")),
        })),
        _ => Err(format!(
            "{op:?} of {d}: operands must be f32, f64, integers or bool"
        )),
    }
}

/// Wrapping integer power; negative exponents give 0 except for bases ±1.
fn ipow(a: i64, b: i64) -> i64 {
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
