//! The e-class analysis: output types and constness of every e-class, the
//! constant table, rule provenance, and admission control for rewrites.
//!
//! Requires: e-nodes whose operand classes exist (egg's invariant).
//! Establishes, for every class: [`KData::types`] (one [`TensorType`] per
//! output; empty for [`KNode::Absent`]), inferred with
//! [`kiln_ir::infer::infer_op`] from the operands' types and constant values;
//! and [`KData::values`] when the class is a constant, either a table
//! constant or folded through [`kiln_ir::interp::eval_op`] under the size
//! policy of [`crate::const_fold::FoldPolicy`]. A folded single-output class
//! also gets a [`KNode::Const`] node, so extraction can pick the constant.
//!
//! Merging two classes whose types disagree means a rule is wrong: it is not
//! a panic but an entry in [`KAnalysis::errors`], which the optimizer turns
//! into an error after the run. Rules never get that far if they go through
//! [`admit`] (all pattern rules do, and custom appliers return an [`Rhs`]
//! that `admit` checks): every node of a right-hand side is type-checked
//! before any of it is added, and a right-hand side whose type differs from
//! the class it would join is dropped (and counted in
//! [`KAnalysis::rejected`]).

use super::lang::{AttrKey, KNode};
use crate::const_fold::FoldPolicy;
use egg::{Analysis, DidMerge, Id, Symbol};
use kiln_ir::infer::{infer_op, Operand};
use kiln_ir::interp::eval_op;
use kiln_ir::{Attrs, Op, Tensor, TensorType};
use std::collections::HashMap;
use std::sync::Arc;

/// The e-graph type used throughout the optimizer.
pub type KEGraph = egg::EGraph<KNode, KAnalysis>;

/// How the precision phase may change dtypes (read by the precision rules
/// through [`KAnalysis::precision`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PrecisionPolicy {
    /// Keep every dtype as the model has it.
    F32,
    /// Offer f16 alternatives (f32 accumulation) for extraction to choose.
    F16,
    /// Offer bf16 alternatives (f32 accumulation) for extraction to choose.
    BF16,
    /// Offer both; keep a node's lower precision only while the measured
    /// relative error stays within `max_rel_error`.
    Auto { max_rel_error: f64 },
}

/// What the analysis knows about one e-class.
#[derive(Clone, Debug, Default)]
pub struct KData {
    /// One type per output; empty for an omitted operand (or, after a bug
    /// reported in [`KAnalysis::errors`], for a node that did not type-check).
    pub types: Vec<TensorType>,
    /// The value of every output, when the class is constant.
    pub values: Option<Vec<Arc<Tensor>>>,
}

impl KData {
    /// The class's (first) type.
    pub fn ty(&self) -> Option<&TensorType> {
        self.types.first()
    }

    /// The class's (first) constant value.
    pub fn value(&self) -> Option<&Tensor> {
        self.values
            .as_ref()
            .and_then(|v| v.first())
            .map(|t| t.as_ref())
    }
}

/// The analysis state, owned by the e-graph (`egraph.analysis`).
#[derive(Debug, Default)]
pub struct KAnalysis {
    /// Types of the graph's inputs, by input index ([`KNode::Input`]).
    pub input_types: Vec<TensorType>,
    /// The constant table ([`KNode::Const`] indexes it).
    pub consts: Vec<Arc<Tensor>>,
    const_index: HashMap<(TensorType, u64), Vec<u32>>,
    /// How large a folded constant may get.
    pub fold: FoldPolicy,
    /// Whether classes whose operands are all constant are folded.
    pub fold_enabled: bool,
    pub precision: Option<PrecisionPolicy>,
    /// The rule whose right-hand side is being added (set by [`admit`]).
    pub current_rule: Option<Symbol>,
    /// Which rule created each e-node (as it was when it was added; its
    /// children may since have been merged: canonicalise before looking up).
    pub origin: HashMap<KNode, Symbol>,
    /// Right-hand sides refused by admission control, per rule.
    pub rejected: HashMap<Symbol, usize>,
    /// Rule bugs found while merging (type mismatches), and nodes that did
    /// not type-check when added.
    pub errors: Vec<String>,
}

impl KAnalysis {
    pub fn new(input_types: Vec<TensorType>) -> KAnalysis {
        KAnalysis {
            input_types,
            fold_enabled: true,
            ..KAnalysis::default()
        }
    }

    /// Adds `t` to the constant table (or finds an identical one, bit for bit).
    pub fn intern_const(&mut self, t: Tensor) -> u32 {
        let key = (t.ty(), t.sample_hash());
        let slot = self.const_index.entry(key).or_default();
        for &i in slot.iter() {
            if self.consts[i as usize].bit_eq(&t) {
                return i;
            }
        }
        let i = self.consts.len() as u32;
        self.consts.push(Arc::new(t));
        slot.push(i);
        i
    }

    /// The data of a node, given its operands' data (in child order).
    pub fn node_data(&self, node: &KNode, kids: &[&KData]) -> Result<KData, String> {
        match node {
            KNode::Input(i) => match self.input_types.get(*i as usize) {
                Some(t) => Ok(KData {
                    types: vec![t.clone()],
                    values: None,
                }),
                None => Err(format!("graph input {i} does not exist")),
            },
            KNode::Const(i) => match self.consts.get(*i as usize) {
                Some(t) => Ok(KData {
                    types: vec![t.ty()],
                    values: Some(vec![t.clone()]),
                }),
                None => Err(format!("constant {i} does not exist")),
            },
            KNode::Absent => Ok(KData::default()),
            KNode::Proj { index, .. } => {
                let k = kids.first().ok_or("projection without operand")?;
                let i = *index as usize;
                let ty = k.types.get(i).ok_or_else(|| {
                    format!("projection {i} of a class with {} outputs", k.types.len())
                })?;
                let values = k
                    .values
                    .as_ref()
                    .and_then(|v| v.get(i))
                    .map(|t| vec![t.clone()]);
                Ok(KData {
                    types: vec![ty.clone()],
                    values,
                })
            }
            KNode::Op(o) => {
                let attrs = match &o.attrs {
                    AttrKey::Exact(e) => &e.attrs,
                    AttrKey::Any => return Err(format!("{}[*] (a wildcard) is not a node", o.op)),
                };
                self.op_data(o.op, attrs, o.nout as usize, kids)
            }
        }
    }

    fn op_data(
        &self,
        op: Op,
        attrs: &Attrs,
        nout: usize,
        kids: &[&KData],
    ) -> Result<KData, String> {
        let mut operands = Vec::with_capacity(kids.len());
        for (i, k) in kids.iter().enumerate() {
            match k.types.as_slice() {
                [] => operands.push(None),
                [t] => operands.push(Some(Operand {
                    ty: t,
                    value: k.value(),
                })),
                ts => {
                    return Err(format!(
                        "operand {i} is a class with {} outputs (read it through a projection)",
                        ts.len()
                    ))
                }
            }
        }
        let types = infer_op(op, attrs, &operands, nout).map_err(|e| e.to_string())?;
        let values = if self.fold_enabled {
            self.fold(op, attrs, nout, kids, &types)
        } else {
            None
        };
        Ok(KData { types, values })
    }

    /// The node's value when all its operands are constant and the result
    /// is within the fold policy; `None` otherwise (or when evaluation fails).
    fn fold(
        &self,
        op: Op,
        attrs: &Attrs,
        nout: usize,
        kids: &[&KData],
        types: &[TensorType],
    ) -> Option<Vec<Arc<Tensor>>> {
        if op == Op::DequantizeLinear && !self.fold.fold_dequantize {
            return None;
        }
        if op.has_data_dependent_shape() || op.class() == kiln_ir::OpClass::Misc {
            return None;
        }
        let mut args = Vec::with_capacity(kids.len());
        let mut in_elems = 0usize;
        for k in kids {
            if k.types.is_empty() {
                args.push(None);
                continue;
            }
            let t = k.value()?;
            in_elems = in_elems.saturating_add(t.numel());
            args.push(Some(t));
        }
        let out_elems = types
            .iter()
            .try_fold(0usize, |a, t| a.checked_add(t.shape.numel()?))?;
        if out_elems > self.fold.limit(in_elems) {
            return None;
        }
        let outs = eval_op(op, attrs, &args, nout).ok()?;
        (outs.len() == nout).then(|| outs.into_iter().map(Arc::new).collect())
    }
}

/// Whether two classes' output types may be merged: same count, dtype and
/// rank, and each dimension equal or unknown (`?`) on one side.
pub fn types_compatible(a: &[TensorType], b: &[TensorType]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| crate::patch::fits(x, y) || crate::patch::fits(y, x))
}

/// Whether two type lists are provably the same: same count, dtype and rank,
/// and each dimension the same number or the same *named* symbol. An unknown
/// dimension (`?Op`, which inference made up) equals nothing, not even another
/// unknown: two `?Reshape` results may have different sizes. Admission control
/// uses this, so a rewrite is only admitted where the types prove it shape-safe.
pub fn types_provably_equal(a: &[TensorType], b: &[TensorType]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.dtype == y.dtype
                && x.shape.rank() == y.shape.rank()
                && x.shape.0.iter().zip(&y.shape.0).all(|(p, q)| p == q && !crate::patch::is_unknown(p))
        })
}

impl Analysis<KNode> for KAnalysis {
    type Data = KData;

    fn make(egraph: &mut KEGraph, enode: &KNode, _id: Id) -> KData {
        let kids: Vec<&KData> = enode.children().iter().map(|&c| &egraph[c].data).collect();
        let result = egraph.analysis.node_data(enode, &kids);
        let rule = egraph.analysis.current_rule;
        let a = &mut egraph.analysis;
        if let Some(r) = rule {
            a.origin.insert(enode.clone(), r);
        }
        match result {
            Ok(d) => d,
            Err(e) => {
                let by = rule
                    .map(|r| format!(" (added by rule `{r}`)"))
                    .unwrap_or_default();
                a.errors
                    .push(format!("node {enode}{by} does not type-check: {e}"));
                KData::default()
            }
        }
    }

    fn merge(&mut self, a: &mut KData, b: KData) -> DidMerge {
        if !types_compatible(&a.types, &b.types) {
            let show = |t: &[TensorType]| {
                t.iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            self.errors.push(format!(
                "merged classes of different types: ({}) and ({}){}",
                show(&a.types),
                show(&b.types),
                self.current_rule
                    .map(|r| format!(" by rule `{r}`"))
                    .unwrap_or_default()
            ));
            return DidMerge(false, false);
        }
        let mut changed = DidMerge(false, false);
        // Prefer the more precise (fewer unknown dimensions) types.
        let unknowns = |t: &[TensorType]| {
            t.iter()
                .flat_map(|t| &t.shape.0)
                .filter(|d| crate::patch::is_unknown(d))
                .count()
        };
        if unknowns(&b.types) < unknowns(&a.types) {
            a.types = b.types.clone();
            changed.0 = true;
        } else if unknowns(&a.types) < unknowns(&b.types) {
            changed.1 = true;
        }
        match (&a.values, b.values) {
            (None, Some(v)) => {
                a.values = Some(v);
                changed.0 = true;
            }
            (Some(_), None) => changed.1 = true,
            _ => {}
        }
        changed
    }

    fn modify(egraph: &mut KEGraph, id: Id) {
        let data = &egraph[id].data;
        let Some(values) = &data.values else { return };
        if values.len() != 1 {
            return;
        }
        if egraph[id]
            .nodes
            .iter()
            .any(|n| matches!(n, KNode::Const(_)))
        {
            return;
        }
        let t = values[0].as_ref().clone();
        let i = egraph.analysis.intern_const(t);
        let saved = egraph.analysis.current_rule.take();
        let c = egraph.add(KNode::Const(i));
        egraph.analysis.current_rule = saved;
        egraph.union(id, c);
    }
}

/// A right-hand side to add: nodes over local handles, and which existing
/// classes they join. Custom appliers build one; [`admit`] checks and adds it.
///
/// Handles are `Id`s local to the `Rhs` (not e-graph ids): get them from
/// [`Rhs::class`] (an existing e-class) or the node constructors, and pass
/// them as the children of later nodes.
#[derive(Clone, Debug, Default)]
pub struct Rhs {
    items: Vec<RItem>,
    roots: Vec<(Id, Id)>,
}

#[derive(Clone, Debug)]
enum RItem {
    Class(Id),
    Node(KNode),
}

impl Rhs {
    pub fn new() -> Rhs {
        Rhs::default()
    }

    fn push(&mut self, it: RItem) -> Id {
        self.items.push(it);
        Id::from(self.items.len() - 1)
    }

    /// A handle for an existing e-class.
    pub fn class(&mut self, id: Id) -> Id {
        self.push(RItem::Class(id))
    }

    /// A node whose children are handles of this `Rhs`.
    pub fn node(&mut self, n: KNode) -> Id {
        self.push(RItem::Node(n))
    }

    /// A single-output op.
    pub fn op(&mut self, op: Op, attrs: Attrs, args: &[Id]) -> Id {
        self.node(KNode::op(op, attrs, args.to_vec()))
    }

    /// An op with `nout` outputs (read each through [`Rhs::proj`]).
    pub fn op_n(&mut self, op: Op, nout: u8, attrs: Attrs, args: &[Id]) -> Id {
        self.node(KNode::op_n(op, nout, AttrKey::new(attrs), args.to_vec()))
    }

    pub fn proj(&mut self, index: u32, of: Id) -> Id {
        self.node(KNode::proj(index, of))
    }

    pub fn absent(&mut self) -> Id {
        self.node(KNode::Absent)
    }

    /// A new constant (interned in the e-graph's table now, even if the
    /// right-hand side is later refused: the table only grows).
    pub fn konst(&mut self, eg: &mut KEGraph, t: Tensor) -> Id {
        let i = eg.analysis.intern_const(t);
        self.node(KNode::Const(i))
    }

    /// Says that handle `local` is equal to the existing class `class`.
    pub fn union_with(&mut self, class: Id, local: Id) {
        self.roots.push((class, local));
    }

    /// The right-hand side of a pattern rule for one match.
    pub fn from_pattern(
        ast: &egg::PatternAst<KNode>,
        subst: &egg::Subst,
        matched: Id,
    ) -> Option<Rhs> {
        let mut rhs = Rhs::new();
        for n in ast.as_ref() {
            match n {
                egg::ENodeOrVar::Var(v) => {
                    let id = *subst.get(*v)?;
                    rhs.class(id);
                }
                egg::ENodeOrVar::ENode(n) => {
                    rhs.node(n.clone());
                }
            }
        }
        let root = Id::from(rhs.items.len().checked_sub(1)?);
        rhs.union_with(matched, root);
        Some(rhs)
    }
}

/// Why [`admit`] refused a right-hand side.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// A node did not type-check (its message).
    IllTyped(String),
    /// The result's type differs from the class it would join.
    TypeMismatch {
        want: Vec<TensorType>,
        got: Vec<TensorType>,
    },
    /// A handle or class that does not exist.
    Malformed(String),
}

/// Admission control: type-checks every node of `rhs` (with constant
/// folding, so shape operands are known), then, only if every root's type
/// matches its class's, adds the nodes (recording `rule` as their origin)
/// and unions the roots. Returns the classes that changed.
pub fn admit(eg: &mut KEGraph, rhs: &Rhs, rule: Symbol) -> Result<Vec<Id>, Refusal> {
    // 1. type-check without adding anything
    let mut data: Vec<KData> = Vec::with_capacity(rhs.items.len());
    for (i, it) in rhs.items.iter().enumerate() {
        let d = match it {
            RItem::Class(c) => eg[*c].data.clone(),
            RItem::Node(n) => {
                let mut kids = Vec::with_capacity(n.children().len());
                for &k in n.children() {
                    if usize::from(k) >= i {
                        return Err(Refusal::Malformed(format!(
                            "handle {k} used before it is defined"
                        )));
                    }
                    kids.push(&data[usize::from(k)]);
                }
                eg.analysis.node_data(n, &kids).map_err(Refusal::IllTyped)?
            }
        };
        data.push(d);
    }
    for &(class, local) in &rhs.roots {
        let got = &data
            .get(usize::from(local))
            .ok_or_else(|| Refusal::Malformed("bad root".into()))?
            .types;
        let want = &eg[class].data.types;
        if !types_provably_equal(want, got) {
            return Err(Refusal::TypeMismatch {
                want: want.clone(),
                got: got.clone(),
            });
        }
    }
    // 2. add and union
    let saved = eg.analysis.current_rule.replace(rule);
    let mut ids: Vec<Id> = Vec::with_capacity(rhs.items.len());
    for it in &rhs.items {
        let id = match it {
            RItem::Class(c) => *c,
            RItem::Node(n) => {
                let mut n = n.clone();
                for k in n.children_mut() {
                    *k = ids[usize::from(*k)];
                }
                eg.add(n)
            }
        };
        ids.push(id);
    }
    let mut changed = Vec::new();
    for &(class, local) in &rhs.roots {
        let id = ids[usize::from(local)];
        if eg.union(class, id) {
            changed.push(eg.find(class));
        }
    }
    eg.analysis.current_rule = saved;
    Ok(changed)
}

use egg::Language as _;

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Attr, DType};

    fn f32s(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, shape.to_vec())
    }

    #[test]
    fn types_and_constants_are_inferred_and_folded() {
        let mut eg = KEGraph::new(KAnalysis::new(vec![f32s(&[2, 3])]));
        let x = eg.add(KNode::Input(0));
        let c = eg
            .analysis
            .intern_const(Tensor::from_vec(vec![3], vec![1f32, 2.0, 3.0]).unwrap());
        let c = eg.add(KNode::Const(c));
        let add = eg.add(KNode::op(Op::Add, Attrs::new(), vec![x, c]));
        assert_eq!(eg[add].data.types, vec![f32s(&[2, 3])]);
        assert!(eg[add].data.values.is_none());
        let neg = eg.add(KNode::op(Op::Neg, Attrs::new(), vec![c]));
        eg.rebuild();
        let v = eg[neg].data.value().unwrap();
        assert_eq!(v.as_slice::<f32>().unwrap(), &[-1.0, -2.0, -3.0]);
        // the folded class holds a Const node for extraction
        assert!(eg[neg].nodes.iter().any(|n| matches!(n, KNode::Const(_))));
        assert!(eg.analysis.errors.is_empty());
    }

    #[test]
    fn admission_refuses_ill_typed_and_mismatched_right_hand_sides() {
        let mut eg = KEGraph::new(KAnalysis::new(vec![f32s(&[2, 3]), f32s(&[3, 2])]));
        let x = eg.add(KNode::Input(0));
        let y = eg.add(KNode::Input(1));
        let relu = eg.add(KNode::op(Op::Relu, Attrs::new(), vec![x]));
        let before = eg.total_number_of_nodes();
        // Relu(x) == y: wrong shape
        let mut rhs = Rhs::new();
        let h = rhs.class(y);
        rhs.union_with(relu, h);
        assert!(matches!(
            admit(&mut eg, &rhs, Symbol::from("t")),
            Err(Refusal::TypeMismatch { .. })
        ));
        // Relu(x) == Add(x, y): does not broadcast
        let mut rhs = Rhs::new();
        let (hx, hy) = (rhs.class(x), rhs.class(y));
        let a = rhs.op(Op::Add, Attrs::new(), &[hx, hy]);
        rhs.union_with(relu, a);
        assert!(matches!(
            admit(&mut eg, &rhs, Symbol::from("t")),
            Err(Refusal::IllTyped(_))
        ));
        assert_eq!(eg.total_number_of_nodes(), before);
        // Relu(x) == Transpose(Transpose(Relu x)): fine, and recorded
        let mut rhs = Rhs::new();
        let r = rhs.class(relu);
        let perm = Attrs::new().with("perm", Attr::Ints(vec![1, 0]));
        let t1 = rhs.op(Op::Transpose, perm.clone(), &[r]);
        let t2 = rhs.op(Op::Transpose, perm, &[t1]);
        rhs.union_with(relu, t2);
        assert!(admit(&mut eg, &rhs, Symbol::from("tt")).is_ok());
        assert_eq!(
            eg.analysis
                .origin
                .values()
                .filter(|r| r.as_str() == "tt")
                .count(),
            2
        );
        assert!(eg.analysis.errors.is_empty());
    }

    #[test]
    fn merging_different_types_is_reported_not_panicking() {
        let mut eg = KEGraph::new(KAnalysis::new(vec![f32s(&[2, 3]), f32s(&[3, 2])]));
        let x = eg.add(KNode::Input(0));
        let y = eg.add(KNode::Input(1));
        eg.union(x, y);
        eg.rebuild();
        assert_eq!(eg.analysis.errors.len(), 1, "{:?}", eg.analysis.errors);
    }
}
