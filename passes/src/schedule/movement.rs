//! The movement schedule: Reshape, Squeeze, Unsqueeze and Flatten become
//! aliases (the output shares the input's buffer: kernels index flat
//! row-major arrays, so a reshape of a contiguous buffer costs nothing);
//! Transpose, Slice, Gather, Concat, Split and Expand become copy kernels
//! whose source index is an index expression of the output index (div/mod
//! by constants; `dyn` for Gather's indices).
//!
//! Requires: static shapes; constant `starts/ends/axes/steps` (Slice),
//! `split` (Split) and `shape` (Expand) inputs. Establishes: the node's
//! outputs hold the moved data. Gather indices out of range are not
//! checked at run time (the interpreter reports an error; compiled code reads
//! whatever lies there); negative indices wrap as ONNX says.
//! Not folded into consumers yet: a Transpose feeding an elementwise kernel
//! is still a copy (the elementwise schedule reads contiguous or broadcast
//! operands only).

use super::*;
use kiln_ir::kernel::{BinOp, CmpOp};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    _attrs: &Attrs,
    _inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    match op {
        Op::Reshape
        | Op::Squeeze
        | Op::Unsqueeze
        | Op::Flatten
        | Op::Transpose
        | Op::Slice
        | Op::Gather
        | Op::Concat
        | Op::Split
        | Op::Expand => Ok(()),
        o => Err(Reason(format!("{o} has no kernel schedule"))),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = node.inputs[0].ok_or("missing input 0")?;
    let in_dims = cx.dims(x);
    let out_v = node.outputs[0];
    let out_dims = cx.dims(out_v);
    match node.op {
        Op::Reshape | Op::Squeeze | Op::Unsqueeze | Op::Flatten => {
            let b = cx.buf(x);
            cx.val_buf.insert(out_v, b);
            Ok(())
        }
        Op::Transpose => {
            let rank = in_dims.len();
            let perm: Vec<usize> = match node.attrs.ints("perm").map_err(|e| e.to_string())? {
                Some(p) => p.iter().map(|&a| a as usize).collect(),
                None => (0..rank).rev().collect(),
            };
            let st = kiln_ir::shape::strides(&in_dims);
            gather_kernel(cx, node, x, out_v, |_, o| {
                let mut e = IndexExpr::c(0);
                for (i, oi) in o.iter().enumerate() {
                    e = e.add(oi.clone().mul(st[perm[i]] as i64));
                }
                e
            })
        }
        Op::Expand => gather_kernel(cx, node, x, out_v, |_, o| broadcast_index(&in_dims, o)),
        Op::Slice => {
            let rank = in_dims.len();
            let get = |i: usize| -> Result<Option<Vec<i64>>, String> {
                match node.inputs.get(i).copied().flatten() {
                    None => Ok(None),
                    Some(v) => Ok(Some(
                        cx.const_of(v)
                            .ok_or(format!("Slice input {i} must be a constant"))?
                            .to_i64_vec()
                            .map_err(|e| e.to_string())?,
                    )),
                }
            };
            let starts = get(1)?.ok_or("Slice needs starts")?;
            let axes: Vec<usize> = match get(3)? {
                Some(a) => a
                    .iter()
                    .map(|&a| {
                        kiln_ir::shape::normalize_axis(a, rank)
                            .ok_or(format!("axis {a} out of range"))
                    })
                    .collect::<Result<_, _>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = get(4)?.unwrap_or_else(|| vec![1; starts.len()]);
            let mut start = vec![0i64; rank];
            let mut step = vec![1i64; rank];
            for (k, &a) in axes.iter().enumerate() {
                let d = in_dims[a] as i64;
                let (s, st) = (starts[k], steps[k]);
                let s = if s < 0 { s + d } else { s };
                start[a] = if st > 0 {
                    s.clamp(0, d)
                } else {
                    s.clamp(0, (d - 1).max(0))
                };
                step[a] = st;
            }
            let st = kiln_ir::shape::strides(&in_dims);
            gather_kernel(cx, node, x, out_v, |_, o| {
                let mut e = IndexExpr::c(0);
                for (a, oi) in o.iter().enumerate() {
                    e = e.add(
                        IndexExpr::c(start[a])
                            .add(oi.clone().mul(step[a]))
                            .mul(st[a] as i64),
                    );
                }
                e
            })
        }
        Op::Gather => {
            let rank = in_dims.len();
            let axis = node.attrs.int_or("axis", 0).map_err(|e| e.to_string())?;
            let axis =
                kiln_ir::shape::normalize_axis(axis, rank).ok_or("Gather axis out of range")?;
            let iv = node
                .inputs
                .get(1)
                .copied()
                .flatten()
                .ok_or("Gather needs indices")?;
            let idims = cx.dims(iv);
            let idt = cx.dtype(iv);
            let ib = cx.buf(iv);
            let st = kiln_ir::shape::strides(&in_dims);
            let ist = kiln_ir::shape::strides(&idims);
            let d = in_dims[axis] as i64;
            let q = idims.len();
            gather_kernel_with(cx, node, x, out_v, &[ib], |_, o| {
                let mut e = IndexExpr::c(0);
                for a in 0..axis {
                    e = e.add(o[a].clone().mul(st[a] as i64));
                }
                let mut ii = IndexExpr::c(0);
                for (k, s) in ist.iter().enumerate() {
                    ii = ii.add(o[axis + k].clone().mul(*s as i64));
                }
                let raw = Expr::cast(DType::I64, Expr::load(ib, ii, 1));
                let wrapped = Expr::select(
                    Expr::cmp(CmpOp::Lt, raw.clone(), Expr::int(DType::I64, 0)),
                    Expr::binary(BinOp::Add, raw.clone(), Expr::int(DType::I64, d)),
                    raw,
                );
                let _ = idt;
                e = e.add(IndexExpr::Dyn(Box::new(wrapped)).mul(st[axis] as i64));
                for a in axis + 1..rank {
                    e = e.add(o[a + q - 1].clone().mul(st[a] as i64));
                }
                e
            })
        }
        Op::Concat => {
            let rank = out_dims.len();
            let axis = node.attrs.int_or("axis", 0).map_err(|e| e.to_string())?;
            let axis =
                kiln_ir::shape::normalize_axis(axis, rank).ok_or("Concat axis out of range")?;
            let outer: usize = out_dims[..axis].iter().product();
            let inner: usize = out_dims[axis + 1..].iter().product();
            let ob = cx.out_buf(out_v);
            let mut kb = KernelBuilder::new(node.name.clone());
            kb.write(ob);
            let g = kb.axis(outer);
            let mut body = Vec::new();
            let mut off = 0usize;
            for v in node.inputs.iter().flatten() {
                let dk = cx.dims(*v)[axis];
                let b = cx.buf(*v);
                kb.read(b);
                let t = kb.var();
                let n = dk * inner;
                let src = IndexExpr::var(g).mul(n as i64).add(IndexExpr::var(t));
                let dst = IndexExpr::var(g)
                    .mul((out_dims[axis] * inner) as i64)
                    .add(IndexExpr::c((off * inner) as i64))
                    .add(IndexExpr::var(t));
                if n > 0 {
                    body.push(for_n(
                        t,
                        n,
                        vec![Stmt::Store {
                            buf: ob,
                            index: dst,
                            value: Expr::load(b, src, 1),
                        }],
                    ));
                }
                off += dk;
            }
            cx.push(kb.finish(body));
            Ok(())
        }
        Op::Split => {
            let rank = in_dims.len();
            let axis = node.attrs.int_or("axis", 0).map_err(|e| e.to_string())?;
            let axis =
                kiln_ir::shape::normalize_axis(axis, rank).ok_or("Split axis out of range")?;
            let outer: usize = in_dims[..axis].iter().product();
            let inner: usize = in_dims[axis + 1..].iter().product();
            let xb = cx.buf(x);
            let mut kb = KernelBuilder::new(node.name.clone());
            kb.read(xb);
            let g = kb.axis(outer);
            let mut body = Vec::new();
            let mut off = 0usize;
            for &v in &node.outputs {
                let dk = cx.dims(v)[axis];
                let b = cx.out_buf(v);
                kb.write(b);
                let t = kb.var();
                let n = dk * inner;
                let dst = IndexExpr::var(g).mul(n as i64).add(IndexExpr::var(t));
                let src = IndexExpr::var(g)
                    .mul((in_dims[axis] * inner) as i64)
                    .add(IndexExpr::c((off * inner) as i64))
                    .add(IndexExpr::var(t));
                if n > 0 {
                    body.push(for_n(
                        t,
                        n,
                        vec![Stmt::Store {
                            buf: b,
                            index: dst,
                            value: Expr::load(xb, src, 1),
                        }],
                    ));
                }
                off += dk;
            }
            cx.push(kb.finish(body));
            Ok(())
        }
        other => Err(format!("{other} has no movement schedule")),
    }
}

/// A copy kernel `out[o] = x[src(o)]` over every output element: grid over
/// the outer output axes, an inner loop over the last one.
fn gather_kernel(
    cx: &mut Lower,
    node: &Node,
    x: ValueId,
    out_v: ValueId,
    src: impl Fn(&mut KernelBuilder, &[IndexExpr]) -> IndexExpr,
) -> Result<(), String> {
    gather_kernel_with(cx, node, x, out_v, &[], src)
}

fn gather_kernel_with(
    cx: &mut Lower,
    node: &Node,
    x: ValueId,
    out_v: ValueId,
    extra_reads: &[BufId],
    src: impl Fn(&mut KernelBuilder, &[IndexExpr]) -> IndexExpr,
) -> Result<(), String> {
    let out_dims = cx.dims(out_v);
    let xb = cx.buf(x);
    let ob = cx.out_buf(out_v);
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    for b in extra_reads {
        kb.read(*b);
    }
    kb.write(ob);
    let total: usize = out_dims.iter().product();
    let (outer_dims, inner) = match out_dims.split_last() {
        Some((l, rest)) => (rest.to_vec(), *l),
        None => (Vec::new(), 1),
    };
    let outer: usize = outer_dims.iter().product();
    let g = kb.axis(outer);
    let j = kb.var();
    let mut o = unflatten(IndexExpr::var(g), &outer_dims);
    if !out_dims.is_empty() {
        o.push(IndexExpr::var(j));
    }
    let s = src(&mut kb, &o);
    let dst = IndexExpr::var(g).mul(inner as i64).add(IndexExpr::var(j));
    let body = if total > 0 {
        vec![for_n(
            j,
            inner,
            vec![Stmt::Store {
                buf: ob,
                index: dst,
                value: Expr::load(xb, s, 1),
            }],
        )]
    } else {
        Vec::new()
    };
    cx.push(kb.finish(body));
    Ok(())
}

/// A kernel copying all of `src` into `dst` (same element count and dtype).
pub fn copy_kernel(cx: &mut Lower, name: &str, src: BufId, dst: BufId) -> Kernel {
    let n = cx.prog.buffers[dst.index()].len();
    let mut kb = KernelBuilder::new(name.to_string());
    kb.read(src);
    kb.write(dst);
    let chunk = cx.opts.chunk.max(1);
    let nchunks = n.div_ceil(chunk).max(1);
    let g = kb.axis(nchunks);
    let j = kb.var();
    let start = IndexExpr::var(g).mul(chunk as i64);
    let end = start
        .clone()
        .add(IndexExpr::c(chunk as i64))
        .min(IndexExpr::c(n as i64));
    let body = if n > 0 {
        vec![for_(
            j,
            start,
            end,
            1,
            vec![Stmt::Store {
                buf: dst,
                index: IndexExpr::var(j),
                value: Expr::load(src, IndexExpr::var(j), 1),
            }],
        )]
    } else {
        Vec::new()
    };
    kb.finish(body)
}
