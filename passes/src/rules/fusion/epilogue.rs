//! Products with epilogues: `FusedMatMul` (from MatMul, MatMul with a
//! transposed operand, Gemm) and the absorber that moves an elementwise
//! consumer of a MatMul/FusedMatMul (or Conv/FusedConv, see [`super::conv`])
//! into the product's epilogue.
//!
//! Requires: the class helpers of [`super`] and the fused-op definitions of
//! `kiln_ir::fused` (`FusedMatMul[transA, transB, alpha, epilogue](A, B,
//! e…) = epilogue(alpha·op(A)·op(B), e…)`). Establishes the rules
//! `matmul-transpose-b`, `matmul-transpose-a`, `gemm-to-fused-matmul`,
//! `gemm-no-bias-to-fused-matmul` and `matmul-epilogue`.
//!
//! A product is extended only when the consumer is its only use (see
//! [`feeds_only`]): otherwise the product would be computed twice, once for
//! each use, which a greedy extractor (counting shared subexpressions once
//! per use) would not see as a loss.
//!
//! Growth control for the absorber: per consumer node, only the producers
//! of the operand class with the largest epilogue so far are extended (all
//! of them, so a `transB` variant and a plain one both grow), at most
//! [`MAX_CANDIDATES`] new nodes per class and match, epilogues of at most
//! `MAX_OPS` ops.

use super::elementwise::{fusable, node_expr, MAX_OPS};
use super::{class_of_absent, fits_class, type_of};
use crate::egraph::analysis::{KEGraph, Rhs};
use crate::egraph::lang::{KNode, OpNode};
use crate::rules::{class, Rule};
use egg::{Id, Subst};
use kiln_ir::expr::Expr;
use kiln_ir::fused::{matmul_attrs, EPILOGUE};
use kiln_ir::{Attr, Attrs, Op, Tensor};

/// Most alternatives one match of the absorber adds.
pub const MAX_CANDIDATES: usize = 4;

/// A product with its epilogue, read from a MatMul/FusedMatMul or
/// Conv/FusedConv node.
#[derive(Clone, Debug)]
pub(crate) struct Product {
    /// FusedMatMul or FusedConv.
    pub op: Op,
    /// The attributes without the epilogue.
    pub attrs: Attrs,
    /// A, B (or X, W), then the epilogue's extra operands.
    pub args: Vec<Id>,
    pub epilogue: Expr,
}

/// Reads a product node of the family of `fused` (FusedMatMul: MatMul and
/// FusedMatMul nodes; FusedConv: Conv without bias and FusedConv nodes).
pub(crate) fn product(eg: &KEGraph, o: &OpNode, fused: Op) -> Option<Product> {
    let args: Vec<Id> = o.args.iter().map(|&a| eg.find(a)).collect();
    let plain = match fused {
        Op::FusedMatMul => Op::MatMul,
        Op::FusedConv => Op::Conv,
        _ => return None,
    };
    if o.nout != 1 {
        return None;
    }
    if o.op == plain {
        // a Conv bias is an epilogue operand of another shape: conv-bias handles it
        let n = if o.args.len() == 3 && class_of_absent(eg, args[2]) {
            2
        } else {
            o.args.len()
        };
        if n != 2 {
            return None;
        }
        return Some(Product {
            op: fused,
            attrs: o.attrs.attrs().clone(),
            args: args[..2].to_vec(),
            epilogue: Expr::Input(0),
        });
    }
    if o.op != fused {
        return None;
    }
    let epilogue = kiln_ir::fused::body(o.op, o.attrs.attrs()).ok()?;
    let mut attrs = o.attrs.attrs().clone();
    attrs.remove(EPILOGUE);
    Some(Product {
        op: fused,
        attrs,
        args,
        epilogue,
    })
}

impl Product {
    /// The node computing this product.
    pub(crate) fn node(&self) -> KNode {
        let mut attrs = self.attrs.clone();
        if self.epilogue != Expr::Input(0) {
            attrs.set(EPILOGUE, Attr::Str(self.epilogue.to_string()));
        }
        KNode::op(self.op, attrs, self.args.clone())
    }

    /// This product with `consumer` (an expression over `operands`, in which
    /// every occurrence of class `at` is this product) applied on top.
    fn absorb(&self, consumer: &Expr, operands: &[Id], at: Id) -> Option<Product> {
        let mut args = self.args.clone();
        let mut map = Vec::with_capacity(operands.len());
        for &c in operands {
            if c == at {
                map.push(None);
                continue;
            }
            // an extra operand: reuse an existing one (A and B are not epilogue operands)
            let i = match args[2..].iter().position(|&e| e == c) {
                Some(i) => i + 2,
                None => {
                    args.push(c);
                    args.len() - 1
                }
            };
            map.push(Some(i - 1));
        }
        let old = self.epilogue.clone();
        let e = consumer.substitute(&|i| match map.get(i) {
            Some(Some(k)) => Expr::Input(*k),
            Some(None) => old.clone(),
            None => Expr::Input(usize::MAX),
        });
        let mut bad = false;
        e.walk(&mut |x| bad |= matches!(x, Expr::Input(i) if *i >= args.len() - 1));
        if bad || e.num_ops() > MAX_OPS {
            return None;
        }
        Some(Product {
            op: self.op,
            attrs: self.attrs.clone(),
            args,
            epilogue: e,
        })
    }
}

/// The products of family `fused` in class `c` with the largest epilogue.
fn best_products(eg: &KEGraph, c: Id, fused: Op) -> Vec<Product> {
    let all: Vec<Product> = eg[eg.find(c)]
        .nodes
        .iter()
        .filter_map(|n| match n {
            KNode::Op(o) => product(eg, o, fused),
            _ => None,
        })
        .collect();
    let most = all.iter().map(|p| p.epilogue.num_ops()).max().unwrap_or(0);
    all.into_iter()
        .filter(|p| p.epilogue.num_ops() == most)
        .collect()
}

/// Whether every consumer of class `at` is (transitively, through
/// elementwise ops only) part of the expression that computes class `c`, so
/// that moving `c` into the product of `at` computes the product once, not
/// twice. Consumers that are fused nodes (alternatives the fusion rules
/// added) are not uses; any other consumer that is not an elementwise op
/// (ResNet's next Conv reading a block's output that the residual Add also
/// reads), or a chain of elementwise ops that does not end in `c` within
/// [`CONE_DEPTH`] steps, is. GELU's decomposition reads the bias add's
/// result twice, both times on the way to the final Mul: that is one use.
pub(crate) fn feeds_only(eg: &KEGraph, at: Id, c: Id) -> bool {
    fn go(eg: &KEGraph, x: Id, c: Id, depth: usize, ok: &mut Vec<Id>) -> bool {
        if x == c || ok.contains(&x) {
            return true;
        }
        if depth == 0 {
            return false;
        }
        for p in eg[x].parents() {
            let n = eg.id_to_node(p);
            let KNode::Op(o) = n else { return false };
            if matches!(o.op, Op::FusedElementwise | Op::FusedMatMul | Op::FusedConv) {
                continue;
            }
            if !fusable(eg, o) || !go(eg, eg.find(p), c, depth - 1, ok) {
                return false;
            }
        }
        ok.push(x);
        true
    }
    go(eg, eg.find(at), eg.find(c), CONE_DEPTH, &mut Vec::new())
}

/// How many elementwise steps a product's other uses may take to reach the consumer.
pub const CONE_DEPTH: usize = 8;

/// The absorber: every elementwise (or FusedElementwise) node of the
/// matched class with an operand that is a product of family `fused`.
pub(crate) fn absorb(fused: Op) -> impl Fn(&mut KEGraph, Id, &Subst) -> Option<Rhs> {
    move |eg, matched, _s| {
        let c = eg.find(matched);
        if eg[c].data.value().is_some() {
            return None;
        }
        let mut found: Vec<KNode> = Vec::new();
        let consumers: Vec<OpNode> = eg[c]
            .nodes
            .iter()
            .filter_map(|n| match n {
                KNode::Op(o) if fusable(eg, o) => Some(o.clone()),
                _ => None,
            })
            .collect();
        'outer: for o in consumers {
            let Some(e) = node_expr(&o) else { continue };
            let operands: Vec<Id> = o.args.iter().map(|&a| eg.find(a)).collect();
            let mut tried = Vec::new();
            for &at in &operands {
                if at == c || tried.contains(&at) {
                    continue;
                }
                tried.push(at);
                if !feeds_only(eg, at, c) {
                    continue;
                }
                for p in best_products(eg, at, fused) {
                    if p.args.contains(&c) {
                        continue;
                    }
                    let Some(q) = p.absorb(&e, &operands, at) else {
                        continue;
                    };
                    let n = q.node();
                    if found.contains(&n) || eg[c].nodes.contains(&n) || !fits_class(eg, &n, c) {
                        continue;
                    }
                    found.push(n);
                    if found.len() >= MAX_CANDIDATES {
                        break 'outer;
                    }
                }
            }
        }
        if found.is_empty() {
            return None;
        }
        let mut r = Rhs::new();
        for n in found {
            let KNode::Op(o) = n else { continue };
            let hs: Vec<Id> = o.args.iter().map(|&a| r.class(a)).collect();
            let h = r.op(o.op, o.attrs.attrs().clone(), &hs);
            r.union_with(c, h);
        }
        Some(r)
    }
}

/// Whether `perm` swaps the last two axes and keeps the others.
fn swaps_last_two(perm: Option<&[i64]>, rank: usize) -> bool {
    if rank < 2 {
        return false;
    }
    let want: Vec<i64> = (0..rank as i64)
        .map(|i| match i {
            _ if i == rank as i64 - 2 => rank as i64 - 1,
            _ if i == rank as i64 - 1 => rank as i64 - 2,
            _ => i,
        })
        .collect();
    match perm {
        Some(p) => p == want.as_slice(),
        None => rank == 2,
    }
}

/// `MatMul(A, Transpose(B))` (or of `Transpose(A)`) → FusedMatMul with the flag set.
fn matmul_transposed(which: usize) -> impl Fn(&mut KEGraph, Id, &Subst) -> Option<Rhs> {
    move |eg, matched, s| {
        let (a, b) = (eg.find(class(s, "?a")?), eg.find(class(s, "?b")?));
        let t = if which == 0 { a } else { b };
        for o in super::ops_in(eg, t, Op::Transpose) {
            let src = eg.find(o.args[0]);
            let rank = type_of(eg, src)?.shape.rank();
            if !swaps_last_two(o.attrs.attrs().ints("perm").ok()?, rank) {
                continue;
            }
            let (x, y) = if which == 0 { (src, b) } else { (a, src) };
            let attrs = matmul_attrs(which == 0, which == 1, 1.0, &Expr::Input(0));
            let mut r = Rhs::new();
            let (hx, hy) = (r.class(x), r.class(y));
            let m = r.op(Op::FusedMatMul, attrs, &[hx, hy]);
            r.union_with(matched, m);
            return Some(r);
        }
        None
    }
}

/// Gemm → FusedMatMul: `alpha·op(A)·op(B) + beta·C`.
fn gemm(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let (a, b) = (class(s, "?a")?, class(s, "?b")?);
    let c = class(s, "?c").filter(|&c| !class_of_absent(eg, c));
    let node = super::ops_in(eg, matched, Op::Gemm).into_iter().find(|o| {
        eg.find(o.args[0]) == eg.find(a)
            && eg.find(o.args[1]) == eg.find(b)
            && o.args.len() == 2 + class(s, "?c").is_some() as usize
    })?;
    let at = node.attrs.attrs();
    let alpha = at.float_or("alpha", 1.0).ok()?;
    let beta = at.float_or("beta", 1.0).ok()?;
    let ta = at.int_or("transA", 0).ok()? != 0;
    let tb = at.int_or("transB", 0).ok()? != 0;
    let mut r = Rhs::new();
    let (ha, hb) = (r.class(a), r.class(b));
    let m = match c {
        None => r.op(
            Op::FusedMatMul,
            matmul_attrs(ta, tb, alpha, &Expr::Input(0)),
            &[ha, hb],
        ),
        Some(c) => {
            let dtype = type_of(eg, c)?.dtype;
            let ep = if beta == 1.0 {
                Expr::op(Op::Add, vec![Expr::Input(0), Expr::Input(1)])
            } else {
                let k = Tensor::from_f64s(dtype, vec![], &[beta as f64]).ok()?;
                Expr::op(
                    Op::Add,
                    vec![
                        Expr::Input(0),
                        Expr::op(Op::Mul, vec![Expr::Input(1), Expr::Const(k)]),
                    ],
                )
            };
            let hc = r.class(c);
            r.op(
                Op::FusedMatMul,
                matmul_attrs(ta, tb, alpha, &ep),
                &[ha, hb, hc],
            )
        }
    };
    r.union_with(matched, m);
    Some(r)
}

/// The rules of this file.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::custom(
            "matmul-transpose-b",
            "MatMul(A, Transpose[p](B)) = FusedMatMul[transB=1](A, B) when p swaps the last two axes and \
             keeps the others (ONNX's default perm for rank 2); the same products, exact",
            "(MatMul ?a ?b)",
            matmul_transposed(1),
        )
        .example("graph @g {\n in %0: f32[2,3,4]\n in %1: f32[2,5,4]\n %2: f32[2,4,5] = Transpose[perm=[0,2,1]](%1)\n %3: f32[2,3,5] = MatMul(%0, %2)\n out %3\n}"),
        Rule::custom(
            "matmul-transpose-a",
            "MatMul(Transpose[p](A), B) = FusedMatMul[transA=1](A, B) when p swaps the last two axes and \
             keeps the others; exact",
            "(MatMul ?a ?b)",
            matmul_transposed(0),
        )
        .example("graph @g {\n in %0: f32[4,3]\n in %1: f32[4,2]\n %2: f32[3,4] = Transpose(%0)\n %3: f32[3,2] = MatMul(%2, %1)\n out %3\n}"),
        Rule::custom(
            "gemm-to-fused-matmul",
            "Gemm[alpha, beta, transA, transB](A, B, C) = FusedMatMul[transA, transB, alpha, \
             epilogue=Add(%0, %1)](A, B, C), with Mul(%1, beta) for beta ≠ 1 (C broadcasts \
             unidirectionally to the [M, N] product, so the epilogue keeps its shape); an omitted C \
             gives the plain product. Equal up to rounding (the product is rounded before the bias add)",
            "(Gemm[*] ?a ?b ?c)",
            gemm,
        )
        .example("graph @g {\n in %0: f32[2,3]\n in %1: f32[4,3]\n const %2: f32[4] = [0.5, -1.0, 2.0, 0.0]\n %3: f32[2,4] = Gemm[transB=1](%0, %1, %2)\n out %3\n}")
        .example("graph @g {\n in %0: f32[3,2]\n in %1: f32[3,4]\n in %2: f32[2,1]\n %3: f32[2,4] = Gemm[alpha=0.5, beta=2.0, transA=1](%0, %1, %2)\n out %3\n}"),
        Rule::custom(
            "gemm-no-bias-to-fused-matmul",
            "Gemm[alpha, transA, transB](A, B) = FusedMatMul[transA, transB, alpha](A, B); exact",
            "(Gemm[*] ?a ?b)",
            gemm,
        )
        .example("graph @g {\n in %0: f32[2,3]\n in %1: f32[3,4]\n %2: f32[2,4] = Gemm[alpha=2.0](%0, %1)\n out %2\n}"),
        Rule::custom(
            "matmul-epilogue",
            "E(…, P, …) = FusedMatMul[…, epilogue=E(…, ep, …)](A, B, e…, others…) where P = \
             FusedMatMul[…, epilogue=ep](A, B, e…) or P = MatMul(A, B) (ep = %0), for an elementwise E \
             (or FusedElementwise) over P and other operands: the epilogue is applied to the product by \
             definition, each op rounded as before, so the result is bit-identical. Only when the new \
             epilogue keeps the product's shape (bias, activation, residual add; a consumer that \
             broadcasts the product up is refused by FusedMatMul's type rule) and has at most 24 ops",
            "?c",
            absorb(Op::FusedMatMul),
        )
        .example("graph @g {\n in %0: f32[2,3]\n const %1: f32[3,4] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0]\n const %2: f32[4] = [0.5, -1.0, 2.0, 0.0]\n %3: f32[2,4] = MatMul(%0, %1)\n %4: f32[2,4] = Add(%2, %3)\n %5: f32[2,4] = Relu(%4)\n out %5\n}")
        .example("graph @g {\n in %0: f32[2,3]\n in %1: f32[3,3]\n in %2: f32[2,3]\n %3: f32[2,3] = FusedMatMul[epilogue=\"Gelu(%0)\"](%0, %1)\n %4: f32[2,3] = Add(%3, %2)\n out %4\n}")
        .example("graph @g {\n in %0: f32[2,3]\n in %1: f32[3,3]\n %2: f32[2,3] = MatMul(%0, %1)\n %3: f32[2,3] = FusedElementwise[expr=\"Mul(%0, Sigmoid(%1))\"](%2, %0)\n out %3\n}"),
    ]
}
