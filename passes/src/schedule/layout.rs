//! The layout schedules: Tile, Pad (constant, reflect, edge, wrap; `axes`
//! input; negative pads crop), DepthToSpace (DCR, CRD) and SpaceToDepth.
//!
//! Requires: static shapes; constant `repeats` (Tile), `pads` and `axes`
//! (Pad). Pad's `constant_value` may be given at run time. Establishes: one
//! kernel per node, one store per output element; the source element is an
//! index expression of the output coordinates (mod for Tile and wrap,
//! clamps for edge, a folded triangle wave for reflect, a permutation of a
//! rank-6 view for the depth/space ops), so every dtype is copied exactly.

use super::indexing::*;
use super::*;
use kiln_ir::kernel::CmpOp;
use kiln_ir::Attrs;

pub(super) fn supports(
    op: Op,
    _attrs: &Attrs,
    inputs: &[Option<&TensorType>],
    _outputs: &[&TensorType],
) -> Result<(), Reason> {
    if matches!(op, Op::DepthToSpace | Op::SpaceToDepth) {
        let r = inputs
            .first()
            .copied()
            .flatten()
            .map_or(0, |t| t.shape.rank());
        if r != 4 {
            return Err(Reason(format!("{op} of a rank-{r} input (must be 4)")));
        }
    }
    Ok(())
}

pub(super) fn lower(cx: &mut Lower, node: &Node) -> Result<(), String> {
    match node.op {
        Op::Tile => tile(cx, node),
        Op::Pad => pad(cx, node),
        Op::DepthToSpace | Op::SpaceToDepth => depth_space(cx, node),
        o => Err(format!("{o} has no layout schedule")),
    }
}

fn tile(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "input")?;
    let xd = cx.dims(x);
    let od = cx.dims(node.outputs[0]);
    let reps = const_ints(cx, node, 1, "repeats")?.ok_or("Tile needs `repeats`")?;
    let want: Vec<usize> = xd
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d * r.max(0) as usize)
        .collect();
    if reps.len() != xd.len() || want != od {
        return Err(format!(
            "Tile: repeats {reps:?} of {xd:?} do not give the output {od:?}"
        ));
    }
    let st = kiln_ir::shape::strides(&xd);
    let (xb, ob) = (cx.buf(x), cx.out_buf(node.outputs[0]));
    let k = per_element(&node.name, &od, &[xb], &[ob], |_, o, flat| {
        let mut src = IndexExpr::c(0);
        for (a, oa) in o.iter().enumerate() {
            let c = if od[a] > xd[a] {
                oa.clone().rem(xd[a] as i64)
            } else {
                oa.clone()
            };
            src = src.add(c.mul(st[a] as i64));
        }
        vec![Stmt::Store {
            buf: ob,
            index: flat,
            value: Expr::load(xb, src, 1),
        }]
    });
    cx.push(k);
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

fn pad(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "data")?;
    let xd = cx.dims(x);
    let od = cx.dims(node.outputs[0]);
    let dt = cx.dtype(x);
    let rank = xd.len();
    let mode = match str_attr(node, "mode", "constant")? {
        "constant" => Mode::Constant,
        "reflect" => Mode::Reflect,
        "edge" => Mode::Edge,
        "wrap" => Mode::Wrap,
        m => return Err(format!("Pad: unknown mode {m:?}")),
    };
    let pads = const_ints(cx, node, 1, "pads")?.ok_or("Pad needs `pads`")?;
    let axes: Vec<usize> = match const_ints(cx, node, 3, "axes")? {
        Some(a) => a
            .iter()
            .map(|&a| axis_of(node.op, a, rank))
            .collect::<Result<_, _>>()?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(format!(
            "Pad: pads {pads:?} must have two entries per padded axis ({} axes)",
            axes.len()
        ));
    }
    let mut spec = vec![(0i64, 0i64); rank];
    for (i, &a) in axes.iter().enumerate() {
        spec[a] = (pads[i], pads[axes.len() + i]);
    }
    // Per axis: (lo, kept length d, shift) with source s = c - shift; the
    // element is x[lo + f(s)] for f the mode's fold of s into 0..d.
    let mut geo = Vec::with_capacity(rank);
    for (a, (&dim, &(b, e))) in xd.iter().zip(&spec).enumerate() {
        let lo = (-b).max(0);
        let d = dim as i64 - lo - (-e).max(0);
        let n = dim as i64 + b + e;
        if n < 0 || n as usize != od[a] {
            return Err(format!(
                "Pad: pads ({b}, {e}) of axis {a} (size {dim}) do not give the output size {}",
                od[a]
            ));
        }
        if d <= 0 && n > 0 && mode != Mode::Constant {
            return Err(format!(
                "Pad: cannot pad axis {a} in {mode:?} mode: no elements are left to repeat"
            ));
        }
        geo.push((lo, d, b.max(0)));
    }
    // Nothing is kept on some axis: every element is the fill value.
    let empty = geo.iter().any(|&(_, d, _)| d <= 0);
    let xb = cx.buf(x);
    let fill = match operand(node, 2) {
        Some(v) => cx.buf(v),
        None => scalar_buf(cx, dt, 0.0)?,
    };
    let ob = cx.out_buf(node.outputs[0]);
    let st = kiln_ir::shape::strides(&xd);
    let k = per_element(&node.name, &od, &[xb, fill], &[ob], |_, o, flat| {
        let mut src = IndexExpr::c(0);
        let mut inside = Vec::new();
        for (a, oa) in o.iter().enumerate() {
            let (lo, d, shift) = geo[a];
            let s = oa.clone().add(IndexExpr::c(-shift));
            let padded = od[a] as i64 != d;
            let f = if !padded {
                s
            } else {
                match mode {
                    Mode::Constant => {
                        inside.push(Expr::cmp(CmpOp::Ge, ix(s.clone()), ix(IndexExpr::c(0))));
                        inside.push(lt(ix(s.clone()), ix(IndexExpr::c(d))));
                        // (a clamp that changes nothing inside, and keeps the
                        // unexecuted branch visibly in bounds for the verifier)
                        s.max(IndexExpr::c(0)).min(IndexExpr::c(d - 1))
                    }
                    Mode::Edge => s.max(IndexExpr::c(0)).min(IndexExpr::c(d - 1)),
                    Mode::Wrap => {
                        // s >= -shift, so adding a multiple of d >= shift makes it non-negative
                        let k = (shift + d - 1) / d * d;
                        s.add(IndexExpr::c(k)).rem(d)
                    }
                    Mode::Reflect if d == 1 => IndexExpr::c(0),
                    Mode::Reflect => {
                        // a triangle wave of period p = 2(d-1): m = s mod p, then min(m, p - m)
                        let p = 2 * (d - 1);
                        let k = (shift + p - 1) / p * p;
                        let m = s.add(IndexExpr::c(k)).rem(p);
                        m.clone().min(IndexExpr::c(p).add(m.mul(-1)))
                    }
                }
            };
            src = src.add(IndexExpr::c(lo).add(f).mul(st[a] as i64));
        }
        let copy = Stmt::Store {
            buf: ob,
            index: flat.clone(),
            value: Expr::load(xb, src, 1),
        };
        let fill_store = Stmt::Store {
            buf: ob,
            index: flat.clone(),
            value: Expr::load(fill, IndexExpr::c(0), 1),
        };
        if empty {
            vec![fill_store]
        } else if inside.is_empty() {
            vec![copy]
        } else {
            vec![Stmt::If {
                cond: all(inside),
                then: vec![copy],
                els: vec![fill_store],
            }]
        }
    });
    cx.push(k);
    Ok(())
}

fn depth_space(cx: &mut Lower, node: &Node) -> Result<(), String> {
    let x = required(node, 0, "input")?;
    let xd = cx.dims(x);
    let od = cx.dims(node.outputs[0]);
    let b = int_attr(node, "blocksize", 0)?;
    let b = usize::try_from(b)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{}: blocksize must be positive, found {b}", node.op))?;
    let crd = match str_attr(node, "mode", "DCR")? {
        "DCR" => false,
        "CRD" => true,
        m => return Err(format!("{}: mode must be DCR or CRD, found {m:?}", node.op)),
    };
    let &[n, c, h, w] = xd.as_slice() else {
        return Err(format!("{}: input must have rank 4, found {xd:?}", node.op));
    };
    // The op is a reshape to rank 6, a transpose and a reshape back.
    let (tmp, perm) = if node.op == Op::DepthToSpace {
        if c % (b * b) != 0 {
            return Err(format!(
                "DepthToSpace: channels {c} are not divisible by {b}²"
            ));
        }
        let c2 = c / (b * b);
        if crd {
            (vec![n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3])
        } else {
            (vec![n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2])
        }
    } else {
        if h % b != 0 || w % b != 0 {
            return Err(format!(
                "SpaceToDepth: height {h} and width {w} are not divisible by {b}"
            ));
        }
        let perm = if crd {
            [0, 1, 3, 5, 2, 4]
        } else {
            [0, 3, 5, 1, 2, 4]
        };
        (vec![n, c, h / b, b, w / b, b], perm)
    };
    let tdims: Vec<usize> = perm.iter().map(|&p| tmp[p]).collect();
    if tdims.iter().product::<usize>() != od.iter().product::<usize>() {
        return Err(format!(
            "{}: output {od:?} does not match {tdims:?}",
            node.op
        ));
    }
    let st = kiln_ir::shape::strides(&tmp);
    let (xb, ob) = (cx.buf(x), cx.out_buf(node.outputs[0]));
    let k = per_element(&node.name, &tdims, &[xb], &[ob], |_, o, flat| {
        let mut src = IndexExpr::c(0);
        for (k, ok) in o.iter().enumerate() {
            src = src.add(ok.clone().mul(st[perm[k]] as i64));
        }
        vec![Stmt::Store {
            buf: ob,
            index: flat,
            value: Expr::load(xb, src, 1),
        }]
    });
    cx.push(k);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;

    #[test]
    fn tile_repeats_every_axis() {
        check("graph @t {\n in %0: f32[2,3]\n const %1: i64[2] = [2, 3]\n %2: f32[4,9] = Tile(%0, %1) @t\n out %2\n}");
        check("graph @t {\n in %0: bool[3]\n const %1: i64[1] = [2]\n %2: bool[6] = Tile(%0, %1) @t\n out %2\n}");
        check("graph @t {\n in %0: i8[2,1,2]\n const %1: i64[3] = [1, 3, 0]\n %2: i8[2,3,0] = Tile(%0, %1) @t\n out %2\n}");
    }

    #[test]
    fn pad_every_mode_with_crops_and_axes() {
        for mode in ["constant", "reflect", "edge", "wrap"] {
            for (pads, out) in [
                ("[1, 2, 2, 1]", "6,6"),
                ("[0, 3, 0, 4]", "3,10"),
                ("[-1, 2, 5, -1]", "7,4"),
            ] {
                for dt in ["f32", "i32", "f16"] {
                    check(&format!(
                        "graph @t {{\n in %0: {dt}[3,3]\n const %1: i64[4] = {pads}\n %2: {dt}[{out}] = Pad[mode=\"{mode}\"](%0, %1) @p\n out %2\n}}"
                    ));
                }
            }
            check(&format!(
                "graph @t {{\n in %0: f32[2,3,4]\n const %1: i64[2] = [2, 3]\n in %2: f32[]\n const %3: i64[1] = [-1]\n %4: f32[2,3,9] = Pad[mode=\"{mode}\"](%0, %1, %2, %3) @p\n out %4\n}}"
            ));
        }
        check("graph @t {\n in %0: f32[1,4]\n const %1: i64[4] = [0, 7, 0, 7]\n %2: f32[1,18] = Pad[mode=\"reflect\"](%0, %1) @p\n out %2\n}");
    }

    #[test]
    fn depth_space_both_modes() {
        for mode in ["DCR", "CRD"] {
            check(&format!("graph @t {{\n in %0: f32[2,8,3,2]\n %1: f32[2,2,6,4] = DepthToSpace[blocksize=2, mode=\"{mode}\"](%0) @d\n out %1\n}}"));
            check(&format!("graph @t {{\n in %0: i64[1,2,6,4]\n %1: i64[1,8,3,2] = SpaceToDepth[blocksize=2, mode=\"{mode}\"](%0) @d\n out %1\n}}"));
        }
    }
}
