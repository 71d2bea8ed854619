//! The Einsum schedule: any equation (explicit or implicit output,
//! diagonals, ellipses, broadcasting size-1 dimensions) as one loop nest.
//!
//! Requires: static shapes; numeric (not bool) operands of one dtype.
//! Establishes: one kernel whose grid runs over the output elements; each
//! grid point walks the summed labels in row-major order (the iteration space
//! of [`kiln_ir::interp::einsum_space`], which the reference interpreter
//! walks too) with a scalar accumulator, adding the product of the operands
//! in operand order. Numerics are the interpreter's: f32 and f64 in their own
//! type, f16/bf16 in f32 rounded once, integers wrapping; no fused
//! multiply-add. Not tiled: a large contraction is a scalar loop (MatMul-shaped
//! Einsums are best rewritten to MatMul before scheduling).

use super::indexing::*;
use super::*;
use kiln_ir::kernel::{BinOp, Ty};
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    _attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    match inputs.first().copied().flatten() {
        Some(t) if t.dtype == DType::Bool => Err(Reason(format!("{op} of bool"))),
        Some(_) if inputs.iter().all(|i| i.is_some()) => Ok(()),
        _ => Err(Reason(format!("{op} with an omitted input"))),
    }
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let eq = node
        .attrs
        .str("equation")
        .map_err(|e| e.to_string())?
        .ok_or("Einsum needs its `equation`")?;
    let vals: Vec<ValueId> = (0..node.inputs.len())
        .map(|i| required(node, i, "operand"))
        .collect::<Result<_, _>>()?;
    let shapes: Vec<Vec<usize>> = vals.iter().map(|&v| cx.dims(v)).collect();
    let refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
    let space = kiln_ir::interp::einsum_space(eq, &refs).map_err(|e| e.to_string())?;
    let od = cx.dims(node.outputs[0]);
    if space.out_shape != od {
        return Err(format!(
            "Einsum `{eq}`: computes the shape {:?} but the node declares {od:?}",
            space.out_shape
        ));
    }
    let dt = cx.dtype(node.outputs[0]);
    if let Some(v) = vals.iter().find(|&&v| cx.dtype(v) != dt) {
        return Err(format!(
            "Einsum: operand {v} is {} but the output is {dt}",
            cx.dtype(*v)
        ));
    }
    let ct = compute_dtype(dt);
    let bufs: Vec<BufId> = vals.iter().map(|&v| cx.buf(v)).collect();
    let ob = cx.out_buf(node.outputs[0]);
    let n_out: usize = od.iter().product();
    let no = space.n_output;
    let mut kb = KernelBuilder::new(node.name.clone());
    for &b in &bufs {
        kb.read(b);
    }
    kb.write(ob);
    let g = kb.axis(n_out);
    let out_coords = unflatten(IndexExpr::var(g), &od);
    let sum_vars: Vec<Var> = space.sizes[no..].iter().map(|_| kb.var()).collect();
    let acc = kb.var();
    let coord = |l: usize| -> IndexExpr {
        if l < no {
            out_coords[l].clone()
        } else {
            IndexExpr::var(sum_vars[l - no])
        }
    };
    let mut product: Option<Expr> = None;
    for (i, &b) in bufs.iter().enumerate() {
        let mut at = IndexExpr::c(0);
        for (l, &s) in space.strides[i].iter().enumerate() {
            if s != 0 {
                at = at.add(coord(l).mul(s as i64));
            }
        }
        let x = load_c(b, dt, at, 1);
        product = Some(match product {
            None => x,
            Some(p) => Expr::binary(BinOp::Mul, p, x),
        });
    }
    let product = product.ok_or("Einsum needs at least one operand")?;
    let mut nest = vec![Stmt::Assign {
        var: acc,
        value: Expr::binary(BinOp::Add, Expr::var(acc), product),
    }];
    for (k, &v) in sum_vars.iter().enumerate().rev() {
        nest = vec![for_n(v, space.sizes[no + k], nest)];
    }
    let zero = if ct.is_float() {
        Expr::float(ct, 0.0)
    } else {
        Expr::int(ct, 0)
    };
    let mut body = vec![Stmt::Local {
        var: acc,
        ty: Ty::scalar(ct),
        init: zero,
    }];
    if space.sizes[no..].iter().all(|&n| n > 0) {
        body.extend(nest);
    }
    body.push(Stmt::Store {
        buf: ob,
        index: IndexExpr::var(g),
        value: to_storage(Expr::var(acc), dt),
    });
    cx.push(kb.finish(if n_out > 0 { body } else { Vec::new() }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    fn eq(e: &str, ins: &[&str], out: &str) -> String {
        let mut s = String::from("graph @t {\n");
        for (i, t) in ins.iter().enumerate() {
            s += &format!(" in %{i}: {t}\n");
        }
        let args: Vec<String> = (0..ins.len()).map(|i| format!("%{i}")).collect();
        s += &format!(
            " %{n}: {out} = Einsum[equation=\"{e}\"]({}) @e\n out %{n}\n}}",
            args.join(", "),
            n = ins.len()
        );
        s
    }

    #[test]
    fn einsum_equations() {
        check(&eq("ij,jk->ik", &["f32[3,4]", "f32[4,5]"], "f32[3,5]"));
        check(&eq(
            "bij,bjk->bik",
            &["f32[2,3,4]", "f32[2,4,5]"],
            "f32[2,3,5]",
        ));
        check(&eq("ij->ji", &["i32[3,4]"], "i32[4,3]"));
        check(&eq("ii->i", &["f64[4,4]"], "f64[4]"));
        check(&eq("ii", &["f32[4,4]"], "f32[]"));
        check(&eq("i,i", &["i64[5]", "i64[5]"], "i64[]"));
        check(&eq("ij->", &["f32[3,4]"], "f32[]"));
        check(&eq("i,j->ij", &["f32[3]", "f32[4]"], "f32[3,4]"));
        check(&eq("...ii->...i", &["f32[2,3,3]"], "f32[2,3]"));
        check(&eq(
            "...ij,...jk",
            &["f32[2,2,3]", "f32[3,1]"],
            "f32[2,2,1]",
        ));
        check(&eq("ij,jk", &["f32[2,1]", "f32[3,2]"], "f32[2,2]"));
        check(&eq("bA,ab", &["f32[2,3]", "f32[4,2]"], "f32[3,4]"));
        check(&eq(
            "abc,cd,de->ae",
            &["f32[2,3,4]", "f32[4,2]", "f32[2,3]"],
            "f32[2,3]",
        ));
        check(&eq("ij->i", &["f32[2,0]"], "f32[2]"));
    }

    #[test]
    fn einsum_half_precision() {
        super::super::testing::check_with(
            &eq("ij,jk->ik", &["f16[3,4]", "f16[4,5]"], "f16[3,5]"),
            &super::super::Options::default(),
            1e-3,
        );
    }
}
