//! The kernel IR: loop programs that the backends (Cranelift now; LLVM and PTX
//! later) compile, and that [`interp`] executes as the backend-independent oracle.
//!
//! A [`Program`] is a list of [`Buffer`]s (graph inputs, graph outputs,
//! constants and temporaries) and an ordered list of [`Kernel`]s that run one
//! after the other. A kernel reads and writes buffers through flat, row-major
//! element indices; it has a grid of parallel axes ([`ParAxis`]) and a body of
//! statements ([`Stmt`]) that runs once per grid point.
//!
//! # Design rules (what every producer guarantees, what every backend may assume)
//!
//! - **Grid points are independent.** For [`ParLevel::Grid`] axes, no two grid
//!   points write the same element, and no grid point reads an element another
//!   writes. A CPU backend may split the outermost grid axis (or the flattened
//!   grid) over threads in any order; a GPU backend maps grid axes to
//!   `blockIdx`. [`ParLevel::Block`] axes (GPU `threadIdx`) may share
//!   [`Scope::Shared`] memory and synchronise with [`Stmt::Barrier`], which is
//!   only allowed at the top level of a kernel body.
//! - **Types.** Every expression has a [`Ty`]: a [`DType`] and a lane count
//!   (1 = scalar). Index arithmetic ([`IndexExpr`], loop and grid variables) is
//!   `i64`. **f16 and bf16 are storage types only**: a load of an f16 buffer
//!   yields f16 values, which must be [`Expr::Cast`] to f32 before any
//!   arithmetic, and a store into an f16 buffer takes f16 values (Cast from f32
//!   rounds to nearest even). Integer arithmetic wraps; integer division and
//!   remainder truncate toward zero (division by zero is an error in the
//!   interpreter and undefined in compiled code). Comparisons yield `bool`.
//! - **Vectors.** A load or store of `lanes > 1` touches `lanes` consecutive
//!   elements starting at its index. Scalars are widened with [`Expr::Splat`];
//!   [`Expr::ReduceLanes`] folds lanes horizontally (in lane order).
//! - **Variables** ([`Var`], printed `v3`) are bound exactly once per kernel:
//!   by a grid axis, a [`Stmt::For`], a [`Stmt::Let`] (immutable) or a
//!   [`Stmt::Local`] (mutable, updated by [`Stmt::Assign`]). A variable is
//!   visible in the statements after its binding in the same block and in
//!   nested blocks; loop variables only inside their loop.
//! - **Buffers** ([`BufId`], printed `b3`): ids `0..buffers.len()` are the
//!   program's; a [`Stmt::Alloc`] declares a kernel-local buffer (registers,
//!   shared memory or a private scratch array) with an id of its own, unique
//!   in the program and not below `buffers.len()`.
//!
//! # Stability
//!
//! The Cranelift backend is written against these types. Changes are
//! additive only: new enum variants (backends reject what they do not know
//! with an error naming it) and new fields with defaults never change the
//! meaning of an existing program.
//!
//! The text form is in [`text`] (print and parse round-trip exactly), the
//! checks in [`verify`], the interpreter in [`interp`].

pub mod interp;
pub mod text;
pub mod verify;

use crate::{DType, Tensor};
use std::fmt;

/// A buffer: a program buffer (`0..Program::buffers.len()`) or a kernel-local
/// [`Stmt::Alloc`]. Printed `bN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

impl BufId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for BufId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}", self.0)
    }
}

/// A variable of a kernel (grid index, loop index, let or local). Printed `vN`.
/// Numbering is per kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// The type of a kernel-IR value: an element type and a lane count.
/// Printed `f32` for a scalar, `f32x4` for four lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ty {
    pub dtype: DType,
    /// 1 for a scalar; otherwise the vector width.
    pub lanes: u32,
}

impl Ty {
    pub fn scalar(dtype: DType) -> Ty {
        Ty { dtype, lanes: 1 }
    }
    pub fn vector(dtype: DType, lanes: u32) -> Ty {
        Ty { dtype, lanes }
    }
    /// The type of index arithmetic and loop variables: scalar `i64`.
    pub const INDEX: Ty = Ty {
        dtype: DType::I64,
        lanes: 1,
    };
    /// Scalar `bool`.
    pub const BOOL: Ty = Ty {
        dtype: DType::Bool,
        lanes: 1,
    };
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lanes == 1 {
            write!(f, "{}", self.dtype)
        } else {
            write!(f, "{}x{}", self.dtype, self.lanes)
        }
    }
}

/// What a program buffer holds and where its storage comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum BufKind {
    /// The program's `i`-th input tensor (caller-owned, read only).
    Input(usize),
    /// The program's `i`-th output tensor (written by the kernels).
    Output(usize),
    /// A compile-time constant (graph initializer, or a repacked copy such as
    /// a MatMul weight in panel layout). Its shape is the buffer's.
    Const(Tensor),
    /// A temporary in the arena. `offset` is its byte offset there, assigned
    /// by the memory planner (`None` before planning: the runtime or the
    /// interpreter then gives it storage of its own).
    Temp { offset: Option<usize> },
}

/// A program buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub id: BufId,
    /// Source value name (ONNX) for dumps and errors, if any.
    pub name: Option<String>,
    pub dtype: DType,
    /// Logical shape (row-major); kernels index the flat element array of
    /// `shape.product()` elements. Outputs are returned with this shape.
    pub shape: Vec<usize>,
    pub kind: BufKind,
}

impl Buffer {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size in bytes (`len * dtype.size_bytes()`).
    pub fn bytes(&self) -> usize {
        self.len() * self.dtype.size_bytes()
    }
}

/// A lowered program: buffers and the kernels that run, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub name: String,
    /// `buffers[i].id == BufId(i)`.
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    /// Size in bytes of the arena that holds every [`BufKind::Temp`] buffer
    /// at its planned offset (0 before memory planning). Offsets and this
    /// size are multiples of [`ARENA_ALIGN`].
    pub arena_bytes: usize,
}

/// Alignment in bytes of every planned arena offset (a cache line; also
/// enough for any vector load).
pub const ARENA_ALIGN: usize = 64;

impl Program {
    pub fn buffer(&self, b: BufId) -> Option<&Buffer> {
        self.buffers.get(b.index())
    }

    /// Input buffers in input order.
    pub fn inputs(&self) -> Vec<BufId> {
        self.by_kind(|k| match k {
            BufKind::Input(i) => Some(*i),
            _ => None,
        })
    }

    /// Output buffers in output order.
    pub fn outputs(&self) -> Vec<BufId> {
        self.by_kind(|k| match k {
            BufKind::Output(i) => Some(*i),
            _ => None,
        })
    }

    fn by_kind(&self, f: impl Fn(&BufKind) -> Option<usize>) -> Vec<BufId> {
        let mut v: Vec<(usize, BufId)> = self
            .buffers
            .iter()
            .filter_map(|b| f(&b.kind).map(|i| (i, b.id)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, b)| b).collect()
    }
}

/// How a kernel uses a parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

/// A kernel parameter: a program buffer the kernel reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    pub buf: BufId,
    pub access: Access,
}

/// The level a parallel axis maps to on a GPU. CPU backends run every level
/// as loops or threads; only `Block` axes may cooperate through shared memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParLevel {
    /// Independent iterations (CPU threads; GPU `blockIdx`).
    Grid,
    /// Cooperating threads of one grid point (GPU `threadIdx`), which may use
    /// [`Scope::Shared`] buffers and [`Stmt::Barrier`].
    Block,
}

/// A parallel axis: `var` takes every value in `0..extent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParAxis {
    pub var: Var,
    pub extent: u64,
    pub level: ParLevel,
}

/// One kernel: the body runs once per point of the grid (the product of the
/// parallel axes, outermost first).
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Provenance: the graph node (its name) this kernel came from.
    pub name: String,
    /// The program buffers it touches, each once.
    pub params: Vec<Param>,
    /// Parallel axes, outermost first (may be empty: one invocation).
    pub grid: Vec<ParAxis>,
    pub body: Vec<Stmt>,
}

/// Memory scope of a kernel-local buffer ([`Stmt::Alloc`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Global memory with the kernel's lifetime, one copy per grid point.
    Global,
    /// Shared by the `Block` threads of one grid point (GPU shared memory).
    Shared,
    /// Private to one thread (registers or stack).
    Private,
}

/// An integer index expression (`i64`), affine in variables where possible so
/// that it can be analysed: bounds, strides, contiguity.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexExpr {
    Const(i64),
    /// A grid or loop variable, or an `i64` scalar let/local.
    Var(Var),
    Add(Box<IndexExpr>, Box<IndexExpr>),
    /// Multiplication by a constant.
    Mul(Box<IndexExpr>, i64),
    /// Floor division by a positive constant (operands are non-negative in
    /// well-formed programs).
    Div(Box<IndexExpr>, i64),
    /// Remainder by a positive constant.
    Mod(Box<IndexExpr>, i64),
    Min(Box<IndexExpr>, Box<IndexExpr>),
    Max(Box<IndexExpr>, Box<IndexExpr>),
    /// A data-dependent index: a scalar integer expression (Gather indices),
    /// widened to i64. Not affine; the verifier cannot bound it statically.
    Dyn(Box<Expr>),
}

impl IndexExpr {
    pub fn var(v: Var) -> IndexExpr {
        IndexExpr::Var(v)
    }
    pub fn c(n: i64) -> IndexExpr {
        IndexExpr::Const(n)
    }
    /// `self + rhs`, folding constants.
    pub fn add(self, rhs: IndexExpr) -> IndexExpr {
        match (self, rhs) {
            (IndexExpr::Const(0), r) => r,
            (l, IndexExpr::Const(0)) => l,
            (IndexExpr::Const(a), IndexExpr::Const(b)) => IndexExpr::Const(a + b),
            (l, r) => IndexExpr::Add(Box::new(l), Box::new(r)),
        }
    }
    /// `self * k`, folding constants.
    pub fn mul(self, k: i64) -> IndexExpr {
        match (self, k) {
            (_, 0) => IndexExpr::Const(0),
            (e, 1) => e,
            (IndexExpr::Const(a), k) => IndexExpr::Const(a * k),
            (e, k) => IndexExpr::Mul(Box::new(e), k),
        }
    }
    /// `self / k` (floor, k > 0).
    pub fn div(self, k: i64) -> IndexExpr {
        match (self, k) {
            (e, 1) => e,
            (IndexExpr::Const(a), k) => IndexExpr::Const(a.div_euclid(k)),
            (e, k) => IndexExpr::Div(Box::new(e), k),
        }
    }
    /// `self % k` (k > 0).
    pub fn rem(self, k: i64) -> IndexExpr {
        match (self, k) {
            (_, 1) => IndexExpr::Const(0),
            (IndexExpr::Const(a), k) => IndexExpr::Const(a.rem_euclid(k)),
            (e, k) => IndexExpr::Mod(Box::new(e), k),
        }
    }
    pub fn min(self, rhs: IndexExpr) -> IndexExpr {
        match (self, rhs) {
            (IndexExpr::Const(a), IndexExpr::Const(b)) => IndexExpr::Const(a.min(b)),
            (l, r) => IndexExpr::Min(Box::new(l), Box::new(r)),
        }
    }
    pub fn max(self, rhs: IndexExpr) -> IndexExpr {
        match (self, rhs) {
            (IndexExpr::Const(a), IndexExpr::Const(b)) => IndexExpr::Const(a.max(b)),
            (l, r) => IndexExpr::Max(Box::new(l), Box::new(r)),
        }
    }
    /// The constant value, if the expression is a constant.
    pub fn as_const(&self) -> Option<i64> {
        match self {
            IndexExpr::Const(c) => Some(*c),
            _ => None,
        }
    }
}

/// Unary operations. Float ops apply to f32/f64; integer ops to integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// Negation (wrapping for integers).
    Neg,
    Abs,
    Sqrt,
    /// `1 / sqrt(x)` (exactly that expression; no approximation).
    Rsqrt,
    /// `1 / x`.
    Recip,
    Exp,
    Log,
    Tanh,
    Erf,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Trunc,
    /// Logical not on bool, bitwise not on integers.
    Not,
    /// Float -> bool.
    IsNan,
    /// Float -> bool: `±inf`.
    IsInf,
}

/// Binary operations; both operands have the same type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// Float division; integer division truncating toward zero.
    Div,
    /// Remainder with the sign of the dividend (C `%`, Rust `%`, `fmod`).
    Rem,
    /// Minimum; NaN if either float operand is NaN.
    Min,
    /// Maximum; NaN if either float operand is NaN.
    Max,
    /// `powf` for floats; wrapping integer power (exponent < 0 gives 0 unless base is ±1).
    Pow,
    /// Logical on bool, bitwise on integers.
    And,
    Or,
    Xor,
    /// Shift left (integers; shift amounts >= bit width give 0).
    Shl,
    /// Logical shift right for unsigned, arithmetic for signed (>= width: 0 or sign).
    Shr,
}

/// Comparisons: ordered (false if either float operand is NaN) except `Ne`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Horizontal reductions over the lanes of a vector ([`Expr::ReduceLanes`]),
/// folded left to right in lane order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaneOp {
    Add,
    Mul,
    Min,
    Max,
}

/// A typed value expression. Pure (no side effects); a load reads memory as
/// it is at the point of evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A float constant of `dtype` (f32 or f64), stored as f64 (exact for f32).
    Float {
        dtype: DType,
        value: f64,
    },
    /// An integer or bool constant of `dtype`; u64 values are stored as their
    /// bit pattern; bool is 0 or 1.
    Int {
        dtype: DType,
        value: i64,
    },
    /// A variable's current value.
    Var(Var),
    /// An index expression as an `i64` value.
    Index(IndexExpr),
    /// `lanes` consecutive elements of `buf` starting at `index`.
    Load {
        buf: BufId,
        index: IndexExpr,
        lanes: u32,
    },
    Unary {
        op: UnOp,
        arg: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// `a * b + c`, fused (one rounding) where the backend can; the
    /// interpreter rounds once (computes in f64 for f32).
    Fma {
        a: Box<Expr>,
        b: Box<Expr>,
        c: Box<Expr>,
    },
    /// Comparison of two operands of one type; bool result with the same lanes.
    Cmp {
        op: CmpOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    /// Lane-wise `cond ? then : else`; `cond` is bool with the same lanes
    /// (or scalar bool, selecting whole values).
    Select {
        cond: Box<Expr>,
        then: Box<Expr>,
        els: Box<Expr>,
    },
    /// Conversion to `to` (same lanes). Float→int truncates and saturates
    /// (NaN → 0); int→int wraps; →bool is `x != 0`; bool→x is 0/1;
    /// f32→f16/bf16 rounds to nearest even.
    Cast {
        to: DType,
        arg: Box<Expr>,
    },
    /// A scalar repeated over `lanes` lanes.
    Splat {
        lanes: u32,
        arg: Box<Expr>,
    },
    /// Horizontal fold of a vector's lanes to a scalar.
    ReduceLanes {
        op: LaneOp,
        arg: Box<Expr>,
    },
}

impl Expr {
    pub fn f32(v: f32) -> Expr {
        Expr::Float {
            dtype: DType::F32,
            value: v as f64,
        }
    }
    pub fn float(dtype: DType, v: f64) -> Expr {
        Expr::Float { dtype, value: v }
    }
    pub fn int(dtype: DType, v: i64) -> Expr {
        Expr::Int { dtype, value: v }
    }
    pub fn var(v: Var) -> Expr {
        Expr::Var(v)
    }
    pub fn load(buf: BufId, index: IndexExpr, lanes: u32) -> Expr {
        Expr::Load { buf, index, lanes }
    }
    pub fn unary(op: UnOp, arg: Expr) -> Expr {
        Expr::Unary {
            op,
            arg: Box::new(arg),
        }
    }
    pub fn binary(op: BinOp, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        }
    }
    pub fn cmp(op: CmpOp, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Cmp {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        }
    }
    pub fn select(cond: Expr, then: Expr, els: Expr) -> Expr {
        Expr::Select {
            cond: Box::new(cond),
            then: Box::new(then),
            els: Box::new(els),
        }
    }
    pub fn cast(to: DType, arg: Expr) -> Expr {
        Expr::Cast {
            to,
            arg: Box::new(arg),
        }
    }
    pub fn splat(lanes: u32, arg: Expr) -> Expr {
        if lanes == 1 {
            arg
        } else {
            Expr::Splat {
                lanes,
                arg: Box::new(arg),
            }
        }
    }
    pub fn fma(a: Expr, b: Expr, c: Expr) -> Expr {
        Expr::Fma {
            a: Box::new(a),
            b: Box::new(b),
            c: Box::new(c),
        }
    }
    pub fn reduce_lanes(op: LaneOp, arg: Expr) -> Expr {
        Expr::ReduceLanes {
            op,
            arg: Box::new(arg),
        }
    }
}

/// A register-tile matrix multiply-accumulate:
/// `acc[i*n + j] += sum_{p < k} A(i, p) * B(p, j)` for `i < m`, `j < n`,
/// with `A(i, p) = a.buf[a.base + i*a.row_stride + p*a.col_stride]` and
/// `B(p, j) = b.buf[b.base + p*b.row_stride + j*b.col_stride]`.
/// `acc` is an f32 [`Scope::Private`] buffer of at least `m*n` elements; A and
/// B elements are converted to f32 (f16/bf16 exactly). Each `acc` element
/// accumulates in `p` order with fused multiply-adds. A CPU backend keeps the
/// tile in vector registers for the whole `k` loop; a GPU backend may use
/// `mma.sync` when `m`, `n` and `k` fit its shapes.
#[derive(Clone, Debug, PartialEq)]
pub struct TileMatMul {
    pub m: u32,
    pub n: u32,
    /// Reduction length (may depend on loop variables).
    pub k: IndexExpr,
    pub acc: BufId,
    pub a: TileOperand,
    pub b: TileOperand,
}

/// A strided 2-D view into a buffer, for [`TileMatMul`].
#[derive(Clone, Debug, PartialEq)]
pub struct TileOperand {
    pub buf: BufId,
    pub base: IndexExpr,
    pub row_stride: i64,
    pub col_stride: i64,
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for var in (start..end).step_by(step)`: runs the body with `var` bound
    /// to `start, start+step, ...` while `< end`. `step > 0`. Iterations run in
    /// order (a backend may unroll or vectorise only when that is invisible).
    For {
        var: Var,
        start: IndexExpr,
        end: IndexExpr,
        step: i64,
        body: Vec<Stmt>,
    },
    /// Binds an immutable variable.
    Let { var: Var, value: Expr },
    /// Declares a mutable variable with its type and initial value.
    Local { var: Var, ty: Ty, init: Expr },
    /// Updates a [`Stmt::Local`] (the value must have its type). Reductions
    /// and accumulators are written as Local + Assign.
    Assign { var: Var, value: Expr },
    /// Writes `lanes(value)` consecutive elements of `buf` at `index`; the
    /// value's dtype must be the buffer's.
    Store {
        buf: BufId,
        index: IndexExpr,
        value: Expr,
    },
    If {
        cond: Expr,
        then: Vec<Stmt>,
        els: Vec<Stmt>,
    },
    /// Synchronises the `Block` threads of a grid point (top level only).
    Barrier,
    /// A kernel-local buffer of `len` elements of `dtype`, zero-initialised,
    /// live from here to the end of the enclosing block.
    Alloc {
        buf: BufId,
        scope: Scope,
        dtype: DType,
        len: usize,
    },
    /// See [`TileMatMul`].
    TileMatMul(TileMatMul),
}

/// A kernel-IR error: what is wrong, and where (kernel name, statement).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The program breaks an invariant (the verifier lists them all).
    #[error("kernel program `{program}` failed verification:\n{}", .errors.join("\n"))]
    Verify {
        program: String,
        errors: Vec<String>,
    },
    /// Text-form syntax error.
    #[error("{line}:{col}: {msg}")]
    Parse {
        line: usize,
        col: usize,
        msg: String,
    },
    /// A runtime failure in the interpreter (out-of-bounds access, division by
    /// zero, wrong inputs), naming the kernel.
    #[error("kernel `{kernel}`: {msg}")]
    Run { kernel: String, msg: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every construct of the IR: block axes, barrier, shared and private
    /// allocs, tile matmul, vectors, locals, NaN constants, dyn indices.
    const SRC: &str = r#"
program "all" arena 64 {
  buffer b0 "a": f32[2,3] input 0
  buffer b1: f32[3,4] const hex"0000803f000000400000404000008040000080bf000000c0000040c0000080c00000003f0000803e0000003e0000803d"
  buffer b2: i64[2] input 1
  buffer b3: f32[2,4] temp @0
  buffer b4: f32[2,4] output 0
  buffer b5: f32[4] output 1
  kernel "tile" (b0 read, b1 read, b3 write) grid [] {
    alloc b100: f32[8] private
    tile_matmul m 2 n 4 k 3 acc b100 a b0[0] stride 3 1 b b1[0] stride 4 1
    for v0 in 0 .. 8 step 4 {
      store b3[v0] = load(b100, v0, 4)
    }
  }
  kernel "blocks" (b3 read, b4 write, b2 read) grid [v0 < 2, v1 < 4 block] {
    alloc b101: f32[4] shared
    store b101[v1] = load(b3, v0 * 4 + v1, 1)
    barrier
    let v2 = load(b101, 3 + v1 * -1, 1)
    local v3: f32 = bits(0x7fc00000):f32
    if is_nan(v3) {
      set v3 = fma(v2, 2.0:f32, -1e-8:f32)
    } else {
    }
    store b4[v0 * 4 + v1] = select(gt(v3, 0.0:f32), v3, neg(v3))
  }
  kernel "gather" (b2 read, b3 read, b5 write) grid [v0 < 4] {
    store b5[v0] = reduce_add(splat(2, load(b3, dyn(load(b2, 1, 1)) * 4 + v0, 1)))
  }
}
"#;

    #[test]
    fn text_round_trips_and_verifies() {
        let p = text::parse(SRC).unwrap_or_else(|e| panic!("{e}"));
        verify::verify(&p).unwrap_or_else(|e| panic!("{e}"));
        text::check_round_trip(&p).unwrap_or_else(|e| panic!("{e}"));
        // NaN constants are never `==`; the text is bit-exact instead.
        let back = text::parse(&text::print(&p)).unwrap();
        assert_eq!(text::print(&back), text::print(&p));
        assert_eq!(back.buffers, p.buffers);
    }

    #[test]
    fn interpreter_runs_every_construct() {
        let p = text::parse(SRC).unwrap();
        let a = Tensor::from_vec(vec![2, 3], vec![1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0]).unwrap();
        let idx = Tensor::from_vec(vec![2], vec![0i64, 1]).unwrap();
        let out = interp::run(&p, &[a.clone(), idx]).unwrap_or_else(|e| panic!("{e}"));
        // reference: C = A·B, then each row reversed, doubled (minus 1e-8), absolute value
        let b: Vec<f32> = vec![
            1.0, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0, 0.5, 0.25, 0.125, 0.0625,
        ];
        let av = a.as_slice::<f32>().unwrap();
        let mut c = [0f32; 8];
        for i in 0..2 {
            for j in 0..4 {
                for p in 0..3 {
                    c[i * 4 + j] = av[i * 3 + p].mul_add(b[p * 4 + j], c[i * 4 + j]);
                }
            }
        }
        let y = out[0].as_slice::<f32>().unwrap();
        for i in 0..2 {
            for j in 0..4 {
                let want = c[i * 4 + 3 - j].mul_add(2.0, -1e-8).abs();
                assert_eq!(y[i * 4 + j], want);
            }
        }
        let z = out[1].as_slice::<f32>().unwrap();
        for j in 0..4 {
            assert_eq!(z[j], c[4 + j] + c[4 + j]);
        }
    }

    #[test]
    fn verifier_reports_every_problem() {
        let bad = r#"
program "bad" arena 0 {
  buffer b0: f32[4] input 0
  buffer b1: f32[4] output 0
  kernel "k" (b0 read, b1 write) grid [v0 < 4] {
    store b1[v0 + 1] = load(b0, v0, 1)
    store b0[v0] = load(b1, v0, 1)
    store b1[v0] = add(load(b0, v0, 1), 1:i32)
    store b1[v0] = v9
    for v0 in 0 .. 4 step 1 {
    }
    barrier
  }
}
"#;
        let p = text::parse(bad).unwrap();
        let e = verify::verify(&p).unwrap_err().to_string();
        for want in [
            "can leave the buffer",
            "store to b0, a read-only parameter",
            "load from b1, a write-only parameter",
            "Add of a f32 and a i32",
            "v9 is used out of scope",
            "v0 is bound more than once",
        ] {
            assert!(e.contains(want), "missing `{want}` in:\n{e}");
        }
    }

    #[test]
    fn interpreter_catches_out_of_bounds_and_bad_plans() {
        let src = r#"
program "oob" arena 0 {
  buffer b0: i64[1] input 0
  buffer b1: f32[2] output 0
  kernel "k" (b0 read, b1 write) grid [] {
    store b1[dyn(load(b0, 0, 1))] = 1.0:f32
  }
}
"#;
        let p = text::parse(src).unwrap();
        verify::verify(&p).unwrap();
        let ok = interp::run(&p, &[Tensor::from_vec(vec![1], vec![1i64]).unwrap()]).unwrap();
        assert_eq!(ok[0].as_slice::<f32>().unwrap(), &[0.0, 1.0]);
        let e = interp::run(&p, &[Tensor::from_vec(vec![1], vec![2i64]).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of bounds") && e.contains("`k`"), "{e}");
    }
}
