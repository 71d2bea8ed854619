//! The graph IR: typed values in an arena, nodes in topological order.
//!
//! A [`Graph`] owns every value it mentions. A value ([`ValueId`], printed
//! `%N`) is defined exactly once: as a graph input, as a constant, or as an
//! output of one node. Nodes are stored in a valid execution order. Every node
//! carries its provenance: the name of the ONNX node (or text-IR line) it came
//! from. See [`crate::verify`] for the full list of invariants.

use crate::{Attrs, Op, Tensor, TensorType};
use std::collections::BTreeMap;
use std::fmt;

/// Index of a value in [`Graph::values`]; printed as `%N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// What a value is, apart from how it is defined.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    /// The name it had in the source model, if any (ONNX value names).
    pub name: Option<String>,
    pub ty: TensorType,
}

/// One operator application.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub attrs: Attrs,
    /// Operands in the op's ONNX positions; `None` is an omitted optional input.
    pub inputs: Vec<Option<ValueId>>,
    pub outputs: Vec<ValueId>,
    /// Provenance: the source node's name (ONNX `NodeProto.name`, or a
    /// generated `OpType_N` when the source had none).
    pub name: String,
}

/// A tensor program.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub name: String,
    pub values: Vec<ValueInfo>,
    /// Runtime inputs, in order.
    pub inputs: Vec<ValueId>,
    /// Constant values (ONNX initializers and Constant nodes).
    pub consts: BTreeMap<ValueId, Tensor>,
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
    /// Results, in order. A value may appear more than once, and may be an
    /// input or a constant.
    pub outputs: Vec<ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph { name: name.into(), ..Graph::default() }
    }

    /// Adds a value with no definition yet; the caller must define it.
    pub fn add_value(&mut self, name: Option<String>, ty: TensorType) -> ValueId {
        let id = ValueId(self.values.len() as u32);
        self.values.push(ValueInfo { name, ty });
        id
    }

    /// Adds a runtime input.
    pub fn add_input(&mut self, name: impl Into<String>, ty: TensorType) -> ValueId {
        let id = self.add_value(Some(name.into()), ty);
        self.inputs.push(id);
        id
    }

    /// Adds a constant; its type is the tensor's.
    pub fn add_const(&mut self, name: Option<String>, t: Tensor) -> ValueId {
        let id = self.add_value(name, t.ty());
        self.consts.insert(id, t);
        id
    }

    /// Appends a node whose output types are already known.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        attrs: Attrs,
        inputs: Vec<Option<ValueId>>,
        output_types: Vec<(Option<String>, TensorType)>,
    ) -> Vec<ValueId> {
        let outputs: Vec<ValueId> =
            output_types.into_iter().map(|(n, ty)| self.add_value(n, ty)).collect();
        self.nodes.push(Node { op, attrs, inputs, outputs: outputs.clone(), name: name.into() });
        outputs
    }

    pub fn value(&self, v: ValueId) -> &ValueInfo {
        &self.values[v.index()]
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        &self.values[v.index()].ty
    }

    /// The value's source name, or its `%N` form.
    pub fn display_name(&self, v: ValueId) -> String {
        match self.values.get(v.index()).and_then(|i| i.name.clone()) {
            Some(n) => n,
            None => v.to_string(),
        }
    }

    /// Number of scalar parameters held in constants.
    pub fn param_count(&self) -> usize {
        self.consts.values().map(Tensor::numel).sum()
    }

    /// How many nodes of each op the graph has.
    pub fn op_histogram(&self) -> BTreeMap<Op, usize> {
        let mut h = BTreeMap::new();
        for n in &self.nodes {
            *h.entry(n.op).or_insert(0) += 1;
        }
        h
    }
}
