//! Algebra and layout rules: identities, constant reassociation, division by
//! constants, Transpose/Reshape cancellation and sinking, and Q/K/V MatMul
//! merging.
//!
//! Requires: the rule API of [`crate::rules`]. Establishes: the algebra
//! phase's table. Every rule states its law and side conditions; the
//! soundness harness checks each on its examples. Shapes are never a side
//! condition written here: admission control drops any right-hand side whose
//! type (broadcast shape included) differs from the matched class's.
//!
//! Not here (yet): MatMul with a transposed operand → `FusedMatMul[transB=1]`
//! (the fusion phase owns FusedMatMul and its epilogues).

use super::{class, konst, ty, Rule};
use crate::egraph::analysis::{KEGraph, Rhs};
use crate::egraph::lang::KNode;
use egg::{Id, Subst};
use kiln_ir::{Attr, Attrs, Op, Tensor};

/// Whether `t` is a constant whose every element equals `v`.
fn all_equal(t: Option<&Tensor>, v: f64) -> bool {
    t.is_some_and(|t| t.numel() > 0 && t.to_f64_vec().iter().all(|&x| x == v))
}

fn is_float(eg: &KEGraph, s: &Subst, var: &str) -> bool {
    ty(eg, s, var).is_some_and(|t| t.dtype.is_float())
}

fn is_const(eg: &KEGraph, s: &Subst, var: &str) -> bool {
    konst(eg, s, var).is_some()
}

/// A Transpose's permutation (ONNX's default: reversed axes).
fn perm_of(attrs: &Attrs, rank: usize) -> Option<Vec<usize>> {
    match attrs.ints("perm").ok()? {
        Some(p) => p.iter().map(|&x| usize::try_from(x).ok()).collect(),
        None => Some((0..rank).rev().collect()),
    }
}

fn perm_attrs(p: &[usize]) -> Attrs {
    Attrs::new().with("perm", Attr::Ints(p.iter().map(|&x| x as i64).collect()))
}

/// The Transpose nodes in class `c`: their permutation and operand.
fn transposes(eg: &KEGraph, c: Id) -> Vec<(Vec<usize>, Id)> {
    eg[c]
        .nodes
        .iter()
        .filter_map(|n| match n {
            KNode::Op(o) if o.op == Op::Transpose && o.args.len() == 1 => {
                let rank = eg[o.args[0]].data.ty()?.shape.rank();
                Some((perm_of(o.attrs.attrs(), rank)?, o.args[0]))
            }
            _ => None,
        })
        .collect()
}

const UNARY_SINK: [(Op, &str); 8] = [
    (Op::Relu, "sink-transpose-relu"),
    (Op::Neg, "sink-transpose-neg"),
    (Op::Exp, "sink-transpose-exp"),
    (Op::Tanh, "sink-transpose-tanh"),
    (Op::Sigmoid, "sink-transpose-sigmoid"),
    (Op::Erf, "sink-transpose-erf"),
    (Op::Sqrt, "sink-transpose-sqrt"),
    (Op::Abs, "sink-transpose-abs"),
];

/// `U(Transpose[p](x)) = Transpose[p](U(x))` for a unary elementwise `U`.
fn sink_unary(op: Op, name: &'static str) -> Rule {
    let lhs = format!("({} ?t)", op.name());
    Rule::custom(
        name,
        "U(Transpose[p](x)) = Transpose[p](U(x)) for a unary elementwise U without attributes: \
         elementwise ops commute with any permutation of elements; exact",
        &lhs,
        move |eg, matched, s| {
            let t = class(s, "?t")?;
            let (p, x) = transposes(eg, t).into_iter().next()?;
            let mut r = Rhs::new();
            let hx = r.class(x);
            let u = r.op(op, Attrs::new(), &[hx]);
            let tr = r.op(Op::Transpose, perm_attrs(&p), &[u]);
            r.union_with(matched, tr);
            Some(r)
        },
    )
}

/// The Q/K/V merge: all MatMuls that read class `x` with a constant 2-D
/// weight of the same dtype and row count, and are not merged yet (the
/// merged product itself is excluded too, by the `merged` set below: it reads
/// `x` with a constant weight as well).
fn qkv_merge(eg: &mut KEGraph, _matched: Id, s: &Subst) -> Option<Rhs> {
    let x = eg.find(class(s, "?x")?);
    let mut sibs: Vec<(Id, Tensor)> = Vec::new();
    let mut parents: Vec<Id> = eg[x].parents().map(|p| eg.find(p)).collect();
    parents.sort();
    parents.dedup();
    for p in parents {
        // a class already merged (it holds a projection) is not merged again,
        // and neither is a merged product (then it would grow every iteration)
        if eg[p].nodes.iter().any(|n| matches!(n, KNode::Proj { .. })) {
            continue;
        }
        let found = eg[p].nodes.iter().find_map(|n| match n {
            KNode::Op(o) if o.op == Op::MatMul && o.args.len() == 2 && eg.find(o.args[0]) == x => {
                let w = eg[o.args[1]].data.value()?;
                (w.rank() == 2).then(|| w.clone())
            }
            _ => None,
        });
        if let Some(w) = found {
            sibs.push((p, w));
        }
    }
    // exclude the products this rule created (they are consumed by its Split)
    sibs.retain(|(p, _)| {
        !eg[*p]
            .parents()
            .any(|q| eg[eg.find(q)].nodes.iter().any(|n| n.is_op(Op::Split)))
    });
    if sibs.len() < 2 {
        return None;
    }
    let (k, dtype) = (sibs[0].1.shape()[0], sibs[0].1.dtype());
    sibs.retain(|(_, w)| w.shape()[0] == k && w.dtype() == dtype);
    if sibs.len() < 2 || sibs.len() > 255 {
        return None;
    }
    // concatenate the weights along their columns
    let widths: Vec<usize> = sibs.iter().map(|(_, w)| w.shape()[1]).collect();
    let total: usize = widths.iter().sum();
    let esize = dtype.size_bytes();
    let mut bytes = vec![0u8; k * total * esize];
    let mut col = 0;
    for ((_, w), &n) in sibs.iter().zip(&widths) {
        let wb = w.to_le_bytes();
        for r in 0..k {
            let dst = (r * total + col) * esize;
            bytes[dst..dst + n * esize].copy_from_slice(&wb[r * n * esize..(r + 1) * n * esize]);
        }
        col += n;
    }
    let wcat = Tensor::from_le_bytes(dtype, vec![k, total], &bytes).ok()?;
    let split = Tensor::from_vec(
        vec![widths.len()],
        widths.iter().map(|&w| w as i64).collect(),
    )
    .ok()?;
    let mut r = Rhs::new();
    let hx = r.class(x);
    let hw = r.konst(eg, wcat);
    let hs = r.konst(eg, split);
    let mm = r.op(Op::MatMul, Attrs::new(), &[hx, hw]);
    let sp = r.op_n(
        Op::Split,
        sibs.len() as u8,
        Attrs::new().with("axis", Attr::Int(-1)),
        &[mm, hs],
    );
    for (i, (c, _)) in sibs.iter().enumerate() {
        let p = r.proj(i as u32, sp);
        r.union_with(*c, p);
    }
    Some(r)
}

/// The algebra phase's rules.
pub fn rules() -> Vec<Rule> {
    let mut v = vec![
        // ---- identities
        Rule::new(
            "add-zero",
            "x + 0 = x when 0 is a constant of zeros that does not broadcast x to a larger shape \
             (admission control checks the shape). Floats: exact except that -0.0 + 0.0 is +0.0 \
             (equal under IEEE comparison); NaN and inf are unchanged",
            "(Add ?x ?z)",
            "?x",
        )
        .when(|eg, _, s| all_equal(konst(eg, s, "?z"), 0.0))
        .example("graph @g {\n in %0: f32[2,3]\n const %1: f32[3] = [0.0, 0.0, 0.0]\n %2: f32[2,3] = Add(%0, %1)\n out %2\n}"),
        Rule::new("zero-add", "0 + x = x (as add-zero, operands swapped)", "(Add ?z ?x)", "?x")
            .when(|eg, _, s| all_equal(konst(eg, s, "?z"), 0.0))
            .example("graph @g {\n in %0: i32[4]\n const %1: i32[] = 0\n %2: i32[4] = Add(%1, %0)\n out %2\n}"),
        Rule::new(
            "sub-zero",
            "x - 0 = x for a zero constant that does not broadcast x; exact for every value \
             (-0.0 - 0.0 = -0.0)",
            "(Sub ?x ?z)",
            "?x",
        )
        .when(|eg, _, s| all_equal(konst(eg, s, "?z"), 0.0))
        .example("graph @g {\n in %0: f32[2,2]\n const %1: f32[] = 0.0\n %2: f32[2,2] = Sub(%0, %1)\n out %2\n}"),
        Rule::new(
            "mul-one",
            "x * 1 = x for a ones constant that does not broadcast x; exact for every value (NaN, inf, -0.0)",
            "(Mul ?x ?o)",
            "?x",
        )
        .when(|eg, _, s| all_equal(konst(eg, s, "?o"), 1.0))
        .example("graph @g {\n in %0: f32[3,2]\n const %1: f32[2] = [1.0, 1.0]\n %2: f32[3,2] = Mul(%0, %1)\n out %2\n}"),
        Rule::new("one-mul", "1 * x = x (as mul-one, operands swapped)", "(Mul ?o ?x)", "?x")
            .when(|eg, _, s| all_equal(konst(eg, s, "?o"), 1.0))
            .example("graph @g {\n in %0: f32[3]\n const %1: f32[] = 1.0\n %2: f32[3] = Mul(%1, %0)\n out %2\n}"),
        Rule::new(
            "mul-zero-int",
            "x * 0 = 0 for integer x only, where the zero constant already has the result's shape. \
             Not for floats: NaN * 0 and inf * 0 are NaN, and -x * 0 is -0.0",
            "(Mul ?x ?z)",
            "?z",
        )
        .when(|eg, _, s| !is_float(eg, s, "?x") && all_equal(konst(eg, s, "?z"), 0.0))
        .example("graph @g {\n in %0: i64[2,2]\n const %1: i64[2,2] = [0, 0, 0, 0]\n %2: i64[2,2] = Mul(%0, %1)\n out %2\n}"),
        Rule::new(
            "div-one",
            "x / 1 = x for a ones constant that does not broadcast x; exact for every value",
            "(Div ?x ?o)",
            "?x",
        )
        .when(|eg, _, s| all_equal(konst(eg, s, "?o"), 1.0))
        .example("graph @g {\n in %0: f32[2,3]\n const %1: f32[] = 1.0\n %2: f32[2,3] = Div(%0, %1)\n out %2\n}"),
        Rule::new(
            "neg-neg",
            "Neg(Neg(x)) = x: negation only flips the sign bit, exactly, for every value (NaN included)",
            "(Neg (Neg ?x))",
            "?x",
        )
        .example("graph @g {\n in %0: f32[2,3]\n %1: f32[2,3] = Neg(%0)\n %2: f32[2,3] = Neg(%1)\n out %2\n}"),
        Rule::new("identity", "Identity(x) = x, exactly", "(Identity ?x)", "?x")
            .example("graph @g {\n in %0: f32[2]\n %1: f32[2] = Identity(%0)\n %2: f32[2] = Relu(%1)\n out %2\n}"),
        Rule::new(
            "reshape-self",
            "Reshape(x, s) = x when the result has x's own shape (admission control checks the \
             types are equal); a reshape never changes the elements or their order",
            "(Reshape[*] ?x ?s)",
            "?x",
        )
        .example("graph @g {\n in %0: f32[2,3]\n const %1: i64[2] = [2, -1]\n %2: f32[2,3] = Reshape(%0, %1)\n %3: f32[2,3] = Relu(%2)\n out %3\n}"),
        Rule::new(
            "reshape-reshape",
            "Reshape(Reshape(x, s1), s2) = Reshape(x, s2) when s2 is a constant without 0 entries \
             (a 0 copies a dimension of the reshape's own input, which changes); -1 is resolved \
             from the element count, which both inputs share. Exact",
            "(Reshape[*] (Reshape[*] ?x ?s1) ?s2)",
            "(Reshape ?x ?s2)",
        )
        .when(|eg, _, s| konst(eg, s, "?s2").is_some_and(|t| t.to_f64_vec().iter().all(|&d| d != 0.0)))
        .example("graph @g {\n in %0: f32[2,3,4]\n const %1: i64[2] = [6, 4]\n const %2: i64[3] = [4, 3, 2]\n %3: f32[6,4] = Reshape(%0, %1)\n %4: f32[4,3,2] = Reshape(%3, %2)\n out %4\n}"),
        // ---- constants
        Rule::new(
            "reassoc-add-const",
            "(x + c1) + c2 = x + (c1 + c2) for constants c1, c2 (the sum folds). Integers: exact \
             (wrapping). Floats: one rounding instead of two, so results may differ by about 1 ulp \
             of the sum; inf and NaN propagate the same way except inf + -inf cancelling \
             differently (c1 = inf, c2 = -inf gives NaN either way)",
            "(Add (Add ?x ?c1) ?c2)",
            "(Add ?x (Add ?c1 ?c2))",
        )
        .when(|eg, _, s| is_const(eg, s, "?c1") && is_const(eg, s, "?c2") && !is_const(eg, s, "?x"))
        .example("graph @g {\n in %0: f32[2,3]\n const %1: f32[3] = [1.0, 2.0, 3.0]\n const %2: f32[] = 0.5\n %3: f32[2,3] = Add(%0, %1)\n %4: f32[2,3] = Add(%3, %2)\n out %4\n}"),
        Rule::new(
            "reassoc-mul-const",
            "(x * c1) * c2 = x * (c1 * c2) for constants c1, c2 (the product folds). Integers: \
             exact (wrapping). Floats: about 1 ulp (one rounding instead of two); a product that \
             overflows or underflows in c1 * c2 but not in the original order can differ (inf or 0)",
            "(Mul (Mul ?x ?c1) ?c2)",
            "(Mul ?x (Mul ?c1 ?c2))",
        )
        .when(|eg, _, s| is_const(eg, s, "?c1") && is_const(eg, s, "?c2") && !is_const(eg, s, "?x"))
        .example("graph @g {\n in %0: f32[4]\n const %1: f32[] = 3.0\n const %2: f32[4] = [0.5, 0.25, 2.0, 1.5]\n %3: f32[4] = Mul(%0, %1)\n %4: f32[4] = Mul(%3, %2)\n out %4\n}"),
        Rule::new(
            "div-const-to-mul",
            "x / c = x * (1 / c) for a float constant c with no zero, infinite or NaN element \
             (the reciprocal folds). Exact when every element of c is a power of two; otherwise \
             two roundings instead of one, within about 1 ulp. Not for integers (truncating division)",
            "(Div ?x ?c)",
            "(Mul ?x (Reciprocal ?c))",
        )
        .when(|eg, _, s| {
            is_float(eg, s, "?c")
                && konst(eg, s, "?c").is_some_and(|t| t.to_f64_vec().iter().all(|x| x.is_finite() && *x != 0.0))
        })
        .example("graph @g {\n in %0: f32[2,4]\n const %1: f32[] = 8.0\n %2: f32[2,4] = Div(%0, %1)\n out %2\n}")
        .example("graph @g {\n in %0: f32[3]\n const %1: f32[3] = [3.0, -7.0, 0.1]\n %2: f32[3] = Div(%0, %1)\n out %2\n}"),
        // ---- layout
        Rule::custom(
            "transpose-transpose",
            "Transpose[q](Transpose[p](x)) = Transpose[p∘q](x) (perm r[i] = p[q[i]]), or x when \
             r is the identity; exact",
            "(Transpose[*] ?t)",
            |eg, matched, s| {
                let t = class(s, "?t")?;
                let outer = eg[matched].nodes.iter().find_map(|n| match n {
                    KNode::Op(o) if o.op == Op::Transpose && o.args.len() == 1 && eg.find(o.args[0]) == eg.find(t) => {
                        perm_of(o.attrs.attrs(), eg[t].data.ty()?.shape.rank())
                    }
                    _ => None,
                })?;
                let (p, x) = transposes(eg, t).into_iter().next()?;
                let r_: Option<Vec<usize>> = outer.iter().map(|&i| p.get(i).copied()).collect();
                let r_ = r_?;
                let mut r = Rhs::new();
                let hx = r.class(x);
                let root = if r_.iter().enumerate().all(|(i, &v)| i == v) {
                    hx
                } else {
                    r.op(Op::Transpose, perm_attrs(&r_), &[hx])
                };
                r.union_with(matched, root);
                Some(r)
            },
        )
        .example("graph @g {\n in %0: f32[2,3,4]\n %1: f32[4,2,3] = Transpose[perm=[2,0,1]](%0)\n %2: f32[2,3,4] = Transpose[perm=[1,2,0]](%1)\n %3: f32[2,3,4] = Relu(%2)\n out %3\n}")
        .example("graph @g {\n in %0: f32[2,3,4]\n %1: f32[3,2,4] = Transpose[perm=[1,0,2]](%0)\n %2: f32[4,2,3] = Transpose[perm=[2,1,0]](%1)\n out %2\n}"),
        Rule::custom(
            "merge-parallel-matmuls",
            "MatMul(x, W1), ..., MatMul(x, Wn) = Split[axis=-1](MatMul(x, [W1 | ... | Wn])) for \
             constant 2-D weights with the same rows and dtype (the Q, K, V projections): each \
             output element is the same dot product, in the same order; exact",
            "(MatMul ?x ?w)",
            qkv_merge,
        )
        .when(|eg, _, s| konst(eg, s, "?w").is_some_and(|w| w.rank() == 2) && !is_const(eg, s, "?x"))
        .example("graph @g {\n in %0: f32[2,4,3]\n const %1: f32[3,2] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]\n const %2: f32[3,3] = [1.0, 0.5, 0.25, -1.0, 2.0, 0.0, 3.0, 1.0, -2.0]\n const %3: f32[3,1] = [0.5, -0.5, 2.0]\n %4: f32[2,4,2] = MatMul(%0, %1)\n %5: f32[2,4,3] = MatMul(%0, %2)\n %6: f32[2,4,1] = MatMul(%0, %3)\n out %4, %5, %6\n}"),
    ];
    for (op, name) in [
        (Op::Add, "sink-transpose-add-scalar"),
        (Op::Mul, "sink-transpose-mul-scalar"),
    ] {
        v.push(sink_scalar(op, name));
    }
    for ((op, name), ex) in UNARY_SINK.into_iter().zip(UNARY_EXAMPLES) {
        v.push(sink_unary(op, name).example(ex));
    }
    v
}

const UNARY_EXAMPLES: [&str; 8] = [
    "graph @g {\n in %0: f32[2,3]\n %1: f32[3,2] = Transpose[perm=[1,0]](%0)\n %2: f32[3,2] = Relu(%1)\n out %2\n}",
    "graph @g {\n in %0: f32[2,3]\n %1: f32[3,2] = Transpose[perm=[1,0]](%0)\n %2: f32[3,2] = Neg(%1)\n out %2\n}",
    "graph @g {\n in %0: f32[2,3]\n %1: f32[3,2] = Transpose(%0)\n %2: f32[3,2] = Exp(%1)\n out %2\n}",
    "graph @g {\n in %0: f32[2,3,2]\n %1: f32[2,2,3] = Transpose[perm=[0,2,1]](%0)\n %2: f32[2,2,3] = Tanh(%1)\n out %2\n}",
    "graph @g {\n in %0: f32[2,3]\n %1: f32[3,2] = Transpose[perm=[1,0]](%0)\n %2: f32[3,2] = Sigmoid(%1)\n out %2\n}",
    "graph @g {\n in %0: f32[2,3]\n %1: f32[3,2] = Transpose[perm=[1,0]](%0)\n %2: f32[3,2] = Erf(%1)\n out %2\n}",
    "graph @g {\n in %0: f32[2,3]\n %1: f32[2,3] = Abs(%0)\n %2: f32[3,2] = Transpose[perm=[1,0]](%1)\n %3: f32[3,2] = Sqrt(%2)\n out %3\n}",
    "graph @g {\n in %0: f32[2,3]\n %1: f32[3,2] = Transpose[perm=[1,0]](%0)\n %2: f32[3,2] = Abs(%1)\n out %2\n}",
];

/// `Transpose[p](x) ⊙ c = Transpose[p](x ⊙ c)` for a one-element constant `c`.
fn sink_scalar(op: Op, name: &'static str) -> Rule {
    let lhs = format!("({} ?t ?c)", op.name());
    let ex = match op {
        Op::Add => "graph @g {\n in %0: f32[2,3]\n const %1: f32[] = 1.5\n %2: f32[3,2] = Transpose[perm=[1,0]](%0)\n %3: f32[3,2] = Add(%2, %1)\n out %3\n}",
        _ => "graph @g {\n in %0: f32[2,3,4]\n const %1: f32[1] = [0.5]\n %2: f32[4,3,2] = Transpose(%0)\n %3: f32[4,3,2] = Mul(%2, %1)\n out %3\n}",
    };
    Rule::custom(
        name,
        "Transpose[p](x) ⊙ c = Transpose[p](x ⊙ c) for a constant c with one element and rank at \
         most x's (broadcasting a single element does not depend on the order of axes); exact",
        &lhs,
        move |eg, matched, s| {
            let t = class(s, "?t")?;
            let c = class(s, "?c")?;
            let cv = eg[c].data.value()?;
            let (p, x) = transposes(eg, t).into_iter().next()?;
            if cv.numel() != 1 || cv.rank() > p.len() {
                return None;
            }
            let mut r = Rhs::new();
            let (hx, hc) = (r.class(x), r.class(c));
            let e = r.op(op, Attrs::new(), &[hx, hc]);
            let tr = r.op(Op::Transpose, perm_attrs(&p), &[e]);
            r.union_with(matched, tr);
            Some(r)
        },
    )
    .example(ex)
}
