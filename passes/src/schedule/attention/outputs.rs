//! Attention's optional outputs 1 to 3, each in a kernel of its own next to
//! the streaming kernel of `Y`, which they leave unchanged.
//!
//! Requires: a checked [`Plan`] (static shapes, float Q, K and V).
//! Establishes:
//! - `present_key` / `present_value` (`[B, Hkv, P + S_kv, D]`, K's and V's
//!   dtypes): the past cache followed by the new keys or values along the
//!   sequence axis (3-D K/V split into heads). A copy kernel over (batch, KV
//!   head), rows copied in vectors of `lanes` in the storage dtype, so the
//!   result is bit-exact.
//! - `qk_matmul_output` (`[B, Hq, S_q, P + S_kv]`, Q's dtype): the one place
//!   where a score matrix exists, because the user asked for it as an
//!   output. Grid over (batch, query head, block of query rows); per row and
//!   key the reference's steps in the reference's order: Q and K scaled by
//!   `sqrt(scale)` and rounded to Q's dtype, the dot product accumulated in
//!   index order with separate multiply and add, rounded to Q's dtype (mode
//!   0); softcap (mode 1); plus the mask, and -inf where causality, a window,
//!   the mask's padding or `nonpad_kv_seqlen` forbid the key (mode 2); the
//!   row's softmax (mode 3): the row maximum, then the sum of `exp(s - max)`,
//!   then each `exp(s - max) / sum`, three passes over the keys that
//!   recompute the logits instead of keeping a row buffer; a row that is all
//!   -inf gives zeros, and the probabilities are rounded to
//!   `softmax_precision` where it is given, as in the reference. For f32 and
//!   f64 these are the reference's operations in its order (`exp` is the
//!   kernel IR's `Exp`, the reference's function), so every mode agrees with
//!   the interpreter bit for bit; for f16/bf16 each of the reference's
//!   roundings is reproduced as well.

use super::*;

fn input(node: &Node, i: usize, what: &str) -> Result<ValueId, String> {
    node.inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("missing input {what}"))
}

/// Output `which` (1: `present_key`, 2: `present_value`).
pub(super) fn present(cx: &mut Lower, node: &Node, p: &Plan, which: usize) -> Result<(), String> {
    let g = &p.g;
    let (name, head) = if which == 1 {
        ("present_key", g.head)
    } else {
        ("present_value", g.v_head)
    };
    let new = cx.buf(input(node, which, if which == 1 { "K" } else { "V" })?);
    let past = if p.past {
        let what = if which == 1 { "past_key" } else { "past_value" };
        Some(cx.buf(input(node, which + 3, what)?))
    } else {
        None
    };
    let out = cx.out_buf(node.outputs[which]);
    let mut kb = KernelBuilder::new(format!("{} {name}", node.name));
    kb.read(new);
    if let Some(pb) = past {
        kb.read(pb);
    }
    kb.write(out);
    let len: usize = cx.dims(node.outputs[which]).iter().product();
    if len == 0 {
        cx.push(kb.finish(Vec::new()));
        return Ok(());
    }
    let lanes = cx.opts.lanes.max(1) as usize;
    let (bv, hv) = (kb.axis(g.batch), kb.axis(g.kv_heads));
    let (b_e, h_e) = (IndexExpr::var(bv), IndexExpr::var(hv));
    let (ps, t) = (g.past_seq, g.total());
    let out_base = b_e
        .clone()
        .mul((g.kv_heads * t * head) as i64)
        .add(h_e.clone().mul((t * head) as i64));
    // copies `rows` rows of `head` elements: src row r at src_base + r·src_row,
    // to output row `first + r`
    let copy = |kb: &mut KernelBuilder,
                src: BufId,
                src_base: IndexExpr,
                src_row: i64,
                first: usize,
                rows: usize| {
        let r = kb.var();
        let re = IndexExpr::var(r);
        let body = chunks(head, lanes)
            .into_iter()
            .map(|(off, n)| Stmt::Store {
                buf: out,
                index: out_base
                    .clone()
                    .add(re.clone().add(IndexExpr::c(first as i64)).mul(head as i64))
                    .add(IndexExpr::c(off)),
                value: Expr::load(
                    src,
                    src_base
                        .clone()
                        .add(re.clone().mul(src_row))
                        .add(IndexExpr::c(off)),
                    n,
                ),
            })
            .collect();
        for_n(r, rows, body)
    };
    let mut body = Vec::new();
    if let Some(pb) = past {
        let base = b_e
            .clone()
            .mul((g.kv_heads * ps * head) as i64)
            .add(h_e.clone().mul((ps * head) as i64));
        body.push(copy(&mut kb, pb, base, head as i64, 0, ps));
    }
    let (sb, sh, ss) = strides(g.rank3, g.kv_heads, g.kv_seq, head);
    let base = b_e.mul(sb).add(h_e.mul(sh));
    body.push(copy(&mut kb, new, base, ss, ps, g.kv_seq));
    cx.push(kb.finish(body));
    Ok(())
}

/// `e` (compute type) rounded to dtype `d` and converted back; the identity
/// when `d` is the compute type.
fn round_dt(e: Expr, ct: DType, d: DType) -> Expr {
    if d == ct {
        return e;
    }
    to_compute(to_store(e, ct, d), d, ct)
}

/// Output 3, `qk_matmul_output`, in mode `p.qk_mode`.
pub(super) fn qk_matmul_output(cx: &mut Lower, node: &Node, p: &Plan) -> Result<(), String> {
    let g = &p.g;
    let (ct, qdt) = (p.ct, p.qdt);
    let qb = cx.buf(input(node, 0, "Q")?);
    let kbuf = cx.buf(input(node, 1, "K")?);
    let mask = node.inputs.get(3).copied().flatten().map(|m| cx.buf(m));
    let past_k = if p.past {
        Some(cx.buf(input(node, 4, "past_key")?))
    } else {
        None
    };
    let nonpad = if p.nonpad {
        Some(cx.buf(input(node, 6, "nonpad_kv_seqlen")?))
    } else {
        None
    };
    let out = cx.out_buf(node.outputs[3]);
    let mut kb = KernelBuilder::new(format!("{} qk_matmul_output", node.name));
    for b in [Some(qb), Some(kbuf), mask, past_k, nonpad]
        .into_iter()
        .flatten()
    {
        kb.read(b);
    }
    kb.write(out);
    let len: usize = cx.dims(node.outputs[3]).iter().product();
    if len == 0 {
        cx.push(kb.finish(Vec::new()));
        return Ok(());
    }
    let t = g.total();
    let n_qblocks = g.q_seq.div_ceil(QUERY_BLOCK);
    let (bv, hv, qbv) = (kb.axis(g.batch), kb.axis(g.q_heads), kb.axis(n_qblocks));
    let i = kb.var();
    let (b_e, h_e, i_e) = (IndexExpr::var(bv), IndexExpr::var(hv), IndexExpr::var(i));
    let kvh = h_e.clone().div((g.q_heads / g.kv_heads) as i64);
    let (lo, hi) = row_bounds(p, &b_e, &i_e, nonpad);
    let sq = sqrt_scale(p);
    let f = |v: f64| Expr::float(ct, if ct == DType::F32 { v as f32 as f64 } else { v });
    let rq = |e: Expr| round_dt(e, ct, qdt);
    // after an f32 softcap, 16-bit logits stay f32 up to the softmax
    let after_cap = if p.softcap > 0.0 && matches!(qdt, DType::F16 | DType::BF16) {
        DType::F32
    } else {
        qdt
    };
    let rc = |e: Expr| round_dt(e, ct, after_cap);

    let (qsb, qsh, qss) = strides(g.rank3, g.q_heads, g.q_seq, g.head);
    let q_base = b_e
        .clone()
        .mul(qsb)
        .add(h_e.clone().mul(qsh))
        .add(i_e.clone().mul(qss));
    let (ksb, ksh, kss) = strides(g.rank3, g.kv_heads, g.kv_seq, g.head);
    let ps = g.past_seq;
    // (buffer, dtype, base of key `shift`, row stride, shift, keys lo..hi)
    let mut sources = Vec::new();
    if let Some(pk) = past_k {
        let base = b_e
            .clone()
            .mul((g.kv_heads * ps * g.head) as i64)
            .add(kvh.clone().mul((ps * g.head) as i64));
        sources.push((pk, base, g.head as i64, 0i64, 0usize, ps));
    }
    let new_base = b_e.clone().mul(ksb).add(kvh.mul(ksh));
    sources.push((kbuf, new_base, kss, ps as i64, ps, t));

    let mask_last = p
        .mask
        .as_ref()
        .map(|(_, md)| md.last().copied().unwrap_or(1));
    // the value of key j (total index) in `var`, up to the mode's step (at
    // most 2: the logit); `src` is the key's buffer, base, row and shift
    let logit = |kb: &mut KernelBuilder,
                 src: &(BufId, IndexExpr, i64, i64, usize, usize),
                 j: Var,
                 var: Var|
     -> Vec<Stmt> {
        let (kbuf, base, row, shift) = (src.0, &src.1, src.2, src.3);
        let k_row = base
            .clone()
            .add(IndexExpr::var(j).add(IndexExpr::c(-shift)).mul(row));
        let (d, acc) = (kb.var(), kb.var());
        let qd = rq(Expr::binary(
            BinOp::Mul,
            to_compute(
                Expr::load(qb, q_base.clone().add(IndexExpr::var(d)), 1),
                qdt,
                ct,
            ),
            f(sq),
        ));
        let kd = rq(Expr::binary(
            BinOp::Mul,
            to_compute(Expr::load(kbuf, k_row.add(IndexExpr::var(d)), 1), p.kdt, ct),
            f(sq),
        ));
        let mut out = vec![
            Stmt::Local {
                var: acc,
                ty: Ty::scalar(ct),
                init: f(0.0),
            },
            for_n(
                d,
                g.head,
                vec![Stmt::Assign {
                    var: acc,
                    value: Expr::binary(
                        BinOp::Add,
                        Expr::var(acc),
                        Expr::binary(BinOp::Mul, qd, kd),
                    ),
                }],
            ),
        ];
        let mut s = rq(Expr::var(acc));
        if p.qk_mode >= 1 && p.softcap > 0.0 {
            let c = f(p.softcap as f64);
            let th = rc(Expr::unary(
                UnOp::Tanh,
                rc(Expr::binary(BinOp::Div, s, c.clone())),
            ));
            s = rc(Expr::binary(BinOp::Mul, th, c));
        }
        if p.qk_mode >= 2 {
            let je = IndexExpr::var(j);
            let allowed = Expr::binary(
                BinOp::And,
                Expr::cmp(CmpOp::Ge, Expr::Index(je.clone()), Expr::Index(lo.clone())),
                Expr::cmp(CmpOp::Lt, Expr::Index(je.clone()), Expr::Index(hi.clone())),
            );
            let ninf = f(f64::NEG_INFINITY);
            let bias = match (mask, &p.mask, mask_last) {
                (Some(mb), Some((mdt, mdims)), Some(last)) if last > 0 => {
                    // padded positions are forbidden (hi <= last): clamp the
                    // index so that the load stays in bounds
                    let jc = je.min(IndexExpr::c(last as i64 - 1));
                    let idx = broadcast_index(mdims, &[b_e.clone(), h_e.clone(), i_e.clone(), jc]);
                    if *mdt == DType::Bool {
                        Expr::select(Expr::load(mb, idx, 1), f(0.0), ninf.clone())
                    } else {
                        rq(to_compute(Expr::load(mb, idx, 1), *mdt, ct))
                    }
                }
                _ => f(0.0),
            };
            s = rc(Expr::binary(
                BinOp::Add,
                s,
                Expr::select(allowed, bias, ninf),
            ));
        }
        out.push(Stmt::Let { var, value: s });
        out
    };
    // one pass over every key of the row: `each(kb, j, value)` per key
    let pass = |kb: &mut KernelBuilder, each: &dyn Fn(Var, Var) -> Vec<Stmt>| -> Vec<Stmt> {
        sources
            .iter()
            .map(|src| {
                let (j, s) = (kb.var(), kb.var());
                let mut body = logit(kb, src, j, s);
                body.extend(each(j, s));
                for_(
                    j,
                    IndexExpr::c(src.4 as i64),
                    IndexExpr::c(src.5 as i64),
                    1,
                    body,
                )
            })
            .collect()
    };
    let (osb, osh, oss) = (
        (g.q_heads * g.q_seq * t) as i64,
        (g.q_seq * t) as i64,
        t as i64,
    );
    let out_at = |j: Var| {
        b_e.clone()
            .mul(osb)
            .add(h_e.clone().mul(osh))
            .add(i_e.clone().mul(oss))
            .add(IndexExpr::var(j))
    };
    let mut row = Vec::new();
    if p.qk_mode < 3 {
        row.extend(pass(&mut kb, &|j, s| {
            vec![Stmt::Store {
                buf: out,
                index: out_at(j),
                value: to_store(Expr::var(s), ct, qdt),
            }]
        }));
    } else {
        let (m, msafe, l) = (kb.var(), kb.var(), kb.var());
        row.push(Stmt::Local {
            var: m,
            ty: Ty::scalar(ct),
            init: f(f64::NEG_INFINITY),
        });
        row.extend(pass(&mut kb, &|_, s| {
            vec![Stmt::Assign {
                var: m,
                value: Expr::binary(BinOp::Max, Expr::var(m), Expr::var(s)),
            }]
        }));
        row.push(Stmt::Let {
            var: msafe,
            value: Expr::select(
                Expr::cmp(CmpOp::Eq, Expr::var(m), f(f64::NEG_INFINITY)),
                f(0.0),
                Expr::var(m),
            ),
        });
        row.push(Stmt::Local {
            var: l,
            ty: Ty::scalar(ct),
            init: f(0.0),
        });
        let e = |s: Var| {
            Expr::unary(
                UnOp::Exp,
                Expr::binary(BinOp::Sub, Expr::var(s), Expr::var(msafe)),
            )
        };
        row.extend(pass(&mut kb, &|_, s| {
            vec![Stmt::Assign {
                var: l,
                value: Expr::binary(BinOp::Add, Expr::var(l), e(s)),
            }]
        }));
        let sm = p.softmax_precision.unwrap_or(qdt);
        row.extend(pass(&mut kb, &|j, s| {
            let prob = Expr::select(
                Expr::cmp(CmpOp::Eq, Expr::var(l), f(0.0)),
                f(0.0),
                Expr::binary(BinOp::Div, e(s), Expr::var(l)),
            );
            vec![Stmt::Store {
                buf: out,
                index: out_at(j),
                value: to_store(round_dt(prob, ct, sm), ct, qdt),
            }]
        }));
    }
    let i0 = IndexExpr::var(qbv).mul(QUERY_BLOCK as i64);
    let i_end = i0
        .clone()
        .add(IndexExpr::c(QUERY_BLOCK as i64))
        .min(IndexExpr::c(g.q_seq as i64));
    cx.push(kb.finish(vec![for_(i, i0, i_end, 1, row)]));
    Ok(())
}
