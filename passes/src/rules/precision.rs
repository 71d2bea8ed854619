//! Precision rules: f16/bf16 alternatives with f32 accumulation for the
//! matrix products, and Cast cancellation and absorption. The rules only
//! offer alternatives; extraction (the target's cost model) chooses, and
//! [`crate::precision`] keeps the choice within an accuracy budget.
//!
//! Requires: the rule API of [`crate::rules`]; the precision policy in
//! `eg.analysis.precision` ([`PrecisionPolicy`]). Establishes: the precision
//! phase's table.
//!
//! # Lowering rules (not equalities: equal within a tolerance)
//!
//! For a product `X` whose matrix operands are f32 and a 16-bit type `h`
//! (f16 or bf16), the rule `X-h` adds
//!
//! - MatMul, Conv, Attention: `X(a, b, ..) ≈ Cast[to=f32](X(Cast[to=h](a), Cast[to=h](b), ..))`
//!   (Conv's bias is cast too; Attention's Q, K, V are cast, its mask is not:
//!   the interpreter reads a mask of any float type in f32);
//! - FusedMatMul, FusedConv: `X[e](a, b, e1..) ≈ X[e'](Cast[to=h](a), Cast[to=h](b), e1..)`
//!   where `e'` is the epilogue `e` with the product `%0` replaced by
//!   `Cast[to=f32](%0)`: the product is computed in `h`, the epilogue stays
//!   in f32 with its f32 operands, and no separate Cast kernel is needed.
//!
//! The interpreter defines `h` products as f32 accumulation of `h`
//! operands, rounded to `h` once (`ir/src/interp/linalg.rs`); Attention in
//! `h` also rounds its intermediate steps (scaled Q and K, logits,
//! probabilities) to `h`. So a lowered product differs from the f32 one by
//! the rounding of its operands and result: about 2⁻¹¹ relative per rounding
//! for f16 and 2⁻⁸ for bf16, growing with the reduction length. The
//! soundness examples compare within the f16/bf16 tolerances of
//! [`crate::rules::harness`] (their outputs are 16-bit); this module's tests
//! check each rule on f32 inputs and outputs within [`tolerance`].
//!
//! Side conditions: the policy allows `h` (f32: none; f16 or bf16: that one;
//! auto, or no policy at all as in the rule harness: both); the matrix
//! operands are f32 (f64 models are not lowered); the node has no
//! [`KEEP_F32`] attribute (the accuracy budget pins nodes with it); the class
//! does not hold an `h` alternative already. Constant operands are cast
//! eagerly (the constant table gets the `h` tensor, whatever its size), so a
//! weight costs nothing to convert. Fixed arities: MatMul 2, Conv 2–3,
//! FusedMatMul and FusedConv 2–4 (up to two epilogue operands), Attention
//! 3–4 with one output (no KV cache inputs).
//!
//! # Cast rules (exact)
//!
//! - `cast-noop`: `Cast[to=T](x) = x` when `x` is already `T`.
//! - `cast-roundtrip`: `Cast[to=T](Cast[to=W](x)) = x` when `x` is `T` and
//!   `W` represents every value of `T` exactly (widening, then narrowing
//!   back). `Cast[to=f32](Cast[to=f16](x))` is NOT `x` and is left alone.
//! - `cast-through-exact`: `Cast[to=B](Cast[to=W](x)) = Cast[to=B](x)` when
//!   `W` represents every value of `x`'s type exactly.
//! - `cast-into-producer`: `Cast[to=T](P(..)) = P'(..)` where `P` is a
//!   fused op (the Cast wraps its body or epilogue), a MatMul (becomes a
//!   FusedMatMul with epilogue `Cast(%0)`), a Conv without bias (a FusedConv)
//!   or a single elementwise op (a FusedElementwise): fused ops are defined
//!   by their decomposition, so this is exact, and it saves the Cast kernel.
//!
//! Cast of a constant is folded by the analysis (within
//! [`crate::const_fold::FoldPolicy`]) and, for the lowering rules' own
//! operands, eagerly by the rules: there is no separate rule for it, since
//! a rule that only re-adds the analysis' constant never fires.

use super::{class, Rule};
use crate::egraph::analysis::{KEGraph, PrecisionPolicy, Rhs};
use crate::egraph::lang::{AttrKey, KNode, OpNode};
use egg::{Id, Subst};
use kiln_ir::expr::Expr;
use kiln_ir::fused::{self, EPILOGUE, EXPR};
use kiln_ir::interp::eval_op;
use kiln_ir::{Attr, Attrs, DType, Op, OpClass, Tensor, TensorType};
use std::sync::OnceLock;

/// The attribute that pins a node to f32: the lowering rules skip a node
/// that has it (set by the accuracy budget, removed after extraction).
pub const KEEP_F32: &str = "kiln_keep_f32";

/// The 16-bit types the rules lower to.
pub const LOW: [DType; 2] = [DType::F16, DType::BF16];

/// The normwise relative error ([`crate::precision::rel_error`]) a lowered
/// product may show on operands in [-2, 2): used by this module's tests and
/// quoted in the laws.
pub fn tolerance(dt: DType) -> f64 {
    match dt {
        DType::BF16 => 3e-2,
        _ => 1e-2,
    }
}

/// Whether the policy lets the rules offer `dt` alternatives.
pub fn allows(policy: Option<PrecisionPolicy>, dt: DType) -> bool {
    match policy {
        None | Some(PrecisionPolicy::Auto { .. }) => true,
        Some(PrecisionPolicy::F32) => false,
        Some(PrecisionPolicy::F16) => dt == DType::F16,
        Some(PrecisionPolicy::BF16) => dt == DType::BF16,
    }
}

/// The attributes of a Cast to `to`.
pub fn cast_attrs(to: DType) -> Attrs {
    Attrs::new().with("to", Attr::Int(to.onnx_code() as i64))
}

/// The target dtype of a Cast's attributes.
fn cast_to(attrs: &Attrs) -> Option<DType> {
    let code = attrs.int("to").ok()??;
    DType::from_onnx_code(i32::try_from(code).ok()?)
}

fn cast_expr(to: DType, e: Expr) -> Expr {
    Expr::Op {
        op: Op::Cast,
        attrs: cast_attrs(to),
        args: vec![e],
    }
}

/// Whether every value of `from` is exactly representable in `to`.
pub fn exact_widening(from: DType, to: DType) -> bool {
    use DType::*;
    if from == to {
        return true;
    }
    match from {
        Bool => true,
        F16 | BF16 => matches!(to, F32 | F64),
        F32 => to == F64,
        I8 => matches!(to, I16 | I32 | I64 | F16 | BF16 | F32 | F64),
        U8 => matches!(
            to,
            U16 | U32 | U64 | I16 | I32 | I64 | F16 | BF16 | F32 | F64
        ),
        I16 => matches!(to, I32 | I64 | F32 | F64),
        U16 => matches!(to, U32 | U64 | I32 | I64 | F32 | F64),
        I32 => matches!(to, I64 | F64),
        U32 => matches!(to, U64 | I64 | F64),
        I64 | U64 | F64 => false,
    }
}

/// How a product is lowered to a 16-bit type: which operands are cast,
/// the new node's attributes, and whether its result is cast back to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Lowering {
    pub cast: Vec<bool>,
    pub attrs: Attrs,
    pub cast_back: bool,
}

/// The lowering of `op[attrs](operands)` (with `nout` outputs) to `dt`, or
/// `None` when the op is not a product the rules lower, its matrix operands
/// are not f32, or the node is pinned with [`KEEP_F32`]. The rules and the
/// accuracy budget's per-node error measurement both use this, so they
/// agree on what "lowered" means.
pub fn lowering(
    op: Op,
    attrs: &Attrs,
    operands: &[Option<&TensorType>],
    nout: usize,
    dt: DType,
) -> Option<Lowering> {
    if !LOW.contains(&dt) || nout != 1 || attrs.get(KEEP_F32).is_some() {
        return None;
    }
    let is_f32 = |i: usize| {
        operands
            .get(i)
            .copied()
            .flatten()
            .is_some_and(|t| t.dtype == DType::F32)
    };
    let n = operands.len();
    match op {
        Op::MatMul if n == 2 && is_f32(0) && is_f32(1) => Some(Lowering {
            cast: vec![true, true],
            attrs: attrs.clone(),
            cast_back: true,
        }),
        Op::Conv if (2..=3).contains(&n) && (0..n).all(is_f32) => Some(Lowering {
            cast: vec![true; n],
            attrs: attrs.clone(),
            cast_back: true,
        }),
        Op::Attention if (3..=4).contains(&n) && (0..3).all(is_f32) => {
            let mut cast = vec![true, true, true];
            cast.resize(n, false);
            Some(Lowering {
                cast,
                attrs: attrs.clone(),
                cast_back: true,
            })
        }
        Op::FusedMatMul | Op::FusedConv if n >= 2 && is_f32(0) && is_f32(1) => {
            let e = fused::body(op, attrs).ok()?;
            let e2 = e.substitute(&|i| {
                if i == 0 {
                    cast_expr(DType::F32, Expr::Input(0))
                } else {
                    Expr::Input(i)
                }
            });
            let mut a = attrs.clone();
            a.set(EPILOGUE, Attr::Str(e2.to_string()));
            let mut cast = vec![true, true];
            cast.resize(n, false);
            Some(Lowering {
                cast,
                attrs: a,
                cast_back: false,
            })
        }
        _ => None,
    }
}

fn cast_tensor(t: &Tensor, to: DType) -> kiln_ir::Result<Tensor> {
    let mut out = eval_op(Op::Cast, &cast_attrs(to), &[Some(t)], 1)?;
    out.pop()
        .ok_or_else(|| kiln_ir::Error::invalid("Cast returned no result"))
}

/// Evaluates the lowered form of `op[attrs](inputs)` in `dt` on the
/// interpreter; `Ok(None)` when [`lowering`] does not apply.
pub fn eval_lowered(
    op: Op,
    attrs: &Attrs,
    inputs: &[Option<&Tensor>],
    dt: DType,
) -> kiln_ir::Result<Option<Tensor>> {
    let tys: Vec<Option<TensorType>> = inputs.iter().map(|t| t.map(|t| t.ty())).collect();
    let refs: Vec<Option<&TensorType>> = tys.iter().map(|t| t.as_ref()).collect();
    let Some(l) = lowering(op, attrs, &refs, 1, dt) else {
        return Ok(None);
    };
    let mut cast: Vec<Option<Tensor>> = Vec::with_capacity(inputs.len());
    for (i, t) in inputs.iter().enumerate() {
        cast.push(match t {
            Some(t) if l.cast[i] => Some(cast_tensor(t, dt)?),
            Some(t) => Some((*t).clone()),
            None => None,
        });
    }
    let args: Vec<Option<&Tensor>> = cast.iter().map(|t| t.as_ref()).collect();
    let mut y = eval_op(op, &l.attrs, &args, 1)?;
    let y = y
        .pop()
        .ok_or_else(|| kiln_ir::Error::invalid(format!("{op} returned no result")))?;
    Ok(Some(if l.cast_back {
        cast_tensor(&y, DType::F32)?
    } else {
        y
    }))
}

/// The op node in class `c` that applies `op` to exactly the classes `args`.
fn find_node(eg: &KEGraph, c: Id, op: Op, args: &[Id]) -> Option<OpNode> {
    eg[c].nodes.iter().find_map(|n| match n {
        KNode::Op(o)
            if o.op == op
                && o.nout == 1
                && o.args.len() == args.len()
                && o.args
                    .iter()
                    .zip(args)
                    .all(|(&a, &b)| eg.find(a) == eg.find(b)) =>
        {
            Some(o.clone())
        }
        _ => None,
    })
}

/// The dtype of the first operand of `o` (its product's operand type).
fn first_dtype(eg: &KEGraph, o: &OpNode) -> Option<DType> {
    o.args
        .first()
        .and_then(|&a| eg[a].data.ty())
        .map(|t| t.dtype)
}

/// Whether `op` is one of the products the lowering rules rewrite.
pub fn is_product(op: Op) -> bool {
    matches!(
        op,
        Op::MatMul | Op::Conv | Op::Attention | Op::FusedMatMul | Op::FusedConv
    )
}

/// Whether class `c` already holds a `dt` alternative of a product: a
/// product reading `dt` operands, or a Cast of a class that holds one.
fn has_alternative(eg: &KEGraph, c: Id, dt: DType) -> bool {
    let direct = |cls: Id| {
        eg[cls].nodes.iter().any(
            |n| matches!(n, KNode::Op(o) if is_product(o.op) && first_dtype(eg, o) == Some(dt)),
        )
    };
    direct(c)
        || eg[c].nodes.iter().any(|n| match n {
            KNode::Op(o) if o.op == Op::Cast && o.args.len() == 1 => direct(o.args[0]),
            _ => false,
        })
}

/// The right-hand side of a lowering rule for the match of `op` with
/// operand variables `?a0..` in class `matched`.
fn lower_match(
    eg: &mut KEGraph,
    matched: Id,
    s: &Subst,
    op: Op,
    arity: usize,
    dt: DType,
) -> Option<Rhs> {
    if !allows(eg.analysis.precision, dt) {
        return None;
    }
    let vars: Vec<Id> = (0..arity)
        .map(|i| class(s, &format!("?a{i}")))
        .collect::<Option<_>>()?;
    let node = find_node(eg, matched, op, &vars)?;
    if has_alternative(eg, matched, dt) {
        return None;
    }
    let tys: Vec<Option<TensorType>> = vars.iter().map(|&v| eg[v].data.ty().cloned()).collect();
    let refs: Vec<Option<&TensorType>> = tys.iter().map(|t| t.as_ref()).collect();
    let l = lowering(op, node.attrs.attrs(), &refs, 1, dt)?;
    let mut r = Rhs::new();
    let mut args = Vec::with_capacity(arity);
    for (i, &v) in vars.iter().enumerate() {
        let h = if l.cast[i] {
            match eg[v].data.value().cloned() {
                Some(t) => {
                    let c = cast_tensor(&t, dt).ok()?;
                    r.konst(eg, c)
                }
                None => {
                    let x = r.class(v);
                    r.op(Op::Cast, cast_attrs(dt), &[x])
                }
            }
        } else {
            r.class(v)
        };
        args.push(h);
    }
    let mut root = r.node(KNode::op_n(op, 1, AttrKey::new(l.attrs), args));
    if l.cast_back {
        root = r.op(Op::Cast, cast_attrs(DType::F32), &[root]);
    }
    r.union_with(matched, root);
    Some(r)
}

/// One lowering rule of the table.
struct Spec {
    name: String,
    law: String,
    lhs: String,
    op: Op,
    arity: usize,
    dt: DType,
    /// The example with 16-bit inputs and outputs (for the shared harness).
    boundary: String,
    /// The same computation on f32 inputs and outputs (for this module's tests).
    #[cfg_attr(not(test), allow(dead_code))]
    f32_example: String,
}

/// A product template: operand shapes, the node text (`{args}` is replaced
/// by the operand list) and the result shape.
struct Template {
    op: Op,
    key: &'static str,
    inputs: &'static [&'static str],
    node: &'static str,
    out: &'static str,
}

const TEMPLATES: &[Template] = &[
    Template {
        op: Op::MatMul,
        key: "matmul",
        inputs: &["4,8", "8,3"],
        node: "MatMul({args})",
        out: "4,3",
    },
    Template {
        op: Op::Conv,
        key: "conv",
        inputs: &["1,2,5,5", "3,2,3,3"],
        node: "Conv[kernel_shape=[3,3]]({args})",
        out: "1,3,3,3",
    },
    Template {
        op: Op::Conv,
        key: "conv-bias",
        inputs: &["1,2,5,5", "3,2,3,3", "3"],
        node: "Conv[kernel_shape=[3,3], pads=[1,1,1,1]]({args})",
        out: "1,3,5,5",
    },
    Template {
        op: Op::FusedMatMul,
        key: "fused-matmul",
        inputs: &["4,8", "3,8"],
        node: "FusedMatMul[epilogue=\"Relu(%0)\", transB=1]({args})",
        out: "4,3",
    },
    Template {
        op: Op::FusedMatMul,
        key: "fused-matmul-1",
        inputs: &["4,8", "8,3", "3"],
        node: "FusedMatMul[alpha=0.5, epilogue=\"Add(%0, %1)\"]({args})",
        out: "4,3",
    },
    Template {
        op: Op::FusedMatMul,
        key: "fused-matmul-2",
        inputs: &["2,4,8", "8,3", "3", "2,4,3"],
        node: "FusedMatMul[epilogue=\"Relu(Add(Add(%0, %1), %2))\"]({args})",
        out: "2,4,3",
    },
    Template {
        op: Op::FusedConv,
        key: "fused-conv",
        inputs: &["1,2,5,5", "3,2,3,3"],
        node: "FusedConv[epilogue=\"Relu(%0)\", kernel_shape=[3,3]]({args})",
        out: "1,3,3,3",
    },
    Template {
        op: Op::FusedConv,
        key: "fused-conv-1",
        inputs: &["1,2,5,5", "3,2,3,3", "3,1,1"],
        node: "FusedConv[epilogue=\"Add(%0, %1)\", kernel_shape=[3,3]]({args})",
        out: "1,3,3,3",
    },
    Template {
        op: Op::FusedConv,
        key: "fused-conv-2",
        inputs: &["1,2,5,5", "3,2,3,3", "3,1,1", "1,3,3,3"],
        node: "FusedConv[epilogue=\"Relu(Add(Add(%0, %1), %2))\", kernel_shape=[3,3]]({args})",
        out: "1,3,3,3",
    },
    Template {
        op: Op::Attention,
        key: "attention",
        inputs: &["1,2,4,4", "1,2,5,4", "1,2,5,4"],
        node: "Attention({args})",
        out: "1,2,4,4",
    },
    Template {
        op: Op::Attention,
        key: "attention-masked",
        inputs: &["1,2,4,4", "1,2,5,4", "1,2,5,4", "1,1,4,5"],
        node: "Attention({args})",
        out: "1,2,4,4",
    },
];

/// The example of template `t`: with `boundary = Some(h)`, inputs and the
/// output are `h` and the product runs on their f32 casts (a mixed-precision
/// model); with `None`, everything is f32.
fn example_text(t: &Template, boundary: Option<DType>) -> String {
    let n = t.inputs.len();
    let mut s = String::from("graph @g {\n");
    let io = boundary.map_or("f32", |d| d.name());
    for (i, shape) in t.inputs.iter().enumerate() {
        s.push_str(&format!("  in %{i}: {io}[{shape}]\n"));
    }
    let mut next = n;
    let args: Vec<String> = match boundary {
        None => (0..n).map(|i| format!("%{i}")).collect(),
        Some(_) => (0..n)
            .map(|i| {
                s.push_str(&format!(
                    "  %{next}: f32[{}] = Cast[to=1](%{i})\n",
                    t.inputs[i]
                ));
                next += 1;
                format!("%{}", next - 1)
            })
            .collect(),
    };
    s.push_str(&format!(
        "  %{next}: f32[{}] = {}\n",
        t.out,
        t.node.replace("{args}", &args.join(", "))
    ));
    let mut out = next;
    if let Some(d) = boundary {
        s.push_str(&format!(
            "  %{}: {}[{}] = Cast[to={}](%{next})\n",
            next + 1,
            d.name(),
            t.out,
            d.onnx_code()
        ));
        out = next + 1;
    }
    s.push_str(&format!("  out %{out}\n}}\n"));
    s
}

fn specs() -> &'static [Spec] {
    static SPECS: OnceLock<Vec<Spec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let mut v = Vec::new();
        for t in TEMPLATES {
            for dt in LOW {
                let arity = t.inputs.len();
                let vars: Vec<String> = (0..arity).map(|i| format!("?a{i}")).collect();
                let form = match t.op {
                    Op::FusedMatMul | Op::FusedConv => format!(
                            "{op}[e](a, b, ..) ≈ {op}[e with %0 := Cast[to=f32](%0)](Cast[to={h}](a), Cast[to={h}](b), ..)",
                            op = t.op.name(),
                            h = dt.name()
                        ),
                    _ => format!(
                            "{op}(x..) ≈ Cast[to=f32]({op}(Cast[to={h}](x)..)){mask}",
                            op = t.op.name(),
                            h = dt.name(),
                            mask = if t.op == Op::Attention { " (Q, K, V cast; the mask is not)" } else { "" }
                        ),
                };
                let law = format!(
                    "{form}: the product runs in {h} with f32 accumulation, rounded to {h} once (Attention: \
                     per step); equal only within the {h} tolerance (normwise relative error about {tol:e} on \
                     operands in [-2, 2)), not exactly. Applies to {arity} operands, matrix operands f32, \
                     when the precision policy allows {h} and the node is not pinned ({KEEP_F32}); constant \
                     operands are cast eagerly",
                    h = dt.name(),
                    tol = tolerance(dt),
                );
                v.push(Spec {
                    name: format!("{}-{}", t.key, dt.name()),
                    law,
                    lhs: format!("({}[*] {})", t.op.name(), vars.join(" ")),
                    op: t.op,
                    arity,
                    dt,
                    boundary: example_text(t, Some(dt)),
                    f32_example: example_text(t, None),
                });
            }
        }
        v
    })
}

/// The lowering rule names and the dtype each lowers to.
pub fn lowering_rules() -> impl Iterator<Item = (&'static str, DType)> {
    specs().iter().map(|s| (s.name.as_str(), s.dt))
}

/// The dtype a lowering rule lowers to, or `None` for another rule.
pub fn lowered_dtype(rule: &str) -> Option<DType> {
    lowering_rules().find(|(n, _)| *n == rule).map(|(_, d)| d)
}

fn lowering_rule(spec: &'static Spec) -> Rule {
    let (op, arity, dt) = (spec.op, spec.arity, spec.dt);
    Rule::custom(
        spec.name.as_str(),
        spec.law.as_str(),
        &spec.lhs,
        move |eg, m, s| lower_match(eg, m, s, op, arity, dt),
    )
    .example(spec.boundary.as_str())
}

/// The Cast nodes of class `c` that read class `x`: their target dtypes.
fn casts_of(eg: &KEGraph, c: Id, x: Id) -> Vec<DType> {
    let x = eg.find(x);
    eg[c]
        .nodes
        .iter()
        .filter_map(|n| match n {
            KNode::Op(o) if o.op == Op::Cast && o.args.len() == 1 && eg.find(o.args[0]) == x => {
                cast_to(o.attrs.attrs())
            }
            _ => None,
        })
        .collect()
}

/// Inner casts in class `y`: `(W, x)` for each `Cast[to=W](x)` node.
fn inner_casts(eg: &KEGraph, y: Id) -> Vec<(DType, Id)> {
    eg[y]
        .nodes
        .iter()
        .filter_map(|n| match n {
            KNode::Op(o) if o.op == Op::Cast && o.args.len() == 1 => {
                Some((cast_to(o.attrs.attrs())?, o.args[0]))
            }
            _ => None,
        })
        .collect()
}

fn cast_noop(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let x = class(s, "?x")?;
    let from = eg[x].data.ty()?.dtype;
    if !casts_of(eg, matched, x).contains(&from) {
        return None;
    }
    let mut r = Rhs::new();
    let h = r.class(x);
    r.union_with(matched, h);
    Some(r)
}

fn cast_roundtrip(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let y = class(s, "?y")?;
    let outer = casts_of(eg, matched, y);
    let mut r = Rhs::new();
    for (w, x) in inner_casts(eg, y) {
        let t = eg[x].data.ty()?.dtype;
        if outer.contains(&t) && exact_widening(t, w) {
            let h = r.class(x);
            r.union_with(matched, h);
            return Some(r);
        }
    }
    None
}

fn cast_through_exact(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let y = class(s, "?y")?;
    let outer = casts_of(eg, matched, y);
    let mut r = Rhs::new();
    let mut any = false;
    for (w, x) in inner_casts(eg, y) {
        let t = eg[x].data.ty()?.dtype;
        for &b in &outer {
            if b != t && b != w && exact_widening(t, w) {
                let hx = r.class(x);
                let c = r.op(Op::Cast, cast_attrs(b), &[hx]);
                r.union_with(matched, c);
                any = true;
            }
        }
    }
    any.then_some(r)
}

/// `Cast[to](P)` as one node, for a producer node `o`.
fn absorb(o: &OpNode, to: DType) -> Option<KNode> {
    let attrs = o.attrs.attrs();
    let (op, a) = match o.op {
        Op::FusedMatMul | Op::FusedConv | Op::FusedElementwise => {
            let e = fused::body(o.op, attrs).ok()?;
            let mut a = attrs.clone();
            let key = if o.op == Op::FusedElementwise {
                EXPR
            } else {
                EPILOGUE
            };
            a.set(key, Attr::Str(cast_expr(to, e).to_string()));
            (o.op, a)
        }
        Op::MatMul if o.args.len() == 2 => {
            let mut a = fused::matmul_attrs(false, false, 1.0, &cast_expr(to, Expr::Input(0)));
            if let Some(k) = attrs.get(KEEP_F32) {
                a.set(KEEP_F32, k.clone());
            }
            (Op::FusedMatMul, a)
        }
        Op::Conv if o.args.len() == 2 => {
            let mut a = attrs.clone();
            a.set(
                EPILOGUE,
                Attr::Str(cast_expr(to, Expr::Input(0)).to_string()),
            );
            (Op::FusedConv, a)
        }
        op if op.class() == OpClass::Elementwise && op != Op::Cast && !o.args.is_empty() => {
            let args = (0..o.args.len()).map(Expr::Input).collect();
            let body = Expr::Op {
                op,
                attrs: attrs.clone(),
                args,
            };
            let a = Attrs::new().with(EXPR, Attr::Str(cast_expr(to, body).to_string()));
            (Op::FusedElementwise, a)
        }
        _ => return None,
    };
    Some(KNode::op_n(op, 1, AttrKey::new(a), o.args.to_vec()))
}

fn cast_into_producer(eg: &mut KEGraph, matched: Id, s: &Subst) -> Option<Rhs> {
    let x = class(s, "?x")?;
    let tos = casts_of(eg, matched, x);
    let producers: Vec<OpNode> = eg[x]
        .nodes
        .iter()
        .filter_map(|n| n.as_op().filter(|o| o.nout == 1).cloned())
        .collect();
    let mut r = Rhs::new();
    let mut any = false;
    for to in tos {
        for o in &producers {
            // an omitted operand cannot be an input of a fused op
            if o.args.iter().any(|&a| eg[a].data.types.is_empty()) {
                continue;
            }
            let Some(n) = absorb(o, to) else { continue };
            let args: Vec<Id> = n
                .as_op()
                .map(|o| o.args.iter().map(|&a| r.class(a)).collect())
                .unwrap_or_default();
            let KNode::Op(mut on) = n else { continue };
            on.args = args.into_boxed_slice();
            let h = r.node(KNode::Op(on));
            r.union_with(matched, h);
            any = true;
        }
    }
    any.then_some(r)
}

const CAST_NOOP_EX: &str = "graph @g {\n  in %0: f32[2,3]\n  %1: f32[2,3] = Cast[to=1](%0)\n  %2: f32[2,3] = Relu(%1)\n  out %2\n}\n";
const CAST_ROUNDTRIP_EX: &str = "graph @g {\n  in %0: f16[2,3]\n  %1: f32[2,3] = Cast[to=1](%0)\n  %2: f16[2,3] = Cast[to=10](%1)\n  %3: f16[2,3] = Relu(%2)\n  out %3\n}\n";
const CAST_ROUNDTRIP_INT_EX: &str = "graph @g {\n  in %0: i32[4]\n  %1: i32[4] = Neg(%0)\n  %2: i64[4] = Cast[to=7](%1)\n  %3: i32[4] = Cast[to=6](%2)\n  out %3\n}\n";
const CAST_THROUGH_EX: &str = "graph @g {\n  in %0: bf16[2,3]\n  %1: f32[2,3] = Cast[to=1](%0)\n  %2: f16[2,3] = Cast[to=10](%1)\n  out %2\n}\n";
const CAST_INTO_MATMUL_EX: &str = "graph @g {\n  in %0: f32[4,8]\n  in %1: f32[8,3]\n  %2: f32[4,3] = MatMul(%0, %1)\n  %3: f16[4,3] = Cast[to=10](%2)\n  out %3\n}\n";
const CAST_INTO_FUSED_EX: &str = "graph @g {\n  in %0: f32[4,8]\n  in %1: f32[8,3]\n  in %2: f32[3]\n  %3: f32[4,3] = FusedMatMul[epilogue=\"Relu(Add(%0, %1))\"](%0, %1, %2)\n  %4: bf16[4,3] = Cast[to=16](%3)\n  out %4\n}\n";
const CAST_INTO_ELEMENTWISE_EX: &str = "graph @g {\n  in %0: f32[2,3]\n  in %1: f32[3]\n  %2: f32[2,3] = Add(%0, %1)\n  %3: f16[2,3] = Cast[to=10](%2)\n  %4: f16[2,3] = Sigmoid(%3)\n  out %4\n}\n";

/// The precision phase's rules.
pub fn rules() -> Vec<Rule> {
    let mut v: Vec<Rule> = specs().iter().map(lowering_rule).collect();
    v.push(
        Rule::custom(
            "cast-noop",
            "Cast[to=T](x) = x when x is already of type T; exact",
            "(Cast[*] ?x)",
            cast_noop,
        )
        .example(CAST_NOOP_EX),
    );
    v.push(
        Rule::custom(
            "cast-roundtrip",
            "Cast[to=T](Cast[to=W](x)) = x when x is of type T and W represents every value of T exactly \
             (f16/bf16 → f32/f64, f32 → f64, integer and bool widenings): widening then narrowing back; \
             exact. Narrowing then widening (f32 → f16 → f32) is not cancelled",
            "(Cast[*] ?y)",
            cast_roundtrip,
        )
        .example(CAST_ROUNDTRIP_EX)
        .example(CAST_ROUNDTRIP_INT_EX),
    );
    v.push(
        Rule::custom(
            "cast-through-exact",
            "Cast[to=B](Cast[to=W](x)) = Cast[to=B](x) when W represents every value of x's type exactly: \
             the inner cast does not change the value the outer one sees; exact",
            "(Cast[*] ?y)",
            cast_through_exact,
        )
        .example(CAST_THROUGH_EX),
    );
    v.push(
        Rule::custom(
            "cast-into-producer",
            "Cast[to=T](P(..)) = P'(..): a Cast of a fused op wraps its body or epilogue, of a MatMul is a \
             FusedMatMul with epilogue Cast(%0), of a bias-less Conv a FusedConv, of one elementwise op a \
             FusedElementwise; fused ops are their decomposition, so exact (one kernel instead of two)",
            "(Cast[*] ?x)",
            cast_into_producer,
        )
        .example(CAST_INTO_MATMUL_EX)
        .example(CAST_INTO_FUSED_EX)
        .example(CAST_INTO_ELEMENTWISE_EX),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egraph::analysis::KAnalysis;
    use crate::egraph::build::build;
    use crate::rules::harness::rewrite_with;
    use egg::Runner;

    fn parse(src: &str) -> kiln_ir::Graph {
        crate::testutil::parse(src)
    }

    /// Every lowering rule on the f32 form of its example: it fires, the
    /// result computes the product in its 16-bit type, and stays within
    /// [`tolerance`] (normwise) of the f32 graph on random inputs.
    #[test]
    fn lowering_rules_are_sound_within_tolerance_on_f32_graphs() {
        let mut worst: Vec<String> = Vec::new();
        for spec in specs() {
            let rule = lowering_rule(spec);
            let g = parse(&spec.f32_example);
            let out = rewrite_with(&rule, &g).unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            let low = out
                .nodes
                .iter()
                .filter(|n| n.op == spec.op)
                .any(|n| n.inputs[0].is_some_and(|v| out.ty(v).dtype == spec.dt));
            assert!(
                low,
                "{}: no {} product in\n{out}",
                spec.name,
                spec.dt.name()
            );
            let mut max = 0f64;
            for seed in 0..4 {
                let inputs = crate::testutil::random_inputs(&g, seed);
                let want = kiln_ir::interp::run(&g, &inputs).unwrap();
                let got = kiln_ir::interp::run(&out, &inputs)
                    .unwrap_or_else(|e| panic!("{}: {e}\n{out}", spec.name));
                let e = crate::precision::rel_error(&got[0], &want[0]).max_rel;
                max = max.max(e);
            }
            assert!(
                max <= tolerance(spec.dt),
                "{}: relative error {max:e} > {:e}\n{out}",
                spec.name,
                tolerance(spec.dt)
            );
            // and not exact: the rule really changes precision
            assert!(max > 0.0, "{}: bit-identical, so not lowered", spec.name);
            worst.push(format!("{}: {max:.2e}", spec.name));
        }
        eprintln!("max normwise relative error per rule: {}", worst.join(", "));
    }

    /// Constant weights are cast eagerly, whatever their size: this one is
    /// over the analysis' fold limit (2^20 elements), so without the eager
    /// cast the lowered MatMul would read a Cast node.
    #[test]
    fn constant_operands_are_cast_eagerly() {
        let (k, n) = (1024usize, 1025usize);
        assert!(k * n > crate::const_fold::FoldPolicy::default().max_elems);
        let mut g = kiln_ir::Graph::new("g");
        let x = g.add_value(None, TensorType::new(DType::F32, vec![1, k]));
        g.inputs.push(x);
        let vals: Vec<f32> = (0..k * n).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
        let w = g.add_const(None, Tensor::from_vec(vec![k, n], vals).unwrap());
        let y = g.add_node(
            "mm",
            Op::MatMul,
            Attrs::new(),
            vec![Some(x), Some(w)],
            vec![(None, TensorType::new(DType::F32, vec![1, n]))],
        );
        g.outputs.push(y[0]);
        let rule = rules()
            .into_iter()
            .find(|r| r.name == "matmul-f16")
            .unwrap();
        let out = rewrite_with(&rule, &g).unwrap();
        let mm = out.nodes.iter().find(|n| n.op == Op::MatMul).unwrap();
        let c = out
            .consts
            .get(&mm.inputs[1].unwrap())
            .expect("the weight is a constant, not a Cast");
        assert_eq!(c.dtype(), DType::F16);
        assert_eq!(
            &c.to_f64_vec()[..3],
            &[-0.300048828125, -0.199951171875, -0.0999755859375]
        );
        assert_eq!(
            out.nodes.iter().filter(|n| n.op == Op::Cast).count(),
            2,
            "{out}"
        );
    }

    /// Runs the whole precision table under `policy` and returns the dtypes
    /// of the MatMul products found in the e-graph.
    fn lowered_under(g: &kiln_ir::Graph, policy: PrecisionPolicy) -> Vec<DType> {
        let mut a = KAnalysis::new(vec![]);
        a.precision = Some(policy);
        let built = build(g, a).unwrap();
        let rws: Vec<_> = rules().iter().map(|r| r.rewrite().unwrap()).collect();
        let runner = Runner::default()
            .with_egraph(built.egraph)
            .with_iter_limit(4)
            .run(&rws);
        let eg = runner.egraph;
        assert!(eg.analysis.errors.is_empty(), "{:?}", eg.analysis.errors);
        let mut out: Vec<DType> = eg
            .classes()
            .flat_map(|c| c.nodes.iter())
            .filter_map(|n| {
                n.as_op()
                    .filter(|o| o.op == Op::MatMul || o.op == Op::FusedMatMul)
                    .cloned()
            })
            .filter_map(|o| first_dtype(&eg, &o))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn the_policy_decides_which_alternatives_exist() {
        let g = parse(&example_text(&TEMPLATES[0], None));
        assert_eq!(lowered_under(&g, PrecisionPolicy::F32), vec![DType::F32]);
        assert_eq!(
            lowered_under(&g, PrecisionPolicy::F16),
            vec![DType::F32, DType::F16]
        );
        assert_eq!(
            lowered_under(&g, PrecisionPolicy::BF16),
            vec![DType::F32, DType::BF16]
        );
        assert_eq!(
            lowered_under(
                &g,
                PrecisionPolicy::Auto {
                    max_rel_error: 1e-2
                }
            ),
            vec![DType::F32, DType::F16, DType::BF16]
        );
    }

    #[test]
    fn pinned_and_non_f32_products_are_not_lowered() {
        let pinned = parse(
            "graph @g {\n  in %0: f32[4,8]\n  in %1: f32[8,3]\n  \
             %2: f32[4,3] = FusedMatMul[epilogue=\"Relu(%0)\", kiln_keep_f32=1](%0, %1)\n  out %2\n}",
        );
        let f64s = parse("graph @g {\n  in %0: f64[4,8]\n  in %1: f64[8,3]\n  %2: f64[4,3] = MatMul(%0, %1)\n  out %2\n}");
        for g in [pinned, f64s] {
            let got = lowered_under(&g, PrecisionPolicy::Auto { max_rel_error: 1.0 });
            assert!(got.iter().all(|d| !LOW.contains(d)), "{got:?}\n{g}");
        }
    }

    /// Narrowing then widening is not a cancellation.
    #[test]
    fn narrowing_then_widening_is_not_cancelled() {
        let g = parse(
            "graph @g {\n  in %0: f32[2,3]\n  %1: f16[2,3] = Cast[to=10](%0)\n  %2: f32[2,3] = Cast[to=1](%1)\n  out %2\n}",
        );
        for name in ["cast-roundtrip", "cast-through-exact", "cast-noop"] {
            let rule = rules().into_iter().find(|r| r.name == name).unwrap();
            let err = rewrite_with(&rule, &g).unwrap_err();
            assert!(err.contains("did not fire"), "{name}: {err}");
        }
        assert!(!exact_widening(DType::F32, DType::F16));
        assert!(!exact_widening(DType::I16, DType::F16));
        assert!(exact_widening(DType::U8, DType::BF16));
    }

    #[test]
    fn eval_lowered_matches_the_rule() {
        let a = Tensor::from_vec(vec![1, 3], vec![0.1f32, 0.2, 0.3]).unwrap();
        let b = Tensor::from_vec(vec![3, 1], vec![1.0f32 / 3.0, 2.0, -1.0]).unwrap();
        let y = eval_lowered(Op::MatMul, &Attrs::new(), &[Some(&a), Some(&b)], DType::F16)
            .unwrap()
            .unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let exact = 0.1f64 / 3.0 + 0.4 - 0.3;
        let got = y.to_f64_vec()[0];
        assert!(
            (got - exact).abs() < 1e-3 && got != (0.1f32 / 3.0 + 0.4 - 0.3) as f64,
            "{got}"
        );
        assert!(
            eval_lowered(Op::Relu, &Attrs::new(), &[Some(&a)], DType::F16)
                .unwrap()
                .is_none()
        );
    }
}
