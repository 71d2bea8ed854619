//! The elementwise schedule: every elementwise op and `FusedElementwise`.
//!
//! Requires: static shapes; operands that broadcast to the output (numpy).
//! Establishes: one kernel per node. Output axes on which every operand is
//! either fully present or fully broadcast are coalesced; the last coalesced
//! axis is the inner loop (split into chunks of `Options::chunk` elements when
//! long), the rest is the parallel grid. Broadcasting is in the index
//! expressions (stride 0), never materialised. When every value involved is
//! f32 the inner loop is vectorised (`Options::lanes`) with a scalar tail.
//!
//! Numerics follow the reference interpreter: f16/bf16 compute in f32 and
//! are rounded to their type after each op (so a fused expression rounds its
//! intermediates exactly as the unfused graph would); integers wrap; Cast to
//! f16/bf16 from an integer or f64 goes through f32 (a second rounding, for
//! values beyond 2^24 only).

use super::*;
use kiln_ir::kernel::{BinOp, CmpOp, UnOp};
use kiln_ir::{expr, Attrs};

/// A value during code generation: a kernel expression in the compute type
/// of graph dtype `dt` (f32 for f16/bf16).
#[derive(Clone, Debug)]
pub struct Val {
    pub e: Expr,
    pub dt: DType,
}

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    let no = |m: String| Err(Reason(m));
    if outputs.len() != 1 {
        return no(format!(
            "{op} with {} outputs (only the first output is scheduled)",
            outputs.len()
        ));
    }
    if op == Op::FusedElementwise {
        let body = kiln_ir::fused::body(op, attrs).map_err(|e| Reason(e.to_string()))?;
        for o in body.ops() {
            if let Err(r) = op_ok(o) {
                return Err(r);
            }
        }
        return Ok(());
    }
    if inputs.iter().any(|i| i.is_none()) && !matches!(op, Op::Clip | Op::Dropout) {
        return no(format!("{op} with an omitted input"));
    }
    op_ok(op)
}

fn op_ok(op: Op) -> Result<(), Reason> {
    match op {
        Op::Dropout | Op::CastLike | Op::Cast | Op::Identity => Ok(()),
        o if o.is_elementwise() => Ok(()),
        o => Err(Reason(format!("{o} is not an elementwise op"))),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let out_v = node.outputs[0];
    let out_dims = cx.dims(out_v);
    let out_dt = cx.dtype(out_v);
    // Leaves: the node's operands (for Clip/Dropout, omitted ones are skipped by the op).
    // CastLike reads only its target's dtype: it becomes a Cast, and the
    // target (often an empty tensor) is never loaded.
    let cast_like_to = match (node.op, node.inputs.get(1).copied().flatten()) {
        (Op::CastLike, Some(v)) => Some(cx.dtype(v)),
        _ => None,
    };
    let body: expr::Expr = if node.op == Op::FusedElementwise {
        kiln_ir::fused::body(node.op, &node.attrs).map_err(|e| e.to_string())?
    } else if let Some(to) = cast_like_to {
        expr::Expr::Op {
            op: Op::Cast,
            attrs: Attrs::new().with("to", kiln_ir::Attr::Int(to.onnx_code() as i64)),
            args: vec![expr::Expr::Input(0)],
        }
    } else {
        let args: Vec<expr::Expr> = (0..node.inputs.len()).map(expr::Expr::Input).collect();
        expr::Expr::Op {
            op: node.op,
            attrs: node.attrs.clone(),
            args,
        }
    };
    let mut leaves: Vec<Option<(BufId, DType, Vec<usize>)>> = Vec::new();
    for (i, o) in node.inputs.iter().enumerate() {
        leaves.push(match o {
            Some(_) if i == 1 && cast_like_to.is_some() => None,
            Some(v) => Some((cx.buf(*v), cx.dtype(*v), cx.dims(*v))),
            None => None,
        });
    }
    // Non-scalar constants inside a fused body become buffers.
    let mut consts: Vec<(BufId, DType, Vec<usize>)> = Vec::new();
    let mut all_f32 = out_dt == DType::F32;
    body.walk(&mut |e| {
        if let expr::Expr::Const(t) = e {
            all_f32 &= t.dtype() == DType::F32;
        }
        if let expr::Expr::Op { op, .. } = e {
            // Ops whose intermediate types are not f32 (comparisons, casts) stay scalar.
            all_f32 &= !matches!(
                op,
                Op::Cast | Op::CastLike | Op::IsNaN | Op::IsInf | Op::Not
            );
        }
    });
    body.walk(&mut |e| {
        if let expr::Expr::Const(t) = e {
            if t.numel() != 1 {
                consts.push((BufId(0), t.dtype(), t.shape().to_vec()));
            }
        }
    });
    let mut const_bufs = Vec::new();
    {
        let mut ts = Vec::new();
        body.walk(&mut |e| {
            if let expr::Expr::Const(t) = e {
                if t.numel() != 1 {
                    ts.push(t.clone());
                }
            }
        });
        for t in ts {
            let b = cx.add_buffer(None, t.dtype(), t.shape().to_vec(), BufKind::Const(t));
            const_bufs.push(b);
        }
    }
    for l in leaves.iter().flatten() {
        all_f32 &= l.1 == DType::F32;
    }
    let out = cx.out_buf(out_v);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.write(out);
    for l in leaves.iter().flatten() {
        kb.read(l.0);
    }
    for b in &const_bufs {
        kb.read(*b);
    }
    // Every operand's shape, right-aligned to the output rank.
    let rank = out_dims.len();
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    for l in leaves.iter().flatten() {
        shapes.push(pad(&l.2, rank));
    }
    for (_, _, s) in &consts {
        shapes.push(pad(s, rank));
    }
    let (cdims, groups) = coalesce(&out_dims, &shapes);
    let total: usize = out_dims.iter().product();
    let lanes = if all_f32 && cx.opts.lanes > 1 {
        cx.opts.lanes
    } else {
        1
    };
    let inner = *cdims.last().unwrap_or(&1);
    let outer_dims: Vec<usize> = cdims[..cdims.len().saturating_sub(1)].to_vec();
    let outer: usize = outer_dims.iter().product();
    let chunk = cx.opts.chunk.max(lanes as usize * 4) / lanes as usize * lanes as usize;
    let nchunks = if inner > chunk {
        inner.div_ceil(chunk)
    } else {
        1
    };
    let csize = if nchunks > 1 { chunk } else { inner };
    let g = kb.axis(outer * nchunks);
    let (o_idx, js, je): (IndexExpr, IndexExpr, IndexExpr) = if nchunks > 1 {
        let c = IndexExpr::var(g).rem(nchunks as i64);
        let js = c.clone().mul(csize as i64);
        let je = js
            .clone()
            .add(IndexExpr::c(csize as i64))
            .min(IndexExpr::c(inner as i64));
        (IndexExpr::var(g).div(nchunks as i64), js, je)
    } else {
        (
            IndexExpr::var(g),
            IndexExpr::c(0),
            IndexExpr::c(inner as i64),
        )
    };
    let o_multi = unflatten(o_idx.clone(), &outer_dims);
    // Per operand: (base index in outer coordinates, inner stride 0/1), in coalesced coordinates.
    let operand_geo = |k: usize| -> (IndexExpr, i64) {
        let s = &shapes[k];
        let csh: Vec<usize> = groups
            .iter()
            .map(|gr| gr.iter().map(|&d| s[d]).product())
            .collect();
        let st = kiln_ir::shape::strides(&csh);
        let mut base = IndexExpr::c(0);
        for (d, oi) in o_multi.iter().enumerate() {
            if csh[d] != 1 {
                base = base.add(oi.clone().mul(st[d] as i64));
            }
        }
        let last = csh.last().copied().unwrap_or(1);
        (base, if last == 1 || cdims.is_empty() { 0 } else { 1 })
    };
    let geos: Vec<(IndexExpr, i64)> = (0..shapes.len()).map(operand_geo).collect();
    let n_leaves = leaves.iter().flatten().count();
    let out_base = o_idx.mul(inner as i64);
    let mut body_stmts = Vec::new();
    let gen = |kb: &mut KernelBuilder, j: Var, l: u32| -> Result<Vec<Stmt>, String> {
        let mut pre = Vec::new();
        let mut loaded: Vec<Option<Val>> = Vec::new();
        let mut k = 0;
        for leaf in &leaves {
            match leaf {
                None => loaded.push(None),
                Some((b, d, _)) => {
                    let (base, st) = &geos[k];
                    k += 1;
                    let idx = base.clone().add(IndexExpr::var(j).mul(*st));
                    let e = if *st == 0 && l > 1 {
                        Expr::splat(l, load_c(*b, *d, idx, 1))
                    } else {
                        load_c(*b, *d, idx, l)
                    };
                    let v = kb.var();
                    pre.push(Stmt::Let { var: v, value: e });
                    loaded.push(Some(Val {
                        e: Expr::var(v),
                        dt: *d,
                    }));
                }
            }
        }
        let mut ci = 0;
        let mut const_leaf = |t: &Tensor| -> Val {
            let (b, d) = (const_bufs[ci], t.dtype());
            let (base, st) = &geos[n_leaves + ci];
            ci += 1;
            let idx = base.clone().add(IndexExpr::var(j).mul(*st));
            let e = if *st == 0 && l > 1 {
                Expr::splat(l, load_c(b, d, idx, 1))
            } else {
                load_c(b, d, idx, l)
            };
            Val { e, dt: d }
        };
        let v = compile(&body, &loaded, &mut const_leaf, l)?;
        if v.dt != out_dt {
            return Err(format!(
                "the body computes {} but the output is {out_dt}",
                v.dt
            ));
        }
        pre.push(Stmt::Store {
            buf: out,
            index: out_base.clone().add(IndexExpr::var(j)),
            value: to_storage(v.e, out_dt),
        });
        Ok(pre)
    };
    if total > 0 {
        if lanes > 1 && csize >= lanes as usize {
            let jv = kb.var();
            let vb = gen(&mut kb, jv, lanes)?;
            let len = je.clone().add(js.clone().mul(-1));
            let vend = js.clone().add(len.div(lanes as i64).mul(lanes as i64));
            body_stmts.push(for_(jv, js.clone(), vend.clone(), lanes as i64, vb));
            let jt = kb.var();
            let tb = gen(&mut kb, jt, 1)?;
            if inner % lanes as usize != 0 || nchunks > 1 {
                body_stmts.push(for_(jt, vend, je, 1, tb));
            }
        } else {
            let jv = kb.var();
            let b = gen(&mut kb, jv, 1)?;
            body_stmts.push(for_(jv, js, je, 1, b));
        }
    }
    cx.push(kb.finish(body_stmts));
    Ok(())
}

fn pad(s: &[usize], rank: usize) -> Vec<usize> {
    let mut v = vec![1; rank - s.len().min(rank)];
    v.extend_from_slice(s);
    v
}

/// Merges adjacent output axes on which every operand is consistently full
/// or broadcast; drops size-1 axes. Returns the coalesced dims and, per
/// coalesced axis, the original axes it covers.
fn coalesce(out: &[usize], shapes: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut dims: Vec<usize> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (d, &n) in out.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let mergeable = groups.last().is_some_and(|g: &Vec<usize>| {
            let p = g[g.len() - 1];
            shapes.iter().all(|s| (s[p] == 1) == (s[d] == 1))
        });
        if mergeable {
            if let (Some(last), Some(g)) = (dims.last_mut(), groups.last_mut()) {
                *last *= n;
                g.push(d);
            }
        } else {
            dims.push(n);
            groups.push(vec![d]);
        }
    }
    (dims, groups)
}

/// Compiles an elementwise expression tree to a kernel expression.
pub fn compile(
    e: &expr::Expr,
    inputs: &[Option<Val>],
    konst: &mut dyn FnMut(&Tensor) -> Val,
    lanes: u32,
) -> Result<Val, String> {
    match e {
        expr::Expr::Input(i) => {
            inputs.get(*i).cloned().flatten().ok_or_else(|| {
                format!("the expression reads input {i}, which the node does not have")
            })
        }
        expr::Expr::Const(t) => {
            if t.numel() == 1 {
                let d = t.dtype();
                let x = t.to_f64_vec()[0];
                let e = if compute_dtype(d).is_float() {
                    fconst(d, x, lanes)
                } else {
                    let v = match t.data() {
                        kiln_ir::Data::U64(v) => v[0] as i64,
                        kiln_ir::Data::I64(v) => v[0],
                        _ => x as i64,
                    };
                    Expr::splat(lanes, Expr::int(d, v))
                };
                Ok(Val { e, dt: d })
            } else {
                Ok(konst(t))
            }
        }
        expr::Expr::Op { op, attrs, args } => {
            let vals: Vec<Option<Val>> = args
                .iter()
                .map(|a| match a {
                    expr::Expr::Input(i) if inputs.get(*i).is_some_and(|x| x.is_none()) => Ok(None),
                    a => compile(a, inputs, konst, lanes).map(Some),
                })
                .collect::<Result<_, _>>()?;
            apply(*op, attrs, &vals, lanes)
        }
    }
}

fn un(op: UnOp, e: Expr) -> Expr {
    Expr::unary(op, e)
}
fn bin(op: BinOp, a: Expr, b: Expr) -> Expr {
    Expr::binary(op, a, b)
}

/// Rounds a compute value to its storage type and back (f16/bf16 only).
fn round(e: Expr, dt: DType) -> Expr {
    if compute_dtype(dt) != dt {
        Expr::cast(DType::F32, Expr::cast(dt, e))
    } else {
        e
    }
}

/// Applies one elementwise graph op to compiled operands.
pub fn apply(op: Op, attrs: &Attrs, args: &[Option<Val>], lanes: u32) -> Result<Val, String> {
    let arg = |i: usize| -> Result<Val, String> {
        args.get(i)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("{op} needs input {i}"))
    };
    let x = arg(0)?;
    let dt = x.dt;
    let ct = compute_dtype(dt);
    let c = |v: f64| -> Expr {
        if ct.is_float() {
            fconst(ct, v, lanes)
        } else {
            Expr::splat(lanes, Expr::int(ct, v as i64))
        }
    };
    let fattr = |n: &str, d: f32| {
        attrs
            .float_or(n, d)
            .map(|v| v as f64)
            .map_err(|e| e.to_string())
    };
    let float_only = |what: &str| -> Result<(), String> {
        if ct.is_float() {
            Ok(())
        } else {
            Err(format!("{what} of {dt}"))
        }
    };
    let xe = x.e.clone();
    let done = |e: Expr, d: DType| {
        Ok(Val {
            e: round(e, d),
            dt: d,
        })
    };
    let bool_ty = DType::Bool;
    match op {
        Op::Identity | Op::Dropout => Ok(x),
        Op::Cast | Op::CastLike => {
            let to = if op == Op::Cast {
                let code = attrs
                    .int("to")
                    .map_err(|e| e.to_string())?
                    .ok_or("Cast needs `to`")?;
                DType::from_onnx_code(code as i32)
                    .ok_or_else(|| format!("Cast to unsupported type code {code}"))?
            } else {
                arg(1)?.dt
            };
            // x is in compute type; convert to `to`'s compute type.
            let e = if compute_dtype(to) != to {
                // via the storage type: rounds once to f16/bf16
                let f = if ct == DType::F32 {
                    xe
                } else {
                    Expr::cast(DType::F32, xe)
                };
                Expr::cast(DType::F32, Expr::cast(to, f))
            } else if dt != ct && to == dt {
                xe
            } else {
                Expr::cast(to, xe)
            };
            Ok(Val { e, dt: to })
        }
        Op::Abs => done(un(UnOp::Abs, xe), dt),
        Op::Neg => done(un(UnOp::Neg, xe), dt),
        Op::Sqrt
        | Op::Exp
        | Op::Log
        | Op::Tanh
        | Op::Erf
        | Op::Sin
        | Op::Cos
        | Op::Tan
        | Op::Asin
        | Op::Acos
        | Op::Atan
        | Op::Sinh
        | Op::Cosh
        | Op::Asinh
        | Op::Acosh
        | Op::Atanh
        | Op::Floor
        | Op::Ceil
        | Op::Round => {
            let u = match op {
                Op::Sqrt => UnOp::Sqrt,
                Op::Exp => UnOp::Exp,
                Op::Log => UnOp::Log,
                Op::Tanh => UnOp::Tanh,
                Op::Erf => UnOp::Erf,
                Op::Sin => UnOp::Sin,
                Op::Cos => UnOp::Cos,
                Op::Tan => UnOp::Tan,
                Op::Asin => UnOp::Asin,
                Op::Acos => UnOp::Acos,
                Op::Atan => UnOp::Atan,
                Op::Sinh => UnOp::Sinh,
                Op::Cosh => UnOp::Cosh,
                Op::Asinh => UnOp::Asinh,
                Op::Acosh => UnOp::Acosh,
                Op::Atanh => UnOp::Atanh,
                Op::Floor => UnOp::Floor,
                Op::Ceil => UnOp::Ceil,
                _ => UnOp::Round,
            };
            float_only(op.name())?;
            done(un(u, xe), dt)
        }
        Op::Reciprocal => {
            float_only("Reciprocal")?;
            done(bin(BinOp::Div, c(1.0), xe), dt)
        }
        Op::Relu => done(
            Expr::select(Expr::cmp(CmpOp::Lt, xe.clone(), c(0.0)), c(0.0), xe),
            dt,
        ),
        Op::Sigmoid => {
            float_only("Sigmoid")?;
            // 1 / (1 + exp(-x)) for x >= 0; exp(x) / (1 + exp(x)) otherwise (no overflow).
            let en = un(UnOp::Exp, un(UnOp::Neg, un(UnOp::Abs, xe.clone())));
            let pos = bin(BinOp::Div, c(1.0), bin(BinOp::Add, c(1.0), en.clone()));
            let neg = bin(BinOp::Div, en.clone(), bin(BinOp::Add, c(1.0), en));
            done(Expr::select(Expr::cmp(CmpOp::Ge, xe, c(0.0)), pos, neg), dt)
        }
        Op::Softplus => {
            float_only("Softplus")?;
            // max(x, 0) + log(1 + exp(-|x|))
            let t = un(
                UnOp::Log,
                bin(
                    BinOp::Add,
                    c(1.0),
                    un(UnOp::Exp, un(UnOp::Neg, un(UnOp::Abs, xe.clone()))),
                ),
            );
            done(bin(BinOp::Add, bin(BinOp::Max, xe, c(0.0)), t), dt)
        }
        Op::Softsign => {
            float_only("Softsign")?;
            done(
                bin(
                    BinOp::Div,
                    xe.clone(),
                    bin(BinOp::Add, c(1.0), un(UnOp::Abs, xe)),
                ),
                dt,
            )
        }
        Op::HardSigmoid | Op::HardSwish => {
            float_only(op.name())?;
            let (a, b) = if op == Op::HardSigmoid {
                (fattr("alpha", 0.2)?, fattr("beta", 0.5)?)
            } else {
                (1.0 / 6.0, 0.5)
            };
            let hs = bin(
                BinOp::Max,
                c(0.0),
                bin(
                    BinOp::Min,
                    c(1.0),
                    bin(BinOp::Add, bin(BinOp::Mul, c(a), xe.clone()), c(b)),
                ),
            );
            if op == Op::HardSigmoid {
                done(hs, dt)
            } else {
                done(bin(BinOp::Mul, xe, hs), dt)
            }
        }
        Op::LeakyRelu => {
            let a = fattr("alpha", 0.01)?;
            done(
                Expr::select(
                    Expr::cmp(CmpOp::Lt, xe.clone(), c(0.0)),
                    bin(BinOp::Mul, c(a), xe.clone()),
                    xe,
                ),
                dt,
            )
        }
        Op::Elu => {
            let a = fattr("alpha", 1.0)?;
            let neg = bin(
                BinOp::Mul,
                c(a),
                bin(BinOp::Sub, un(UnOp::Exp, xe.clone()), c(1.0)),
            );
            done(
                Expr::select(Expr::cmp(CmpOp::Lt, xe.clone(), c(0.0)), neg, xe),
                dt,
            )
        }
        Op::Selu => {
            let a = fattr("alpha", 1.673_263_2)?;
            let g = fattr("gamma", 1.050_701)?;
            let neg = bin(
                BinOp::Sub,
                bin(BinOp::Mul, c(a), un(UnOp::Exp, xe.clone())),
                c(a),
            );
            let s = Expr::select(Expr::cmp(CmpOp::Le, xe.clone(), c(0.0)), neg, xe);
            done(bin(BinOp::Mul, c(g), s), dt)
        }
        Op::Celu => {
            let a = fattr("alpha", 1.0)?;
            let e = bin(
                BinOp::Mul,
                c(a),
                bin(
                    BinOp::Sub,
                    un(UnOp::Exp, bin(BinOp::Div, xe.clone(), c(a))),
                    c(1.0),
                ),
            );
            done(
                bin(
                    BinOp::Add,
                    bin(BinOp::Max, c(0.0), xe),
                    bin(BinOp::Min, c(0.0), e),
                ),
                dt,
            )
        }
        Op::ThresholdedRelu => {
            let a = fattr("alpha", 1.0)?;
            done(
                Expr::select(Expr::cmp(CmpOp::Gt, xe.clone(), c(a)), xe, c(0.0)),
                dt,
            )
        }
        Op::Gelu => {
            float_only("Gelu")?;
            let approx = attrs
                .str_or("approximate", "none")
                .map_err(|e| e.to_string())?;
            // Computed in f64 and rounded once, like the interpreter.
            let w = if ct == DType::F64 {
                xe
            } else {
                Expr::cast(DType::F64, xe)
            };
            let k = |v: f64| fconst(DType::F64, v, lanes);
            let inner = if approx == "tanh" {
                let x3 = bin(BinOp::Mul, bin(BinOp::Mul, w.clone(), w.clone()), w.clone());
                let t = bin(
                    BinOp::Mul,
                    k((2.0 / std::f64::consts::PI).sqrt()),
                    bin(BinOp::Add, w.clone(), bin(BinOp::Mul, k(0.044715), x3)),
                );
                un(UnOp::Tanh, t)
            } else {
                un(
                    UnOp::Erf,
                    bin(BinOp::Div, w.clone(), k(std::f64::consts::SQRT_2)),
                )
            };
            let r = bin(
                BinOp::Mul,
                bin(BinOp::Mul, k(0.5), w),
                bin(BinOp::Add, k(1.0), inner),
            );
            let r = if ct == DType::F64 {
                r
            } else {
                Expr::cast(ct, r)
            };
            done(r, dt)
        }
        Op::Mish => {
            float_only("Mish")?;
            let sp = bin(
                BinOp::Add,
                bin(BinOp::Max, xe.clone(), c(0.0)),
                un(
                    UnOp::Log,
                    bin(
                        BinOp::Add,
                        c(1.0),
                        un(UnOp::Exp, un(UnOp::Neg, un(UnOp::Abs, xe.clone()))),
                    ),
                ),
            );
            done(bin(BinOp::Mul, xe, un(UnOp::Tanh, sp)), dt)
        }
        Op::Sign => {
            let s = Expr::select(
                Expr::cmp(CmpOp::Gt, xe.clone(), c(0.0)),
                c(1.0),
                Expr::select(
                    Expr::cmp(CmpOp::Lt, xe.clone(), c(0.0)),
                    c(-1.0),
                    if ct.is_float() { xe } else { c(0.0) },
                ),
            );
            done(s, dt)
        }
        Op::Not | Op::BitwiseNot => Ok(Val {
            e: un(UnOp::Not, xe),
            dt,
        }),
        Op::IsNaN => Ok(Val {
            e: un(UnOp::IsNan, xe),
            dt: bool_ty,
        }),
        Op::IsInf => {
            let pos = attrs
                .int_or("detect_positive", 1)
                .map_err(|e| e.to_string())?
                != 0;
            let neg = attrs
                .int_or("detect_negative", 1)
                .map_err(|e| e.to_string())?
                != 0;
            let inf = un(UnOp::IsInf, xe.clone());
            let e = match (pos, neg) {
                (true, true) => inf,
                (true, false) => bin(BinOp::And, inf, Expr::cmp(CmpOp::Gt, xe, c(0.0))),
                (false, true) => bin(BinOp::And, inf, Expr::cmp(CmpOp::Lt, xe, c(0.0))),
                (false, false) => Expr::cmp(CmpOp::Ne, xe.clone(), xe.clone()).pipe_false(lanes),
            };
            Ok(Val { e, dt: bool_ty })
        }
        Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::BitwiseAnd
        | Op::BitwiseOr
        | Op::BitwiseXor
        | Op::And
        | Op::Or
        | Op::Xor => {
            let y = arg(1)?;
            let b = match op {
                Op::Add => BinOp::Add,
                Op::Sub => BinOp::Sub,
                Op::Mul => BinOp::Mul,
                Op::Div => BinOp::Div,
                Op::BitwiseAnd | Op::And => BinOp::And,
                Op::BitwiseOr | Op::Or => BinOp::Or,
                _ => BinOp::Xor,
            };
            done(bin(b, xe, y.e), dt)
        }
        Op::Pow => {
            let y = arg(1)?;
            let ye = if compute_dtype(y.dt) != ct {
                Expr::cast(ct, y.e)
            } else {
                y.e
            };
            done(bin(BinOp::Pow, xe, ye), dt)
        }
        Op::Mod => {
            let y = arg(1)?;
            let fmod = attrs.int_or("fmod", 0).map_err(|e| e.to_string())? != 0;
            let r = bin(BinOp::Rem, xe.clone(), y.e.clone());
            if fmod {
                return done(r, dt);
            }
            // Python-style: the sign of the divisor.
            let zero = c(0.0);
            let fix = bin(
                BinOp::Xor,
                Expr::cmp(CmpOp::Lt, r.clone(), zero.clone()),
                Expr::cmp(CmpOp::Lt, y.e.clone(), zero.clone()),
            );
            let nz = Expr::cmp(CmpOp::Ne, r.clone(), zero.clone());
            let adj = Expr::select(
                bin(BinOp::And, nz, fix),
                bin(BinOp::Add, r.clone(), y.e.clone()),
                r.clone(),
            );
            if ct.is_float() {
                // a zero remainder takes the divisor's sign
                let signed_zero = Expr::select(
                    Expr::cmp(CmpOp::Lt, y.e, zero.clone()),
                    c(-0.0),
                    zero.clone(),
                );
                done(
                    Expr::select(Expr::cmp(CmpOp::Eq, r, zero), signed_zero, adj),
                    dt,
                )
            } else {
                done(adj, dt)
            }
        }
        Op::BitShift => {
            let y = arg(1)?;
            let dir = attrs.str_or("direction", "").map_err(|e| e.to_string())?;
            let b = match dir {
                "LEFT" => BinOp::Shl,
                "RIGHT" => BinOp::Shr,
                d => return Err(format!("BitShift direction {d:?}")),
            };
            done(bin(b, xe, y.e), dt)
        }
        Op::Min | Op::Max | Op::Sum | Op::Mean => {
            let b = match op {
                Op::Min => BinOp::Min,
                Op::Max => BinOp::Max,
                _ => BinOp::Add,
            };
            let mut acc = xe;
            let n = args.len();
            for i in 1..n {
                acc = bin(b, acc, arg(i)?.e);
            }
            if op == Op::Mean {
                float_only("Mean")?;
                acc = bin(BinOp::Div, acc, c(n as f64));
            }
            done(acc, dt)
        }
        Op::Equal | Op::Greater | Op::Less | Op::GreaterOrEqual | Op::LessOrEqual => {
            let y = arg(1)?;
            let o = match op {
                Op::Equal => CmpOp::Eq,
                Op::Greater => CmpOp::Gt,
                Op::Less => CmpOp::Lt,
                Op::GreaterOrEqual => CmpOp::Ge,
                _ => CmpOp::Le,
            };
            Ok(Val {
                e: Expr::cmp(o, xe, y.e),
                dt: bool_ty,
            })
        }
        Op::PRelu => {
            let s = arg(1)?;
            done(
                Expr::select(
                    Expr::cmp(CmpOp::Lt, xe.clone(), c(0.0)),
                    bin(BinOp::Mul, s.e, xe.clone()),
                    xe,
                ),
                dt,
            )
        }
        Op::Where => {
            let a = arg(1)?;
            let b = arg(2)?;
            Ok(Val {
                e: Expr::select(xe, a.e, b.e),
                dt: a.dt,
            })
        }
        Op::Clip => {
            let mut e = xe;
            if let Some(lo) = args.get(1).cloned().flatten() {
                e = Expr::select(Expr::cmp(CmpOp::Lt, e.clone(), lo.e.clone()), lo.e, e);
            }
            if let Some(hi) = args.get(2).cloned().flatten() {
                e = Expr::select(Expr::cmp(CmpOp::Gt, e.clone(), hi.e.clone()), hi.e, e);
            }
            done(e, dt)
        }
        other => Err(format!("{other} has no elementwise kernel")),
    }
}

trait PipeFalse {
    fn pipe_false(self, lanes: u32) -> Expr;
}

impl PipeFalse for Expr {
    /// A constant `false` of the given lanes (used where an op is constantly false).
    fn pipe_false(self, lanes: u32) -> Expr {
        Expr::splat(lanes, Expr::int(DType::Bool, 0))
    }
}
