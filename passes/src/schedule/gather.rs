//! The gather schedules: GatherElements and GatherND (Gather itself is in
//! [`super::movement`]).
//!
//! Requires: static shapes; indices of any integer type, given at run time.
//! Establishes: one kernel per node whose grid runs over output rows
//! (GatherElements) or index tuples (GatherND); every output element is a
//! copy of the data element its index names, for every dtype. Negative
//! indices count from the end; out-of-range indices (an error in the
//! reference interpreter) are clamped into range, so compiled code never
//! reads outside the data.

use super::indexing::*;
use super::*;
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    _attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    match inputs.get(1).copied().flatten() {
        Some(t) if t.dtype.is_int() => Ok(()),
        Some(t) => Err(Reason(format!("{op} with {} indices", t.dtype))),
        None => Err(Reason(format!("{op} without indices"))),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    match node.op {
        Op::GatherElements => gather_elements(cx, node),
        Op::GatherND => gather_nd(cx, node),
        o => Err(format!("{o} has no gather schedule")),
    }
}

fn gather_elements(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "data")?;
    let iv = required(node, 1, "indices")?;
    let xd = cx.dims(x);
    let id = cx.dims(iv);
    let rank = xd.len();
    let axis = axis_of(node.op, int_attr(node, "axis", 0)?, rank)?;
    let fits = id.len() == rank
        && id
            .iter()
            .zip(&xd)
            .enumerate()
            .all(|(k, (i, d))| k == axis || i <= d);
    if !fits {
        return Err(format!(
            "GatherElements: indices {id:?} do not fit data {xd:?} (same rank, no larger off axis {axis})"
        ));
    }
    if xd[axis] == 0 && id.iter().product::<usize>() > 0 {
        return Err("GatherElements: indices into an empty axis".into());
    }
    let (xb, ib) = (cx.buf(x), cx.buf(iv));
    let ob = cx.out_buf(node.outputs[0]);
    let st = kiln_ir::shape::strides(&xd);
    let dim = xd[axis];
    let k = per_element(&node.name, &id, &[xb, ib], &[ob], |kb, o, flat| {
        let mut s = Vec::new();
        let i = resolved_index(kb, Expr::load(ib, flat.clone(), 1), dim, &mut s);
        let mut src = IndexExpr::c(0);
        for (a, oa) in o.iter().enumerate() {
            let c = if a == axis { i.clone() } else { oa.clone() };
            src = src.add(c.mul(st[a] as i64));
        }
        s.push(Stmt::Store {
            buf: ob,
            index: flat,
            value: Expr::load(xb, src, 1),
        });
        s
    });
    cx.push(k);
    Ok(())
}

fn gather_nd(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "data")?;
    let iv = required(node, 1, "indices")?;
    let ds = cx.dims(x);
    let is = cx.dims(iv);
    let b = int_attr(node, "batch_dims", 0)?;
    let b = usize::try_from(b).map_err(|_| format!("GatherND: negative batch_dims {b}"))?;
    if ds.is_empty() || is.is_empty() || b >= ds.len().min(is.len()) {
        return Err(format!(
            "GatherND: data rank {} and indices rank {} must exceed batch_dims {b}",
            ds.len(),
            is.len()
        ));
    }
    let k = is[is.len() - 1];
    if ds[..b] != is[..b] || b + k > ds.len() {
        return Err(format!(
            "GatherND: indices {is:?} do not fit data {ds:?} with batch_dims {b}"
        ));
    }
    let per_batch: usize = is[b..is.len() - 1].iter().product();
    let n_tuples: usize = is[..is.len() - 1].iter().product();
    let slice: usize = ds[b + k..].iter().product();
    let batch_size: usize = ds[b..].iter().product();
    let st = kiln_ir::shape::strides(&ds[b..]);
    let (xb, ib) = (cx.buf(x), cx.buf(iv));
    let ob = cx.out_buf(node.outputs[0]);
    if n_tuples * slice > 0 && (0..k).any(|j| ds[b + j] == 0) {
        return Err("GatherND: indices into an empty axis".into());
    }
    let mut kb = KernelBuilder::new(node.name.clone());
    kb.read(xb);
    kb.read(ib);
    kb.write(ob);
    let t = kb.axis(n_tuples);
    let mut body = Vec::new();
    let mut base = IndexExpr::var(t)
        .div(per_batch.max(1) as i64)
        .mul(batch_size as i64);
    for j in 0..k {
        let raw = Expr::load(
            ib,
            IndexExpr::var(t).mul(k as i64).add(IndexExpr::c(j as i64)),
            1,
        );
        let i = resolved_index(&mut kb, raw, ds[b + j], &mut body);
        base = base.add(i.mul(st[j] as i64));
    }
    let bv = kb.var();
    body.push(Stmt::Let {
        var: bv,
        value: ix(base),
    });
    let s = kb.var();
    body.push(for_n(
        s,
        slice,
        vec![Stmt::Store {
            buf: ob,
            index: IndexExpr::var(t).mul(slice as i64).add(IndexExpr::var(s)),
            value: Expr::load(xb, IndexExpr::var(bv).add(IndexExpr::var(s)), 1),
        }],
    ));
    let body = if n_tuples * slice > 0 {
        body
    } else {
        Vec::new()
    };
    cx.push(kb.finish(body));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    #[test]
    fn gather_elements_every_axis_and_dtype() {
        for (axis, ishape) in [(0, "2,3"), (1, "3,2"), (-1, "3,4")] {
            for dt in ["f32", "i64", "f16", "u8", "bool"] {
                check(&format!(
                    "graph @t {{\n in %0: {dt}[3,4]\n in %1: i64[{ishape}]\n %2: {dt}[{ishape}] = GatherElements[axis={axis}](%0, %1) @g\n out %2\n}}"
                ));
            }
        }
        check("graph @t {\n in %0: f32[4,3,2]\n in %1: i32[4,2,2]\n %2: f32[4,2,2] = GatherElements[axis=1](%0, %1) @g\n out %2\n}");
    }

    #[test]
    fn gather_nd_with_and_without_batch_dims() {
        check("graph @t {\n in %0: f32[3,4,5]\n in %1: i64[2,2]\n %2: f32[2,5] = GatherND(%0, %1) @g\n out %2\n}");
        check("graph @t {\n in %0: i32[3,4]\n in %1: i64[2,3,2]\n %2: i32[2,3] = GatherND(%0, %1) @g\n out %2\n}");
        check("graph @t {\n in %0: f32[2,4,5]\n in %1: i64[2,3,1]\n %2: f32[2,3,5] = GatherND[batch_dims=1](%0, %1) @g\n out %2\n}");
        check("graph @t {\n in %0: f16[2,3,4]\n in %1: i64[2,1]\n %2: f16[2,4] = GatherND[batch_dims=1](%0, %1) @g\n out %2\n}");
    }
}
