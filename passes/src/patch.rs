//! The one way passes edit a graph: an [`Editor`] records edits against a
//! [`Graph`] and applies them all at once in [`Editor::finish`], which ends
//! with [`compact`].
//!
//! Edits:
//! - [`Editor::replace_uses`]: every node operand `old` becomes `new`.
//!   Graph outputs are *not* redirected: a graph output's value is its
//!   identity (its name, its place in the output list), so it keeps it.
//! - [`Editor::replace_node`]: a node's outputs are replaced by other values
//!   and the node is deleted. An output that is also a graph output keeps its
//!   value, now defined by `Identity(new)` in the node's place, so the graph's
//!   output names and positions never change, even when the replacement is a
//!   constant or a graph input.
//! - [`Editor::fold_node`]: a node's outputs become constants with the given
//!   tensors. The values keep their ids and names (so a folded graph output
//!   stays the same output); the declared types are checked against the
//!   tensors and `?` dimensions are filled in.
//! - [`Editor::delete_node`], [`Editor::add_const`], [`Editor::set_type`].
//!
//! Until [`Editor::finish`] the graph itself is unchanged (apart from values
//! that [`Editor::add_const`] appends, which are valid, unused constants), so
//! a pass that fails half-way leaves the graph as it was. While editing, a
//! pass sees the edited graph through the editor: [`Editor::inputs`] gives a
//! node's operands with replacements applied, [`Editor::konst`] and
//! [`Editor::ty`] include folded values and new types.
//!
//! Requires: a graph that satisfies [`kiln_ir::verify`]'s invariants.
//! Establishes (after `finish`): those invariants again, provided each
//! replacement value is defined before every use it takes over (the caller's
//! duty: replacing a value by a constant, an input, or an output of an
//! earlier node always is); values are numbered densely `0..N` in their old
//! order, and nodes keep their relative order.

use crate::error::{PassError, Result};
use kiln_ir::infer::Operand;
use kiln_ir::{Attrs, Dim, Graph, Node, Op, Tensor, TensorType, ValueId};
use std::collections::{HashMap, HashSet};

/// Pending edits to one graph, made by one pass (named in errors).
pub struct Editor<'g> {
    g: &'g mut Graph,
    pass: &'static str,
    deleted: Vec<bool>,
    /// Operand replacements, `old -> new` (chains are resolved at finish).
    subst: HashMap<ValueId, ValueId>,
    /// Values that become constants.
    folded: HashMap<ValueId, Tensor>,
    /// New declared types.
    retyped: HashMap<ValueId, TensorType>,
    /// Nodes to insert in place of (before) node `i`: Identity nodes that
    /// keep graph outputs defined.
    inserts: Vec<(usize, Node)>,
    graph_outputs: HashSet<ValueId>,
    edits: usize,
}

impl<'g> Editor<'g> {
    /// Starts editing `g` on behalf of `pass`.
    pub fn new(g: &'g mut Graph, pass: &'static str) -> Editor<'g> {
        let deleted = vec![false; g.nodes.len()];
        let graph_outputs = g.outputs.iter().copied().collect();
        Editor {
            g,
            pass,
            deleted,
            subst: HashMap::new(),
            folded: HashMap::new(),
            retyped: HashMap::new(),
            inserts: Vec::new(),
            graph_outputs,
            edits: 0,
        }
    }

    /// The graph as it was before these edits (plus added constants).
    pub fn graph(&self) -> &Graph {
        self.g
    }

    /// Number of nodes in the original order (deleted ones included).
    pub fn node_count(&self) -> usize {
        self.deleted.len()
    }

    /// Node `i` as it was (its operands without replacements; see [`Editor::inputs`]).
    pub fn node(&self, i: usize) -> &Node {
        &self.g.nodes[i]
    }

    pub fn is_deleted(&self, i: usize) -> bool {
        self.deleted.get(i).copied().unwrap_or(true)
    }

    /// Edits made so far (nodes deleted, folded or replaced, operands
    /// redirected, types changed).
    pub fn edits(&self) -> usize {
        self.edits
    }

    /// The value that `v` stands for after the replacements so far.
    pub fn resolve(&self, mut v: ValueId) -> ValueId {
        // Chains are acyclic (a replacement always points at a value that is
        // not itself replaced), so this ends; the bound is a second guard.
        for _ in 0..=self.subst.len() {
            match self.subst.get(&v) {
                Some(&w) => v = w,
                None => break,
            }
        }
        v
    }

    /// Node `i`'s operands with replacements applied.
    pub fn inputs(&self, i: usize) -> Vec<Option<ValueId>> {
        self.g.nodes[i]
            .inputs
            .iter()
            .map(|o| o.map(|v| self.resolve(v)))
            .collect()
    }

    /// `v`'s value if it is a constant (or has been folded into one).
    pub fn konst(&self, v: ValueId) -> Option<&Tensor> {
        self.folded.get(&v).or_else(|| self.g.consts.get(&v))
    }

    /// What inference knows about each of `inputs`: its current type and, for
    /// a constant, its value.
    pub fn operands(&self, inputs: &[Option<ValueId>]) -> Vec<Option<Operand<'_>>> {
        inputs.iter().map(|o| o.map(|v| Operand { ty: self.ty(v), value: self.konst(v) })).collect()
    }

    /// `v`'s type, with folding and [`Editor::set_type`] applied.
    pub fn ty(&self, v: ValueId) -> &TensorType {
        if let Some(t) = self.retyped.get(&v) {
            return t;
        }
        &self.g.values[v.index()].ty
    }

    pub fn is_graph_output(&self, v: ValueId) -> bool {
        self.graph_outputs.contains(&v)
    }

    fn check_value(&self, v: ValueId) -> Result<()> {
        if v.index() < self.g.values.len() {
            Ok(())
        } else {
            Err(PassError::graph(
                self.pass,
                format!(
                    "{v} does not exist (the graph has {} values)",
                    self.g.values.len()
                ),
            ))
        }
    }

    fn check_node(&self, i: usize) -> Result<&Node> {
        match (self.g.nodes.get(i), self.deleted.get(i)) {
            (Some(n), Some(false)) => Ok(n),
            (Some(n), _) => Err(PassError::node(self.pass, n, "edited after it was deleted")),
            (None, _) => Err(PassError::graph(
                self.pass,
                format!(
                    "node {i} does not exist (the graph has {} nodes)",
                    self.g.nodes.len()
                ),
            )),
        }
    }

    /// Adds a constant (unused until something refers to it).
    pub fn add_const(&mut self, name: Option<String>, t: Tensor) -> ValueId {
        self.g.add_const(name, t)
    }

    /// Every node operand `old` becomes `new` (graph outputs are not
    /// redirected; see the module documentation). Both must have the same
    /// dtype and rank. Replacing a value by itself, or one that no node uses
    /// (e.g. one already replaced), does nothing and is not counted as an
    /// edit; a later replacement of `new` carries `old`'s former uses along.
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) -> Result<()> {
        if self.redirect(old, new)? {
            self.edits += 1;
        }
        Ok(())
    }

    /// [`Editor::replace_uses`] without counting an edit; whether anything changed.
    fn redirect(&mut self, old: ValueId, new: ValueId) -> Result<bool> {
        self.check_value(old)?;
        self.check_value(new)?;
        // An already replaced `old` has no uses left to move.
        let new = self.resolve(new);
        if old == new || self.subst.contains_key(&old) {
            return Ok(false);
        }
        let (a, b) = (self.ty(old), self.ty(new));
        if a.dtype != b.dtype || a.shape.rank() != b.shape.rank() {
            return Err(PassError::graph(
                self.pass,
                format!("cannot replace {old} ({a}) by {new} ({b}): the types differ"),
            ));
        }
        if !self.has_uses(old) {
            return Ok(false);
        }
        self.subst.insert(old, new);
        Ok(true)
    }

    /// Whether a remaining node (or an inserted Identity) uses `v`, after replacements.
    fn has_uses(&self, v: ValueId) -> bool {
        let live = self
            .g
            .nodes
            .iter()
            .zip(&self.deleted)
            .filter(|(_, &d)| !d)
            .map(|(n, _)| n);
        live.chain(self.inserts.iter().map(|(_, n)| n))
            .flat_map(|n| n.inputs.iter().flatten())
            .any(|&u| self.resolve(u) == v)
    }

    /// Replaces node `i`'s outputs by `new` (one value per output) and
    /// deletes it. An output that is a graph output stays defined, by an
    /// `Identity` of its replacement in the node's place, named like the node.
    pub fn replace_node(&mut self, i: usize, new: &[ValueId]) -> Result<()> {
        let n = self.check_node(i)?;
        if new.len() != n.outputs.len() {
            return Err(PassError::node(
                self.pass,
                n,
                format!(
                    "{} replacements given for {} outputs",
                    new.len(),
                    n.outputs.len()
                ),
            ));
        }
        let outputs = n.outputs.clone();
        let name = n.name.clone();
        for (&old, &rep) in outputs.iter().zip(new) {
            if self.resolve(rep) == old {
                let n = &self.g.nodes[i];
                return Err(PassError::node(
                    self.pass,
                    n,
                    format!("{old} cannot replace itself"),
                ));
            }
            self.redirect(old, rep)?;
            if self.is_graph_output(old) {
                let id = Node {
                    op: Op::Identity,
                    attrs: Attrs::new(),
                    inputs: vec![Some(rep)],
                    outputs: vec![old],
                    name: name.clone(),
                };
                self.inserts.push((i, id));
            }
        }
        self.deleted[i] = true;
        self.edits += 1;
        Ok(())
    }

    /// Node `i`'s outputs become constants holding `values` (one per
    /// output), keeping their ids and names; the node is deleted. Each
    /// tensor must have its value's declared type, where a `?` dimension
    /// (unknown to inference) matches any size and is filled in; anything
    /// else is an error naming the node.
    pub fn fold_node(&mut self, i: usize, values: Vec<Tensor>) -> Result<()> {
        let n = self.check_node(i)?;
        if values.len() != n.outputs.len() {
            return Err(PassError::node(
                self.pass,
                n,
                format!(
                    "{} values given for {} outputs",
                    values.len(),
                    n.outputs.len()
                ),
            ));
        }
        for (k, (&v, t)) in n.outputs.iter().zip(&values).enumerate() {
            let declared = self.ty(v);
            if !fits(declared, &t.ty()) {
                return Err(PassError::node(
                    self.pass,
                    n,
                    format!(
                        "output {k} {v} is declared {declared} but evaluates to {}",
                        t.ty()
                    ),
                ));
            }
        }
        let outputs = n.outputs.clone();
        for (v, t) in outputs.into_iter().zip(values) {
            self.retyped.insert(v, t.ty());
            self.folded.insert(v, t);
        }
        self.deleted[i] = true;
        self.edits += 1;
        Ok(())
    }

    /// Deletes node `i`. Its outputs must be unused by the remaining nodes
    /// and not be graph outputs (DCE's situation); [`Editor::finish`] checks.
    pub fn delete_node(&mut self, i: usize) -> Result<()> {
        self.check_node(i)?;
        self.deleted[i] = true;
        self.edits += 1;
        Ok(())
    }

    /// Declares `v`'s type to be `ty` (for inference passes that learn more).
    /// The dtype and rank may not change.
    pub fn set_type(&mut self, v: ValueId, ty: TensorType) -> Result<()> {
        self.check_value(v)?;
        let old = self.ty(v);
        if *old == ty {
            return Ok(());
        }
        if old.dtype != ty.dtype || old.shape.rank() != ty.shape.rank() {
            return Err(PassError::graph(
                self.pass,
                format!("cannot retype {v} from {old} to {ty}: dtype or rank differs"),
            ));
        }
        if self.g.consts.contains_key(&v) || self.folded.contains_key(&v) {
            return Err(PassError::graph(
                self.pass,
                format!("cannot retype constant {v}"),
            ));
        }
        self.retyped.insert(v, ty);
        self.edits += 1;
        Ok(())
    }

    /// Applies every edit, then [`compact`]s the graph. Returns the number
    /// of edits. Fails (leaving the graph unchanged) if a deleted node's
    /// output is still used, by a node or as a graph output, without having
    /// become a constant.
    pub fn finish(self) -> Result<usize> {
        let Editor {
            g,
            pass,
            deleted,
            subst,
            folded,
            retyped,
            mut inserts,
            edits,
            ..
        } = self;
        let resolve = |mut v: ValueId| {
            for _ in 0..=subst.len() {
                match subst.get(&v) {
                    Some(&w) => v = w,
                    None => break,
                }
            }
            v
        };
        // Values that lose their definition: outputs of deleted nodes that
        // were not folded and are not redefined by an inserted Identity.
        let redefined: HashSet<ValueId> = inserts
            .iter()
            .flat_map(|(_, n)| n.outputs.iter().copied())
            .collect();
        let undefined: HashSet<ValueId> = g
            .nodes
            .iter()
            .zip(&deleted)
            .filter(|(_, &d)| d)
            .flat_map(|(n, _)| n.outputs.iter().copied())
            .filter(|v| !folded.contains_key(v) && !redefined.contains(v))
            .collect();
        let live = g
            .nodes
            .iter()
            .zip(&deleted)
            .filter(|(_, &d)| !d)
            .map(|(n, _)| n);
        for n in live.chain(inserts.iter().map(|(_, n)| n)) {
            if let Some(v) = n
                .inputs
                .iter()
                .flatten()
                .map(|&v| resolve(v))
                .find(|v| undefined.contains(v))
            {
                return Err(PassError::node(
                    pass,
                    n,
                    format!("uses {v}, whose defining node was deleted"),
                ));
            }
        }
        if let Some(v) = g.outputs.iter().find(|v| undefined.contains(v)) {
            return Err(PassError::graph(
                pass,
                format!("graph output {} lost its defining node", g.display_name(*v)),
            ));
        }

        for (v, ty) in retyped {
            g.values[v.index()].ty = ty;
        }
        g.consts.extend(folded);
        inserts.sort_by_key(|(i, _)| *i);
        let mut inserts = inserts.into_iter().peekable();
        let old_nodes = std::mem::take(&mut g.nodes);
        let mut nodes = Vec::with_capacity(old_nodes.len());
        for (i, (n, d)) in old_nodes.into_iter().zip(deleted).enumerate() {
            while let Some((_, id)) = inserts.next_if(|(j, _)| *j == i) {
                nodes.push(id);
            }
            if !d {
                nodes.push(n);
            }
        }
        nodes.extend(inserts.map(|(_, n)| n));
        for n in &mut nodes {
            for v in n.inputs.iter_mut().flatten() {
                *v = resolve(*v);
            }
        }
        g.nodes = nodes;
        compact(g).map_err(|source| PassError::Graph { pass, source })?;
        Ok(edits)
    }
}

/// Whether a value of type `actual` (static) may stand where `declared` is
/// declared: same dtype and rank, each dimension equal or a `?` unknown.
pub fn fits(declared: &TensorType, actual: &TensorType) -> bool {
    declared.dtype == actual.dtype
        && declared.shape.rank() == actual.shape.rank()
        && declared
            .shape
            .0
            .iter()
            .zip(&actual.shape.0)
            .all(|(d, a)| d == a || is_unknown(d))
}

/// A dimension inference could not know (a symbol starting with `?`).
pub fn is_unknown(d: &Dim) -> bool {
    matches!(d, Dim::Sym(s) if s.starts_with('?'))
}

/// What [`compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    pub values_before: usize,
    pub values_after: usize,
    pub consts_dropped: usize,
}

/// Drops every value nothing refers to (constants no node uses and no graph
/// output lists, outputs of deleted nodes) and renumbers the rest densely
/// `0..N`, keeping their order. Graph inputs are always kept (they are the
/// interface), as are all outputs of the remaining nodes. [`Graph::values`],
/// [`Graph::consts`], the inputs, the nodes' operands and results and the
/// graph outputs are rewritten consistently; nodes keep their order.
///
/// Fails, changing nothing, if the graph mentions a value id beyond
/// `values.len()` (which [`kiln_ir::verify`] reports too).
pub fn compact(g: &mut Graph) -> kiln_ir::Result<Compacted> {
    let n = g.values.len();
    let mut keep = vec![false; n];
    let mut bad = None;
    {
        let mut mark = |v: ValueId| match keep.get_mut(v.index()) {
            Some(k) => *k = true,
            None => bad = Some(v),
        };
        g.inputs.iter().for_each(|&v| mark(v));
        g.outputs.iter().for_each(|&v| mark(v));
        for node in &g.nodes {
            node.inputs.iter().flatten().for_each(|&v| mark(v));
            node.outputs.iter().for_each(|&v| mark(v));
        }
    }
    if let Some(v) = bad.or_else(|| g.consts.keys().find(|v| v.index() >= n).copied()) {
        return Err(kiln_ir::Error::invalid(format!(
            "compact: graph `{}` mentions {v}, but it has {n} values",
            g.name
        )));
    }
    let mut map = vec![ValueId(u32::MAX); n];
    let mut next = 0u32;
    for (i, &k) in keep.iter().enumerate() {
        if k {
            map[i] = ValueId(next);
            next += 1;
        }
    }
    let before = n;
    let consts_before = g.consts.len();
    let m = |v: &mut ValueId| *v = map[v.index()];
    g.inputs.iter_mut().for_each(m);
    g.outputs.iter_mut().for_each(m);
    for node in &mut g.nodes {
        node.inputs.iter_mut().flatten().for_each(m);
        node.outputs.iter_mut().for_each(m);
    }
    g.consts = std::mem::take(&mut g.consts)
        .into_iter()
        .filter(|(v, _)| keep[v.index()])
        .map(|(v, t)| (map[v.index()], t))
        .collect();
    let values = std::mem::take(&mut g.values);
    g.values = values
        .into_iter()
        .zip(&keep)
        .filter(|(_, &k)| k)
        .map(|(v, _)| v)
        .collect();
    Ok(Compacted {
        values_before: before,
        values_after: g.values.len(),
        consts_dropped: consts_before - g.consts.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use kiln_ir::DType;

    const SRC: &str = r#"
graph @g {
  in %0 "x": f32[3]
  const %1 "c": f32[3] = [1, 2, 3]
  %2 "r": f32[3] = Relu(%0)
  %3 "n": f32[3] = Neg(%2)
  %4 "s": f32[3] = Add(%3, %1)
  out %4, %3, %2
}"#;

    #[test]
    fn replacing_a_graph_output_keeps_its_name_and_place() {
        let g = parse(SRC);
        let mut h = g.clone();
        let mut ed = Editor::new(&mut h, "test");
        // r := x (an input), n := c (a constant): all three are graph outputs
        ed.replace_node(0, &[ValueId(0)]).unwrap();
        ed.replace_node(1, &[ValueId(1)]).unwrap();
        assert_eq!(ed.inputs(2), vec![Some(ValueId(1)), Some(ValueId(1))]);
        assert_eq!(ed.finish().unwrap(), 2);
        kiln_ir::verify::verify(&h).unwrap();
        let text = h.to_string();
        assert!(text.contains("\"r\": f32[3] = Identity(%0) @"), "{text}");
        assert!(text.contains("\"n\": f32[3] = Identity(%1) @"), "{text}");
        assert!(text.contains("\"s\": f32[3] = Add(%1, %1)"), "{text}");
        let names: Vec<String> = h.outputs.iter().map(|&v| h.display_name(v)).collect();
        assert_eq!(names, ["s", "n", "r"]);
        // Identity nodes keep the replaced nodes' provenance and place
        assert_eq!(h.nodes[0].name, g.nodes[0].name);
        let x = Tensor::from_vec(vec![3], vec![-1.0f32, 0.5, 2.0]).unwrap();
        let out = kiln_ir::interp::run(&h, &[x]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2.0, 4.0, 6.0]);
        assert_eq!(out[2].as_slice::<f32>().unwrap(), &[-1.0, 0.5, 2.0]);
    }

    #[test]
    fn replacements_chain_and_do_not_cycle() {
        let mut h = parse(SRC);
        let mut ed = Editor::new(&mut h, "test");
        ed.replace_uses(ValueId(2), ValueId(0)).unwrap(); // Neg(r) -> Neg(x)
        ed.replace_uses(ValueId(2), ValueId(3)).unwrap(); // r has no uses left: nothing
        ed.replace_uses(ValueId(0), ValueId(0)).unwrap(); // itself: nothing
        assert_eq!(ed.edits(), 1);
        assert_eq!(ed.inputs(1), vec![Some(ValueId(0))]);
        assert_eq!(ed.resolve(ValueId(2)), ValueId(0));
        ed.finish().unwrap();
        assert!(h.to_string().contains("\"n\": f32[3] = Neg(%0)"), "{h}");
    }

    #[test]
    fn bad_edits_are_errors_and_leave_the_graph_unchanged() {
        let g = parse(SRC);
        let mut h = g.clone();
        let mut ed = Editor::new(&mut h, "test");
        let i64c = ed.add_const(None, Tensor::scalar(1i64));
        let e = ed.replace_uses(ValueId(2), i64c).unwrap_err().to_string();
        assert!(
            e.starts_with("test: cannot replace %2 (f32[3]) by %5 (i64[])"),
            "{e}"
        );
        let e = ed
            .replace_uses(ValueId(2), ValueId(99))
            .unwrap_err()
            .to_string();
        assert!(e.contains("%99 does not exist"), "{e}");
        let e = ed
            .fold_node(0, vec![Tensor::scalar(1.0f32)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is declared f32[3] but evaluates to f32[]"),
            "{e}"
        );
        ed.delete_node(0).unwrap();
        let e = ed.delete_node(0).unwrap_err().to_string();
        assert!(e.contains("edited after it was deleted"), "{e}");
        // deleting a node whose output is still used fails at finish
        let e = ed.finish().unwrap_err().to_string();
        assert!(
            e.contains("uses %2, whose defining node was deleted"),
            "{e}"
        );
        // only the (unused) added constant remains of the failed edit
        assert_eq!(h.nodes, g.nodes);
        compact(&mut h).unwrap();
        assert_eq!(h, g);
    }

    #[test]
    fn folding_keeps_ids_and_fills_unknown_dims() {
        let src = r#"
graph @g {
  const %0: i64[2] = [2, 1]
  %1 "shape_out": f32[?ConstantOfShape,1] = ConstantOfShape(%0)
  %2: f32[?ConstantOfShape,1] = Neg(%1)
  out %2, %1
}"#;
        let mut h = parse(src);
        let mut ed = Editor::new(&mut h, "test");
        ed.fold_node(0, vec![Tensor::zeros(DType::F32, vec![2, 1])])
            .unwrap();
        assert_eq!(ed.ty(ValueId(1)).to_string(), "f32[2,1]");
        assert!(ed.konst(ValueId(1)).is_some());
        ed.finish().unwrap();
        kiln_ir::verify::verify(&h).unwrap();
        assert_eq!(h.display_name(h.outputs[1]), "shape_out");
        assert!(h.consts.contains_key(&h.outputs[1]));
        // %0 is no longer used: compacted away
        assert_eq!(h.values.len(), 2);
    }

    #[test]
    fn compact_renumbers_densely_in_order() {
        let src = r#"
graph @g {
  in %0 "x": f32[2]
  const %1 "unused": f32[2] = [0, 0]
  const %2 "w": f32[2] = [1, 2]
  %3: f32[2], %4: bool[2] = Dropout(%0)
  %5: f32[2] = Mul(%3, %2)
  out %5, %2
}"#;
        let g = parse(src);
        let mut h = g.clone();
        let c = compact(&mut h).unwrap();
        assert_eq!(
            c,
            Compacted {
                values_before: 6,
                values_after: 5,
                consts_dropped: 1
            }
        );
        kiln_ir::verify::verify(&h).unwrap();
        let text = h.to_string();
        assert!(text.contains("const %1 \"w\""), "{text}");
        assert!(
            text.contains("%2: f32[2], %3: bool[2] = Dropout(%0)"),
            "{text}"
        );
        assert!(text.contains("%4: f32[2] = Mul(%2, %1)"), "{text}");
        assert!(text.contains("out %4, %1"), "{text}");
        assert_same_outputs(&g, &h);

        h.outputs.push(ValueId(77));
        let before = h.clone();
        assert!(compact(&mut h)
            .unwrap_err()
            .to_string()
            .contains("mentions %77"));
        assert_eq!(h, before);
    }
}
