//! Helpers shared by the index-map schedules (gather, scatter, layout,
//! select, scan, misc, resize, einsum): reading constant operands, scalar
//! constants of any dtype, data-dependent indices, and the "one store per
//! output element" kernel shape.
//!
//! Requires: static shapes (checked by [`super::supports`]). Establishes
//! nothing by itself; each helper says what its result guarantees.

use super::*;
use kiln_ir::kernel::{BinOp, CmpOp};

/// Operand `i` of `node`, if given.
pub(super) fn operand(node: &Node, i: usize) -> Option<ValueId> {
    node.inputs.get(i).copied().flatten()
}

/// Operand `i` of `node`, which the op requires.
pub(super) fn required(node: &Node, i: usize, what: &str) -> Result<ValueId, String> {
    operand(node, i).ok_or_else(|| format!("{} needs its `{what}` input (#{i})", node.op))
}

/// The integer values of operand `i` if it is given and constant;
/// `Ok(None)` if omitted, an error naming it if it is not constant.
pub(super) fn const_ints(
    cx: &Lower,
    node: &Node,
    i: usize,
    what: &str,
) -> Result<Option<Vec<i64>>, String> {
    match operand(node, i) {
        None => Ok(None),
        Some(v) => cx
            .const_of(v)
            .ok_or_else(|| {
                format!(
                    "{}: the `{what}` input (#{i}) must be a constant to be scheduled",
                    node.op
                )
            })?
            .to_i64_vec()
            .map(Some)
            .map_err(|e| format!("{}: `{what}`: {e}", node.op)),
    }
}

/// A one-element constant buffer of `dt` holding `v` (converted as
/// [`Tensor::from_f64s`] converts), so that constants of every dtype,
/// f16 and bool included, are a plain load.
pub(super) fn scalar_buf(cx: &mut Lower, dt: DType, v: f64) -> Result<BufId, String> {
    let t = Tensor::from_f64s(dt, vec![1], &[v]).map_err(|e| e.to_string())?;
    Ok(cx.add_buffer(None, dt, vec![1], BufKind::Const(t)))
}

/// Binds the data-dependent index `raw` (any integer expression) resolved
/// against a dimension of `dim`: negative values count from the end, and the
/// result is clamped into `0..dim` so that compiled code never leaves the
/// buffer (the reference interpreter rejects out-of-range indices instead).
/// Pushes the `let`s onto `out` and returns the index expression.
pub(super) fn resolved_index(
    kb: &mut KernelBuilder,
    raw: Expr,
    dim: usize,
    out: &mut Vec<Stmt>,
) -> IndexExpr {
    let r = kb.var();
    let w = kb.var();
    out.push(Stmt::Let {
        var: r,
        value: Expr::cast(DType::I64, raw),
    });
    out.push(Stmt::Let {
        var: w,
        value: Expr::select(
            Expr::cmp(CmpOp::Lt, Expr::var(r), Expr::int(DType::I64, 0)),
            Expr::binary(BinOp::Add, Expr::var(r), Expr::int(DType::I64, dim as i64)),
            Expr::var(r),
        ),
    });
    IndexExpr::var(w)
        .max(IndexExpr::c(0))
        .min(IndexExpr::c(dim as i64 - 1))
}

/// `e` as an `i64` value expression.
pub(super) fn ix(e: IndexExpr) -> Expr {
    Expr::Index(e)
}

/// `a < b` on index values.
pub(super) fn lt(a: Expr, b: Expr) -> Expr {
    Expr::cmp(CmpOp::Lt, a, b)
}

/// Logical and of bool values (`true` for none).
pub(super) fn all(conds: Vec<Expr>) -> Expr {
    conds
        .into_iter()
        .reduce(|a, b| Expr::binary(BinOp::And, a, b))
        .unwrap_or(Expr::int(DType::Bool, 1))
}

/// A kernel with one body instance per element of an output of `out_dims`:
/// the grid runs over all axes but the last, a loop over the last.
/// `body(kb, coords, flat)` gets the per-axis coordinates and the flat
/// row-major output index, and returns the statements that store that
/// element. An empty output gives an empty body.
pub(super) fn per_element(
    name: &str,
    out_dims: &[usize],
    reads: &[BufId],
    writes: &[BufId],
    body: impl FnOnce(&mut KernelBuilder, &[IndexExpr], IndexExpr) -> Vec<Stmt>,
) -> Kernel {
    let mut kb = KernelBuilder::new(name.to_string());
    for &b in reads {
        kb.read(b);
    }
    for &b in writes {
        kb.write(b);
    }
    let total: usize = out_dims.iter().product();
    let (outer_dims, inner) = match out_dims.split_last() {
        Some((l, rest)) => (rest.to_vec(), *l),
        None => (Vec::new(), 1),
    };
    let g = kb.axis(outer_dims.iter().product());
    let j = kb.var();
    let mut coords = unflatten(IndexExpr::var(g), &outer_dims);
    if !out_dims.is_empty() {
        coords.push(IndexExpr::var(j));
    }
    let flat = IndexExpr::var(g).mul(inner as i64).add(IndexExpr::var(j));
    let stmts = body(&mut kb, &coords, flat);
    let b = if total > 0 {
        vec![for_n(j, inner, stmts)]
    } else {
        Vec::new()
    };
    kb.finish(b)
}

/// A serial kernel (no grid): one invocation running `body`.
pub(super) fn serial(
    name: &str,
    reads: &[BufId],
    writes: &[BufId],
    body: impl FnOnce(&mut KernelBuilder) -> Vec<Stmt>,
) -> Kernel {
    let mut kb = KernelBuilder::new(name.to_string());
    for &b in reads {
        kb.read(b);
    }
    for &b in writes {
        kb.write(b);
    }
    let stmts = body(&mut kb);
    kb.finish(stmts)
}

/// Normalises a possibly negative axis against `rank`, naming the op.
pub(super) fn axis_of(op: Op, a: i64, rank: usize) -> Result<usize, String> {
    kiln_ir::shape::normalize_axis(a, rank)
        .ok_or_else(|| format!("{op}: axis {a} is out of range for rank {rank}"))
}

/// Reads an integer attribute with a default, naming the op on error.
pub(super) fn int_attr(node: &Node, name: &str, default: i64) -> Result<i64, String> {
    node.attrs
        .int_or(name, default)
        .map_err(|e| format!("{}: {e}", node.op))
}

/// Reads a string attribute with a default, naming the op on error.
pub(super) fn str_attr<'a>(
    node: &'a Node,
    name: &str,
    default: &'a str,
) -> Result<&'a str, String> {
    node.attrs
        .str_or(name, default)
        .map_err(|e| format!("{}: {e}", node.op))
}
