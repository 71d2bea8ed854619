//! The Attention schedule (ONNX opset-23 `Attention`), FlashAttention-style.
//!
//! Requires: static shapes; Q, K, V float (f32, f16/bf16 computed in f32,
//! f64 computed in f64). Establishes: for output 0 (`Y`) one kernel whose
//! grid runs over (batch, query head, block of [`QUERY_BLOCK`] query rows).
//! Per query row the kernel keeps the row's scaled Q and an output
//! accumulator of `Dv` elements in private buffers (not in registers: with
//! `D = Dv = 64` they would be 32 vectors, twice the register file) and the
//! online softmax state, a running maximum `m` and sum `l`. It streams over
//! the allowed keys in blocks of [`Options::attn_block`]: the block's logits
//! ([`KEYS_PER_STEP`] keys at a time, each load of Q shared by the keys, dot
//! products vectorised over the head dimension in [`DOT_CHAINS`] chains per
//! key) go to a private scratch of `attn_block` elements; then the block
//! maximum, one rescaling of `l` and the accumulator by `exp(m_old - m_new)`,
//! the probabilities `exp(s - m)` vectorised over the block (the kernel-IR
//! arithmetic of [`exp`] for f32, so no call per key), and `acc += p·V` in
//! register tiles of [`ACC_TILE`] vectors. No buffer of `S_q × S_kv`
//! elements is allocated or written for `Y`.
//!
//! The optional outputs `present_key`, `present_value` and
//! `qk_matmul_output` each get a kernel of their own ([`outputs`]); the last
//! is the one `S_q × S_total` buffer, because the user asked for it.
//!
//! Semantics are the reference interpreter's (`kiln_ir::interp::attention`):
//! 3-D (`[B, S, H·D]`, `q_num_heads`/`kv_num_heads`) and 4-D inputs; grouped
//! and multi-query heads (KV head `h / (Hq / Hkv)`); `scale` (default
//! `1/sqrt(D)`, applied as the reference's `sqrt(scale)` on Q and on K rounded
//! to Q's dtype); `softcap`; `attn_mask` bool (false → -inf) or numeric
//! (added), broadcast over batch, heads and queries, its last axis padded
//! with -inf; `is_causal`, `left_window_size`/`right_window_size`,
//! `past_key`/`past_value` (read in place: the past keys are streamed first,
//! then the new ones) and `nonpad_kv_seqlen`. Keys that causality, a window,
//! the mask padding or `nonpad_kv_seqlen` forbid are not visited at all (the
//! loop bounds exclude them); a row with no allowed key is zeros, as in the
//! reference.
//!
//! Numerics of `Y`: for f32 the logit is `(q·scale)·k` (one rounding away
//! from the reference's `(q·√scale)·(k·√scale)`), dot products accumulate
//! in chains of fused multiply-adds, `exp` is within 2 ulp of libm's (0 below
//! `-87.33`, where libm's is below 2^-126), the probabilities of a block are
//! summed lane-wise, and the softmax is normalised once at the end
//! (`acc · (1/l)`): results agree with the reference to a few ulp per key
//! (the tests hold them to 1e-5 relative). For f16/bf16 the reference's
//! roundings of the scaled Q and K, the logits and the bias are reproduced;
//! its rounding of the normalised probabilities cannot be (they never exist
//! here), so results agree to about the 16-bit type's precision (tests:
//! 2e-3 for f16, 1e-2 for bf16). f64 uses the `Exp` op (tests: 1e-12).
//!
//! Not scheduled (a [`Reason`]): non-float Q/K/V; masks of a type that is
//! neither bool nor numeric.

use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, LaneOp, Scope, Ty, UnOp};
use kiln_ir::Attrs;

/// Query rows per grid point.
pub const QUERY_BLOCK: usize = 16;

/// Independent FMA chains per key of a dot product (with
/// [`KEYS_PER_STEP`] keys: 8 chains, which hide the FMA latency).
const DOT_CHAINS: usize = 2;

/// Keys whose logits are computed together, sharing each load of Q.
const KEYS_PER_STEP: usize = 4;

/// Accumulator vectors updated per pass over a key block (register tile).
const ACC_TILE: usize = 8;

/// Head geometry (as in the reference interpreter's `Geometry`).
#[derive(Clone, Debug, PartialEq)]
struct Geo {
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_seq: usize,
    kv_seq: usize,
    past_seq: usize,
    head: usize,
    v_head: usize,
    rank3: bool,
}

impl Geo {
    fn total(&self) -> usize {
        self.past_seq + self.kv_seq
    }
}

/// Everything the lowering needs, checked.
#[derive(Clone, Debug)]
struct Plan {
    g: Geo,
    qdt: DType,
    kdt: DType,
    vdt: DType,
    /// Compute type: f64 when Q or V is f64 or `softmax_precision` asks for
    /// it; f32 otherwise.
    ct: DType,
    /// The mask's dtype and shape.
    mask: Option<(DType, Vec<usize>)>,
    past: bool,
    nonpad: bool,
    scale: Option<f32>,
    causal: bool,
    softcap: f32,
    left_window: i64,
    right_window: i64,
    /// `qk_matmul_output_mode` (0 raw, 1 softcapped, 2 with the bias, 3 softmax).
    qk_mode: i64,
    /// `softmax_precision`, if given.
    softmax_precision: Option<DType>,
}

fn dims_of(what: &str, t: &TensorType) -> Result<Vec<usize>, String> {
    t.shape
        .fixed()
        .ok_or_else(|| format!("{what} has a symbolic shape {}", t.shape))
}

fn plan(attrs: &Attrs, inputs: &[Option<&TensorType>], n_outputs: usize) -> Result<Plan, String> {
    if !(1..=4).contains(&n_outputs) {
        return Err(format!(
            "Attention has 1 to 4 outputs, this node {n_outputs}"
        ));
    }
    let at = |i: usize| inputs.get(i).copied().flatten();
    let need = |i: usize, what: &str| at(i).ok_or_else(|| format!("missing input {what}"));
    let (q, k, v) = (need(0, "Q")?, need(1, "K")?, need(2, "V")?);
    for (what, t) in [("Q", q), ("K", k), ("V", v)] {
        if !t.dtype.is_float() {
            return Err(format!(
                "{what} is {}; Attention needs float Q, K and V",
                t.dtype
            ));
        }
    }
    if k.dtype != q.dtype {
        return Err(format!("K is {} but Q is {}", k.dtype, q.dtype));
    }
    let (qd, kd, vd) = (dims_of("Q", q)?, dims_of("K", k)?, dims_of("V", v)?);
    let err = |e: kiln_ir::Error| e.to_string();
    let qh = attrs.int("q_num_heads").map_err(err)?;
    let kvh = attrs.int("kv_num_heads").map_err(err)?;
    let mut g = geometry(&qd, &kd, &vd, qh, kvh)?;
    let past = match (at(4), at(5)) {
        (None, None) => false,
        (Some(pk), Some(pv)) => {
            if pk.dtype != k.dtype || pv.dtype != v.dtype {
                return Err("past_key and past_value must have K's and V's dtypes".into());
            }
            let (pkd, pvd) = (dims_of("past_key", pk)?, dims_of("past_value", pv)?);
            let p = pkd.get(2).copied().unwrap_or(0);
            let want_k = [g.batch, g.kv_heads, p, g.head];
            let want_v = [g.batch, g.kv_heads, p, g.v_head];
            if pkd != want_k || pvd != want_v {
                return Err(format!(
                    "past_key {pkd:?} and past_value {pvd:?} must be {want_k:?} and {want_v:?}"
                ));
            }
            g.past_seq = p;
            true
        }
        _ => return Err("past_key and past_value must be given together".into()),
    };
    let nonpad = match at(6) {
        None => false,
        Some(t) => {
            if past {
                return Err("nonpad_kv_seqlen cannot be combined with past_key/past_value".into());
            }
            if t.dtype != DType::I64 || dims_of("nonpad_kv_seqlen", t)? != [g.batch] {
                return Err(format!(
                    "nonpad_kv_seqlen must be i64[{}], got {}",
                    g.batch, t
                ));
            }
            true
        }
    };
    let mask = match at(3) {
        None => None,
        Some(t) => {
            if !(t.dtype == DType::Bool || t.dtype.is_float() || t.dtype.is_int()) {
                return Err(format!(
                    "attn_mask of type {} is neither bool nor numeric",
                    t.dtype
                ));
            }
            let m = dims_of("attn_mask", t)?;
            check_mask(&m, &g)?;
            Some((t.dtype, m))
        }
    };
    let softmax_precision = match attrs.int("softmax_precision").map_err(err)? {
        None => None,
        Some(c) => match i32::try_from(c).ok().and_then(DType::from_onnx_code) {
            Some(d) if d.is_float() => Some(d),
            _ => return Err(format!("softmax_precision {c} is not a float type code")),
        },
    };
    let wide =
        q.dtype == DType::F64 || v.dtype == DType::F64 || softmax_precision == Some(DType::F64);
    let window = |name: &str| -> Result<i64, String> {
        let w = attrs.int_or(name, -1).map_err(err)?;
        if w < -1 {
            return Err(format!("{name} must be -1 or >= 0, got {w}"));
        }
        Ok(w)
    };
    Ok(Plan {
        g,
        qdt: q.dtype,
        kdt: k.dtype,
        vdt: v.dtype,
        ct: if wide { DType::F64 } else { DType::F32 },
        mask,
        past,
        nonpad,
        scale: attrs.float("scale").map_err(err)?,
        causal: attrs.int_or("is_causal", 0).map_err(err)? != 0,
        softcap: attrs.float_or("softcap", 0.0).map_err(err)?,
        left_window: window("left_window_size")?,
        right_window: window("right_window_size")?,
        qk_mode: match attrs.int_or("qk_matmul_output_mode", 0).map_err(err)? {
            m @ 0..=3 => m,
            m => {
                return Err(format!(
                    "qk_matmul_output_mode must be 0, 1, 2 or 3, got {m}"
                ))
            }
        },
        softmax_precision,
    })
}

/// Q, K, V shapes against the head attributes (the reference's checks).
fn geometry(
    q: &[usize],
    k: &[usize],
    v: &[usize],
    qh: Option<i64>,
    kvh: Option<i64>,
) -> Result<Geo, String> {
    if q.len() != k.len() || q.len() != v.len() || !(q.len() == 3 || q.len() == 4) {
        return Err(format!(
            "Q, K and V must all be 3-D or all 4-D, got {q:?}, {k:?} and {v:?}"
        ));
    }
    let pos = |name: &str, n: Option<i64>| -> Result<Option<usize>, String> {
        match n {
            None => Ok(None),
            Some(n) if n > 0 => Ok(Some(n as usize)),
            Some(n) => Err(format!("{name} must be positive, got {n}")),
        }
    };
    let (qh, kvh) = (pos("q_num_heads", qh)?, pos("kv_num_heads", kvh)?);
    let g = if q.len() == 3 {
        let (Some(qh), Some(kvh)) = (qh, kvh) else {
            return Err("3-D inputs need the q_num_heads and kv_num_heads attributes".into());
        };
        let split = |what: &str, hidden: usize, heads: usize| -> Result<usize, String> {
            if !hidden.is_multiple_of(heads) {
                return Err(format!(
                    "{what} hidden size {hidden} is not divisible by {heads} heads"
                ));
            }
            Ok(hidden / heads)
        };
        let head = split("Q", q[2], qh)?;
        if split("K", k[2], kvh)? != head {
            return Err(format!(
                "Q's head size {head} differs from K's ({} / {kvh})",
                k[2]
            ));
        }
        Geo {
            batch: q[0],
            q_heads: qh,
            kv_heads: kvh,
            q_seq: q[1],
            kv_seq: k[1],
            past_seq: 0,
            head,
            v_head: split("V", v[2], kvh)?,
            rank3: true,
        }
    } else {
        if qh.is_some_and(|n| n != q[1]) || kvh.is_some_and(|n| n != k[1]) {
            return Err(format!(
                "q_num_heads/kv_num_heads ({qh:?}/{kvh:?}) disagree with Q {q:?} and K {k:?}"
            ));
        }
        if k[3] != q[3] || v[1] != k[1] {
            return Err(format!(
                "Q {q:?}, K {k:?} and V {v:?} disagree on head size or count"
            ));
        }
        Geo {
            batch: q[0],
            q_heads: q[1],
            kv_heads: k[1],
            q_seq: q[2],
            kv_seq: k[2],
            past_seq: 0,
            head: q[3],
            v_head: v[3],
            rank3: false,
        }
    };
    let seq_axis = if g.rank3 { 1 } else { 2 };
    if k[0] != g.batch || v[0] != g.batch || k[seq_axis] != v[seq_axis] {
        return Err(format!(
            "Q {q:?}, K {k:?} and V {v:?} disagree on batch or key sequence length"
        ));
    }
    if g.kv_heads == 0 || g.q_heads % g.kv_heads != 0 {
        return Err(format!(
            "the {} query heads are not a multiple of the {} key/value heads",
            g.q_heads, g.kv_heads
        ));
    }
    Ok(g)
}

/// A mask must broadcast to `[B, Hq, S_q, total]`, its last axis at most `total`.
fn check_mask(m: &[usize], g: &Geo) -> Result<(), String> {
    let full = [g.batch, g.q_heads, g.q_seq, g.total()];
    let ok = !m.is_empty()
        && m.len() <= 4
        && m.iter()
            .rev()
            .zip(full.iter().rev())
            .enumerate()
            .all(|(k, (&md, &fd))| {
                if k == 0 {
                    md <= fd
                } else {
                    md == 1 || md == fd
                }
            });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "attn_mask {m:?} does not broadcast to [batch, q_heads, q_seq, total_seq] = {full:?}"
        ))
    }
}

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    if op != Op::Attention {
        return Err(Reason(format!("{op} has no kernel schedule")));
    }
    plan(attrs, inputs, outputs.len())
        .map(|_| ())
        .map_err(|m| Reason(format!("{op}: {m}")))
}

/// Strides `(batch, head, seq)` of a `[B, H, S, D]` (4-D) or `[B, S, H·D]`
/// (3-D) tensor; the head dimension has stride 1.
fn strides(rank3: bool, heads: usize, seq: usize, head: usize) -> (i64, i64, i64) {
    let (h, s, d) = (heads as i64, seq as i64, head as i64);
    if rank3 {
        (s * h * d, d, h * d)
    } else {
        (h * s * d, s * d, d)
    }
}

/// Splits `n` elements into `(offset, lanes)` chunks of `lanes` and a tail.
fn chunks(n: usize, lanes: usize) -> Vec<(i64, u32)> {
    let lanes = lanes.max(1);
    let mut v: Vec<(i64, u32)> = (0..n / lanes)
        .map(|c| ((c * lanes) as i64, lanes as u32))
        .collect();
    if !n.is_multiple_of(lanes) {
        v.push(((n / lanes * lanes) as i64, (n % lanes) as u32));
    }
    v
}

/// Where one phase of the key stream reads its keys and values.
struct KvSource {
    k: BufId,
    v: BufId,
    /// Element index of key 0 (of this source) of the current KV head.
    k_base: IndexExpr,
    v_base: IndexExpr,
    /// Element stride between consecutive keys.
    k_row: i64,
    v_row: i64,
    /// Key `j` of the total sequence is this source's key `j - shift`.
    shift: i64,
}

/// Expression helpers and per-row state shared by the streaming phases.
struct Emit<'p> {
    p: &'p Plan,
    /// Vector width of the logits' exp and of the chunks below.
    lanes: u32,
    /// Private buffer of the row's scaled Q (`head` elements) and its chunks
    /// (offset, lanes).
    qs: BufId,
    q: Vec<(i64, u32)>,
    /// Private buffer of the output accumulator (`v_head` elements) and its
    /// chunks.
    acc: BufId,
    acc_chunks: Vec<(i64, u32)>,
    m: Var,
    l: Var,
    /// Private scratch of one key block of logits, then probabilities
    /// (`block` rounded up to `lanes`).
    scratch: BufId,
    block: i64,
    /// Index expressions of batch, query head and query row (for the mask).
    b: IndexExpr,
    h: IndexExpr,
    i: IndexExpr,
    mask: Option<BufId>,
    /// `sqrt(scale)` rounded to Q's dtype (16-bit path only).
    sqrt_scale: f64,
}

fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::binary(op, a, b)
}

/// Pairwise sum `(e0 + e1) + (e2 + e3)`.
fn tree_sum(mut es: Vec<Expr>) -> Option<Expr> {
    while es.len() > 1 {
        let mut next = Vec::with_capacity(es.len().div_ceil(2));
        let mut it = es.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => bin(BinOp::Add, a, b),
                None => a,
            });
        }
        es = next;
    }
    es.pop()
}

impl Emit<'_> {
    fn ct(&self) -> DType {
        self.p.ct
    }

    fn half(&self) -> bool {
        matches!(self.p.qdt, DType::F16 | DType::BF16)
    }

    fn f(&self, v: f64, lanes: u32) -> Expr {
        let v = if self.ct() == DType::F32 {
            v as f32 as f64
        } else {
            v
        };
        Expr::splat(lanes, Expr::float(self.ct(), v))
    }

    /// A load of storage type `d` converted to the compute type.
    fn ld(&self, buf: BufId, d: DType, index: IndexExpr, lanes: u32) -> Expr {
        to_compute(Expr::load(buf, index, lanes), d, self.ct())
    }

    /// Rounds a compute-type value to Q's 16-bit dtype and back (16-bit path).
    fn round_q(&self, e: Expr) -> Expr {
        if !self.half() {
            return e;
        }
        let r = Expr::cast(DType::F32, Expr::cast(self.p.qdt, to_f32(e, self.ct())));
        to_compute(r, DType::F32, self.ct())
    }

    /// A key's (or query's) lanes scaled the reference's way (16-bit path).
    fn scaled_half(&self, e: Expr, lanes: u32) -> Expr {
        self.round_q(bin(BinOp::Mul, e, self.f(self.sqrt_scale, lanes)))
    }

    /// `exp(x)` of `lanes` compute-type lanes, `x <= 0` (see [`exp`]): kernel-IR
    /// arithmetic for f32, the `Exp` op for f64.
    fn exp(&self, out: &mut Vec<Stmt>, kb: &mut KernelBuilder, x: Expr, lanes: u32) -> Expr {
        if self.ct() == DType::F32 {
            exp::exp_f32(out, &mut || kb.var(), x, lanes)
        } else {
            let v = kb.var();
            out.push(Stmt::Let {
                var: v,
                value: Expr::unary(UnOp::Exp, x),
            });
            Expr::var(v)
        }
    }

    /// The dot products of the row's scaled Q with the keys read at
    /// `k_rows` of `src`, sharing each load of Q between the keys: per key
    /// [`DOT_CHAINS`] vector accumulators (short dependency chains), added
    /// pairwise and reduced over the lanes. Emits the statements into `out`.
    fn dots(
        &self,
        kb: &mut KernelBuilder,
        src: &KvSource,
        k_rows: &[IndexExpr],
        out: &mut Vec<Stmt>,
    ) -> Vec<Expr> {
        let p = self.p;
        let ct = self.ct();
        let kx = |row: &IndexExpr, off: i64, n: u32| {
            let x = self.ld(src.k, p.kdt, row.clone().add(IndexExpr::c(off)), n);
            if self.half() {
                self.scaled_half(x, n)
            } else {
                x
            }
        };
        let full: Vec<(i64, u32)> = self
            .q
            .iter()
            .copied()
            .filter(|&(_, n)| n == self.lanes)
            .collect();
        let tail = self.q.iter().copied().find(|&(_, n)| n != self.lanes);
        let chains = full.len().min(DOT_CHAINS);
        let accs: Vec<Vec<Var>> = k_rows
            .iter()
            .map(|_| (0..chains).map(|_| kb.var()).collect())
            .collect();
        for a in accs.iter().flatten() {
            out.push(Stmt::Local {
                var: *a,
                ty: Ty::vector(ct, self.lanes),
                init: self.f(0.0, self.lanes),
            });
        }
        for (ci, &(off, n)) in full.iter().enumerate() {
            let qv = kb.var();
            out.push(Stmt::Let {
                var: qv,
                value: Expr::load(self.qs, IndexExpr::c(off), n),
            });
            for (row, acc) in k_rows.iter().zip(&accs) {
                let a = acc[ci % chains];
                out.push(Stmt::Assign {
                    var: a,
                    value: Expr::fma(Expr::var(qv), kx(row, off, n), Expr::var(a)),
                });
            }
        }
        let qt = tail.map(|(off, n)| {
            let v = kb.var();
            out.push(Stmt::Let {
                var: v,
                value: Expr::load(self.qs, IndexExpr::c(off), n),
            });
            (v, off, n)
        });
        let reduce = |e: Expr, n: u32| {
            if n > 1 {
                Expr::reduce_lanes(LaneOp::Add, e)
            } else {
                e
            }
        };
        k_rows
            .iter()
            .zip(&accs)
            .map(|(row, acc)| {
                let mut parts = Vec::new();
                if let Some(e) = tree_sum(acc.iter().map(|&a| Expr::var(a)).collect()) {
                    parts.push(reduce(e, self.lanes));
                }
                if let Some((v, off, n)) = qt {
                    parts.push(reduce(bin(BinOp::Mul, Expr::var(v), kx(row, off, n)), n));
                }
                tree_sum(parts).unwrap_or_else(|| self.f(0.0, 1))
            })
            .collect()
    }

    /// The logit of key `jt` (total index) from its dot product: the 16-bit
    /// rounding, softcap, bias.
    fn finish_logit(&self, dot: Expr, jt: IndexExpr) -> Expr {
        let p = self.p;
        let mut s = self.round_q(dot);
        if p.softcap > 0.0 {
            let c = self.f(p.softcap as f64, 1);
            s = bin(
                BinOp::Mul,
                c.clone(),
                Expr::unary(UnOp::Tanh, bin(BinOp::Div, s, c)),
            );
        }
        if let (Some(mb), Some((mdt, mdims))) = (self.mask, &p.mask) {
            let idx = broadcast_index(mdims, &[self.b.clone(), self.h.clone(), self.i.clone(), jt]);
            if *mdt == DType::Bool {
                s = Expr::select(Expr::load(mb, idx, 1), s, self.f(f64::NEG_INFINITY, 1));
            } else {
                let bias = self.round_q(self.ld(mb, *mdt, idx, 1));
                s = bin(BinOp::Add, s, bias);
                if p.softcap <= 0.0 {
                    s = self.round_q(s);
                }
            }
        }
        s
    }

    /// Logits of the keys `keys` (total indices) into the scratch at
    /// `key - j0`, folding them into the block maximum `bm`.
    fn score(
        &self,
        kb: &mut KernelBuilder,
        src: &KvSource,
        keys: &[IndexExpr],
        j0: &IndexExpr,
        bm: Var,
    ) -> Vec<Stmt> {
        let rows: Vec<IndexExpr> = keys
            .iter()
            .map(|jt| {
                src.k_base
                    .clone()
                    .add(jt.clone().add(IndexExpr::c(-src.shift)).mul(src.k_row))
            })
            .collect();
        let mut out = Vec::new();
        let dots = self.dots(kb, src, &rows, &mut out);
        for (dot, jt) in dots.into_iter().zip(keys) {
            let s = kb.var();
            out.push(Stmt::Let {
                var: s,
                value: self.finish_logit(dot, jt.clone()),
            });
            out.push(Stmt::Store {
                buf: self.scratch,
                index: jt.clone().add(j0.clone().mul(-1)),
                value: Expr::var(s),
            });
            out.push(Stmt::Assign {
                var: bm,
                value: bin(BinOp::Max, Expr::var(bm), Expr::var(s)),
            });
        }
        out
    }

    /// Streams the keys `lo..hi` (total indices) of `src` through the online
    /// softmax, block by block: the block's logits ([`KEYS_PER_STEP`] keys
    /// at a time), its maximum, the rescaling of `l` and the accumulator by
    /// `exp(m_old - m_new)`, the probabilities `exp(s - m)` vectorised over
    /// the block, and `acc += p·V` in tiles of [`ACC_TILE`] vectors.
    fn phase(&self, kb: &mut KernelBuilder, src: &KvSource, lo: IndexExpr, hi: IndexExpr) -> Stmt {
        let ct = self.ct();
        let lanes = self.lanes;
        let (j0, bm, msafe, alpha) = (kb.var(), kb.var(), kb.var(), kb.var());
        let jv = IndexExpr::var(j0);
        let jend = jv.clone().add(IndexExpr::c(self.block)).min(hi.clone());
        let count = jend.clone().add(jv.clone().mul(-1));
        let step = KEYS_PER_STEP as i64;
        let main_end = jv.clone().add(count.clone().div(step).mul(step));
        let mut body = vec![Stmt::Local {
            var: bm,
            ty: Ty::scalar(ct),
            init: Expr::var(self.m),
        }];
        let j = kb.var();
        let keys: Vec<IndexExpr> = (0..step)
            .map(|k| IndexExpr::var(j).add(IndexExpr::c(k)))
            .collect();
        let grp = self.score(kb, src, &keys, &jv, bm);
        body.push(for_(j, jv.clone(), main_end.clone(), step, grp));
        let jt = kb.var();
        let one = self.score(kb, src, &[IndexExpr::var(jt)], &jv, bm);
        body.push(for_(jt, main_end, jend.clone(), 1, one));
        // m_safe: 0 while every logit so far is -inf (no NaN from -inf - -inf)
        body.push(Stmt::Let {
            var: msafe,
            value: Expr::select(
                Expr::cmp(CmpOp::Eq, Expr::var(bm), self.f(f64::NEG_INFINITY, 1)),
                self.f(0.0, 1),
                Expr::var(bm),
            ),
        });
        let a = self.exp(
            &mut body,
            kb,
            bin(BinOp::Sub, Expr::var(self.m), Expr::var(msafe)),
            1,
        );
        body.push(Stmt::Let {
            var: alpha,
            value: a,
        });
        body.push(Stmt::Assign {
            var: self.m,
            value: Expr::var(bm),
        });
        // the probabilities, `lanes` at a time: the slots past the block's
        // keys (up to the next multiple of `lanes`) hold -inf, whose exp is 0
        let padded = count
            .clone()
            .add(IndexExpr::c(lanes as i64 - 1))
            .div(lanes as i64)
            .mul(lanes as i64);
        let pad = kb.var();
        body.push(for_(
            pad,
            count,
            padded.clone(),
            1,
            vec![Stmt::Store {
                buf: self.scratch,
                index: IndexExpr::var(pad),
                value: self.f(f64::NEG_INFINITY, 1),
            }],
        ));
        let (sum, v) = (kb.var(), kb.var());
        body.push(Stmt::Local {
            var: sum,
            ty: Ty::vector(ct, lanes),
            init: self.f(0.0, lanes),
        });
        let mut probs = Vec::new();
        let x = bin(
            BinOp::Sub,
            Expr::load(self.scratch, IndexExpr::var(v), lanes),
            Expr::splat(lanes, Expr::var(msafe)),
        );
        let e = self.exp(&mut probs, kb, x, lanes);
        probs.push(Stmt::Store {
            buf: self.scratch,
            index: IndexExpr::var(v),
            value: e.clone(),
        });
        probs.push(Stmt::Assign {
            var: sum,
            value: bin(BinOp::Add, Expr::var(sum), e),
        });
        body.push(for_(v, IndexExpr::c(0), padded, lanes as i64, probs));
        let total = if lanes > 1 {
            Expr::reduce_lanes(LaneOp::Add, Expr::var(sum))
        } else {
            Expr::var(sum)
        };
        body.push(Stmt::Assign {
            var: self.l,
            value: Expr::fma(Expr::var(self.l), Expr::var(alpha), total),
        });
        // acc = acc·alpha + Σ_j p_j·V[j], a tile of accumulators at a time
        for tile in self.acc_chunks.chunks(ACC_TILE) {
            let vars: Vec<Var> = tile.iter().map(|_| kb.var()).collect();
            for (&var, &(off, n)) in vars.iter().zip(tile) {
                body.push(Stmt::Local {
                    var,
                    ty: Ty::vector(ct, n),
                    init: bin(
                        BinOp::Mul,
                        Expr::load(self.acc, IndexExpr::c(off), n),
                        Expr::splat(n, Expr::var(alpha)),
                    ),
                });
            }
            let (j2, pj) = (kb.var(), kb.var());
            let v_row = src.v_base.clone().add(
                IndexExpr::var(j2)
                    .add(IndexExpr::c(-src.shift))
                    .mul(src.v_row),
            );
            let mut acc_body = vec![Stmt::Let {
                var: pj,
                value: Expr::load(self.scratch, IndexExpr::var(j2).add(jv.clone().mul(-1)), 1),
            }];
            for (&var, &(off, n)) in vars.iter().zip(tile) {
                let vx = self.ld(src.v, self.p.vdt, v_row.clone().add(IndexExpr::c(off)), n);
                acc_body.push(Stmt::Assign {
                    var,
                    value: Expr::fma(Expr::splat(n, Expr::var(pj)), vx, Expr::var(var)),
                });
            }
            body.push(for_(j2, jv.clone(), jend.clone(), 1, acc_body));
            for (&var, &(off, _)) in vars.iter().zip(tile) {
                body.push(Stmt::Store {
                    buf: self.acc,
                    index: IndexExpr::c(off),
                    value: Expr::var(var),
                });
            }
        }
        for_(j0, lo, hi, self.block, body)
    }
}

/// `e` of storage dtype `d` converted to compute dtype `ct`.
fn to_compute(e: Expr, d: DType, ct: DType) -> Expr {
    let e = if matches!(d, DType::F16 | DType::BF16) {
        Expr::cast(DType::F32, e)
    } else {
        e
    };
    let now = if matches!(d, DType::F16 | DType::BF16) {
        DType::F32
    } else {
        d
    };
    if now == ct {
        e
    } else {
        Expr::cast(ct, e)
    }
}

fn to_f32(e: Expr, ct: DType) -> Expr {
    if ct == DType::F32 {
        e
    } else {
        Expr::cast(DType::F32, e)
    }
}

/// A compute-type value converted for a store into dtype `d`.
fn to_store(e: Expr, ct: DType, d: DType) -> Expr {
    if d == ct {
        e
    } else if matches!(d, DType::F16 | DType::BF16) {
        Expr::cast(d, to_f32(e, ct))
    } else {
        Expr::cast(d, e)
    }
}

/// `x` rounded to `d` (as the reference's `R::of(x).round_to(d)`).
fn round_to(x: f64, d: DType) -> f64 {
    Tensor::from_f64s(d, vec![1], &[x])
        .map(|t| t.to_f64_vec()[0])
        .unwrap_or(x)
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let graph = cx.graph;
    let ins: Vec<Option<&TensorType>> =
        node.inputs.iter().map(|o| o.map(|v| graph.ty(v))).collect();
    let p = plan(&node.attrs, &ins, node.outputs.len())?;
    lower_y(cx, node, &p)?;
    for which in 1..node.outputs.len().min(3) {
        outputs::present(cx, node, &p, which)?;
    }
    if node.outputs.len() > 3 {
        outputs::qk_matmul_output(cx, node, &p)?;
    }
    Ok(())
}

/// The allowed keys `lo..hi` (total indices) of query row `i` of batch `b`:
/// causality, the windows, the mask's padding and `nonpad_kv_seqlen`.
fn row_bounds(
    p: &Plan,
    b_e: &IndexExpr,
    i_e: &IndexExpr,
    nonpad: Option<BufId>,
) -> (IndexExpr, IndexExpr) {
    let g = &p.g;
    let nonpad_len = nonpad.map(|nb| IndexExpr::Dyn(Box::new(Expr::load(nb, b_e.clone(), 1))));
    let pos = match &nonpad_len {
        _ if p.past => i_e.clone().add(IndexExpr::c(g.past_seq as i64)),
        Some(n) => i_e
            .clone()
            .add(n.clone())
            .add(IndexExpr::c(-(g.q_seq as i64))),
        None => i_e.clone(),
    };
    let mut lo = IndexExpr::c(0);
    if p.left_window >= 0 {
        lo = pos.clone().add(IndexExpr::c(-p.left_window)).max(lo);
    }
    let mut hi = IndexExpr::c(g.total() as i64);
    if p.causal {
        hi = hi.min(pos.clone().add(IndexExpr::c(1)));
    }
    if p.right_window >= 0 {
        hi = hi.min(pos.clone().add(IndexExpr::c(p.right_window + 1)));
    }
    if let Some((_, md)) = &p.mask {
        hi = hi.min(IndexExpr::c(md.last().copied().unwrap_or(1) as i64));
    }
    if let Some(n) = nonpad_len {
        hi = hi.min(n);
    }
    (lo, hi)
}

/// The reference's scale factor: `sqrt(scale)` (f32 sqrt of the attribute,
/// f64 of the default `1/sqrt(D)`) rounded to the compute type and to Q's
/// dtype; it is applied to Q and to K.
fn sqrt_scale(p: &Plan) -> f64 {
    let s = match p.scale {
        Some(s) => s.sqrt() as f64,
        None => (1.0 / (p.g.head as f64).sqrt()).sqrt(),
    };
    round_to(round_to(s, p.ct), p.qdt)
}

/// The kernel of output 0 (`Y`): the streaming online softmax.
fn lower_y(cx: &mut Lower, node: &Node, p: &Plan) -> Result<(), String> {
    let g = &p.g;
    let input = |i: usize| node.inputs.get(i).copied().flatten();
    let val = |i: usize, what: &str| input(i).ok_or_else(|| format!("missing input {what}"));
    let (qb, kbuf, vbuf) = (
        cx.buf(val(0, "Q")?),
        cx.buf(val(1, "K")?),
        cx.buf(val(2, "V")?),
    );
    let mask = input(3).map(|m| cx.buf(m));
    let past = if p.past {
        Some((cx.buf(val(4, "past_key")?), cx.buf(val(5, "past_value")?)))
    } else {
        None
    };
    let nonpad = if p.nonpad {
        Some(cx.buf(val(6, "nonpad_kv_seqlen")?))
    } else {
        None
    };
    let yb = cx.out_buf(node.outputs[0]);
    let mut kb = KernelBuilder::new(node.name.clone());
    for b in [Some(qb), Some(kbuf), Some(vbuf), mask, nonpad]
        .into_iter()
        .flatten()
        .chain(past.into_iter().flat_map(|(a, b)| [a, b]))
    {
        kb.read(b);
    }
    kb.write(yb);
    let y_len: usize = cx.dims(node.outputs[0]).iter().product();
    if y_len == 0 {
        cx.push(kb.finish(Vec::new()));
        return Ok(());
    }

    let lanes = cx.opts.lanes.max(1) as usize;
    let t = g.total();
    let block = cx.opts.attn_block.max(1).min(t.max(1));
    let n_qblocks = g.q_seq.div_ceil(QUERY_BLOCK);
    let (bv, hv, qbv) = (kb.axis(g.batch), kb.axis(g.q_heads), kb.axis(n_qblocks));
    let i = kb.var();
    let (b_e, h_e, i_e) = (IndexExpr::var(bv), IndexExpr::var(hv), IndexExpr::var(i));
    let kvh = h_e.clone().div((g.q_heads / g.kv_heads) as i64);
    let (scratch, qs, accb) = (cx.local(), cx.local(), cx.local());
    let scratch_len = block.div_ceil(lanes) * lanes;

    let sq = sqrt_scale(p);
    let em = Emit {
        p,
        lanes: lanes as u32,
        qs,
        q: chunks(g.head, lanes),
        acc: accb,
        acc_chunks: chunks(g.v_head, lanes),
        m: kb.var(),
        l: kb.var(),
        scratch,
        block: block as i64,
        b: b_e.clone(),
        h: h_e.clone(),
        i: i_e.clone(),
        mask,
        sqrt_scale: sq,
    };
    let ct = p.ct;

    // the row's scaled Q and a zero accumulator in private buffers
    let mut row = Vec::new();
    let (qsb, qsh, qss) = strides(g.rank3, g.q_heads, g.q_seq, g.head);
    let q_base = b_e
        .clone()
        .mul(qsb)
        .add(h_e.clone().mul(qsh))
        .add(i_e.clone().mul(qss));
    for &(off, n) in &em.q {
        let x = em.ld(qb, p.qdt, q_base.clone().add(IndexExpr::c(off)), n);
        let value = if em.half() {
            em.scaled_half(x, n)
        } else {
            bin(BinOp::Mul, x, em.f(sq * sq, n))
        };
        row.push(Stmt::Store {
            buf: qs,
            index: IndexExpr::c(off),
            value,
        });
    }
    for &(off, n) in &em.acc_chunks {
        row.push(Stmt::Store {
            buf: accb,
            index: IndexExpr::c(off),
            value: em.f(0.0, n),
        });
    }
    row.push(Stmt::Local {
        var: em.m,
        ty: Ty::scalar(ct),
        init: em.f(f64::NEG_INFINITY, 1),
    });
    row.push(Stmt::Local {
        var: em.l,
        ty: Ty::scalar(ct),
        init: em.f(0.0, 1),
    });

    // the allowed keys of row i: lo..hi of the total sequence
    let (lo, hi) = row_bounds(p, &b_e, &i_e, nonpad);

    let (ksb, ksh, kss) = strides(g.rank3, g.kv_heads, g.kv_seq, g.head);
    let (vsb, vsh, vss) = strides(g.rank3, g.kv_heads, g.kv_seq, g.v_head);
    let new_src = KvSource {
        k: kbuf,
        v: vbuf,
        k_base: b_e.clone().mul(ksb).add(kvh.clone().mul(ksh)),
        v_base: b_e.clone().mul(vsb).add(kvh.clone().mul(vsh)),
        k_row: kss,
        v_row: vss,
        shift: g.past_seq as i64,
    };
    if let Some((pk, pv)) = past {
        let ps = g.past_seq;
        let (pksb, pksh, pkss) = strides(false, g.kv_heads, ps, g.head);
        let (pvsb, pvsh, pvss) = strides(false, g.kv_heads, ps, g.v_head);
        let past_src = KvSource {
            k: pk,
            v: pv,
            k_base: b_e.clone().mul(pksb).add(kvh.clone().mul(pksh)),
            v_base: b_e.clone().mul(pvsb).add(kvh.clone().mul(pvsh)),
            k_row: pkss,
            v_row: pvss,
            shift: 0,
        };
        let ps = IndexExpr::c(ps as i64);
        row.push(em.phase(&mut kb, &past_src, lo.clone(), hi.clone().min(ps.clone())));
        row.push(em.phase(&mut kb, &new_src, lo.max(ps), hi));
    } else {
        row.push(em.phase(&mut kb, &new_src, lo, hi));
    }

    // Y = acc / l (zeros for a row without allowed keys)
    let inv = kb.var();
    row.push(Stmt::Let {
        var: inv,
        value: Expr::select(
            Expr::cmp(CmpOp::Eq, Expr::var(em.l), em.f(0.0, 1)),
            em.f(0.0, 1),
            bin(BinOp::Div, em.f(1.0, 1), Expr::var(em.l)),
        ),
    });
    let (ysb, ysh, yss) = strides(g.rank3, g.q_heads, g.q_seq, g.v_head);
    let y_base = b_e.mul(ysb).add(h_e.mul(ysh)).add(i_e.mul(yss));
    for &(off, n) in &em.acc_chunks {
        let y = bin(
            BinOp::Mul,
            Expr::load(accb, IndexExpr::c(off), n),
            Expr::splat(n, Expr::var(inv)),
        );
        row.push(Stmt::Store {
            buf: yb,
            index: y_base.clone().add(IndexExpr::c(off)),
            value: to_store(y, ct, p.qdt),
        });
    }

    let i0 = IndexExpr::var(qbv).mul(QUERY_BLOCK as i64);
    let i_end = i0
        .clone()
        .add(IndexExpr::c(QUERY_BLOCK as i64))
        .min(IndexExpr::c(g.q_seq as i64));
    let alloc = |buf: BufId, len: usize| Stmt::Alloc {
        buf,
        scope: Scope::Private,
        dtype: ct,
        len: len.max(1),
    };
    let body = vec![
        alloc(scratch, scratch_len),
        alloc(qs, g.head),
        alloc(accb, g.v_head),
        for_(i, i0, i_end, 1, row),
    ];
    cx.push(kb.finish(body));
    Ok(())
}

mod exp;
mod outputs;

#[cfg(test)]
mod tests;
