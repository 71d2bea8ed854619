//! The MatMul schedule: MatMul, Gemm and FusedMatMul.
//!
//! Requires: static shapes; MatMul operands of rank >= 1 (numpy semantics,
//! batch axes broadcast); Gemm's A and B of rank 2. Establishes: one kernel;
//! the grid runs over (batch, blocks of `mr` rows). For f32 the inner part is
//! a register-tiled micro-kernel: `mr × (nr_vecs·lanes)` accumulators held in
//! vector locals over the whole K loop (broadcast A element × B vector, fused
//! multiply-add), then the epilogue (Gemm's `alpha`/`beta·C`, FusedMatMul's
//! expression) applied in registers before the store. Rows past M reuse the
//! last row's loads and skip the store; columns past the last full tile run a
//! scalar tail. A constant B is repacked at compile time into panels of
//! `nr` columns (`[N/nr][K][nr]`, zero-padded) so that each K step reads one
//! contiguous line. Other dtypes (f64, f16/bf16 via f32, integers) use a
//! scalar loop per output element.
//!
//! Cache blocking ([`tiled_gemm`], also used by the Conv schedule): when K
//! exceeds `Options::kc` or N exceeds `Options::nc`, a grid point owns an
//! `mc × nc` block of the output and walks K in blocks of `kc`, so that the
//! `kc × nc` block of B stays in L2 while its `mc` rows pass over it, and the
//! `mr × kc` sliver of A in L1 while the tiles of the block pass over it;
//! accumulators go through the (f32) output between K blocks, which keeps
//! every element's accumulation order, hence the result, unchanged.
//!
//! The K loop carries its indices instead of recomputing them: its own
//! variable is B's element index (stepping by B's row stride) and A's index
//! is a local advanced each step. The MatMul schedule also packs A: per row
//! tile and K block, the `mr × kc` sliver (rows clamped to M) is copied into
//! a private `[kc][mr]` buffer, so one index reaches all `mr` rows at
//! constant offsets (the backend folds those into load displacements). On
//! x86-64 the loop is then 2 B loads, `mr` A loads and broadcasts and
//! `mr·nr_vecs` FMAs with the accumulators in registers, no spills; what is
//! left is Cranelift's: a register copy per reused broadcast and per
//! accumulator at the back edge (its `vfmadd213` overwrites a multiplicand).

use super::elementwise::{apply, compile, Val};
use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, Scope, Ty};
use kiln_ir::{expr, Attrs};

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    if outputs.len() != 1 {
        return Err(Reason(format!("{op} with {} outputs", outputs.len())));
    }
    let a = inputs
        .first()
        .copied()
        .flatten()
        .ok_or(Reason("missing A".into()))?;
    if a.dtype == DType::Bool {
        return Err(Reason(format!("{op} of bool")));
    }
    if op == Op::FusedMatMul {
        kiln_ir::fused::body(op, attrs).map_err(|e| Reason(e.to_string()))?;
    }
    Ok(())
}

struct Geo {
    batch: Vec<usize>,
    n: usize,
    k: usize,
    /// (dims, trans) of A and B as given.
    a_dims: Vec<usize>,
    b_dims: Vec<usize>,
    ta: bool,
    tb: bool,
}

impl Geo {
    /// Index of A'(batch idx, i, p) where A' is A transposed if `ta`, rank-1 promoted.
    fn a_index(&self, bidx: &[IndexExpr], i: IndexExpr, p: IndexExpr) -> IndexExpr {
        mat_index(&self.a_dims, self.ta, bidx, i, p, true)
    }
    fn b_index(&self, bidx: &[IndexExpr], p: IndexExpr, j: IndexExpr) -> IndexExpr {
        mat_index(&self.b_dims, self.tb, bidx, p, j, false)
    }
}

/// Element (r, c) of a matrix operand with batch broadcasting. A rank-1 A is
/// `[1, K]`, a rank-1 B is `[K, 1]`.
fn mat_index(
    dims: &[usize],
    trans: bool,
    bidx: &[IndexExpr],
    r: IndexExpr,
    c: IndexExpr,
    is_a: bool,
) -> IndexExpr {
    if dims.len() == 1 {
        return if is_a { c } else { r };
    }
    let rank = dims.len();
    let (rows, cols) = (dims[rank - 2], dims[rank - 1]);
    let (ri, ci) = if trans { (c, r) } else { (r, c) };
    let mat = ri.mul(cols as i64).add(ci);
    let bd = &dims[..rank - 2];
    let mut e = mat;
    let off = bidx.len() - bd.len();
    let mstride = rows * cols;
    let st = kiln_ir::shape::strides(bd);
    for (d, &n) in bd.iter().enumerate() {
        if n != 1 {
            e = e.add(bidx[off + d].clone().mul((st[d] * mstride) as i64));
        }
    }
    e
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let av = node.inputs[0].ok_or("missing A")?;
    let bv = node.inputs.get(1).copied().flatten().ok_or("missing B")?;
    let out_v = node.outputs[0];
    let (a_dims, b_dims) = (cx.dims(av), cx.dims(bv));
    let out_dims = cx.dims(out_v);
    let dt = cx.dtype(av);
    let out_dt = cx.dtype(out_v);
    let ct = compute_dtype(dt);
    let int_attr = |n: &str| {
        node.attrs
            .int_or(n, 0)
            .map(|v| v != 0)
            .map_err(|e| e.to_string())
    };
    let (ta, tb) = match node.op {
        Op::MatMul => (false, false),
        _ => (int_attr("transA")?, int_attr("transB")?),
    };
    let alpha = node
        .attrs
        .float_or("alpha", 1.0)
        .map_err(|e| e.to_string())? as f64;
    // The epilogue over %0 = the product and %1.. = extra operands.
    let mut extras: Vec<ValueId> = Vec::new();
    let epilogue: expr::Expr = match node.op {
        Op::MatMul => expr::Expr::Input(0),
        Op::Gemm => {
            let beta = node
                .attrs
                .float_or("beta", 1.0)
                .map_err(|e| e.to_string())?;
            match node.inputs.get(2).copied().flatten() {
                Some(c) if beta != 0.0 => {
                    extras.push(c);
                    let cterm = if beta == 1.0 {
                        expr::Expr::Input(1)
                    } else {
                        let bt = Tensor::from_f64s(dt, vec![], &[beta as f64])
                            .map_err(|e| e.to_string())?;
                        expr::Expr::op(Op::Mul, vec![expr::Expr::Const(bt), expr::Expr::Input(1)])
                    };
                    expr::Expr::op(Op::Add, vec![expr::Expr::Input(0), cterm])
                }
                _ => expr::Expr::Input(0),
            }
        }
        _ => {
            extras.extend(node.inputs[2..].iter().flatten());
            kiln_ir::fused::body(node.op, &node.attrs).map_err(|e| e.to_string())?
        }
    };
    let mut bm = a_dims.clone();
    if ta && bm.len() >= 2 {
        let r = bm.len();
        bm.swap(r - 1, r - 2);
    }
    let k = *bm.last().ok_or("A is a scalar")?;
    let m = if a_dims.len() == 1 {
        1
    } else {
        bm[bm.len() - 2]
    };
    let n = if b_dims.len() == 1 {
        1
    } else if tb {
        b_dims[b_dims.len() - 2]
    } else {
        b_dims[b_dims.len() - 1]
    };
    let batch_a = if a_dims.len() > 2 {
        a_dims[..a_dims.len() - 2].to_vec()
    } else {
        vec![]
    };
    let batch_b = if b_dims.len() > 2 {
        b_dims[..b_dims.len() - 2].to_vec()
    } else {
        vec![]
    };
    let batch = kiln_ir::shape::broadcast_shapes(&batch_a, &batch_b)
        .ok_or("batch axes do not broadcast")?;
    let geo = Geo {
        batch: batch.clone(),
        n,
        k,
        a_dims: a_dims.clone(),
        b_dims: b_dims.clone(),
        ta,
        tb,
    };
    let nb: usize = batch.iter().product();
    let out_total: usize = out_dims.iter().product();
    if out_total != nb * m * n {
        return Err(format!(
            "output {:?} does not hold {}×{}×{}",
            out_dims, nb, m, n
        ));
    }
    let ab = cx.buf(av);
    let ob = cx.out_buf(out_v);
    let extra_info: Vec<(BufId, DType, Vec<usize>)> = extras
        .iter()
        .map(|&v| (cx.buf(v), cx.dtype(v), cx.dims(v)))
        .collect();
    let lanes = cx.opts.lanes.max(1);
    let nr = cx.opts.nr_vecs.max(1) * lanes as usize;
    let fast = dt == DType::F32
        && out_dt == DType::F32
        && lanes > 1
        && extra_info.iter().all(|e| e.1 == DType::F32);
    // B: packed if constant (fast path), else as given.
    let b_const = cx.const_of(bv).cloned();
    let packed = match (&b_const, fast && cx.opts.pack_weights && n >= nr) {
        (Some(t), true) => Some(pack(t, &geo, nr)?),
        _ => None,
    };
    let bb = match &packed {
        Some(t) => cx.add_buffer(
            Some(format!("{} (packed)", cx.graph.display_name(bv))),
            DType::F32,
            t.shape().to_vec(),
            BufKind::Const(t.clone()),
        ),
        None => cx.buf(bv),
    };
    let b_vec_ok = packed.is_some() || (!tb && b_dims.len() > 1);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(ab);
    kb.read(bb);
    kb.write(ob);
    for e in &extra_info {
        kb.read(e.0);
    }
    let rank_o = out_dims.len();
    // output multi-index from (batch idx, i, j)
    let out_multi = |bidx: &[IndexExpr], i: IndexExpr, j: IndexExpr| -> Vec<IndexExpr> {
        let mut v: Vec<IndexExpr> = bidx.to_vec();
        if a_dims.len() > 1 {
            v.push(i);
        }
        if b_dims.len() > 1 {
            v.push(j);
        }
        // pad/trim to the output rank (MatMul of vectors drops axes)
        while v.len() > rank_o {
            v.remove(0);
        }
        v
    };
    let epi = |kb: &mut KernelBuilder,
               prod: Expr,
               bidx: &[IndexExpr],
               i: IndexExpr,
               j: IndexExpr,
               l: u32|
     -> Result<(Vec<Stmt>, Expr), String> {
        let mut pre = Vec::new();
        let mut p = prod;
        if alpha != 1.0 {
            p = Expr::binary(BinOp::Mul, p, fconst(ct, alpha, l));
        }
        let pv = Val { e: p, dt };
        // round the product to its storage type, as the unfused graph would
        let pv = if compute_dtype(dt) != dt {
            apply(Op::Identity, &Attrs::new(), &[Some(pv)], l)?
        } else {
            pv
        };
        let mut ins: Vec<Option<Val>> = vec![Some(pv)];
        let om = out_multi(bidx, i, j);
        for (b, d, ed) in &extra_info {
            let idx = broadcast_index(ed, &om);
            let last_stride = if ed.len() > 0 && ed[ed.len() - 1] != 1 && om.len() > 0 {
                1
            } else {
                0
            };
            let e = if l > 1 && last_stride == 0 {
                Expr::splat(l, load_c(*b, *d, idx, 1))
            } else {
                load_c(*b, *d, idx, l)
            };
            let v = kb.var();
            pre.push(Stmt::Let { var: v, value: e });
            ins.push(Some(Val {
                e: Expr::var(v),
                dt: *d,
            }));
        }
        let mut no_consts = |_: &Tensor| Val {
            e: Expr::int(DType::Bool, 0),
            dt: DType::Bool,
        };
        let r = compile(&epilogue, &ins, &mut no_consts, l)?;
        if r.dt != out_dt {
            return Err(format!(
                "epilogue computes {} but the output is {out_dt}",
                r.dt
            ));
        }
        Ok((pre, to_storage(r.e, out_dt)))
    };
    let mut nonscalar_const = false;
    epilogue.walk(&mut |e| {
        if let expr::Expr::Const(t) = e {
            nonscalar_const |= t.numel() != 1;
        }
    });
    if nonscalar_const {
        return Err("epilogue constants must be scalars".into());
    }
    let mut body = Vec::new();
    let gb = kb.axis(nb);
    let bidx = unflatten(IndexExpr::var(gb), &batch);
    let out_at = |i: IndexExpr, j: IndexExpr| {
        IndexExpr::var(gb)
            .mul((m * n) as i64)
            .add(i.mul(n as i64))
            .add(j)
    };
    if fast && b_vec_ok && n >= nr {
        let nbb = batch_b_count(&geo).max(1) as i64;
        let panel = packed_panel_len(&geo, nr) as i64;
        let npanels = geo.n.div_ceil(nr) as i64;
        let full = (n / nr) as i64;
        let b_base = |c: &BCol| -> IndexExpr {
            match (&packed, c) {
                (Some(_), col) => {
                    let start = IndexExpr::var(gb).rem(nbb).mul(panel * npanels);
                    match col {
                        BCol::Tile { jb, off } => start
                            .add(jb.clone().mul(panel))
                            .add(IndexExpr::c(*off as i64)),
                        BCol::Tail(j) => start
                            .add(IndexExpr::c(full * panel))
                            .add(j.clone().add(IndexExpr::c(-full * nr as i64))),
                    }
                }
                (None, col) => geo.b_index(&bidx, IndexExpr::c(0), col.column(nr)),
            }
        };
        let b_pstride = if packed.is_some() {
            nr as i64
        } else {
            n as i64
        };
        let a_pstride = if ta && a_dims.len() > 1 {
            a_dims[a_dims.len() - 1] as i64
        } else {
            1
        };
        let a_base = |i: IndexExpr| geo.a_index(&bidx, i, IndexExpr::c(0));
        let gemm = TiledGemm {
            m,
            n,
            k,
            a: ab,
            a_base: &a_base,
            a_pstride,
            b: bb,
            b_base: &b_base,
            b_pstride,
            out: ob,
            out_at: &out_at,
            epi: &|kb: &mut KernelBuilder, prod, i, j, l| epi(kb, prod, &bidx, i, j, l),
        };
        let bl = Blocking::new(cx.opts, m, n, k);
        body.extend(tiled_gemm_with(&mut kb, &gemm, &bl, Some(cx.local()))?);
    } else {
        // generic scalar path: grid over (batch, row), loop over columns and K
        let gi = kb.axis(m);
        let (j, p, acc) = (kb.var(), kb.var(), kb.var());
        let i = IndexExpr::var(gi);
        let a_e = load_c(ab, dt, geo.a_index(&bidx, i.clone(), IndexExpr::var(p)), 1);
        let b_e = load_c(
            bb,
            cx.dtype(bv),
            geo.b_index(&bidx, IndexExpr::var(p), IndexExpr::var(j)),
            1,
        );
        let step = if ct.is_float() {
            Expr::binary(
                BinOp::Add,
                Expr::var(acc),
                Expr::binary(BinOp::Mul, a_e, b_e),
            )
        } else {
            Expr::binary(
                BinOp::Add,
                Expr::var(acc),
                Expr::binary(BinOp::Mul, a_e, b_e),
            )
        };
        let zero = if ct.is_float() {
            Expr::float(ct, 0.0)
        } else {
            Expr::int(ct, 0)
        };
        let mut s = vec![
            Stmt::Local {
                var: acc,
                ty: Ty::scalar(ct),
                init: zero,
            },
            for_n(
                p,
                k,
                vec![Stmt::Assign {
                    var: acc,
                    value: step,
                }],
            ),
        ];
        let (pre, val) = epi(
            &mut kb,
            Expr::var(acc),
            &bidx,
            i.clone(),
            IndexExpr::var(j),
            1,
        )?;
        s.extend(pre);
        s.push(Stmt::Store {
            buf: ob,
            index: out_at(i, IndexExpr::var(j)),
            value: val,
        });
        body.push(for_n(j, n, s));
    }
    cx.push(kb.finish(body));
    Ok(())
}

/// K steps per iteration of the micro-kernel's inner loop. Measured on
/// x86-64 (callgrind, 256³): 4 is worse than 1, because Cranelift keeps the
/// (side-effecting) loads of the whole unrolled body ahead of its (pure) FMAs,
/// so 4 steps' operands are live at once and the accumulators spill.
const K_UNROLL: usize = 1;

/// Where the B columns read by a register tile start.
#[derive(Clone, Debug)]
pub(super) enum BCol {
    /// Columns `jb * nr + off ..` of full tile `jb` (`off < nr`).
    Tile { jb: IndexExpr, off: usize },
    /// One column `j` past the last full tile.
    Tail(IndexExpr),
}

impl BCol {
    /// The column index.
    pub(super) fn column(&self, nr: usize) -> IndexExpr {
        match self {
            BCol::Tile { jb, off } => jb.clone().mul(nr as i64).add(IndexExpr::c(*off as i64)),
            BCol::Tail(j) => j.clone(),
        }
    }
}

/// The epilogue of a tile: `(product, row, column, lanes)` to the statements
/// that prepare it and the value to store (in the output's storage type).
pub(super) type EpiFn<'a> = dyn Fn(&mut KernelBuilder, Expr, IndexExpr, IndexExpr, u32) -> Result<(Vec<Stmt>, Expr), String>
    + 'a;

/// One f32 GEMM `out(i, j) = epi(Σ_p A(i, p) · B(p, j))` for `i < m`, `j < n`,
/// `p < k`, as seen from one batch element (the closures may use the
/// caller's batch grid variable). Operands are affine in `p`:
/// `A(i, p) = a[a_base(i) + p·a_pstride]` and
/// `B(p, j) = b[b_base(col) + p·b_pstride]`, where within one tile
/// `b_base(Tile{jb, off}) = b_base(Tile{jb, 0}) + off` (the `nr` columns of a
/// tile are consecutive for every `p`).
pub(super) struct TiledGemm<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: BufId,
    pub a_base: &'a dyn Fn(IndexExpr) -> IndexExpr,
    pub a_pstride: i64,
    pub b: BufId,
    pub b_base: &'a dyn Fn(&BCol) -> IndexExpr,
    pub b_pstride: i64,
    /// f32 output buffer (also holds partial sums between K blocks).
    pub out: BufId,
    pub out_at: &'a dyn Fn(IndexExpr, IndexExpr) -> IndexExpr,
    pub epi: &'a EpiFn<'a>,
}

/// Register tile and cache blocks of [`tiled_gemm`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Blocking {
    /// Register tile: `mr` rows × `nr` columns (`nr` a multiple of `lanes`).
    pub mr: usize,
    pub nr: usize,
    pub lanes: u32,
    /// Rows per grid point (a multiple of `mr`).
    pub mc: usize,
    /// Columns per grid point (a multiple of `nr`, or all of N).
    pub nc: usize,
    /// K block: accumulators are stored to the output between K blocks.
    pub kc: usize,
}

impl Blocking {
    /// The tile from `opts`; cache blocks (`opts.mc`, `opts.nc`, `opts.kc`)
    /// only when K or N exceed their block (otherwise one grid point per `mr`
    /// rows streams all of K and N, which fits in cache).
    pub(super) fn new(opts: &Options, m: usize, n: usize, k: usize) -> Blocking {
        let lanes = opts.lanes.max(1);
        let nr = opts.nr_vecs.max(1) * lanes as usize;
        let mr = opts.mr.max(1);
        let kc = opts.kc.max(1);
        let nc = opts.nc.max(nr) / nr * nr;
        if k <= kc && n <= nc {
            return Blocking {
                mr,
                nr,
                lanes,
                mc: mr,
                nc: n.div_ceil(nr).max(1) * nr,
                kc: k.max(1),
            };
        }
        let mc = (opts.mc.max(mr) / mr * mr).min(m.div_ceil(mr) * mr);
        Blocking {
            mr,
            nr,
            lanes,
            mc,
            nc,
            kc: kc.min(k.max(1)),
        }
    }
}

/// The register-tiled f32 micro-kernel, cache-blocked: adds the grid axes
/// (row blocks of `mc`, then column blocks of `nc` when N is split) to `kb`
/// and returns the body of one grid point. Per grid point: for each K block,
/// for each `mr`-row tile, for each full `nr`-column tile, the `mr × nr`
/// accumulators live in vector locals over the K block (broadcast A element ×
/// B vector, fused multiply-add); between K blocks they go through the output
/// buffer (exact: f32 stores and reloads), after the last one the epilogue is
/// applied in registers before the store. Rows past M reuse the last row's
/// loads and skip the store. Columns past the last full tile are a scalar
/// loop over all of K. Every output element accumulates in `p` order, so
/// blocking does not change results.
pub(super) fn tiled_gemm(
    kb: &mut KernelBuilder,
    g: &TiledGemm,
    bl: &Blocking,
) -> Result<Vec<Stmt>, String> {
    tiled_gemm_with(kb, g, bl, None)
}

/// [`tiled_gemm`], with A packed when `a_pack` is a fresh kernel-local buffer
/// id: per row tile and K block, the `mr × kc` sliver of A (rows clamped to
/// M) is copied into it as `[kc][mr]`, so that the micro-kernel reads A
/// contiguously through one index at constant offsets.
pub(super) fn tiled_gemm_with(
    kb: &mut KernelBuilder,
    g: &TiledGemm,
    bl: &Blocking,
    a_pack: Option<BufId>,
) -> Result<Vec<Stmt>, String> {
    let (m, n, k) = (g.m, g.n, g.k);
    let (mr, nr, lanes) = (bl.mr, bl.nr, bl.lanes);
    if lanes < 1 || nr % lanes as usize != 0 || bl.mc % mr != 0 || bl.nc % nr != 0 {
        return Err(format!("bad GEMM blocking {bl:?}"));
    }
    let mt = m.div_ceil(mr);
    let full = n / nr;
    let rows_per = bl.mc / mr;
    let cols_per = bl.nc / nr;
    let ncb = if bl.nc >= n { 1 } else { n.div_ceil(bl.nc) };
    let nkb = k.div_ceil(bl.kc).max(1);
    let gi = kb.axis(mt.div_ceil(rows_per));
    let gj = if ncb > 1 { Some(kb.axis(ncb)) } else { None };
    if nkb > 1 {
        kb.read(g.out);
    }
    let nv = nr / lanes as usize;
    let vt = Ty::vector(DType::F32, lanes);
    // `ib` (row tile) loop around `inner(ib)`
    let row_loop =
        |kb: &mut KernelBuilder,
         inner: &mut dyn FnMut(&mut KernelBuilder, IndexExpr) -> Result<Vec<Stmt>, String>|
         -> Result<Vec<Stmt>, String> {
            if rows_per == 1 {
                return inner(kb, IndexExpr::var(gi));
            }
            let ib = kb.var();
            let s = IndexExpr::var(gi).mul(rows_per as i64);
            let e = s
                .clone()
                .add(IndexExpr::c(rows_per as i64))
                .min(IndexExpr::c(mt as i64));
            let body = inner(kb, IndexExpr::var(ib))?;
            Ok(vec![for_(ib, s, e, 1, body)])
        };
    let rows_of = |ib: &IndexExpr| -> (IndexExpr, Vec<IndexExpr>) {
        let i0 = ib.clone().mul(mr as i64);
        let rows = (0..mr)
            .map(|r| {
                i0.clone()
                    .add(IndexExpr::c(r as i64))
                    .min(IndexExpr::c(m as i64 - 1))
            })
            .collect();
        (i0, rows)
    };
    // K range of one block
    let pc = if nkb > 1 { Some(kb.var()) } else { None };
    let (p_start, p_end) = match pc {
        Some(pc) => (
            IndexExpr::var(pc),
            IndexExpr::var(pc)
                .add(IndexExpr::c(bl.kc as i64))
                .min(IndexExpr::c(k as i64)),
        ),
        None => (IndexExpr::c(0), IndexExpr::c(k as i64)),
    };
    let mut tiles = |kb: &mut KernelBuilder, ib: IndexExpr| -> Result<Vec<Stmt>, String> {
        let (i0, rows) = rows_of(&ib);
        let jb = kb.var();
        let p = kb.var();
        let j0 = IndexExpr::var(jb).mul(nr as i64);
        let mut tile = Vec::new();
        // Strength-reduced, loop-carried element indices (A: one per row, or
        // one for the packed sliver; B: the K loop's variable), so that no
        // index arithmetic is recomputed per K step; loads at constant
        // offsets from them share their address arithmetic.
        let i64t = Ty::scalar(DType::I64);
        // A: (buffer, step per K step, per row: loop-carried index variable
        // and constant offset from it). Packed: one variable, rows at `r`.
        let (abuf, a_step, arows): (BufId, i64, Vec<(Var, i64)>) = match a_pack {
            Some(pb) => {
                let v = kb.var();
                tile.push(Stmt::Local {
                    var: v,
                    ty: i64t,
                    init: Expr::Index(IndexExpr::c(0)),
                });
                (pb, mr as i64, (0..mr).map(|r| (v, r as i64)).collect())
            }
            None => {
                let mut arows = Vec::new();
                for row in &rows {
                    let v = kb.var();
                    tile.push(Stmt::Local {
                        var: v,
                        ty: i64t,
                        init: Expr::Index(
                            (g.a_base)(row.clone()).add(p_start.clone().mul(g.a_pstride)),
                        ),
                    });
                    arows.push((v, 0));
                }
                (g.a, g.a_pstride, arows)
            }
        };
        let mut avars: Vec<Var> = arows.iter().map(|x| x.0).collect();
        avars.dedup();
        // B's index is the K loop's own variable, stepping by `b_pstride`.
        let b0 = (g.b_base)(&BCol::Tile {
            jb: IndexExpr::var(jb),
            off: 0,
        })
        .add(p_start.clone().mul(g.b_pstride));
        let accs: Vec<Vec<Var>> = (0..mr)
            .map(|_| (0..nv).map(|_| kb.var()).collect())
            .collect();
        let col = |v: usize| j0.clone().add(IndexExpr::c((v * lanes as usize) as i64));
        let mut reload = Vec::new();
        for (r, row) in accs.iter().enumerate() {
            for (v, &a) in row.iter().enumerate() {
                tile.push(Stmt::Local {
                    var: a,
                    ty: vt,
                    init: fconst(DType::F32, 0.0, lanes),
                });
                reload.push(Stmt::Assign {
                    var: a,
                    value: Expr::load(g.out, (g.out_at)(rows[r].clone(), col(v)), lanes),
                });
            }
        }
        if let Some(pc) = pc {
            tile.push(Stmt::If {
                cond: Expr::cmp(CmpOp::Gt, Expr::var(pc), Expr::int(DType::I64, 0)),
                then: reload,
                els: vec![],
            });
        }
        // One K step `u` (0-based within an unrolled group): B vectors,
        // then per row a broadcast A element and `nv` fused multiply-adds.
        let kstep = |kb: &mut KernelBuilder, bq: Var, u: i64, out: &mut Vec<Stmt>| {
            let bvars: Vec<Var> = (0..nv).map(|_| kb.var()).collect();
            for (v, &bvar) in bvars.iter().enumerate() {
                let idx = IndexExpr::var(bq)
                    .add(IndexExpr::c(u * g.b_pstride + (v * lanes as usize) as i64));
                out.push(Stmt::Let {
                    var: bvar,
                    value: Expr::load(g.b, idx, lanes),
                });
            }
            for (r, row) in accs.iter().enumerate() {
                let av = kb.var();
                let (avar, aoff) = arows[r];
                let idx = IndexExpr::var(avar).add(IndexExpr::c(u * a_step + aoff));
                out.push(Stmt::Let {
                    var: av,
                    value: Expr::splat(lanes, Expr::load(abuf, idx, 1)),
                });
                for (v, &a) in row.iter().enumerate() {
                    out.push(Stmt::Assign {
                        var: a,
                        value: Expr::fma(Expr::var(av), Expr::var(bvars[v]), Expr::var(a)),
                    });
                }
            }
        };
        let advance = |steps: i64, out: &mut Vec<Stmt>| {
            for &v in &avars {
                out.push(Stmt::Assign {
                    var: v,
                    value: Expr::Index(IndexExpr::var(v).add(IndexExpr::c(steps * a_step))),
                });
            }
        };
        // The K loop, unrolled by K_UNROLL (steps stay in `p` order, so every
        // accumulator sees the same sequence of FMAs), then the remainder.
        let uf = K_UNROLL as i64;
        let bps = g.b_pstride;
        let mut kbody = Vec::new();
        for u in 0..uf {
            kstep(kb, p, u, &mut kbody);
        }
        advance(uf, &mut kbody);
        // K steps of the unrolled loop, then B's index at its end and at the end of K
        let len = p_end.clone().add(p_start.clone().mul(-1));
        let main_steps = len.clone().div(uf).mul(uf);
        let main_end = b0.clone().add(main_steps.mul(bps));
        tile.push(for_(p, b0.clone(), main_end.clone(), uf * bps, kbody));
        // K blocks are `kc` long except the last (`k - (nkb-1)·kc`).
        let last_len = k - (nkb - 1) * bl.kc;
        if last_len % K_UNROLL != 0 || (nkb > 1 && bl.kc % K_UNROLL != 0) {
            let p1 = kb.var();
            let mut rbody = Vec::new();
            kstep(kb, p1, 0, &mut rbody);
            advance(1, &mut rbody);
            tile.push(for_(p1, main_end, b0.add(len.mul(bps)), bps, rbody));
        }
        let mut finals = Vec::new();
        let mut partials = Vec::new();
        for (r, row) in accs.iter().enumerate() {
            // guard on the real row; index with the clamped one (equal when stored)
            let i = i0.clone().add(IndexExpr::c(r as i64));
            let ic = rows[r].clone();
            let (mut fin, mut part) = (Vec::new(), Vec::new());
            for (v, &a) in row.iter().enumerate() {
                let (pre, val) = (g.epi)(kb, Expr::var(a), ic.clone(), col(v), lanes)?;
                fin.extend(pre);
                fin.push(Stmt::Store {
                    buf: g.out,
                    index: (g.out_at)(ic.clone(), col(v)),
                    value: val,
                });
                part.push(Stmt::Store {
                    buf: g.out,
                    index: (g.out_at)(ic.clone(), col(v)),
                    value: Expr::var(a),
                });
            }
            finals.push(guard_row(i.clone(), m, fin));
            partials.push(guard_row(i, m, part));
        }
        match pc {
            Some(pc) => tile.push(Stmt::If {
                cond: Expr::cmp(
                    CmpOp::Ge,
                    Expr::Index(IndexExpr::var(pc).add(IndexExpr::c(bl.kc as i64))),
                    Expr::int(DType::I64, k as i64),
                ),
                then: finals,
                els: partials,
            }),
            None => tile.extend(finals),
        }
        let (js, je) = match gj {
            Some(gj) => {
                let s = IndexExpr::var(gj).mul(cols_per as i64);
                let e = s
                    .clone()
                    .add(IndexExpr::c(cols_per as i64))
                    .min(IndexExpr::c(full as i64));
                (s, e)
            }
            None => (IndexExpr::c(0), IndexExpr::c(full as i64)),
        };
        let mut out = Vec::new();
        if let Some(pb) = a_pack {
            // the row tile's K block of A, as [p][r]
            for (r, row) in rows.iter().enumerate() {
                let p2 = kb.var();
                let src = (g.a_base)(row.clone()).add(IndexExpr::var(p2).mul(g.a_pstride));
                let dst = IndexExpr::var(p2)
                    .add(p_start.clone().mul(-1))
                    .mul(mr as i64)
                    .add(IndexExpr::c(r as i64));
                out.push(for_(
                    p2,
                    p_start.clone(),
                    p_end.clone(),
                    1,
                    vec![Stmt::Store {
                        buf: pb,
                        index: dst,
                        value: Expr::load(g.a, src, 1),
                    }],
                ));
            }
        }
        out.push(for_(jb, js, je, 1, tile));
        Ok(out)
    };
    let mut body = Vec::new();
    if let Some(pb) = a_pack {
        body.push(Stmt::Alloc {
            buf: pb,
            scope: Scope::Private,
            dtype: DType::F32,
            len: mr * bl.kc,
        });
    }
    let blocks = row_loop(kb, &mut tiles)?;
    match pc {
        Some(pc) => body.push(for_(
            pc,
            IndexExpr::c(0),
            IndexExpr::c(k as i64),
            bl.kc as i64,
            blocks,
        )),
        None => body.extend(blocks),
    }
    // column tail: scalar, all of K
    if full * nr < n {
        let mut tail = |kb: &mut KernelBuilder, ib: IndexExpr| -> Result<Vec<Stmt>, String> {
            let (i0, rows) = rows_of(&ib);
            let j = kb.var();
            let mut t = Vec::new();
            for (r, row) in rows.iter().enumerate() {
                let i = i0.clone().add(IndexExpr::c(r as i64));
                let (acc, p2) = (kb.var(), kb.var());
                let a_idx = (g.a_base)(row.clone()).add(IndexExpr::var(p2).mul(g.a_pstride));
                let b_idx = (g.b_base)(&BCol::Tail(IndexExpr::var(j)))
                    .add(IndexExpr::var(p2).mul(g.b_pstride));
                let mut s = vec![
                    Stmt::Local {
                        var: acc,
                        ty: Ty::scalar(DType::F32),
                        init: Expr::f32(0.0),
                    },
                    for_n(
                        p2,
                        k,
                        vec![Stmt::Assign {
                            var: acc,
                            value: Expr::fma(
                                Expr::load(g.a, a_idx, 1),
                                Expr::load(g.b, b_idx, 1),
                                Expr::var(acc),
                            ),
                        }],
                    ),
                ];
                let (pre, val) = (g.epi)(kb, Expr::var(acc), row.clone(), IndexExpr::var(j), 1)?;
                s.extend(pre);
                s.push(Stmt::Store {
                    buf: g.out,
                    index: (g.out_at)(row.clone(), IndexExpr::var(j)),
                    value: val,
                });
                t.push(guard_row(i, m, s));
            }
            let (js, je) = match gj {
                Some(gj) => (
                    IndexExpr::var(gj)
                        .mul(bl.nc as i64)
                        .max(IndexExpr::c((full * nr) as i64)),
                    IndexExpr::var(gj)
                        .mul(bl.nc as i64)
                        .add(IndexExpr::c(bl.nc as i64))
                        .min(IndexExpr::c(n as i64)),
                ),
                None => (IndexExpr::c((full * nr) as i64), IndexExpr::c(n as i64)),
            };
            Ok(vec![for_(j, js, je, 1, t)])
        };
        body.extend(row_loop(kb, &mut tail)?);
    }
    Ok(body)
}

fn guard_row(i: IndexExpr, m: usize, then: Vec<Stmt>) -> Stmt {
    Stmt::If {
        cond: Expr::cmp(
            kiln_ir::kernel::CmpOp::Lt,
            Expr::Index(i),
            Expr::int(DType::I64, m as i64),
        ),
        then,
        els: vec![],
    }
}

fn batch_b_count(g: &Geo) -> usize {
    if g.b_dims.len() > 2 {
        g.b_dims[..g.b_dims.len() - 2].iter().product()
    } else {
        1
    }
}

fn packed_panel_len(g: &Geo, nr: usize) -> usize {
    g.k * nr
}

/// Repacks a constant B (per batch matrix) into `[N/nr][K][nr]` panels.
/// Only used when B has no batch axes beyond the output's (so that batch
/// index `b % batch_b_count` addresses its matrix).
fn pack(t: &Tensor, g: &Geo, nr: usize) -> Result<Tensor, String> {
    let v = t.as_slice::<f32>().ok_or("packing needs an f32 B")?;
    let nbb = batch_b_count(g);
    if nbb != 1 && nbb != g.batch.iter().product::<usize>() {
        return Err("packing a B whose batch axes broadcast partially".into());
    }
    let panels = g.n.div_ceil(nr);
    let mut out = vec![0f32; nbb * panels * g.k * nr];
    let (rows, cols) = if g.b_dims.len() == 1 {
        (g.b_dims[0], 1)
    } else {
        (g.b_dims[g.b_dims.len() - 2], g.b_dims[g.b_dims.len() - 1])
    };
    for b in 0..nbb {
        for p in 0..g.k {
            for j in 0..g.n {
                let (r, c) = if g.tb { (j, p) } else { (p, j) };
                let src = b * rows * cols + r * cols + c;
                let dst = b * panels * g.k * nr + (j / nr) * g.k * nr + p * nr + j % nr;
                out[dst] = v[src];
            }
        }
    }
    Tensor::from_vec(vec![out.len()], out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::testing::check_with;
    use super::*;

    /// Small cache blocks, so that K, N and M are all split on small shapes.
    fn blocked() -> Options {
        Options {
            mc: 8,
            nc: 16,
            kc: 8,
            ..Options::default()
        }
    }

    fn w_const(k: usize, n: usize) -> String {
        let v: Vec<String> = (0..k * n)
            .map(|i| format!("{}.0", (i * 7 % 11) as i32 - 5))
            .collect();
        format!("[{}]", v.join(", "))
    }

    #[test]
    fn cache_blocked_matmul_matches_the_reference() {
        for (m, k, n) in [
            (13, 17, 23),
            (33, 40, 50),
            (4, 9, 16),
            (1, 30, 40),
            (20, 8, 17),
        ] {
            let src = format!(
                "graph @t {{\n in %0: f32[{m},{k}]\n in %1: f32[{k},{n}]\n %2: f32[{m},{n}] = MatMul(%0, %1) @mm\n out %2\n}}"
            );
            check_with(&src, &blocked(), 1e-5);
            let src = format!(
                "graph @t {{\n in %0: f32[{m},{k}]\n const %1: f32[{k},{n}] = {}\n %2: f32[{m},{n}] = MatMul(%0, %1) @mm\n out %2\n}}",
                w_const(k, n)
            );
            let p = check_with(&src, &blocked(), 1e-5);
            let unblocked = check_with(&src, &Options::default(), 1e-5);
            // blocking keeps every element's accumulation order: identical bits
            let g = crate::testutil::parse(&src);
            let ins = crate::testutil::random_inputs(&g, 11);
            let a = kiln_ir::kernel::interp::run(&p, &ins).unwrap();
            let b = kiln_ir::kernel::interp::run(&unblocked, &ins).unwrap();
            assert!(a[0].bit_eq(&b[0]), "({m},{k},{n})");
            if k > 8 {
                assert!(p.kernels[0].grid.len() >= 2);
            }
        }
        check_with("graph @t {\n in %0: f32[2,3,19,20]\n in %1: f32[3,20,33]\n %2: f32[2,3,19,33] = MatMul(%0, %1) @mm\n out %2\n}", &blocked(), 1e-5);
        check_with("graph @t {\n in %0: f32[20,12]\n in %1: f32[33,20]\n in %2: f32[33]\n %3: f32[12,33] = Gemm[transA=1, transB=1, alpha=0.5, beta=2.0](%0, %1, %2) @g\n out %3\n}", &blocked(), 1e-5);
        check_with("graph @t {\n in %0: f32[15,26]\n in %1: f32[26,35]\n in %2: f32[35]\n in %3: f32[15,35]\n %4: f32[15,35] = FusedMatMul[epilogue=\"Add(Relu(Add(%0, %1)), %2)\"](%0, %1, %2, %3) @f\n out %4\n}", &blocked(), 1e-5);
    }
}
