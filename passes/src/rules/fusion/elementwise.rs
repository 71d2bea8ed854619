//! Elementwise chains into one `FusedElementwise`.
//!
//! Requires: the class helpers of [`super`]. Establishes the rule
//! `fuse-elementwise`: for a class computed by an elementwise op (or a
//! FusedElementwise), a FusedElementwise whose expression is that op with
//! its producers substituted, recursively, through classes that are
//! themselves computed by elementwise ops.
//!
//! A producer is substituted only when all its uses lead to the consumer
//! (through elementwise ops), so the fused node never recomputes a value
//! that something else also reads: ResNet's block output feeds the next
//! block's Conv and its residual Add, and stays a kernel's output.
//!
//! Growth control (the e-graph must not get one node per subset of a
//! chain): one fused node per class per e-graph state, the *largest* one:
//! each class contributes one representative (see [`representative`]) and
//! producers are expanded through it, so a chain of n ops adds one node to
//! each of its n classes, not 2ⁿ. Expansion stops at constants (a
//! one-element constant is inlined, a larger one becomes an input), at
//! classes that hold a product or a normalisation (FusedMatMul, FusedConv,
//! MatMul, Conv, LayerNorm, Softmax, Attention, ...: those fuse the other
//! way, through epilogues), at [`MAX_OPS`] ops and at [`MAX_INPUTS`]
//! distinct inputs. Identical input classes become one input.

use super::Rule;
use crate::egraph::analysis::{KEGraph, Rhs};
use crate::egraph::lang::{KNode, OpNode};
use egg::Id;
use kiln_ir::expr::Expr;
use kiln_ir::{Attr, Attrs, Op, OpClass};

/// Most ops in one fused expression.
pub const MAX_OPS: usize = 24;
/// Most distinct inputs of one fused node.
pub const MAX_INPUTS: usize = 8;

/// Whether `o` may be part of a fused expression: a single-output
/// elementwise op with every operand present, not an Identity or Dropout
/// (which the algebra phase removes), or a FusedElementwise.
pub(crate) fn fusable(eg: &KEGraph, o: &OpNode) -> bool {
    let plain = o.op.is_elementwise() && !matches!(o.op, Op::Identity | Op::Dropout);
    (plain || o.op == Op::FusedElementwise)
        && o.nout == 1
        && o.args
            .iter()
            .all(|&a| !eg[eg.find(a)].data.types.is_empty())
}

/// Whether the class holds an op that should stay a kernel of its own
/// rather than be recomputed inside an elementwise expression.
pub(crate) fn is_barrier(eg: &KEGraph, c: Id) -> bool {
    eg[eg.find(c)].nodes.iter().any(|n| match n {
        KNode::Op(o) => {
            matches!(
                o.op.class(),
                OpClass::Linalg
                    | OpClass::Conv
                    | OpClass::Normalization
                    | OpClass::Attention
                    | OpClass::Reduction
            ) || matches!(o.op, Op::FusedMatMul | Op::FusedConv)
        }
        _ => false,
    })
}

/// The expression a node computes over its operands `%0..%n`.
pub(crate) fn node_expr(o: &OpNode) -> Option<Expr> {
    if o.op == Op::FusedElementwise {
        return kiln_ir::fused::body(o.op, o.attrs.attrs()).ok();
    }
    Some(Expr::Op {
        op: o.op,
        attrs: o.attrs.attrs().clone(),
        args: (0..o.args.len()).map(Expr::Input).collect(),
    })
}

/// The node a class is expanded through: a fusable plain op (fewest
/// operands that would expand further, then fewest operands), else a
/// FusedElementwise; never a node that reads its own class.
pub(crate) fn representative(eg: &KEGraph, c: Id) -> Option<OpNode> {
    let c = eg.find(c);
    let expandable = |a: Id| {
        let a = eg.find(a);
        eg[a].data.value().is_none()
            && !is_barrier(eg, a)
            && eg[a]
                .nodes
                .iter()
                .any(|n| matches!(n, KNode::Op(o) if o.op.is_elementwise()))
    };
    eg[c]
        .nodes
        .iter()
        .filter_map(|n| match n {
            KNode::Op(o) if fusable(eg, o) && o.args.iter().all(|&a| eg.find(a) != c) => Some(o),
            _ => None,
        })
        .min_by_key(|o| {
            let fused = (o.op == Op::FusedElementwise) as usize;
            (
                fused,
                o.args.iter().filter(|&&a| expandable(a)).count(),
                o.args.len(),
            )
        })
        .cloned()
}

/// Builds the expression of class `c` over leaf classes.
pub(crate) struct Expander<'a> {
    pub eg: &'a KEGraph,
    /// The class being fused: a producer is expanded only if all its uses
    /// lead there ([`super::epilogue::feeds_only`]), so nothing is computed twice.
    pub root: Id,
    pub leaves: Vec<Id>,
    pub ops: usize,
    pub max_ops: usize,
}

impl Expander<'_> {
    pub(crate) fn leaf(&mut self, c: Id) -> Expr {
        let c = self.eg.find(c);
        let i = match self.leaves.iter().position(|&l| l == c) {
            Some(i) => i,
            None => {
                self.leaves.push(c);
                self.leaves.len() - 1
            }
        };
        Expr::Input(i)
    }

    /// The expression of class `c`, expanding elementwise producers up to `depth` levels.
    pub(crate) fn class(&mut self, c: Id, depth: usize) -> Expr {
        let c = self.eg.find(c);
        if let Some(v) = self.eg[c].data.value() {
            return if v.numel() == 1 {
                Expr::Const(v.clone())
            } else {
                self.leaf(c)
            };
        }
        if depth == 0
            || is_barrier(self.eg, c)
            || !super::epilogue::feeds_only(self.eg, c, self.root)
        {
            return self.leaf(c);
        }
        match representative(self.eg, c) {
            Some(o) => self.node(&o, depth),
            None => self.leaf(c),
        }
    }

    /// The expression of node `o`, its operands expanded up to `depth − 1` levels.
    pub(crate) fn node(&mut self, o: &OpNode, depth: usize) -> Expr {
        let Some(body) = node_expr(o) else {
            return Expr::Input(usize::MAX);
        };
        let n = body.num_ops();
        if self.ops + n > self.max_ops {
            // too large: this node's operands stay inputs
            let args: Vec<Expr> = o.args.iter().map(|&a| self.leaf(a)).collect();
            self.ops += n;
            return body.substitute(&|i| args.get(i).cloned().unwrap_or(Expr::Input(usize::MAX)));
        }
        self.ops += n;
        let args: Vec<Expr> = o
            .args
            .iter()
            .map(|&a| self.class(a, depth.saturating_sub(1)))
            .collect();
        body.substitute(&|i| args.get(i).cloned().unwrap_or(Expr::Input(usize::MAX)))
    }
}

/// Whether an expression refers to an input that does not exist (a body
/// that did not parse, or an operand index out of range).
fn well_formed(e: &Expr, inputs: usize) -> bool {
    let mut ok = true;
    e.walk(&mut |x| {
        if let Expr::Input(i) = x {
            ok &= *i < inputs;
        }
    });
    ok
}

/// The FusedElementwise node of expression `e` over `leaves`.
pub(crate) fn fused_node(e: &Expr, leaves: &[Id]) -> KNode {
    let attrs = Attrs::new().with(kiln_ir::fused::EXPR, Attr::Str(e.to_string()));
    KNode::op(Op::FusedElementwise, attrs, leaves.to_vec())
}

fn fuse(eg: &mut KEGraph, matched: Id, _s: &egg::Subst) -> Option<Rhs> {
    let c = eg.find(matched);
    if eg[c].data.value().is_some() {
        return None;
    }
    let root = representative(eg, c)?;
    let own = if root.op == Op::FusedElementwise {
        node_expr(&root)?.num_ops()
    } else {
        1
    };
    let mut x = Expander {
        eg,
        root: c,
        leaves: Vec::new(),
        ops: 0,
        max_ops: MAX_OPS,
    };
    let e = x.node(&root, MAX_OPS);
    let leaves = x.leaves;
    if e.num_ops() <= own
        || leaves.is_empty()
        || leaves.len() > MAX_INPUTS
        || leaves.contains(&c)
        || !well_formed(&e, leaves.len())
    {
        return None;
    }
    let node = fused_node(&e, &leaves);
    if eg[c].nodes.contains(&node) || !super::fits_class(eg, &node, c) {
        return None;
    }
    let mut r = Rhs::new();
    let hs: Vec<Id> = leaves.iter().map(|&l| r.class(l)).collect();
    let KNode::Op(o) = node else { return None };
    let f = r.op(Op::FusedElementwise, o.attrs.attrs().clone(), &hs);
    r.union_with(c, f);
    Some(r)
}

/// The rules of this file.
pub fn rules() -> Vec<Rule> {
    vec![Rule::custom(
        "fuse-elementwise",
        "E(p₁(…), …, pₙ(…)) = FusedElementwise[expr=E(p₁(%…), …)](leaves…) for an elementwise op E \
         (or a FusedElementwise) whose operands are computed by elementwise ops (or \
         FusedElementwise), substituted recursively: the expression is the decomposition by \
         definition, each op rounded to its dtype as before, so the result is bit-identical. \
         One-element constants are inlined, identical inputs merged; expansion stops at products \
         and normalisations, at 24 ops and 8 inputs; the fused node must have the consumer's type \
         (broadcasting operands are fine: the expression broadcasts as the ops did)",
        "?c",
        fuse,
    )
    .example("graph @g {\n in %0: f32[2,3]\n in %1: f32[3]\n const %2: f32[] = 0.5\n %3: f32[2,3] = Add(%0, %1)\n %4: f32[2,3] = Mul(%3, %2)\n %5: f32[2,3] = Tanh(%4)\n %6: f32[2,3] = Mul(%5, %3)\n out %6\n}")
    .example("graph @g {\n in %0: f32[4]\n in %1: f32[4]\n %2: f32[4] = FusedElementwise[expr=\"Mul(%0, Sigmoid(%1))\"](%0, %1)\n %3: f32[4] = Relu(%2)\n %4: f32[4] = Sub(%3, %1)\n out %4\n}")
    .example("graph @g {\n in %0: i64[1,4]\n const %1: f32[] = 1.0\n const %2: f32[] = -10000.0\n %3: f32[1,4] = Cast[to=1](%0)\n %4: f32[1,4] = Sub(%1, %3)\n %5: f32[1,4] = Mul(%4, %2)\n out %5\n}")]
}
