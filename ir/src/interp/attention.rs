//! Interpreter for ONNX Attention (opset 23 to 25): scaled dot-product
//! attention with multi-, grouped- and multi-query heads, 3-D or 4-D inputs,
//! an internal KV cache (`past_key`/`past_value` → `present_*`), an external
//! cache's `nonpad_kv_seqlen`, boolean or additive masks, offset-aware causal
//! masking, sliding windows, softcap and the four `qk_matmul_output` modes.
//!
//! It follows `onnx/reference/ops/op_attention.py` step by step:
//!
//! 1. 3-D inputs `[B, S, H·D]` are split into heads `[B, H, S, D]`.
//! 2. Q and K (after the cache concat) are each scaled by `sqrt(scale)`
//!    (`scale` defaults to `1/sqrt(D)`), that factor cast to Q's dtype.
//! 3. `QK = Q·Kᵀ` per head; KV head `h / (Hq / Hkv)` serves query head `h`.
//! 4. softcap (if > 0): `c·tanh(QK / c)`.
//! 5. The bias: the mask (bool: true → 0, false → -inf; numeric: added),
//!    its last axis padded to the total sequence with -inf/false; plus -inf
//!    where causality (`j <= i + offset`), the window or the padding
//!    (`j < nonpad_kv_seqlen[b]`) forbid. `offset` is the past length, or
//!    `nonpad_kv_seqlen[b] - S_q`, or 0.
//! 6. Softmax of `QK + bias` per row (an all -inf row gives zeros); a row whose
//!    bias is all -inf (fully masked) is zeroed.
//! 7. `Y = P·V`, merged back to `[B, S, H·Dv]` for 3-D inputs.
//!
//! Numerics: f16/bf16/f32 compute in f32, f64 (or `softmax_precision` =
//! DOUBLE) in f64, accumulating dot products in index order. Where the
//! reference computes in a 16-bit input type, the result is rounded to it
//! after each step above (scaled Q and K, QK, bias add, softmax); softcap's
//! f32 factor promotes the logits to f32, as numpy does in the reference.
//!
//! Where the reference disagrees with the spec, the spec wins: with
//! `is_causal` and a mask whose query axis is 1 (or a rank-1 mask), and no
//! window, the reference derives the causal frontier from the mask's shape
//! (every query gets row 0's frontier, or it fails); here causality is
//! always per query row, as the spec says and as the reference itself does
//! once a window is set.
//!
//! `qk_matmul_output` mode 0 is the raw product before softcap, as the ONNX
//! spec says (the reference returns the softcapped product there when softcap
//! is set; node tests do not exercise that combination).

use super::linalg::num::{matmul_acc, Real};
use super::util::{input, opt_input};
use crate::{Attrs, DType, Error, Op, Result, Tensor};

pub(crate) fn eval(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    n_outputs: usize,
) -> Result<Vec<Tensor>> {
    if op != Op::Attention {
        return Err(Error::unsupported(format!("{op} is not an Attention op")));
    }
    if !(1..=4).contains(&n_outputs) {
        return Err(Error::invalid(format!(
            "Attention has 1 to 4 outputs but the node has {n_outputs}"
        )));
    }
    let a = Args::new(attrs, inputs)?;
    let wide = a.q.dtype() == DType::F64
        || a.v.dtype() == DType::F64
        || a.softmax_precision == Some(DType::F64);
    if wide {
        a.run::<f64>(n_outputs)
    } else {
        a.run::<f32>(n_outputs)
    }
}

/// Attention's head geometry, shared with shape inference.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Geometry {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_seq: usize,
    pub kv_seq: usize,
    pub past_seq: usize,
    /// Head size of Q and K.
    pub head: usize,
    /// Head size of V.
    pub v_head: usize,
    /// Whether Q, K and V are 3-D (`[B, S, H·D]`).
    pub rank3: bool,
}

fn bad(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Attention: {msg}"))
}

impl Geometry {
    /// Checks Q, K, V (and past key/value) shapes against the head attributes.
    pub(crate) fn new(
        q: &[usize],
        k: &[usize],
        v: &[usize],
        past: Option<(&[usize], &[usize])>,
        q_num_heads: Option<i64>,
        kv_num_heads: Option<i64>,
    ) -> Result<Geometry> {
        if q.len() != k.len() || q.len() != v.len() || !(q.len() == 3 || q.len() == 4) {
            return Err(bad(format!(
                "Q, K and V must all be 3-D or all 4-D, got {q:?}, {k:?} and {v:?}"
            )));
        }
        let heads_attr = |name: &str, n: Option<i64>| -> Result<Option<usize>> {
            match n {
                None => Ok(None),
                Some(n) if n > 0 => Ok(Some(n as usize)),
                Some(n) => Err(Error::Attr {
                    attr: name.into(),
                    msg: format!("must be positive, got {n}"),
                }),
            }
        };
        let qh = heads_attr("q_num_heads", q_num_heads)?;
        let kvh = heads_attr("kv_num_heads", kv_num_heads)?;
        let rank3 = q.len() == 3;
        let g = if rank3 {
            let (Some(qh), Some(kvh)) = (qh, kvh) else {
                return Err(bad(
                    "3-D inputs need the q_num_heads and kv_num_heads attributes",
                ));
            };
            let split = |what: &str, hidden: usize, heads: usize| -> Result<usize> {
                #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87
                if hidden % heads != 0 {
                    return Err(bad(format!(
                        "{what} hidden size {hidden} is not divisible by {heads} heads"
                    )));
                }
                Ok(hidden / heads)
            };
            let head = split("Q", q[2], qh)?;
            let k_head = split("K", k[2], kvh)?;
            if k_head != head {
                return Err(bad(format!(
                    "Q's head size {head} ({} / {qh}) differs from K's {k_head} ({} / {kvh})",
                    q[2], k[2]
                )));
            }
            Geometry {
                batch: q[0],
                q_heads: qh,
                kv_heads: kvh,
                q_seq: q[1],
                kv_seq: k[1],
                past_seq: 0,
                head,
                v_head: split("V", v[2], kvh)?,
                rank3,
            }
        } else {
            for (name, attr, actual) in [("q_num_heads", qh, q[1]), ("kv_num_heads", kvh, k[1])] {
                if attr.is_some_and(|n| n != actual) {
                    return Err(Error::Attr {
                        attr: name.into(),
                        msg: format!(
                            "is {} but the 4-D input has {actual} heads",
                            attr.unwrap_or(0)
                        ),
                    });
                }
            }
            if k[3] != q[3] {
                return Err(bad(format!(
                    "Q {q:?} and K {k:?} have different head sizes"
                )));
            }
            if v[1] != k[1] {
                return Err(bad(format!(
                    "K {k:?} and V {v:?} have different head counts"
                )));
            }
            Geometry {
                batch: q[0],
                q_heads: q[1],
                kv_heads: k[1],
                q_seq: q[2],
                kv_seq: k[2],
                past_seq: 0,
                head: q[3],
                v_head: v[3],
                rank3,
            }
        };
        let (kb, vb, kseq, vseq) = if rank3 {
            (k[0], v[0], k[1], v[1])
        } else {
            (k[0], v[0], k[2], v[2])
        };
        if kb != g.batch || vb != g.batch {
            return Err(bad(format!(
                "batch sizes differ: Q {q:?}, K {k:?}, V {v:?}"
            )));
        }
        if kseq != vseq {
            return Err(bad(format!(
                "K {k:?} and V {v:?} have different sequence lengths"
            )));
        }
        if g.kv_heads == 0 || g.q_heads % g.kv_heads != 0 {
            return Err(bad(format!(
                "the {} query heads are not a multiple of the {} key/value heads",
                g.q_heads, g.kv_heads
            )));
        }
        let mut g = g;
        if let Some((pk, pv)) = past {
            let want_k = [g.batch, g.kv_heads, pk.get(2).copied().unwrap_or(0), g.head];
            let want_v = [g.batch, g.kv_heads, want_k[2], g.v_head];
            if pk != want_k || pv != want_v {
                return Err(bad(format!(
                    "past_key {pk:?} and past_value {pv:?} must be {want_k:?} and {want_v:?}"
                )));
            }
            g.past_seq = want_k[2];
        }
        Ok(g)
    }

    pub(crate) fn total_seq(&self) -> usize {
        self.past_seq + self.kv_seq
    }

    /// Shape of Y.
    pub(crate) fn y_shape(&self) -> Vec<usize> {
        if self.rank3 {
            vec![self.batch, self.q_seq, self.q_heads * self.v_head]
        } else {
            vec![self.batch, self.q_heads, self.q_seq, self.v_head]
        }
    }

    pub(crate) fn present_shape(&self, head: usize) -> Vec<usize> {
        vec![self.batch, self.kv_heads, self.total_seq(), head]
    }

    pub(crate) fn qk_shape(&self) -> Vec<usize> {
        vec![self.batch, self.q_heads, self.q_seq, self.total_seq()]
    }
}

/// The checked operands and attributes.
struct Args<'a> {
    q: &'a Tensor,
    k: &'a Tensor,
    v: &'a Tensor,
    mask: Option<&'a Tensor>,
    past: Option<(&'a Tensor, &'a Tensor)>,
    nonpad: Option<Vec<i64>>,
    g: Geometry,
    scale: Option<f32>,
    is_causal: bool,
    softcap: f32,
    mode: i64,
    softmax_precision: Option<DType>,
    left_window: i64,
    right_window: i64,
}

impl<'a> Args<'a> {
    fn new(attrs: &Attrs, inputs: &[Option<&'a Tensor>]) -> Result<Args<'a>> {
        let op = Op::Attention;
        let q = input(op, inputs, 0)?;
        let k = input(op, inputs, 1)?;
        let v = input(op, inputs, 2)?;
        let mask = opt_input(inputs, 3);
        let past = match (opt_input(inputs, 4), opt_input(inputs, 5)) {
            (Some(pk), Some(pv)) => Some((pk, pv)),
            (None, None) => None,
            _ => return Err(bad("past_key and past_value must be given together")),
        };
        let nonpad_t = opt_input(inputs, 6);
        for (what, t) in [("Q", q), ("K", k), ("V", v)] {
            if !t.dtype().is_float() {
                return Err(bad(format!(
                    "{what} must be a float tensor, found {}",
                    t.dtype()
                )));
            }
        }
        if k.dtype() != q.dtype() {
            return Err(bad(format!(
                "K is {} but Q is {}; they must agree",
                k.dtype(),
                q.dtype()
            )));
        }
        if let Some((pk, pv)) = past {
            if pk.dtype() != k.dtype() || pv.dtype() != v.dtype() {
                return Err(bad("past_key and past_value must have K's and V's dtypes"));
            }
        }
        let g = Geometry::new(
            q.shape(),
            k.shape(),
            v.shape(),
            past.map(|(pk, pv)| (pk.shape(), pv.shape())),
            attrs.int("q_num_heads")?,
            attrs.int("kv_num_heads")?,
        )?;
        let nonpad = match nonpad_t {
            None => None,
            Some(t) => {
                if past.is_some() {
                    return Err(bad(
                        "nonpad_kv_seqlen cannot be combined with past_key/past_value",
                    ));
                }
                if t.dtype() != DType::I64 || t.shape() != [g.batch] {
                    return Err(bad(format!(
                        "nonpad_kv_seqlen must be int64 of shape [{}], got {}",
                        g.batch,
                        t.ty()
                    )));
                }
                Some(t.to_i64_vec()?)
            }
        };
        if let Some(m) = mask {
            check_mask(m.shape(), &g)?;
        }
        let window = |name: &str| -> Result<i64> {
            let w = attrs.int_or(name, -1)?;
            if w < -1 {
                return Err(Error::Attr {
                    attr: name.into(),
                    msg: format!("must be -1 or >= 0, got {w}"),
                });
            }
            Ok(w)
        };
        let mode = attrs.int_or("qk_matmul_output_mode", 0)?;
        if !(0..=3).contains(&mode) {
            return Err(Error::Attr {
                attr: "qk_matmul_output_mode".into(),
                msg: format!("must be 0, 1, 2 or 3, got {mode}"),
            });
        }
        let softmax_precision = match attrs.int("softmax_precision")? {
            None => None,
            Some(c) => match i32::try_from(c).ok().and_then(DType::from_onnx_code) {
                Some(d) if d.is_float() => Some(d),
                _ => {
                    return Err(Error::Attr {
                        attr: "softmax_precision".into(),
                        msg: format!("must be a float type code (1, 10, 11 or 16), got {c}"),
                    })
                }
            },
        };
        Ok(Args {
            q,
            k,
            v,
            mask,
            past,
            nonpad,
            g,
            scale: attrs.float("scale")?,
            is_causal: attrs.int_or("is_causal", 0)? != 0,
            softcap: attrs.float_or("softcap", 0.0)?,
            mode,
            softmax_precision,
            left_window: window("left_window_size")?,
            right_window: window("right_window_size")?,
        })
    }

    /// A tensor as `[B, H, S, D]` values, splitting heads of a 3-D input.
    fn heads<R: Real>(&self, t: &Tensor, heads: usize, head: usize) -> Vec<R> {
        let v = R::read(t);
        if !self.g.rank3 {
            return v;
        }
        let (b, s) = (self.g.batch, t.shape()[1]);
        let mut out = Vec::with_capacity(v.len());
        for bi in 0..b {
            for h in 0..heads {
                for si in 0..s {
                    let at = (bi * s + si) * heads * head + h * head;
                    out.extend_from_slice(&v[at..at + head]);
                }
            }
        }
        out
    }

    /// `past ++ new` along the sequence axis of `[B, H, S, D]` tensors.
    fn concat<R: Real>(&self, past: Option<&Tensor>, new: Vec<R>, head: usize) -> Vec<R> {
        let Some(p) = past else { return new };
        let pv = R::read(p);
        let g = &self.g;
        let (ps, ns) = (g.past_seq * head, g.kv_seq * head);
        let mut out = Vec::with_capacity(pv.len() + new.len());
        for bh in 0..g.batch * g.kv_heads {
            out.extend_from_slice(&pv[bh * ps..(bh + 1) * ps]);
            out.extend_from_slice(&new[bh * ns..(bh + 1) * ns]);
        }
        out
    }

    fn run<R: Real>(&self, n_outputs: usize) -> Result<Vec<Tensor>> {
        let g = &self.g;
        let qdt = self.q.dtype();
        let r = |x: R| x.round_to(qdt);
        let q = self.heads::<R>(self.q, g.q_heads, g.head);
        let k = self.heads::<R>(self.k, g.kv_heads, g.head);
        let v = self.heads::<R>(self.v, g.kv_heads, g.v_head);
        let present_k = self.concat(self.past.map(|p| p.0), k, g.head);
        let present_v = self.concat(self.past.map(|p| p.1), v, g.v_head);

        // the reference takes sqrt of an f32 `scale` attribute in f32, of the
        // default 1/sqrt(D) in f64
        let sqrt_scale = match self.scale {
            Some(s) => s.sqrt() as f64,
            None => (1.0 / (g.head as f64).sqrt()).sqrt(),
        };
        let sq = r(R::of(sqrt_scale));
        let qs: Vec<R> = q.iter().map(|&x| r(x * sq)).collect();
        let ks: Vec<R> = present_k.iter().map(|&x| r(x * sq)).collect();

        let (sq_len, t, d, dv) = (g.q_seq, g.total_seq(), g.head, g.v_head);
        let reps = g.q_heads / g.kv_heads;
        let softcap = (self.softcap > 0.0).then(|| R::of(self.softcap as f64));
        // the f32 softcap promotes 16-bit logits to f32 from there to the softmax
        let after_cap = if softcap.is_some() && matches!(qdt, DType::F16 | DType::BF16) {
            DType::F32
        } else {
            qdt
        };
        let rc = |x: R| x.round_to(after_cap);
        let sm_dtype = self.softmax_precision.unwrap_or(qdt);
        let mut y4 = vec![R::ZERO; g.batch * g.q_heads * sq_len * dv];
        let mut qk_out = Vec::with_capacity(if n_outputs > 3 {
            g.batch * g.q_heads * sq_len * t
        } else {
            0
        });
        let mut raw = vec![R::ZERO; sq_len * t];
        let mut bias = vec![R::ZERO; sq_len * t];
        let mut p = vec![R::ZERO; sq_len * t];
        for b in 0..g.batch {
            for h in 0..g.q_heads {
                let kvh = b * g.kv_heads + h / reps;
                let qh = &qs[(b * g.q_heads + h) * sq_len * d..][..sq_len * d];
                let kh = &ks[kvh * t * d..][..t * d];
                let vh = &present_v[kvh * t * dv..][..t * dv];
                // 3. QK, 4. softcap
                for i in 0..sq_len {
                    let qi = &qh[i * d..(i + 1) * d];
                    for j in 0..t {
                        let kj = &kh[j * d..(j + 1) * d];
                        let mut s = R::ZERO;
                        for (&a, &c) in qi.iter().zip(kj) {
                            s += a * c;
                        }
                        raw[i * t + j] = r(s);
                    }
                }
                let capped: Vec<R> = match softcap {
                    Some(c) => raw.iter().map(|&x| rc(rc(rc(x / c).tanh()) * c)).collect(),
                    None => raw.clone(),
                };
                // 5. bias, 6. softmax with the fully-masked-row guard
                self.bias_into(b, h, &mut bias);
                for i in 0..sq_len {
                    let row = i * t..(i + 1) * t;
                    let logits: Vec<R> = row.clone().map(|e| rc(capped[e] + bias[e])).collect();
                    let masked = bias[row.clone()]
                        .iter()
                        .fold(R::NEG_INFINITY, |m, &x| m.nan_max(x))
                        == R::NEG_INFINITY;
                    softmax_row(&logits, &mut p[row.clone()]);
                    for x in &mut p[row.clone()] {
                        *x = if masked {
                            R::ZERO
                        } else {
                            x.round_to(sm_dtype).round_to(qdt)
                        };
                    }
                    if n_outputs > 3 {
                        match self.mode {
                            0 => qk_out.extend_from_slice(&raw[row.clone()]),
                            1 => qk_out.extend_from_slice(&capped[row.clone()]),
                            2 => qk_out.extend_from_slice(&logits),
                            _ => qk_out.extend_from_slice(&p[row.clone()]),
                        }
                    }
                }
                // 7. Y = P·V
                let yh = &mut y4[(b * g.q_heads + h) * sq_len * dv..][..sq_len * dv];
                matmul_acc(&p, vh, yh, sq_len, t, dv);
            }
        }
        let y = if g.rank3 { merge_heads(&y4, g) } else { y4 };
        let mut outs = vec![R::write(y, qdt, g.y_shape())?];
        if n_outputs > 1 {
            outs.push(R::write(
                present_k,
                self.k.dtype(),
                g.present_shape(g.head),
            )?);
        }
        if n_outputs > 2 {
            outs.push(R::write(
                present_v,
                self.v.dtype(),
                g.present_shape(g.v_head),
            )?);
        }
        if n_outputs > 3 {
            outs.push(R::write(qk_out, qdt, g.qk_shape())?);
        }
        Ok(outs)
    }

    /// The additive bias of batch `b`, query head `h`, as a `[S_q, total]` matrix.
    fn bias_into<R: Real>(&self, b: usize, h: usize, out: &mut [R]) {
        let g = &self.g;
        let t = g.total_seq();
        let nonpad = self.nonpad.as_ref().and_then(|n| n.get(b).copied());
        let offset: i64 = match (self.past, nonpad) {
            (Some(_), _) => g.past_seq as i64,
            (None, Some(n)) => n - g.q_seq as i64,
            (None, None) => 0,
        };
        let mask = self.mask.map(MaskView::new);
        for i in 0..g.q_seq {
            for j in 0..t {
                let mut x = match &mask {
                    Some(m) => m.at::<R>(b, h, i, j),
                    None => R::ZERO,
                };
                let pos = i as i64 + offset;
                let diff = pos - j as i64;
                let forbidden = (self.is_causal && diff < 0)
                    || (self.left_window >= 0 && diff > self.left_window)
                    || (self.right_window >= 0 && -diff > self.right_window)
                    || nonpad.is_some_and(|n| j as i64 >= n);
                if forbidden {
                    x += R::NEG_INFINITY;
                }
                out[i * t + j] = x.round_to(self.q.dtype());
            }
        }
    }
}

/// Softmax of one row; an all -inf row gives zeros (not NaN).
fn softmax_row<R: Real>(x: &[R], out: &mut [R]) {
    let mut m = x.iter().fold(R::NEG_INFINITY, |m, &v| m.nan_max(v));
    if m == R::NEG_INFINITY {
        m = R::ZERO;
    }
    let mut s = R::ZERO;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m).exp();
        s += *o;
    }
    if s == R::ZERO {
        s = R::ONE;
    }
    for o in out.iter_mut() {
        *o = *o / s;
    }
}

/// `[B, H, S, Dv]` → `[B, S, H·Dv]`.
fn merge_heads<R: Real>(y4: &[R], g: &Geometry) -> Vec<R> {
    let (s, h, dv) = (g.q_seq, g.q_heads, g.v_head);
    let mut out = Vec::with_capacity(y4.len());
    for b in 0..g.batch {
        for i in 0..s {
            for hi in 0..h {
                let at = ((b * h + hi) * s + i) * dv;
                out.extend_from_slice(&y4[at..at + dv]);
            }
        }
    }
    out
}

/// Checks that a mask of shape `m` broadcasts to `[B, Hq, S_q, total]`, its
/// last axis being at most `total` long (it is padded, never broadcast).
pub(crate) fn check_mask(m: &[usize], g: &Geometry) -> Result<()> {
    let full = [g.batch, g.q_heads, g.q_seq, g.total_seq()];
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
    if !ok {
        return Err(bad(format!(
            "attn_mask {m:?} does not broadcast to [batch, q_heads, q_seq, total_seq] = {full:?} \
             (its last axis may be shorter, and is then padded)"
        )));
    }
    Ok(())
}

/// Reads a mask broadcast onto `[B, Hq, S_q, total]`, padding its last axis.
struct MaskView {
    vals: MaskVals,
    /// Stride per full axis (0 where broadcast or absent).
    strides: [usize; 4],
    last: usize,
}

enum MaskVals {
    Bool(Vec<bool>),
    Num(Vec<f64>),
}

impl MaskView {
    fn new(t: &Tensor) -> MaskView {
        let m = t.shape();
        let st = crate::shape::strides(m);
        let mut strides = [0usize; 4];
        for (k, (&d, &s)) in m.iter().zip(&st).enumerate() {
            let axis = 4 - m.len() + k;
            strides[axis] = if d == 1 && axis != 3 { 0 } else { s };
        }
        let vals = match t.as_slice::<bool>() {
            Some(b) => MaskVals::Bool(b.to_vec()),
            None => MaskVals::Num(t.to_f64_vec()),
        };
        MaskView {
            vals,
            strides,
            last: m.last().copied().unwrap_or(1),
        }
    }

    fn at<R: Real>(&self, b: usize, h: usize, i: usize, j: usize) -> R {
        let padded = j >= self.last;
        let e =
            b * self.strides[0] + h * self.strides[1] + i * self.strides[2] + j * self.strides[3];
        match &self.vals {
            MaskVals::Bool(v) => {
                if !padded && v[e] {
                    R::ZERO
                } else {
                    R::NEG_INFINITY
                }
            }
            MaskVals::Num(v) => {
                if padded {
                    R::NEG_INFINITY
                } else {
                    R::of(v[e])
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
