//! The convolution schedule: Conv and FusedConv (`epilogue(Conv(X, W), e1, ...)`).
//!
//! Requires: static shapes; `X` `[N, C, in...]` and `W` `[M, C/group, k...]`
//! of one float dtype with any number (>= 1) of spatial axes; every window
//! attribute (`strides`, `pads`, `dilations`, `group`, `auto_pad`) resolved
//! by the interpreter's own geometry ([`kiln_ir::interp::conv_axes`]).
//! Establishes one of two lowerings:
//!
//! - **GEMM** (f32, vectors on, not depthwise, at least `nr` output
//!   positions, epilogue operands that are either constant or contiguous over
//!   the spatial axes): per image and group, `Y[mg, out] = W[mg, K] · cols[K, out]`
//!   with `K = C/group · taps`, run by the MatMul register-tiled micro-kernel
//!   ([`super::matmul::tiled_gemm`], cache-blocked like MatMul) with the
//!   epilogue (a Conv's bias, a FusedConv's expression) applied in registers
//!   before the store. `cols` is an im2col temp written by a first kernel
//!   (zeros in the padding); a pointwise convolution (1×1, stride 1, no pads)
//!   reads `X` directly. A constant `W` is repacked at compile time into
//!   panels of `mr` output channels (`[group][M/group/mr][K][mr]`, zero-padded)
//!   so each K step of a tile reads one contiguous line.
//! - **Direct** (everything else: depthwise, f64, f16/bf16, tiny outputs):
//!   one kernel over `(N, M)`, a scalar loop over output positions, channels
//!   and taps, in the interpreter's order (channel, then tap row-major),
//!   taps in the padding contributing `0 · w` as in the interpreter's im2col.
//!
//! Numerics: f16/bf16 accumulate in f32 and round once (a Conv's bias is
//! added before that rounding, as the interpreter does; a FusedConv's product
//! is rounded before its epilogue, as the unfused graph would); f64 in f64.
//! The GEMM path uses fused multiply-adds (the interpreter does not), a
//! difference of rounding only.

use super::elementwise::{apply, compile, Val};
use super::matmul::{tiled_gemm, BCol, Blocking, TiledGemm};
use super::*;
use kiln_ir::interp::{conv_axes, WindowAxis};
use kiln_ir::kernel::{BinOp, CmpOp, Ty};
use kiln_ir::{expr, Attrs};

/// The attributes of the plain Conv (a FusedConv's without its epilogue).
fn plain_attrs(op: Op, attrs: &Attrs) -> Attrs {
    if op == Op::FusedConv {
        kiln_ir::fused::conv_attrs(attrs)
    } else {
        attrs.clone()
    }
}

pub(super) fn supports(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    outputs: &[&TensorType],
) -> Result<(), Reason> {
    let no = |m: String| Err(Reason(m));
    if !matches!(op, Op::Conv | Op::FusedConv) {
        return no(format!("{op} has no kernel schedule"));
    }
    if outputs.len() != 1 {
        return no(format!("{op} with {} outputs", outputs.len()));
    }
    let (x, w) = match (
        inputs.first().copied().flatten(),
        inputs.get(1).copied().flatten(),
    ) {
        (Some(x), Some(w)) => (x, w),
        _ => return no(format!("{op} without X or W")),
    };
    if !matches!(x.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) || w.dtype != x.dtype
    {
        return no(format!(
            "{op} of {} by {} (float X and W of one dtype only)",
            x.dtype, w.dtype
        ));
    }
    let (xd, wd) = (
        x.shape.fixed().unwrap_or_default(),
        w.shape.fixed().unwrap_or_default(),
    );
    conv_axes(op, &plain_attrs(op, attrs), &xd, &wd).map_err(|e| Reason(e.to_string()))?;
    if op == Op::Conv {
        if let Some(b) = inputs.get(2).copied().flatten() {
            if b.dtype != x.dtype
                || b.shape.fixed().map(|s| s.iter().product::<usize>()) != Some(wd[0])
            {
                return no(format!(
                    "Conv bias {b} does not hold one {} per output channel",
                    x.dtype
                ));
            }
        }
    } else {
        if inputs.iter().any(|i| i.is_none()) {
            return no("FusedConv with an omitted input".into());
        }
        let body = kiln_ir::fused::body(op, attrs).map_err(|e| Reason(e.to_string()))?;
        let mut bad = false;
        body.walk(&mut |e| {
            if let expr::Expr::Const(t) = e {
                bad |= t.numel() != 1;
            }
        });
        if bad {
            return no("FusedConv epilogue constants must be scalars".into());
        }
        for o in body.ops() {
            if !(o.is_elementwise() || matches!(o, Op::Cast | Op::CastLike | Op::Identity)) {
                return no(format!("FusedConv epilogue op {o} is not elementwise"));
            }
        }
    }
    Ok(())
}

/// The resolved shape of one convolution.
struct Geo {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    cg: usize,
    mg: usize,
    axes: Vec<WindowAxis>,
    in_sp: Vec<usize>,
    out_sp: Vec<usize>,
    k_sp: Vec<usize>,
    in_size: usize,
    out_size: usize,
    taps: usize,
}

impl Geo {
    fn new(op: Op, attrs: &Attrs, x: &[usize], w: &[usize]) -> Result<Geo, String> {
        let axes = conv_axes(op, attrs, x, w).map_err(|e| e.to_string())?;
        let group = attrs.int_or("group", 1).map_err(|e| e.to_string())?;
        let group = usize::try_from(group)
            .ok()
            .filter(|&g| g >= 1)
            .ok_or("group must be positive")?;
        let (c, m) = (x[1], w[0]);
        if w[1] * group != c || m % group != 0 {
            return Err(format!(
                "X {x:?} and W {w:?} do not match with group {group}"
            ));
        }
        let in_sp: Vec<usize> = axes.iter().map(|a| a.input).collect();
        let out_sp: Vec<usize> = axes.iter().map(|a| a.output).collect();
        let k_sp: Vec<usize> = axes.iter().map(|a| a.kernel).collect();
        Ok(Geo {
            n: x[0],
            c,
            m,
            group,
            cg: c / group,
            mg: m / group,
            in_size: in_sp.iter().product(),
            out_size: out_sp.iter().product(),
            taps: k_sp.iter().product(),
            axes,
            in_sp,
            out_sp,
            k_sp,
        })
    }

    fn pointwise(&self) -> bool {
        self.axes
            .iter()
            .all(|a| a.kernel == 1 && a.stride == 1 && a.pad_begin == 0 && a.pad_end == 0)
    }

    /// For output positions `o` and taps `t` (one per spatial axis): the
    /// condition that the tap lies inside the input (None: always) and the
    /// flat spatial input index, clamped into the input.
    fn tap_at(&self, o: &[IndexExpr], t: &[IndexExpr]) -> (Option<Expr>, IndexExpr) {
        let st = kiln_ir::shape::strides(&self.in_sp);
        let mut cond: Option<Expr> = None;
        let mut idx = IndexExpr::c(0);
        for (d, a) in self.axes.iter().enumerate() {
            let pos = o[d]
                .clone()
                .mul(a.stride as i64)
                .add(t[d].clone().mul(a.dilation as i64))
                .add(IndexExpr::c(-a.pad_begin));
            let lo_ok = a.pad_begin <= 0;
            let max_pos = ((a.output.max(1) - 1) * a.stride + (a.kernel - 1) * a.dilation) as i64
                - a.pad_begin;
            let hi_ok = max_pos < a.input as i64;
            let mut clamped = pos.clone();
            if !lo_ok {
                clamped = clamped.max(IndexExpr::c(0));
                let c = Expr::cmp(
                    CmpOp::Ge,
                    Expr::Index(pos.clone()),
                    Expr::int(DType::I64, 0),
                );
                cond = Some(and(cond, c));
            }
            if !hi_ok {
                clamped = clamped.min(IndexExpr::c(a.input as i64 - 1));
                let c = Expr::cmp(
                    CmpOp::Lt,
                    Expr::Index(pos),
                    Expr::int(DType::I64, a.input as i64),
                );
                cond = Some(and(cond, c));
            }
            idx = idx.add(clamped.mul(st[d] as i64));
        }
        (cond, idx)
    }
}

fn and(a: Option<Expr>, b: Expr) -> Expr {
    match a {
        Some(a) => Expr::binary(BinOp::And, a, b),
        None => b,
    }
}

/// Nested loops `for v_d in 0..dims[d]` around `body`, outermost first.
fn nest(vars: &[Var], dims: &[usize], body: Vec<Stmt>) -> Vec<Stmt> {
    let mut s = body;
    for (&v, &n) in vars.iter().zip(dims).rev() {
        s = vec![for_n(v, n, s)];
    }
    s
}

/// Row-major flat index of per-axis index expressions.
fn flat(idx: &[IndexExpr], dims: &[usize]) -> IndexExpr {
    let st = kiln_ir::shape::strides(dims);
    idx.iter()
        .zip(&st)
        .fold(IndexExpr::c(0), |e, (i, &s)| e.add(i.clone().mul(s as i64)))
}

/// An epilogue operand: buffer, dtype, shape right-aligned to the output rank.
struct Extra {
    buf: BufId,
    dt: DType,
    dims: Vec<usize>,
}

impl Extra {
    /// Whether the operand is contiguous over the flattened spatial axes
    /// (`Some(true)`), constant over them (`Some(false)`), or neither.
    fn spatial(&self, out_sp: &[usize]) -> Option<bool> {
        let sp = &self.dims[2..];
        if sp == out_sp {
            Some(true)
        } else if sp.iter().all(|&d| d == 1) {
            Some(false)
        } else {
            None
        }
    }
}

/// The epilogue: `%0` is the product, `%i` the `i`-th extra operand.
struct Epilogue {
    body: expr::Expr,
    extras: Vec<Extra>,
    /// A Conv's bias (added in the compute type before rounding).
    bias: Option<(BufId, DType)>,
    dt: DType,
    out_dt: DType,
}

impl Epilogue {
    /// Statements that load the extras and the value to store, for output
    /// element (n, m, spatial) where the spatial position is either per-axis
    /// indices (`sp`) or, for vectors, a flat index `j` (contiguous extras).
    fn apply(
        &self,
        kb: &mut KernelBuilder,
        prod: Expr,
        n: IndexExpr,
        m: IndexExpr,
        sp: Result<&[IndexExpr], IndexExpr>,
        l: u32,
    ) -> Result<(Vec<Stmt>, Expr), String> {
        let mut pre = Vec::new();
        let mut p = prod;
        if let Some((b, d)) = self.bias {
            p = Expr::binary(BinOp::Add, p, Expr::splat(l, load_c(b, d, m.clone(), 1)));
        }
        let pv = Val { e: p, dt: self.dt };
        let pv = if compute_dtype(self.dt) != self.dt {
            apply(Op::Identity, &Attrs::new(), &[Some(pv)], l)?
        } else {
            pv
        };
        let mut ins = vec![Some(pv)];
        for x in &self.extras {
            let st = kiln_ir::shape::strides(&x.dims);
            let mut idx = IndexExpr::c(0);
            if x.dims[0] != 1 {
                idx = idx.add(n.clone().mul(st[0] as i64));
            }
            if x.dims[1] != 1 {
                idx = idx.add(m.clone().mul(st[1] as i64));
            }
            let e = match &sp {
                Ok(s) => {
                    for (d, i) in s.iter().enumerate() {
                        if x.dims[2 + d] != 1 {
                            idx = idx.add(i.clone().mul(st[2 + d] as i64));
                        }
                    }
                    load_c(x.buf, x.dt, idx, 1)
                }
                Err(j) => match x.dims[2..].iter().all(|&d| d == 1) {
                    true => Expr::splat(l, load_c(x.buf, x.dt, idx, 1)),
                    false => load_c(x.buf, x.dt, idx.add(j.clone()), l),
                },
            };
            let v = kb.var();
            pre.push(Stmt::Let { var: v, value: e });
            ins.push(Some(Val {
                e: Expr::var(v),
                dt: x.dt,
            }));
        }
        let mut no_consts = |_: &Tensor| Val {
            e: Expr::int(DType::Bool, 0),
            dt: DType::Bool,
        };
        let r = compile(&self.body, &ins, &mut no_consts, l)?;
        if r.dt != self.out_dt {
            return Err(format!(
                "epilogue computes {} but the output is {}",
                r.dt, self.out_dt
            ));
        }
        Ok((pre, to_storage(r.e, self.out_dt)))
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let xv = node.inputs[0].ok_or("missing X")?;
    let wv = node.inputs.get(1).copied().flatten().ok_or("missing W")?;
    let out_v = node.outputs[0];
    let (x_dims, w_dims) = (cx.dims(xv), cx.dims(wv));
    let geo = Geo::new(
        node.op,
        &plain_attrs(node.op, &node.attrs),
        &x_dims,
        &w_dims,
    )?;
    let out_dims = cx.dims(out_v);
    let mut want = vec![geo.n, geo.m];
    want.extend(&geo.out_sp);
    if out_dims != want {
        return Err(format!(
            "output {out_dims:?} is not the convolution's {want:?}"
        ));
    }
    let dt = cx.dtype(xv);
    let out_dt = cx.dtype(out_v);
    let rank = out_dims.len();
    let (body, extra_vals, bias) = match node.op {
        Op::Conv => {
            let b = node.inputs.get(2).copied().flatten();
            (expr::Expr::Input(0), vec![], b)
        }
        _ => {
            let e = kiln_ir::fused::body(node.op, &node.attrs).map_err(|e| e.to_string())?;
            (
                e,
                node.inputs[2..]
                    .iter()
                    .flatten()
                    .copied()
                    .collect::<Vec<_>>(),
                None,
            )
        }
    };
    let extras: Vec<Extra> = extra_vals
        .iter()
        .map(|&v| {
            let d = cx.dims(v);
            if d.len() > rank {
                return Err(format!(
                    "epilogue operand {d:?} has a higher rank than the output"
                ));
            }
            let mut dims = vec![1; rank - d.len()];
            dims.extend(d);
            Ok(Extra {
                buf: cx.buf(v),
                dt: cx.dtype(v),
                dims,
            })
        })
        .collect::<Result<_, String>>()?;
    let bias = bias.map(|b| (cx.buf(b), cx.dtype(b)));
    let epi = Epilogue {
        body,
        extras,
        bias,
        dt,
        out_dt,
    };
    let lanes = cx.opts.lanes.max(1);
    let nr = cx.opts.nr_vecs.max(1) * lanes as usize;
    let depthwise = geo.cg == 1 && geo.group > 1;
    let fast = dt == DType::F32
        && out_dt == DType::F32
        && lanes > 1
        && !depthwise
        && geo.out_size >= nr
        && geo.cg * geo.taps > 0
        && epi
            .extras
            .iter()
            .all(|x| x.dt == DType::F32 && x.spatial(&geo.out_sp).is_some());
    let xb = cx.buf(xv);
    let ob = cx.out_buf(out_v);
    if fast {
        lower_gemm(cx, node, &geo, &epi, xb, wv, ob)
    } else {
        lower_direct(cx, node, &geo, &epi, xb, wv, ob)
    }
}

/// The scalar direct convolution (any float dtype).
fn lower_direct(
    cx: &mut Lower,
    node: &Node,
    geo: &Geo,
    epi: &Epilogue,
    xb: BufId,
    wv: ValueId,
    ob: BufId,
) -> Result<(), String> {
    let dt = epi.dt;
    let ct = compute_dtype(dt);
    let wb = cx.buf(wv);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.read(wb);
    kb.write(ob);
    for x in &epi.extras {
        kb.read(x.buf);
    }
    if let Some((b, _)) = epi.bias {
        kb.read(b);
    }
    let r = geo.axes.len();
    let gn = kb.axis(geo.n);
    let gm = kb.axis(geo.m);
    let o: Vec<Var> = (0..r).map(|_| kb.var()).collect();
    let t: Vec<Var> = (0..r).map(|_| kb.var()).collect();
    let (acc, ci) = (kb.var(), kb.var());
    let oi: Vec<IndexExpr> = o.iter().map(|&v| IndexExpr::var(v)).collect();
    let ti: Vec<IndexExpr> = t.iter().map(|&v| IndexExpr::var(v)).collect();
    let (cond, sp) = geo.tap_at(&oi, &ti);
    let chan = IndexExpr::var(gn)
        .mul(geo.c as i64)
        .add(IndexExpr::var(gm).div(geo.mg as i64).mul(geo.cg as i64))
        .add(IndexExpr::var(ci));
    let xe = load_c(xb, dt, chan.mul(geo.in_size as i64).add(sp), 1);
    let zero = Expr::float(ct, 0.0);
    let xe = match cond {
        Some(c) => Expr::select(c, xe, zero.clone()),
        None => xe,
    };
    let w_idx = IndexExpr::var(gm)
        .mul(geo.cg as i64)
        .add(IndexExpr::var(ci))
        .mul(geo.taps as i64)
        .add(flat(&ti, &geo.k_sp));
    let we = load_c(wb, dt, w_idx, 1);
    let step = Stmt::Assign {
        var: acc,
        value: Expr::binary(BinOp::Add, Expr::var(acc), Expr::binary(BinOp::Mul, xe, we)),
    };
    let mut inner = vec![
        Stmt::Local {
            var: acc,
            ty: Ty::scalar(ct),
            init: zero,
        },
        for_n(ci, geo.cg, nest(&t, &geo.k_sp, vec![step])),
    ];
    let (pre, val) = epi.apply(
        &mut kb,
        Expr::var(acc),
        IndexExpr::var(gn),
        IndexExpr::var(gm),
        Ok(&oi),
        1,
    )?;
    inner.extend(pre);
    let out_idx = IndexExpr::var(gn)
        .mul(geo.m as i64)
        .add(IndexExpr::var(gm))
        .mul(geo.out_size as i64)
        .add(flat(&oi, &geo.out_sp));
    inner.push(Stmt::Store {
        buf: ob,
        index: out_idx,
        value: val,
    });
    let body = nest(&o, &geo.out_sp, inner);
    cx.push(kb.finish(body));
    Ok(())
}

/// im2col + the tiled MatMul micro-kernel (f32).
fn lower_gemm(
    cx: &mut Lower,
    node: &Node,
    geo: &Geo,
    epi: &Epilogue,
    xb: BufId,
    wv: ValueId,
    ob: BufId,
) -> Result<(), String> {
    let k = geo.cg * geo.taps;
    let batches = geo.n * geo.group;
    let g_of = |gb: Var| IndexExpr::var(gb).rem(geo.group as i64);
    let n_of = |gb: Var| IndexExpr::var(gb).div(geo.group as i64);
    // B: the input itself (pointwise) or im2col columns [N*G, K, out].
    let (bbuf, pointwise) = if geo.pointwise() {
        (xb, true)
    } else {
        let cols = cx.add_buffer(
            Some(format!("{} (im2col)", node.name)),
            DType::F32,
            vec![batches, k, geo.out_size],
            BufKind::Temp { offset: None },
        );
        let k = im2col_kernel(node, geo, xb, cols);
        cx.push(k);
        (cols, false)
    };
    // A: W, packed into panels of mr output channels when constant.
    let mr = cx.opts.mr.max(1);
    let nib = geo.mg.div_ceil(mr);
    let packed = match cx.const_of(wv) {
        Some(t) if cx.opts.pack_weights => Some(pack_w(t, geo, mr)?),
        _ => None,
    };
    let ab = match &packed {
        Some(t) => cx.add_buffer(
            Some(format!("{} (packed)", cx.graph.display_name(wv))),
            DType::F32,
            t.shape().to_vec(),
            BufKind::Const(t.clone()),
        ),
        None => cx.buf(wv),
    };
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(ab);
    kb.read(bbuf);
    kb.write(ob);
    for x in &epi.extras {
        kb.read(x.buf);
    }
    if let Some((b, _)) = epi.bias {
        kb.read(b);
    }
    let gb = kb.axis(batches);
    let a_base = |i: IndexExpr| -> IndexExpr {
        match &packed {
            Some(_) => g_of(gb)
                .mul(nib as i64)
                .add(i.clone().div(mr as i64))
                .mul((k * mr) as i64)
                .add(i.rem(mr as i64)),
            None => g_of(gb).mul(geo.mg as i64).add(i).mul(k as i64),
        }
    };
    let a_pstride = if packed.is_some() { mr as i64 } else { 1 };
    let nr = cx.opts.nr_vecs.max(1) * cx.opts.lanes.max(1) as usize;
    let b_base = |c: &BCol| -> IndexExpr {
        let start = if pointwise {
            n_of(gb)
                .mul(geo.c as i64)
                .add(g_of(gb).mul(geo.cg as i64))
                .mul(geo.in_size as i64)
        } else {
            IndexExpr::var(gb).mul((k * geo.out_size) as i64)
        };
        start.add(c.column(nr))
    };
    let out_at = |i: IndexExpr, j: IndexExpr| -> IndexExpr {
        IndexExpr::var(gb)
            .mul(geo.mg as i64)
            .add(i)
            .mul(geo.out_size as i64)
            .add(j)
    };
    let epi_f = |kb: &mut KernelBuilder, prod: Expr, i: IndexExpr, j: IndexExpr, l: u32| {
        let m = g_of(gb).mul(geo.mg as i64).add(i);
        if l == 1 {
            let sp = unflatten(j, &geo.out_sp);
            epi.apply(kb, prod, n_of(gb), m, Ok(&sp), 1)
        } else {
            epi.apply(kb, prod, n_of(gb), m, Err(j), l)
        }
    };
    let gemm = TiledGemm {
        m: geo.mg,
        n: geo.out_size,
        k,
        a: ab,
        a_base: &a_base,
        a_pstride,
        b: bbuf,
        b_base: &b_base,
        b_pstride: geo.out_size as i64,
        out: ob,
        out_at: &out_at,
        epi: &epi_f,
    };
    let bl = Blocking::new(cx.opts, geo.mg, geo.out_size, k);
    let body = tiled_gemm(&mut kb, &gemm, &bl)?;
    cx.push(kb.finish(body));
    Ok(())
}

/// The im2col kernel: `cols[(n·G + g), (c, tap), out] = X[n, g·C/G + c, tap's input
/// position]`, or 0 in the padding. Grid over (image·group, channel).
fn im2col_kernel(node: &Node, geo: &Geo, xb: BufId, cols: BufId) -> Kernel {
    let mut kb = KernelBuilder::new(format!("{} im2col", node.name));
    kb.read(xb);
    kb.write(cols);
    let r = geo.axes.len();
    let gb = kb.axis(geo.n * geo.group);
    let gc = kb.axis(geo.cg);
    let t: Vec<Var> = (0..r).map(|_| kb.var()).collect();
    let o: Vec<Var> = (0..r).map(|_| kb.var()).collect();
    let oi: Vec<IndexExpr> = o.iter().map(|&v| IndexExpr::var(v)).collect();
    let ti: Vec<IndexExpr> = t.iter().map(|&v| IndexExpr::var(v)).collect();
    let (cond, sp) = geo.tap_at(&oi, &ti);
    let chan = IndexExpr::var(gb)
        .div(geo.group as i64)
        .mul(geo.c as i64)
        .add(IndexExpr::var(gb).rem(geo.group as i64).mul(geo.cg as i64))
        .add(IndexExpr::var(gc));
    let xe = Expr::load(xb, chan.mul(geo.in_size as i64).add(sp), 1);
    let xe = match cond {
        Some(c) => Expr::select(c, xe, Expr::f32(0.0)),
        None => xe,
    };
    let k = geo.cg * geo.taps;
    let row = IndexExpr::var(gb)
        .mul(k as i64)
        .add(IndexExpr::var(gc).mul(geo.taps as i64))
        .add(flat(&ti, &geo.k_sp));
    let store = Stmt::Store {
        buf: cols,
        index: row.mul(geo.out_size as i64).add(flat(&oi, &geo.out_sp)),
        value: xe,
    };
    let body = nest(&t, &geo.k_sp, nest(&o, &geo.out_sp, vec![store]));
    kb.finish(body)
}

/// Repacks a constant f32 `W` `[M, C/G, k...]` into `[G][ceil(mg/mr)][K][mr]`
/// panels (K = C/G · taps), zero rows past each group's `mg`.
fn pack_w(t: &Tensor, geo: &Geo, mr: usize) -> Result<Tensor, String> {
    let v = t.as_slice::<f32>().ok_or("packing needs an f32 W")?;
    let k = geo.cg * geo.taps;
    let nib = geo.mg.div_ceil(mr);
    let mut out = vec![0f32; geo.group * nib * k * mr];
    for g in 0..geo.group {
        for i in 0..geo.mg {
            for p in 0..k {
                let src = (g * geo.mg + i) * k + p;
                let dst = ((g * nib + i / mr) * k + p) * mr + i % mr;
                out[dst] = v[src];
            }
        }
    }
    Tensor::from_vec(vec![out.len()], out).map_err(|e| e.to_string())
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::testing::check_with;
    use super::*;
    use crate::testutil::Rng;

    /// Fills in `?` output dimensions by inference and prints the graph in full.
    pub(in crate::schedule) fn typed(src: &str) -> String {
        let mut g = kiln_ir::text::parse(src, "<test>").unwrap_or_else(|e| panic!("{e}\n{src}"));
        crate::reinfer::reinfer(&mut g).unwrap_or_else(|e| panic!("{e}\n{src}"));
        kiln_ir::text::print(&g, &kiln_ir::text::PrintOptions::lossless())
    }

    /// A constant of random values in [-1, 1), printed as a list.
    pub(in crate::schedule) fn rand_list(n: usize, seed: u64) -> String {
        let mut r = Rng::new(seed);
        let v: Vec<String> = (0..n)
            .map(|_| format!("{:.4}", r.unit() * 2.0 - 1.0))
            .collect();
        format!("[{}]", v.join(", "))
    }

    fn dims(d: &[usize]) -> String {
        d.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn unknown(rank: usize) -> String {
        vec!["?"; rank].join(",")
    }

    /// `Conv[attrs](x, W[, b])` with W (and b) constant or graph inputs.
    fn conv_src(
        dt: &str,
        x: &[usize],
        w: &[usize],
        attrs: &str,
        const_w: bool,
        bias: bool,
    ) -> String {
        let nw: usize = w.iter().product();
        let mut s = format!("graph @t {{\n in %0 \"x\": {dt}[{}]\n", dims(x));
        if const_w {
            s += &format!(" const %1: {dt}[{}] = {}\n", dims(w), rand_list(nw, 11));
        } else {
            s += &format!(" in %1 \"w\": {dt}[{}]\n", dims(w));
        }
        let mut args = "%0, %1".to_string();
        if bias {
            s += &format!(" const %2: {dt}[{}] = {}\n", w[0], rand_list(w[0], 12));
            args += ", %2";
        }
        let y = if bias { 3 } else { 2 };
        s += &format!(
            " %{y}: {dt}[{}] = Conv{attrs}({args}) @conv\n out %{y}\n}}",
            unknown(x.len())
        );
        s
    }

    fn opts() -> Options {
        Options::default()
    }

    /// Small cache blocks, so that the K/N/M-blocked GEMM runs on small shapes.
    fn blocked() -> Options {
        Options {
            mc: 8,
            nc: 16,
            kc: 8,
            ..Options::default()
        }
    }

    fn check_conv(x: &[usize], w: &[usize], attrs: &str, bias: bool) -> Program {
        let mut first = None;
        for const_w in [true, false] {
            let src = typed(&conv_src("f32", x, w, attrs, const_w, bias));
            check_with(&src, &blocked(), 1e-5);
            let p = check_with(&src, &opts(), 1e-5);
            first.get_or_insert(p);
        }
        first.unwrap()
    }

    fn kernel_names(p: &Program) -> Vec<String> {
        p.kernels.iter().map(|k| k.name.clone()).collect()
    }

    #[test]
    fn conv2d_padding_strides_dilations() {
        check_conv(&[1, 3, 7, 9], &[5, 3, 3, 3], "[pads=[1,1,1,1]]", true);
        check_conv(
            &[2, 4, 9, 8],
            &[6, 4, 3, 3],
            "[strides=[2,2], pads=[1,0,0,1]]",
            true,
        );
        check_conv(
            &[1, 3, 11, 10],
            &[13, 3, 3, 3],
            "[dilations=[2,2], pads=[2,2,2,2]]",
            false,
        );
        check_conv(
            &[1, 2, 9, 12],
            &[7, 2, 2, 5],
            "[strides=[1,2], pads=[0,2,1,2]]",
            true,
        );
        check_conv(&[1, 3, 10, 10], &[4, 3, 3, 3], "", false);
        let p = check_conv(
            &[1, 3, 16, 16],
            &[8, 3, 7, 7],
            "[strides=[2,2], pads=[3,3,3,3]]",
            true,
        );
        assert!(
            kernel_names(&p).iter().any(|n| n.ends_with("im2col")),
            "{:?}",
            kernel_names(&p)
        );
    }

    #[test]
    fn conv2d_auto_pad() {
        for ap in ["SAME_UPPER", "SAME_LOWER", "VALID"] {
            for s in [1, 2] {
                let attrs = format!("[auto_pad=\"{ap}\", strides=[{s},{s}]]");
                check_conv(&[1, 3, 9, 10], &[6, 3, 3, 4], &attrs, true);
            }
        }
    }

    #[test]
    fn conv2d_groups_and_depthwise() {
        check_conv(
            &[2, 4, 8, 9],
            &[6, 2, 3, 3],
            "[group=2, pads=[1,1,1,1]]",
            true,
        );
        check_conv(
            &[1, 6, 9, 9],
            &[9, 2, 3, 3],
            "[group=3, strides=[2,2]]",
            false,
        );
        // depthwise, multiplier 1 and 2: the direct schedule
        for (m, s) in [(6, 1), (6, 2), (12, 1)] {
            let attrs = format!("[group=6, pads=[1,1,1,1], strides=[{s},{s}]]");
            let p = check_conv(&[2, 6, 10, 11], &[m, 1, 3, 3], &attrs, true);
            assert_eq!(p.kernels.len(), 1, "{:?}", kernel_names(&p));
        }
    }

    #[test]
    fn conv_pointwise_reads_the_input_directly() {
        let p = check_conv(&[2, 8, 5, 7], &[12, 8, 1, 1], "", true);
        assert_eq!(p.kernels.len(), 1, "{:?}", kernel_names(&p));
        // the packed weight is there
        assert!(p
            .buffers
            .iter()
            .any(|b| b.name.as_deref().is_some_and(|n| n.ends_with("(packed)"))));
        // 1x1 with stride 2 needs the im2col
        let p = check_conv(&[1, 8, 9, 9], &[5, 8, 1, 1], "[strides=[2,2]]", false);
        assert_eq!(p.kernels.len(), 2, "{:?}", kernel_names(&p));
        check_conv(&[1, 8, 6, 6], &[6, 4, 1, 1], "[group=2]", true);
    }

    #[test]
    fn conv_small_outputs_use_the_direct_schedule() {
        let p = check_conv(&[1, 3, 3, 3], &[4, 3, 3, 3], "", true);
        assert_eq!(p.kernels.len(), 1);
    }

    #[test]
    fn conv1d_and_conv3d() {
        check_conv(&[2, 3, 17], &[4, 3, 3], "[strides=[2], pads=[1,1]]", true);
        check_conv(
            &[1, 4, 20],
            &[6, 2, 5],
            "[group=2, dilations=[2], pads=[3,1]]",
            false,
        );
        check_conv(
            &[1, 2, 5, 6, 7],
            &[3, 2, 3, 3, 3],
            "[pads=[1,1,1,1,1,1]]",
            true,
        );
        check_conv(
            &[1, 2, 6, 6, 6],
            &[4, 2, 2, 2, 2],
            "[strides=[2,2,2]]",
            false,
        );
    }

    #[test]
    fn conv_other_dtypes() {
        for (dt, tol) in [("f64", 1e-12), ("f16", 1e-2), ("bf16", 2e-2)] {
            for const_w in [true, false] {
                let src = typed(&conv_src(
                    dt,
                    &[1, 3, 6, 7],
                    &[4, 3, 3, 3],
                    "[pads=[1,1,1,1]]",
                    const_w,
                    true,
                ));
                check_with(&src, &opts(), tol);
            }
        }
    }

    fn fused_src(
        x: &[usize],
        w: &[usize],
        attrs: &str,
        epilogue: &str,
        extras: &[Vec<usize>],
    ) -> String {
        let nw: usize = w.iter().product();
        let mut s = format!(
            "graph @t {{\n in %0 \"x\": f32[{}]\n const %1: f32[{}] = {}\n",
            dims(x),
            dims(w),
            rand_list(nw, 5)
        );
        let mut args = "%0, %1".to_string();
        for (i, e) in extras.iter().enumerate() {
            s += &format!(" in %{} \"e{i}\": f32[{}]\n", i + 2, dims(e));
            args += &format!(", %{}", i + 2);
        }
        let sep = if attrs.is_empty() { "" } else { ", " };
        let y = extras.len() + 2;
        s += &format!(
            " %{y}: f32[{}] = FusedConv[epilogue=\"{epilogue}\"{sep}{attrs}]({args}) @fconv\n out %{y}\n}}",
            unknown(x.len())
        );
        s
    }

    #[test]
    fn fused_conv_epilogues() {
        let x = [2, 4, 9, 10];
        let w = [8, 4, 3, 3];
        for (attrs, h, wd) in [("pads=[1,1,1,1]", 9, 10), ("strides=[2,2]", 4, 4)] {
            let cases: Vec<(&str, Vec<Vec<usize>>)> = vec![
                ("Relu(Add(%0, %1))", vec![vec![8, 1, 1]]),
                (
                    "Relu(Add(Add(%0, %1), %2))",
                    vec![vec![8, 1, 1], vec![2, 8, h, wd]],
                ),
                (
                    "Add(Relu(Add(%0, %1)), %2)",
                    vec![vec![8, 1, 1], vec![8, h, wd]],
                ),
                ("Mul(Sigmoid(%0), %0)", vec![]),
                (
                    "Clip(Add(%0, %1), tensor<f32[]> 0.0, tensor<f32[]> 6.0)",
                    vec![vec![1, 8, 1, 1]],
                ),
            ];
            for (e, extras) in &cases {
                let src = typed(&fused_src(&x, &w, attrs, e, extras));
                check_with(&src, &opts(), 1e-5);
                check_with(&src, &blocked(), 1e-5);
            }
        }
        // an operand broadcast along one spatial axis only: the direct schedule
        let src = typed(&fused_src(
            &x,
            &w,
            "pads=[1,1,1,1]",
            "Add(%0, %1)",
            &[vec![1, 10]],
        ));
        check_with(&src, &opts(), 1e-5);
        // depthwise with an epilogue
        let src = typed(&fused_src(
            &[1, 4, 8, 8],
            &[4, 1, 3, 3],
            "group=4, pads=[1,1,1,1]",
            "Relu(Add(%0, %1))",
            &[vec![4, 1, 1]],
        ));
        check_with(&src, &opts(), 1e-5);
    }

    #[test]
    fn unsupported_convs_are_reasons() {
        let g = crate::testutil::parse(&typed(
            "graph @t {\n in %0: f32[1,2,5,5]\n in %1: f32[2,3,3,3]\n %2: f32[?,?,?,?] = ConvTranspose(%0, %1) @my_deconv\n out %2\n}",
        ));
        let e = super::super::lower(&g, &opts()).unwrap_err().to_string();
        assert!(
            e.contains("my_deconv") && e.contains("ConvTranspose"),
            "{e}"
        );
    }

    /// A ResNet-50 bottleneck block (1×1 reduce, 3×3, 1×1 expand, each with
    /// BatchNorm, a projection shortcut with stride 2, residual Add, Relu),
    /// then MaxPool and GlobalAveragePool: unfused, and with the convolutions
    /// fused with their BatchNorm (folded) and Relu/residual epilogues.
    #[test]
    fn resnet_bottleneck_block() {
        let (c, mid, out) = (16, 8, 32);
        let mut s = format!("graph @block {{\n in %0 \"x\": f32[1,{c},14,14]\n");
        let mut id = 1;
        let mut konst = |s: &mut String, d: &[usize], seed: u64, positive: bool| -> usize {
            let n: usize = d.iter().product();
            let v = if positive {
                let mut r = Rng::new(seed);
                let v: Vec<String> = (0..n).map(|_| format!("{:.4}", 0.5 + r.unit())).collect();
                format!("[{}]", v.join(", "))
            } else {
                rand_list(n, seed)
            };
            *s += &format!(" const %{id}: f32[{}] = {v}\n", dims(d));
            id += 1;
            id - 1
        };
        // weights and BN parameters
        let w1 = konst(&mut s, &[mid, c, 1, 1], 1, false);
        let w2 = konst(&mut s, &[mid, mid, 3, 3], 2, false);
        let w3 = konst(&mut s, &[out, mid, 1, 1], 3, false);
        let ws = konst(&mut s, &[out, c, 1, 1], 4, false);
        let mut bn = Vec::new();
        for (k, ch) in [mid, mid, out, out].into_iter().enumerate() {
            let p: Vec<usize> = (0..4)
                .map(|j| konst(&mut s, &[ch], 10 + 4 * k as u64 + j, j == 3 || j == 0))
                .collect();
            bn.push(p);
        }
        let mut v = id;
        let mut node = |s: &mut String, op: &str, args: &[usize], rank: usize| -> usize {
            let a: Vec<String> = args.iter().map(|x| format!("%{x}")).collect();
            *s += &format!(
                " %{v}: f32[{}] = {op}({}) @n{v}\n",
                unknown(rank),
                a.join(", ")
            );
            v += 1;
            v - 1
        };
        let bnorm = |s: &mut String,
                     node: &mut dyn FnMut(&mut String, &str, &[usize], usize) -> usize,
                     x: usize,
                     p: &[usize]| {
            node(s, "BatchNormalization", &[x, p[0], p[1], p[2], p[3]], 4)
        };
        let a = node(&mut s, "Conv", &[0, w1], 4);
        let a = bnorm(&mut s, &mut node, a, &bn[0]);
        let a = node(&mut s, "Relu", &[a], 4);
        let b = node(&mut s, "Conv[pads=[1,1,1,1], strides=[2,2]]", &[a, w2], 4);
        let b = bnorm(&mut s, &mut node, b, &bn[1]);
        let b = node(&mut s, "Relu", &[b], 4);
        let c3 = node(&mut s, "Conv", &[b, w3], 4);
        let c3 = bnorm(&mut s, &mut node, c3, &bn[2]);
        let sc = node(&mut s, "Conv[strides=[2,2]]", &[0, ws], 4);
        let sc = bnorm(&mut s, &mut node, sc, &bn[3]);
        let y = node(&mut s, "Add", &[c3, sc], 4);
        let y = node(&mut s, "Relu", &[y], 4);
        let mp = node(
            &mut s,
            "MaxPool[kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]]",
            &[y],
            4,
        );
        let gap = node(&mut s, "GlobalAveragePool", &[mp], 4);
        s += &format!(" out %{y}, %{gap}\n}}");
        let src = typed(&s);
        let p = check_with(&src, &opts(), 1e-4);
        check_with(&src, &blocked(), 1e-4);
        assert!(p.kernels.len() >= 12, "{}", p.kernels.len());

        // fused: BN folded into the weights and a bias, Relu and the residual
        // in the epilogues
        let fold = |w: &[f32], ch: usize, p: &[Vec<f32>]| -> (Vec<f32>, Vec<f32>) {
            let per = w.len() / ch;
            let mut wf = w.to_vec();
            let mut b = vec![0f32; ch];
            for o in 0..ch {
                let k = p[0][o] / (p[3][o] + 1e-5).sqrt();
                for x in &mut wf[o * per..][..per] {
                    *x *= k;
                }
                b[o] = p[1][o] - p[2][o] * k;
            }
            (wf, b)
        };
        let g = kiln_ir::text::parse(&src, "<t>").unwrap();
        let val = |i: usize| -> Vec<f32> {
            g.consts[&kiln_ir::ValueId(i as u32)]
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        let list = |v: &[f32]| {
            format!(
                "[{}]",
                v.iter()
                    .map(|x| format!("{x:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let bnp = |k: usize| -> Vec<Vec<f32>> { bn[k].iter().map(|&i| val(i)).collect() };
        let (f1, b1) = fold(&val(w1), mid, &bnp(0));
        let (f2, b2) = fold(&val(w2), mid, &bnp(1));
        let (f3, b3) = fold(&val(w3), out, &bnp(2));
        let (fs, bs) = fold(&val(ws), out, &bnp(3));
        let fused = format!(
            "graph @fused {{\n in %0 \"x\": f32[1,{c},14,14]\n\
             const %1: f32[{mid},{c},1,1] = {}\n const %2: f32[{mid},1,1] = {}\n\
             const %3: f32[{mid},{mid},3,3] = {}\n const %4: f32[{mid},1,1] = {}\n\
             const %5: f32[{out},{mid},1,1] = {}\n const %6: f32[{out},1,1] = {}\n\
             const %7: f32[{out},{c},1,1] = {}\n const %8: f32[{out},1,1] = {}\n\
             %9: f32[?,?,?,?] = FusedConv[epilogue=\"Relu(Add(%0, %1))\"](%0, %1, %2) @c1\n\
             %10: f32[?,?,?,?] = FusedConv[epilogue=\"Relu(Add(%0, %1))\", pads=[1,1,1,1], strides=[2,2]](%9, %3, %4) @c2\n\
             %11: f32[?,?,?,?] = FusedConv[epilogue=\"Add(%0, %1)\", strides=[2,2]](%0, %7, %8) @shortcut\n\
             %12: f32[?,?,?,?] = FusedConv[epilogue=\"Relu(Add(Add(%0, %1), %2))\"](%10, %5, %6, %11) @c3\n\
             %13: f32[?,?,?,?] = MaxPool[kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]](%12) @mp\n\
             %14: f32[?,?,?,?] = GlobalAveragePool(%13) @gap\n out %12, %14\n}}",
            list(&f1), list(&b1), list(&f2), list(&b2), list(&f3), list(&b3), list(&fs), list(&bs)
        );
        let fsrc = typed(&fused);
        let pf = check_with(&fsrc, &opts(), 1e-4);
        // the fused block computes what the unfused one does
        let gu = crate::testutil::parse(&src);
        let gf = crate::testutil::parse(&fsrc);
        let ins = crate::testutil::random_inputs(&gu, 3);
        let a = kiln_ir::kernel::interp::run(&p, &ins).unwrap();
        let b = kiln_ir::kernel::interp::run(&pf, &ins).unwrap();
        let _ = gf;
        for (x, y) in a.iter().zip(&b) {
            for (u, w) in x.to_f64_vec().iter().zip(y.to_f64_vec()) {
                assert!((u - w).abs() <= 1e-4 * (1.0 + u.abs()), "{u} vs {w}");
            }
        }
        assert!(pf.kernels.len() < p.kernels.len());
    }
}
