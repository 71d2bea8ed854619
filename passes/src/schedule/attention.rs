//! The Attention schedule (ONNX opset-23 `Attention`), FlashAttention-style.
//!
//! Requires: static shapes; Q, K, V float (f32, f16/bf16 computed in f32,
//! f64 computed in f64); only output 0 (`Y`) requested. Establishes: one
//! kernel whose grid runs over (batch, query head, block of
//! [`QUERY_BLOCK`] query rows). For each query row the kernel streams over
//! the allowed keys in blocks of [`Options::attn_block`], keeping the online
//! softmax state: a running maximum `m`, a running sum `l` and an output
//! accumulator of `Dv` lanes held in `Local` vectors (chunks of
//! [`Options::lanes`]). Per key block it computes the block's logits (dot
//! products vectorised over the head dimension) into a private scratch of
//! `attn_block` elements, takes the block maximum, rescales `l` and the
//! accumulator once by `exp(m_old - m_new)`, then accumulates `exp(s - m)`
//! and `exp(s - m)·V[j]` (vectorised over `Dv`). No buffer of `S_q × S_kv`
//! elements is ever allocated or written.
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
//! Numerics: for f32 the logit is `(q·scale)·k` (one rounding away from the
//! reference's `(q·√scale)·(k·√scale)`), dot products accumulate in lane
//! order with fused multiply-adds, and the softmax is normalised once at the
//! end (`acc · (1/l)`): results agree with the reference to a few ulp per
//! key. For f16/bf16 the reference's roundings of the scaled Q and K, the
//! logits and the bias are reproduced; its rounding of the normalised
//! probabilities cannot be (they never exist here), so results agree to
//! about the 16-bit type's precision.
//!
//! Not scheduled (a [`Reason`]): the optional outputs `present_key`,
//! `present_value` and `qk_matmul_output`; non-float Q/K/V; masks of a type
//! that is neither bool nor numeric.

use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, LaneOp, Scope, Ty, UnOp};
use kiln_ir::Attrs;

/// Query rows per grid point.
pub const QUERY_BLOCK: usize = 16;

/// Independent FMA chains per dot product (hides the FMA latency).
const DOT_CHAINS: usize = 4;

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
}

fn dims_of(what: &str, t: &TensorType) -> Result<Vec<usize>, String> {
    t.shape
        .fixed()
        .ok_or_else(|| format!("{what} has a symbolic shape {}", t.shape))
}

fn plan(attrs: &Attrs, inputs: &[Option<&TensorType>], n_outputs: usize) -> Result<Plan, String> {
    if n_outputs != 1 {
        return Err(format!(
            "Attention with {n_outputs} outputs: only Y is scheduled (present_key, \
             present_value and qk_matmul_output are not)"
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
    /// Q chunks: variable holding the scaled Q lanes, offset, lanes.
    q: Vec<(Var, i64, u32)>,
    /// Accumulator chunks over `Dv`: local, offset, lanes.
    acc: Vec<(Var, i64, u32)>,
    m: Var,
    l: Var,
    /// Private scratch of `block` logits.
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

    /// The logit of key `jt` (total index) read at `k_index` of `src`: the
    /// dot product, softcap, bias.
    fn logit(&self, src: &KvSource, k_index: IndexExpr, jt: IndexExpr) -> Expr {
        let p = self.p;
        // group chunks by lane count; within a group, fold the chunks into
        // DOT_CHAINS independent FMA chains (short dependency chains), add
        // the chains, reduce the lanes, then add the groups.
        let mut groups: Vec<(u32, usize, Vec<Expr>)> = Vec::new();
        for &(qv, off, lanes) in &self.q {
            let mut kx = self.ld(src.k, p.kdt, k_index.clone().add(IndexExpr::c(off)), lanes);
            if self.half() {
                kx = self.scaled_half(kx, lanes);
            }
            let gi = match groups.iter().position(|(n, _, _)| *n == lanes) {
                Some(gi) => gi,
                None => {
                    groups.push((lanes, 0, Vec::new()));
                    groups.len() - 1
                }
            };
            let (_, count, chains) = &mut groups[gi];
            let c = *count % DOT_CHAINS;
            *count += 1;
            if c == chains.len() {
                chains.push(bin(BinOp::Mul, Expr::var(qv), kx));
            } else {
                let prev = std::mem::replace(&mut chains[c], Expr::f32(0.0));
                chains[c] = Expr::fma(Expr::var(qv), kx, prev);
            }
        }
        let mut s: Option<Expr> = None;
        for (lanes, _, mut chains) in groups {
            // pairwise: (c0 + c1) + (c2 + c3)
            while chains.len() > 1 {
                let mut next = Vec::with_capacity(chains.len().div_ceil(2));
                let mut it = chains.into_iter();
                while let Some(a) = it.next() {
                    next.push(match it.next() {
                        Some(b) => bin(BinOp::Add, a, b),
                        None => a,
                    });
                }
                chains = next;
            }
            let Some(e) = chains.pop() else { continue };
            let e = if lanes > 1 {
                Expr::reduce_lanes(LaneOp::Add, e)
            } else {
                e
            };
            s = Some(match s {
                None => e,
                Some(a) => bin(BinOp::Add, a, e),
            });
        }
        let mut s = self.round_q(s.unwrap_or_else(|| self.f(0.0, 1)));
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

    /// Streams the keys `lo..hi` (total indices) of `src` through the online
    /// softmax, block by block.
    fn phase(&self, kb: &mut KernelBuilder, src: &KvSource, lo: IndexExpr, hi: IndexExpr) -> Stmt {
        let ct = self.ct();
        let (j0, bm, j, sj, msafe, alpha, j2, pj) = (
            kb.var(),
            kb.var(),
            kb.var(),
            kb.var(),
            kb.var(),
            kb.var(),
            kb.var(),
            kb.var(),
        );
        let jv = IndexExpr::var(j0);
        let jend = jv.clone().add(IndexExpr::c(self.block)).min(hi.clone());
        let local_key = |x: Var, row: i64, base: &IndexExpr| {
            base.clone()
                .add(IndexExpr::var(x).add(IndexExpr::c(-src.shift)).mul(row))
        };
        let s = self.logit(src, local_key(j, src.k_row, &src.k_base), IndexExpr::var(j));
        let slot = |x: Var| IndexExpr::var(x).add(jv.clone().mul(-1));
        let scores = vec![
            Stmt::Let { var: sj, value: s },
            Stmt::Store {
                buf: self.scratch,
                index: slot(j),
                value: Expr::var(sj),
            },
            Stmt::Assign {
                var: bm,
                value: bin(BinOp::Max, Expr::var(bm), Expr::var(sj)),
            },
        ];
        let mut body = vec![
            Stmt::Local {
                var: bm,
                ty: Ty::scalar(ct),
                init: Expr::var(self.m),
            },
            for_(j, jv.clone(), jend.clone(), 1, scores),
            // m_safe: 0 while every logit so far is -inf (no NaN from -inf - -inf)
            Stmt::Let {
                var: msafe,
                value: Expr::select(
                    Expr::cmp(CmpOp::Eq, Expr::var(bm), self.f(f64::NEG_INFINITY, 1)),
                    self.f(0.0, 1),
                    Expr::var(bm),
                ),
            },
            Stmt::Let {
                var: alpha,
                value: Expr::unary(
                    UnOp::Exp,
                    bin(BinOp::Sub, Expr::var(self.m), Expr::var(msafe)),
                ),
            },
            Stmt::Assign {
                var: self.l,
                value: bin(BinOp::Mul, Expr::var(self.l), Expr::var(alpha)),
            },
        ];
        for &(a, _, lanes) in &self.acc {
            body.push(Stmt::Assign {
                var: a,
                value: bin(
                    BinOp::Mul,
                    Expr::var(a),
                    Expr::splat(lanes, Expr::var(alpha)),
                ),
            });
        }
        body.push(Stmt::Assign {
            var: self.m,
            value: Expr::var(bm),
        });
        let mut acc_body = vec![
            Stmt::Let {
                var: pj,
                value: Expr::unary(
                    UnOp::Exp,
                    bin(
                        BinOp::Sub,
                        Expr::load(self.scratch, slot(j2), 1),
                        Expr::var(msafe),
                    ),
                ),
            },
            Stmt::Assign {
                var: self.l,
                value: bin(BinOp::Add, Expr::var(self.l), Expr::var(pj)),
            },
        ];
        let v_row = local_key(j2, src.v_row, &src.v_base);
        for &(a, off, lanes) in &self.acc {
            let vx = self.ld(
                src.v,
                self.p.vdt,
                v_row.clone().add(IndexExpr::c(off)),
                lanes,
            );
            acc_body.push(Stmt::Assign {
                var: a,
                value: Expr::fma(Expr::splat(lanes, Expr::var(pj)), vx, Expr::var(a)),
            });
        }
        body.push(for_(j2, jv.clone(), jend, 1, acc_body));
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
    let scratch = cx.local();

    // reference scale: sqrt(scale) (f32 sqrt of the attribute, f64 of the
    // default) rounded to Q's dtype, applied to Q and to K
    let sqrt_scale = match p.scale {
        Some(s) => s.sqrt() as f64,
        None => (1.0 / (g.head as f64).sqrt()).sqrt(),
    };
    let sq = round_to(round_to(sqrt_scale, p.ct), p.qdt);
    let mut em = Emit {
        p: &p,
        q: Vec::new(),
        acc: Vec::new(),
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

    let mut row = Vec::new();
    let (qsb, qsh, qss) = strides(g.rank3, g.q_heads, g.q_seq, g.head);
    let q_base = b_e
        .clone()
        .mul(qsb)
        .add(h_e.clone().mul(qsh))
        .add(i_e.clone().mul(qss));
    for (off, n) in chunks(g.head, lanes) {
        let var = kb.var();
        let x = em.ld(qb, p.qdt, q_base.clone().add(IndexExpr::c(off)), n);
        let value = if em.half() {
            em.scaled_half(x, n)
        } else {
            bin(BinOp::Mul, x, em.f(sq * sq, n))
        };
        row.push(Stmt::Let { var, value });
        em.q.push((var, off, n));
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
    for (off, n) in chunks(g.v_head, lanes) {
        let var = kb.var();
        row.push(Stmt::Local {
            var,
            ty: Ty::vector(ct, n),
            init: em.f(0.0, n),
        });
        em.acc.push((var, off, n));
    }

    // the allowed keys of row i: lo..hi of the total sequence
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
    let mut hi = IndexExpr::c(t as i64);
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
    for &(a, off, n) in &em.acc {
        let y = bin(BinOp::Mul, Expr::var(a), Expr::splat(n, Expr::var(inv)));
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
    let body = vec![
        Stmt::Alloc {
            buf: scratch,
            scope: Scope::Private,
            dtype: ct,
            len: block,
        },
        for_(i, i0, i_end, 1, row),
    ];
    cx.push(kb.finish(body));
    Ok(())
}

#[cfg(test)]
mod tests;
