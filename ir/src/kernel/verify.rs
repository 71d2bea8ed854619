//! The kernel-IR verifier.
//!
//! Requires nothing. Establishes, when it returns `Ok`: buffer ids are
//! `0..n` in order; inputs and outputs are numbered `0..k` without gaps;
//! constants match their declared dtype and shape; planned temps are aligned
//! and inside the arena; every kernel parameter is a program buffer, named
//! once; every load and store names a parameter (with a compatible access
//! mode) or a kernel-local `Alloc` in scope; every variable is bound exactly
//! once per kernel and used only in its scope; expressions are well typed
//! (see [`type_of`]); stores match the buffer's dtype; f16/bf16 values are
//! only loaded, stored and cast; `Barrier` only at the top level; and every
//! index whose range is statically known exactly (affine in distinct grid and
//! loop variables with constant bounds, no clamps, div/mod or data-dependent
//! parts) stays inside its buffer. Indices it cannot bound exactly are not
//! flagged (no false alarms); the interpreter bounds-checks them at run time.
//!
//! All problems are collected and reported together.

use super::*;
use std::collections::{HashMap, HashSet};

/// Checks every invariant listed in the module doc.
pub fn verify(p: &Program) -> Result<(), KernelError> {
    let mut errs = Vec::new();
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    for (i, b) in p.buffers.iter().enumerate() {
        if b.id.index() != i {
            errs.push(format!("buffer #{i} has id {}", b.id));
        }
        match &b.kind {
            BufKind::Input(k) => ins.push(*k),
            BufKind::Output(k) => outs.push(*k),
            BufKind::Const(t) => {
                if t.dtype() != b.dtype || t.numel() != b.len() {
                    errs.push(format!(
                        "{}: constant is {} but the buffer is {}{:?}",
                        b.id,
                        t.ty(),
                        b.dtype,
                        b.shape
                    ));
                }
            }
            BufKind::Temp { offset: Some(o) } => {
                if o % ARENA_ALIGN != 0 {
                    errs.push(format!(
                        "{}: arena offset {o} is not a multiple of {ARENA_ALIGN}",
                        b.id
                    ));
                }
                if o + b.bytes() > p.arena_bytes {
                    errs.push(format!(
                        "{}: [{o}, {}) is outside the {}-byte arena",
                        b.id,
                        o + b.bytes(),
                        p.arena_bytes
                    ));
                }
            }
            BufKind::Temp { offset: None } => {}
        }
    }
    for (what, mut v) in [("input", ins), ("output", outs)] {
        v.sort();
        if v.iter().enumerate().any(|(i, &k)| i != k) {
            errs.push(format!("{what} numbers {v:?} are not 0..{}", v.len()));
        }
    }
    let mut local_ids = HashSet::new();
    for k in &p.kernels {
        let mut kv = KernelVerifier {
            p,
            k,
            errs: Vec::new(),
            bound: HashSet::new(),
            locals: &mut local_ids,
        };
        kv.kernel();
        errs.extend(
            kv.errs
                .into_iter()
                .map(|e| format!("kernel `{}`: {e}", k.name)),
        );
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(KernelError::Verify {
            program: p.name.clone(),
            errors: errs,
        })
    }
}

/// What the verifier knows about a variable in scope.
#[derive(Clone, Copy, Debug)]
struct VarInfo {
    ty: Ty,
    mutable: bool,
    /// Inclusive range, for index variables with static bounds.
    range: Option<(i64, i64)>,
    /// Whether every value of `range` is taken.
    exact: bool,
}

/// A static index range (see `KernelVerifier::range`).
struct Range {
    lo: i64,
    hi: i64,
    exact: bool,
    vars: Vec<Var>,
}

struct KernelVerifier<'a> {
    p: &'a Program,
    k: &'a Kernel,
    errs: Vec<String>,
    bound: HashSet<Var>,
    locals: &'a mut HashSet<BufId>,
}

/// Scope: variables and local buffers (dtype, len) visible here.
#[derive(Clone, Default)]
struct Scope_ {
    vars: HashMap<Var, VarInfo>,
    bufs: HashMap<BufId, (DType, usize, Access)>,
}

impl KernelVerifier<'_> {
    fn kernel(&mut self) {
        let mut sc = Scope_::default();
        let mut seen = HashSet::new();
        for prm in &self.k.params {
            if !seen.insert(prm.buf) {
                self.errs
                    .push(format!("parameter {} is listed twice", prm.buf));
            }
            match self.p.buffer(prm.buf) {
                Some(b) => {
                    let ro = matches!(b.kind, BufKind::Input(_) | BufKind::Const(_));
                    if ro && prm.access != Access::Read {
                        self.errs.push(format!(
                            "parameter {} is read-only but declared {:?}",
                            prm.buf, prm.access
                        ));
                    }
                    sc.bufs.insert(prm.buf, (b.dtype, b.len(), prm.access));
                }
                None => self
                    .errs
                    .push(format!("parameter {} is not a program buffer", prm.buf)),
            }
        }
        for a in &self.k.grid {
            if a.extent == 0 {
                self.errs
                    .push(format!("parallel axis {} has extent 0", a.var));
            }
            self.bind(a.var);
            sc.vars.insert(
                a.var,
                VarInfo {
                    ty: Ty::INDEX,
                    mutable: false,
                    range: Some((0, a.extent as i64 - 1)),
                    exact: true,
                },
            );
        }
        let body = &self.k.body;
        self.block(body, &mut sc, true);
    }

    fn bind(&mut self, v: Var) {
        if !self.bound.insert(v) {
            self.errs.push(format!("{v} is bound more than once"));
        }
    }

    fn block(&mut self, ss: &[Stmt], outer: &mut Scope_, top: bool) {
        let mut sc = outer.clone();
        for s in ss {
            self.stmt(s, &mut sc, top);
        }
    }

    fn stmt(&mut self, s: &Stmt, sc: &mut Scope_, top: bool) {
        match s {
            Stmt::For {
                var,
                start,
                end,
                step,
                body,
            } => {
                if *step <= 0 {
                    self.errs.push(format!("loop {var} has step {step}"));
                }
                let r0 = self.range(start, sc);
                let r1 = self.range(end, sc);
                self.bind(*var);
                let mut inner = sc.clone();
                // Exact when both bounds are constants: the values are
                // start, start+step, ..., the last one below end.
                let (range, exact) = match (r0, r1) {
                    (Some(a), Some(b))
                        if a.lo == a.hi && b.lo == b.hi && b.lo > a.lo && *step > 0 =>
                    {
                        (Some((a.lo, a.lo + (b.lo - 1 - a.lo) / step * step)), true)
                    }
                    (Some(a), Some(b)) if b.hi > a.lo => (Some((a.lo, b.hi - 1)), false),
                    _ => (None, false),
                };
                inner.vars.insert(
                    *var,
                    VarInfo {
                        ty: Ty::INDEX,
                        mutable: false,
                        range,
                        exact,
                    },
                );
                self.block(body, &mut inner, false);
            }
            Stmt::Let { var, value } => {
                let ty = self.expr(value, sc);
                self.bind(*var);
                if let Some(ty) = ty {
                    sc.vars.insert(
                        *var,
                        VarInfo {
                            ty,
                            mutable: false,
                            range: None,
                            exact: false,
                        },
                    );
                }
            }
            Stmt::Local { var, ty, init } => {
                if let Some(t) = self.expr(init, sc) {
                    if t != *ty {
                        self.errs
                            .push(format!("local {var} of {ty} is initialised with a {t}"));
                    }
                }
                self.bind(*var);
                sc.vars.insert(
                    *var,
                    VarInfo {
                        ty: *ty,
                        mutable: true,
                        range: None,
                        exact: false,
                    },
                );
            }
            Stmt::Assign { var, value } => {
                let t = self.expr(value, sc);
                match sc.vars.get(var) {
                    None => self
                        .errs
                        .push(format!("assignment to {var}, which is not in scope")),
                    Some(i) if !i.mutable => self
                        .errs
                        .push(format!("assignment to {var}, which is not a local")),
                    Some(i) => {
                        if let Some(t) = t {
                            if t != i.ty {
                                self.errs
                                    .push(format!("assignment of a {t} to {var} of {}", i.ty));
                            }
                        }
                    }
                }
            }
            Stmt::Store { buf, index, value } => {
                let t = self.expr(value, sc);
                let r = self.exact_range(index, sc);
                match sc.bufs.get(buf).copied() {
                    None => self.errs.push(format!(
                        "store to {buf}, which is not a parameter or local buffer in scope"
                    )),
                    Some((d, len, acc)) => {
                        if acc == Access::Read {
                            self.errs
                                .push(format!("store to {buf}, a read-only parameter"));
                        }
                        if let Some(t) = t {
                            if t.dtype != d {
                                self.errs.push(format!("store of a {t} into {buf} of {d}"));
                            }
                            self.bounds("store", *buf, r, t.lanes, len);
                        }
                    }
                }
            }
            Stmt::If { cond, then, els } => {
                if let Some(t) = self.expr(cond, sc) {
                    if t != Ty::BOOL {
                        self.errs.push(format!("if condition is a {t}, not bool"));
                    }
                }
                self.block(then, sc, false);
                self.block(els, sc, false);
            }
            Stmt::Barrier => {
                if !top {
                    self.errs
                        .push("barrier below the top level of the kernel".to_string());
                }
            }
            Stmt::Alloc {
                buf,
                scope,
                dtype,
                len,
            } => {
                if buf.index() < self.p.buffers.len() {
                    self.errs
                        .push(format!("alloc {buf} reuses a program buffer id"));
                }
                if !self.locals.insert(*buf) {
                    self.errs.push(format!(
                        "alloc {buf} is declared more than once in the program"
                    ));
                }
                if *scope == Scope::Shared
                    && !self.k.grid.iter().any(|a| a.level == ParLevel::Block)
                {
                    // Allowed (it is then private to the grid point), but say nothing.
                }
                sc.bufs.insert(*buf, (*dtype, *len, Access::ReadWrite));
            }
            Stmt::TileMatMul(t) => {
                self.index(&t.k, sc);
                match sc.bufs.get(&t.acc) {
                    Some((DType::F32, len, _)) if *len >= (t.m * t.n) as usize => {}
                    Some((d, len, _)) => self.errs.push(format!(
                        "tile accumulator {} is {d}[{len}], needs f32[{}]",
                        t.acc,
                        t.m * t.n
                    )),
                    None => self
                        .errs
                        .push(format!("tile accumulator {} is not in scope", t.acc)),
                }
                for o in [&t.a, &t.b] {
                    self.index(&o.base, sc);
                    match sc.bufs.get(&o.buf) {
                        Some((d, ..)) if d.is_float() => {}
                        Some((d, ..)) => self
                            .errs
                            .push(format!("tile operand {} is {d}, not a float", o.buf)),
                        None => self
                            .errs
                            .push(format!("tile operand {} is not in scope", o.buf)),
                    }
                }
            }
        }
    }

    /// The range of an index when it is exact (see `range`).
    fn exact_range(&mut self, e: &IndexExpr, sc: &Scope_) -> Option<(i64, i64)> {
        self.range(e, sc).filter(|r| r.exact).map(|r| (r.lo, r.hi))
    }

    fn bounds(&mut self, what: &str, buf: BufId, r: Option<(i64, i64)>, lanes: u32, len: usize) {
        if let Some((lo, hi)) = r {
            if lo < 0 || hi + lanes as i64 > len as i64 {
                self.errs.push(format!(
                    "{what} of {lanes} lane(s) at {buf}[{lo}..={hi}] can leave the buffer (length {len})"
                ));
            }
        }
    }

    /// Checks an index expression; returns its static range when known.
    fn index(&mut self, e: &IndexExpr, sc: &Scope_) -> Option<(i64, i64)> {
        self.range(e, sc).map(|r| (r.lo, r.hi))
    }

    /// The static range of an index expression, and whether it is exact
    /// (affine in distinct variables with exact ranges: every value in the
    /// range is reached). Bounds are only enforced for exact ranges, so
    /// clamps (`min`, `max`), `div`/`mod` and data-dependent indices never
    /// produce false alarms.
    fn range(&mut self, e: &IndexExpr, sc: &Scope_) -> Option<Range> {
        match e {
            IndexExpr::Const(c) => Some(Range {
                lo: *c,
                hi: *c,
                exact: true,
                vars: Vec::new(),
            }),
            IndexExpr::Var(v) => match sc.vars.get(v) {
                None => {
                    self.errs.push(format!("{v} is used out of scope"));
                    None
                }
                Some(i) if !i.ty.dtype.is_int() || i.ty.lanes != 1 => {
                    self.errs
                        .push(format!("{v} is a {} and cannot be an index", i.ty));
                    None
                }
                Some(i) => i.range.map(|(lo, hi)| Range {
                    lo,
                    hi,
                    exact: i.exact,
                    vars: vec![*v],
                }),
            },
            IndexExpr::Add(a, b) => {
                let (x, y) = (self.range(a, sc), self.range(b, sc));
                let (x, y) = (x?, y?);
                let disjoint = x.vars.iter().all(|v| !y.vars.contains(v));
                let mut vars = x.vars;
                vars.extend(y.vars);
                Some(Range {
                    lo: x.lo + y.lo,
                    hi: x.hi + y.hi,
                    exact: x.exact && y.exact && disjoint,
                    vars,
                })
            }
            IndexExpr::Mul(a, k) => {
                let r = self.range(a, sc)?;
                let (lo, hi) = if *k >= 0 {
                    (r.lo * k, r.hi * k)
                } else {
                    (r.hi * k, r.lo * k)
                };
                Some(Range {
                    lo,
                    hi,
                    exact: r.exact,
                    vars: r.vars,
                })
            }
            IndexExpr::Div(a, k) | IndexExpr::Mod(a, k) => {
                let r = self.range(a, sc);
                if *k <= 0 {
                    self.errs
                        .push(format!("index division or remainder by {k}"));
                    return None;
                }
                let r = r?;
                let (lo, hi) = if matches!(e, IndexExpr::Div(..)) {
                    (r.lo.div_euclid(*k), r.hi.div_euclid(*k))
                } else if r.lo >= 0 && r.hi < *k {
                    (r.lo, r.hi)
                } else {
                    (0, k - 1)
                };
                Some(Range {
                    lo,
                    hi,
                    exact: false,
                    vars: r.vars,
                })
            }
            IndexExpr::Min(a, b) | IndexExpr::Max(a, b) => {
                let (x, y) = (self.range(a, sc), self.range(b, sc));
                let (x, y) = (x?, y?);
                let (lo, hi) = if matches!(e, IndexExpr::Min(..)) {
                    (x.lo.min(y.lo), x.hi.min(y.hi))
                } else {
                    (x.lo.max(y.lo), x.hi.max(y.hi))
                };
                let mut vars = x.vars;
                vars.extend(y.vars);
                Some(Range {
                    lo,
                    hi,
                    exact: false,
                    vars,
                })
            }
            IndexExpr::Dyn(x) => {
                if let Some(t) = self.expr(x, sc) {
                    if !(t.dtype.is_int() || t.dtype == DType::Bool) || t.lanes != 1 {
                        self.errs
                            .push(format!("dynamic index is a {t}, not a scalar integer"));
                    }
                }
                None
            }
        }
    }

    fn expr(&mut self, e: &Expr, sc: &Scope_) -> Option<Ty> {
        // Check nested indices (bounds, scopes) first, then the types.
        self.walk_indices(e, sc);
        let vars = |v: Var| sc.vars.get(&v).map(|i| i.ty);
        let bufs = |b: BufId| sc.bufs.get(&b).map(|x| x.0);
        match type_of(e, &vars, &bufs) {
            Ok(t) => Some(t),
            Err(m) => {
                self.errs.push(m);
                None
            }
        }
    }

    fn walk_indices(&mut self, e: &Expr, sc: &Scope_) {
        match e {
            Expr::Index(ix) => {
                self.index(ix, sc);
            }
            Expr::Load { buf, index, lanes } => {
                let r = self.exact_range(index, sc);
                match sc.bufs.get(buf).copied() {
                    None => self.errs.push(format!(
                        "load from {buf}, which is not a parameter or local buffer in scope"
                    )),
                    Some((_, len, acc)) => {
                        if acc == Access::Write {
                            self.errs
                                .push(format!("load from {buf}, a write-only parameter"));
                        }
                        self.bounds("load", *buf, r, *lanes, len);
                    }
                }
            }
            Expr::Var(_) | Expr::Float { .. } | Expr::Int { .. } => {}
            Expr::Unary { arg, .. }
            | Expr::Cast { arg, .. }
            | Expr::Splat { arg, .. }
            | Expr::ReduceLanes { arg, .. } => self.walk_indices(arg, sc),
            Expr::Binary { lhs, rhs, .. } | Expr::Cmp { lhs, rhs, .. } => {
                self.walk_indices(lhs, sc);
                self.walk_indices(rhs, sc);
            }
            Expr::Fma { a, b, c } => {
                self.walk_indices(a, sc);
                self.walk_indices(b, sc);
                self.walk_indices(c, sc);
            }
            Expr::Select { cond, then, els } => {
                self.walk_indices(cond, sc);
                self.walk_indices(then, sc);
                self.walk_indices(els, sc);
            }
        }
    }
}

fn is_half(d: DType) -> bool {
    matches!(d, DType::F16 | DType::BF16)
}

/// The type of an expression, given the types of the variables and the
/// dtypes of the buffers in scope. This is the kernel IR's type system;
/// backends may call it to type sub-expressions.
pub fn type_of(
    e: &Expr,
    vars: &dyn Fn(Var) -> Option<Ty>,
    bufs: &dyn Fn(BufId) -> Option<DType>,
) -> Result<Ty, String> {
    let t = |x: &Expr| type_of(x, vars, bufs);
    match e {
        Expr::Float { dtype, .. } => {
            if matches!(dtype, DType::F32 | DType::F64) {
                Ok(Ty::scalar(*dtype))
            } else {
                Err(format!("float constant of {dtype} (only f32 and f64)"))
            }
        }
        Expr::Int { dtype, .. } => {
            if dtype.is_int() || *dtype == DType::Bool {
                Ok(Ty::scalar(*dtype))
            } else {
                Err(format!("integer constant of {dtype}"))
            }
        }
        Expr::Var(v) => vars(*v).ok_or_else(|| format!("{v} is used out of scope")),
        Expr::Index(_) => Ok(Ty::INDEX),
        Expr::Load { buf, lanes, .. } => {
            if *lanes == 0 {
                return Err(format!("load of 0 lanes from {buf}"));
            }
            bufs(*buf)
                .map(|d| Ty::vector(d, *lanes))
                .ok_or_else(|| format!("load from unknown buffer {buf}"))
        }
        Expr::Unary { op, arg } => {
            let a = t(arg)?;
            let d = a.dtype;
            let ok = match op {
                UnOp::Neg | UnOp::Abs | UnOp::Floor | UnOp::Ceil | UnOp::Round | UnOp::Trunc => {
                    d.is_numeric() && !is_half(d)
                }
                UnOp::Not => d.is_int() || d == DType::Bool,
                _ => matches!(d, DType::F32 | DType::F64),
            };
            if !ok {
                return Err(format!("{op:?} of a {a}"));
            }
            Ok(match op {
                UnOp::IsNan | UnOp::IsInf => Ty::vector(DType::Bool, a.lanes),
                _ => a,
            })
        }
        Expr::Binary { op, lhs, rhs } => {
            let (a, b) = (t(lhs)?, t(rhs)?);
            if a != b {
                return Err(format!("{op:?} of a {a} and a {b}"));
            }
            let d = a.dtype;
            let ok = match op {
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem | BinOp::Pow => {
                    d.is_numeric() && !is_half(d)
                }
                BinOp::Min | BinOp::Max => !is_half(d),
                BinOp::And | BinOp::Or | BinOp::Xor => d.is_int() || d == DType::Bool,
                BinOp::Shl | BinOp::Shr => d.is_int(),
            };
            if ok {
                Ok(a)
            } else {
                Err(format!("{op:?} of {a}"))
            }
        }
        Expr::Fma { a, b, c } => {
            let (x, y, z) = (t(a)?, t(b)?, t(c)?);
            if x != y || x != z || !matches!(x.dtype, DType::F32 | DType::F64) {
                return Err(format!("fma of {x}, {y} and {z}"));
            }
            Ok(x)
        }
        Expr::Cmp { op, lhs, rhs } => {
            let (a, b) = (t(lhs)?, t(rhs)?);
            if a != b || is_half(a.dtype) {
                return Err(format!("{op:?} of a {a} and a {b}"));
            }
            Ok(Ty::vector(DType::Bool, a.lanes))
        }
        Expr::Select { cond, then, els } => {
            let (c, a, b) = (t(cond)?, t(then)?, t(els)?);
            if a != b || c.dtype != DType::Bool || (c.lanes != 1 && c.lanes != a.lanes) {
                return Err(format!("select({c}, {a}, {b})"));
            }
            Ok(a)
        }
        Expr::Cast { to, arg } => {
            let a = t(arg)?;
            if (is_half(a.dtype) && *to != DType::F32 && *to != a.dtype)
                || (is_half(*to) && a.dtype != DType::F32 && a.dtype != *to)
            {
                return Err(format!(
                    "cast of a {a} to {to}: f16/bf16 convert only to and from f32"
                ));
            }
            Ok(Ty::vector(*to, a.lanes))
        }
        Expr::Splat { lanes, arg } => {
            let a = t(arg)?;
            if a.lanes != 1 || *lanes == 0 {
                return Err(format!("splat of a {a} to {lanes} lanes"));
            }
            Ok(Ty::vector(a.dtype, *lanes))
        }
        Expr::ReduceLanes { op, arg } => {
            let a = t(arg)?;
            if is_half(a.dtype) || (a.dtype == DType::Bool && matches!(op, LaneOp::Add)) {
                return Err(format!("{op:?} over the lanes of a {a}"));
            }
            Ok(Ty::scalar(a.dtype))
        }
    }
}
