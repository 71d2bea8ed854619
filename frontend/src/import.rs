//! ONNX `ModelProto` -> kiln [`Graph`].
//!
//! The import, in order:
//! 1. decode the protobuf and read the default domain's opset (7..=28);
//! 2. initializers become constants; graph inputs without an initializer
//!    become runtime inputs (an input that has one is a constant);
//! 3. nodes, in topological order (ONNX requires it; a file that breaks the
//!    rule is sorted stably rather than rejected): `Constant` nodes become
//!    constants, every other node is checked (domain, op) and handed to
//!    [`crate::normalize`], which rewrites it to the newest opset's form and
//!    emits it through [`Importer::emit`];
//! 4. [`Importer::emit`] types each node with [`kiln_ir::infer::infer_op`]
//!    and, when all its operands' values are known and small, evaluates it
//!    with [`kiln_ir::interp::eval_op`] so that later nodes see the value
//!    (Shape -> Gather -> Concat -> Reshape chains get static shapes). Known
//!    values are not added to the graph: it stays faithful to the model;
//! 5. graph outputs keep their ONNX names, and their declared types must agree
//!    with inference (dtype, rank and fixed dimensions).

use crate::attrs;
use crate::error::{FrontendError, Result};
use crate::normalize;
use crate::proto::onnx::{ModelProto, NodeProto};
use crate::tensor::{tensor_from_proto, tensor_label};
use crate::types;
use crate::{MAX_OPSET, MIN_OPSET};
use kiln_ir::infer::{infer_op, Operand};
use kiln_ir::interp::eval_op;
use kiln_ir::{Attr, Attrs, Graph, Op, OpClass, Tensor, TensorType, ValueId};
use prost::Message;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::path::Path;

/// Values with at most this many elements are propagated through nodes
/// whose operands are all known.
const FOLD_LIMIT: usize = 4096;

/// How to import a model.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Values for named symbolic dimensions of the graph inputs (ONNX
    /// `dim_param`, or the generated `<input>_dim<i>` name of a dimension with
    /// neither value nor name). Binding them makes every shape that depends on
    /// them static. Naming a dimension no input has is an error.
    pub dims: BTreeMap<String, usize>,
}

/// Imports an ONNX model file. External data is read relative to its directory.
pub fn import_file(path: &Path) -> Result<Graph> {
    import_file_with(path, &ImportOptions::default())
}

/// [`import_file`] with options.
pub fn import_file_with(path: &Path, opts: &ImportOptions) -> Result<Graph> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io {
        file: file.clone(),
        source,
    })?;
    import_bytes_with(&bytes, path.parent(), &file, opts)
}

/// Imports an ONNX model from bytes. `base_dir` is where external data files
/// are looked up (none: a model with external data is an error); `file_label`
/// names the model in errors.
pub fn import_bytes(bytes: &[u8], base_dir: Option<&Path>, file_label: &str) -> Result<Graph> {
    import_bytes_with(bytes, base_dir, file_label, &ImportOptions::default())
}

/// [`import_bytes`] with options.
pub fn import_bytes_with(
    bytes: &[u8],
    base_dir: Option<&Path>,
    file_label: &str,
    opts: &ImportOptions,
) -> Result<Graph> {
    let mut model = ModelProto::decode(bytes).map_err(|e| FrontendError::Decode {
        file: file_label.to_string(),
        what: "model",
        msg: e.to_string(),
    })?;
    if !opts.dims.is_empty() {
        bind_dims(&mut model, &opts.dims, file_label)?;
    }
    import_model(&model, base_dir, file_label)
}

/// Replaces the named symbolic dimensions of the graph inputs by values.
fn bind_dims(model: &mut ModelProto, dims: &BTreeMap<String, usize>, file: &str) -> Result<()> {
    use crate::proto::onnx::tensor_shape_proto::dimension::Value as DimValue;
    use crate::proto::onnx::type_proto::Value as TypeValue;
    let mut used: HashSet<&str> = HashSet::new();
    let mut seen: Vec<String> = Vec::new();
    let Some(g) = model.graph.as_mut() else { return Ok(()) };
    for vi in &mut g.input {
        let input = vi.name().to_string();
        let Some(TypeValue::TensorType(tt)) = vi.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
            continue;
        };
        let Some(shape) = tt.shape.as_mut() else { continue };
        for (i, d) in shape.dim.iter_mut().enumerate() {
            let name = match &d.value {
                Some(DimValue::DimParam(p)) if !p.is_empty() => p.clone(),
                Some(DimValue::DimValue(_)) => continue,
                _ => crate::types::generated_dim_name(&input, i),
            };
            match dims.get_key_value(&name) {
                Some((k, &n)) => {
                    used.insert(k.as_str());
                    d.value = Some(DimValue::DimValue(n as i64));
                }
                None => seen.push(name),
            }
        }
    }
    if let Some(unused) = dims.keys().find(|k| !used.contains(k.as_str())) {
        seen.sort();
        seen.dedup();
        let msg = if seen.is_empty() {
            "the model's inputs have no symbolic dimensions".to_string()
        } else {
            format!("its symbolic input dimensions are {}", seen.join(", "))
        };
        return Err(FrontendError::Model {
            file: file.to_string(),
            msg: format!("no graph input has a dimension named `{unused}`; {msg}"),
        });
    }
    Ok(())
}

/// The default-domain opset a model imports, if it imports one; one outside
/// kiln's range is an error.
fn default_opset(model: &ModelProto, file: &str) -> Result<Option<i64>> {
    let opset = model
        .opset_import
        .iter()
        .filter(|o| is_default_domain(o.domain()))
        .map(|o| o.version())
        .max();
    match opset {
        Some(v) if !(MIN_OPSET..=MAX_OPSET).contains(&v) => Err(FrontendError::Model {
            file: file.to_string(),
            msg: format!(
                "unsupported opset {v} of the default ONNX domain; kiln supports opsets {MIN_OPSET} to {MAX_OPSET}"
            ),
        }),
        _ => Ok(opset),
    }
}

pub(crate) fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

fn import_model(model: &ModelProto, base_dir: Option<&Path>, file: &str) -> Result<Graph> {
    let opset = default_opset(model, file)?;
    let g = model.graph.as_ref().ok_or_else(|| FrontendError::Model {
        file: file.to_string(),
        msg: "the model has no graph".into(),
    })?;
    let opset = match opset {
        Some(v) => v,
        // Without default-domain nodes the opset is never read; nodes of other
        // domains fail below with an error naming them.
        None if g.node.iter().all(|n| !is_default_domain(n.domain())) => MAX_OPSET,
        None => {
            return Err(FrontendError::Model {
                file: file.to_string(),
                msg: format!(
                    "the model imports no opset of the default ONNX domain (IR version {}); kiln supports opsets {MIN_OPSET} to {MAX_OPSET}",
                    model.ir_version()
                ),
            })
        }
    };
    let graph_name = match g.name() {
        "" => Path::new(file)
            .file_stem()
            .map_or("model".to_string(), |s| s.to_string_lossy().into_owned()),
        n => n.to_string(),
    };
    let mut imp = Importer {
        file,
        base_dir,
        opset,
        graph: Graph::new(graph_name),
        names: HashMap::new(),
        known: HashMap::new(),
        used: HashSet::new(),
    };

    // initializers
    for (i, t) in g.initializer.iter().enumerate() {
        let name = t.name().to_string();
        if name.is_empty() {
            return Err(FrontendError::Tensor {
                file: file.into(),
                tensor: format!("initializer #{i}"),
                msg: "initializers must have a name".into(),
            });
        }
        let tensor = tensor_from_proto(t, base_dir, file)?;
        let v = imp.graph.add_const(Some(name.clone()), tensor);
        imp.define(&name, v)
            .map_err(|msg| imp.tensor_err(&name, msg))?;
    }
    if let Some(s) = g.sparse_initializer.first() {
        let name = s
            .values
            .as_ref()
            .map_or("<unnamed>".to_string(), tensor_label);
        return Err(imp.tensor_err(&name, "sparse initializers are not supported".into()));
    }

    // runtime inputs
    for vi in &g.input {
        let name = vi.name();
        if imp.names.contains_key(name) {
            continue; // an input with an initializer is a constant
        }
        let ty = types::input_type(vi).map_err(|msg| imp.value_err("graph input", name, msg))?;
        if name.is_empty() {
            return Err(imp.value_err("graph input", name, "has no name".into()));
        }
        let v = imp.graph.add_input(name, ty);
        imp.define(name, v)
            .map_err(|msg| imp.value_err("graph input", name, msg))?;
    }

    // names that something consumes (to decide whether dropped outputs matter)
    for n in &g.node {
        imp.used
            .extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
    }
    imp.used
        .extend(g.output.iter().map(|o| o.name().to_string()));

    let local_functions: HashSet<(&str, &str)> = model
        .functions
        .iter()
        .map(|f| (f.domain(), f.name()))
        .collect();
    for i in topological_order(&g.node, &imp.names) {
        let n = &g.node[i];
        let name = match n.name() {
            "" => format!("{}_{i}", n.op_type()),
            s => s.to_string(),
        };
        imp.import_node(n, name, &local_functions)?;
    }

    // outputs
    for vi in &g.output {
        let name = vi.name();
        let v = *imp.names.get(name).ok_or_else(|| {
            imp.value_err(
                "graph output",
                name,
                "is not computed by any node, input or initializer".into(),
            )
        })?;
        if let Some(d) = types::declared(vi) {
            types::check_declared(&d, imp.graph.ty(v))
                .map_err(|msg| imp.value_err("graph output", name, msg))?;
        }
        imp.graph.outputs.push(v);
    }
    Ok(imp.graph)
}

/// Node indices in a topological order that keeps the file's order wherever
/// it is already valid. Inputs that nothing defines do not hold a node back
/// (the node then fails with "not defined"); nodes on a cycle come last, in
/// file order, and fail the same way.
fn topological_order(nodes: &[NodeProto], defined: &HashMap<String, ValueId>) -> Vec<usize> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.entry(o.as_str()).or_insert(i);
        }
    }
    let mut pending = vec![0usize; nodes.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        let mut deps: Vec<usize> = n
            .input
            .iter()
            .filter(|s| !s.is_empty() && !defined.contains_key(s.as_str()))
            .filter_map(|s| producer.get(s.as_str()).copied())
            .filter(|&p| p != i)
            .collect();
        deps.sort_unstable();
        deps.dedup();
        pending[i] = deps.len();
        for p in deps {
            consumers[p].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
        .filter(|&i| pending[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    let mut placed = vec![false; nodes.len()];
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        placed[i] = true;
        for &c in &consumers[i] {
            pending[c] -= 1;
            if pending[c] == 0 {
                ready.push(Reverse(c));
            }
        }
    }
    order.extend((0..nodes.len()).filter(|&i| !placed[i]));
    order
}

/// One ONNX node, with attributes converted and inputs resolved, ready for
/// [`crate::normalize::lower`].
pub(crate) struct OnnxNode {
    /// Provenance name: the ONNX node name, or `<OpType>_<index>`.
    pub name: String,
    pub op_type: String,
    pub attrs: Attrs,
    /// In ONNX positions; `None` for an omitted (empty-named) input.
    pub inputs: Vec<Option<ValueId>>,
    /// The ONNX output names, all of them; `None` for an omitted output.
    pub outputs: Vec<Option<String>>,
}

impl OnnxNode {
    pub fn input(&self, i: usize) -> Option<ValueId> {
        self.inputs.get(i).copied().flatten()
    }
}

/// The graph under construction, with what is known about its values.
pub(crate) struct Importer<'a> {
    pub file: &'a str,
    pub base_dir: Option<&'a Path>,
    pub opset: i64,
    pub graph: Graph,
    /// ONNX value name -> value.
    names: HashMap<String, ValueId>,
    /// Values known at import time that are not constants (propagated).
    known: HashMap<ValueId, Tensor>,
    /// ONNX names that a node or a graph output consumes.
    used: HashSet<String>,
}

impl Importer<'_> {
    /// The value of `v` if it is known at import time (a constant, or propagated).
    pub fn value(&self, v: ValueId) -> Option<&Tensor> {
        self.graph.consts.get(&v).or_else(|| self.known.get(&v))
    }

    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.graph.ty(v)
    }

    /// Whether a node or graph output consumes the ONNX value `name`.
    pub fn is_used(&self, name: &str) -> bool {
        self.used.contains(name)
    }

    /// Adds an unnamed constant (an attribute turned into an input, ...).
    pub fn konst(&mut self, t: Tensor) -> ValueId {
        self.graph.add_const(None, t)
    }

    fn define(&mut self, name: &str, v: ValueId) -> Result<(), String> {
        if self.names.insert(name.to_string(), v).is_some() {
            return Err(format!("the name `{name}` is defined more than once"));
        }
        Ok(())
    }

    pub fn node_err(&self, n: &OnnxNode, msg: impl Into<String>) -> FrontendError {
        FrontendError::Node {
            file: self.file.to_string(),
            node: n.name.clone(),
            op: n.op_type.clone(),
            msg: msg.into(),
        }
    }

    pub fn unsupported(&self, node: &str, op: &str, domain: &str, detail: &str) -> FrontendError {
        FrontendError::UnsupportedOp {
            file: self.file.to_string(),
            node: node.to_string(),
            op: op.to_string(),
            domain: domain.to_string(),
            detail: detail.to_string(),
        }
    }

    fn tensor_err(&self, tensor: &str, msg: String) -> FrontendError {
        FrontendError::Tensor {
            file: self.file.to_string(),
            tensor: tensor.to_string(),
            msg,
        }
    }

    fn value_err(&self, kind: &'static str, value: &str, msg: String) -> FrontendError {
        FrontendError::Value {
            file: self.file.to_string(),
            kind,
            value: value.to_string(),
            msg,
        }
    }

    fn import_node(
        &mut self,
        n: &NodeProto,
        name: String,
        local_functions: &HashSet<(&str, &str)>,
    ) -> Result<()> {
        let op_type = n.op_type();
        let domain = n.domain();
        if local_functions.contains(&(domain, op_type)) {
            return Err(self.unsupported(
                &name,
                op_type,
                domain,
                ": model-local functions are not supported (inline them first)",
            ));
        }
        if !is_default_domain(domain) {
            return Err(self.unsupported(
                &name,
                op_type,
                domain,
                ": kiln supports only the default ONNX domain",
            ));
        }
        if matches!(op_type, "If" | "Loop" | "Scan" | "SequenceMap") {
            return Err(self.unsupported(
                &name,
                op_type,
                domain,
                ": ops with subgraphs are not supported",
            ));
        }
        if !normalize::is_known(op_type) {
            return Err(self.unsupported(&name, op_type, domain, ""));
        }
        let mut node = OnnxNode {
            name,
            op_type: op_type.to_string(),
            attrs: Attrs::new(),
            inputs: Vec::with_capacity(n.input.len()),
            outputs: n
                .output
                .iter()
                .map(|o| (!o.is_empty()).then(|| o.clone()))
                .collect(),
        };
        for a in &n.attribute {
            let (k, v) =
                attrs::convert(a, self.base_dir, self.file).map_err(|m| self.node_err(&node, m))?;
            node.attrs.set(&k, v);
        }
        for (i, s) in n.input.iter().enumerate() {
            if s.is_empty() {
                node.inputs.push(None);
                continue;
            }
            let v = *self.names.get(s.as_str()).ok_or_else(|| {
                self.node_err(
                    &node,
                    format!("input {i} `{s}` is not defined by any graph input, initializer or node (or the nodes form a cycle)"),
                )
            })?;
            node.inputs.push(Some(v));
        }
        if op_type == "Constant" {
            return self.import_constant(node);
        }
        normalize::lower(self, node)
    }

    /// A `Constant` node becomes a graph constant named after its output.
    fn import_constant(&mut self, n: OnnxNode) -> Result<()> {
        let out = match n.outputs.as_slice() {
            [Some(o)] => o.clone(),
            _ => return Err(self.node_err(&n, "Constant must have exactly one named output")),
        };
        if n.attrs.0.len() != 1 {
            return Err(self.node_err(&n, "Constant must have exactly one value attribute"));
        }
        let (key, attr) = n
            .attrs
            .iter()
            .next()
            .ok_or_else(|| self.node_err(&n, "no value"))?;
        let t = match (key.as_str(), attr) {
            ("value", Attr::Tensor(t)) => t.clone(),
            ("value_float", Attr::Float(x)) => Tensor::scalar(*x),
            ("value_int", Attr::Int(x)) => Tensor::scalar(*x),
            ("value_floats", Attr::Floats(v)) => Tensor::from_vec(vec![v.len()], v.clone())
                .map_err(|e| self.node_err(&n, e.to_string()))?,
            ("value_ints", Attr::Ints(v)) => Tensor::from_vec(vec![v.len()], v.clone())
                .map_err(|e| self.node_err(&n, e.to_string()))?,
            ("value_string" | "value_strings" | "sparse_value", _) => {
                return Err(self.node_err(
                    &n,
                    format!("attribute `{key}`: string and sparse constants are not supported"),
                ))
            }
            (k, a) => {
                return Err(self.node_err(
                    &n,
                    format!("attribute `{k}` ({}) is not a Constant value", a.kind()),
                ))
            }
        };
        let v = self.graph.add_const(Some(out.clone()), t);
        self.define(&out, v).map_err(|m| self.node_err(&n, m))
    }

    /// Appends a kiln node for the ONNX node `n`: infers its output types,
    /// propagates its value when the operands are known and small, and binds
    /// the output names (`None`: an unnamed value). Trailing omitted inputs
    /// are dropped.
    pub fn emit(
        &mut self,
        n: &OnnxNode,
        op: Op,
        attrs: Attrs,
        mut inputs: Vec<Option<ValueId>>,
        outputs: Vec<Option<String>>,
    ) -> Result<Vec<ValueId>> {
        while inputs.last() == Some(&None) {
            inputs.pop();
        }
        let infer_err = |source: kiln_ir::Error| FrontendError::Inference {
            file: self.file.to_string(),
            node: n.name.clone(),
            op: n.op_type.clone(),
            source: Box::new(source),
        };
        let operands: Vec<Option<Operand>> = inputs
            .iter()
            .map(|o| {
                o.map(|v| Operand {
                    ty: self.graph.ty(v),
                    value: self.value(v),
                })
            })
            .collect();
        let tys = infer_op(op, &attrs, &operands, outputs.len()).map_err(infer_err)?;
        if tys.len() != outputs.len() {
            return Err(infer_err(kiln_ir::Error::invalid(format!(
                "{op}: inference gave {} output types for {} outputs",
                tys.len(),
                outputs.len()
            ))));
        }
        let values = self
            .propagate(op, &attrs, &inputs, &tys)
            .map_err(infer_err)?;
        let ids = self.graph.add_node(
            n.name.clone(),
            op,
            attrs,
            inputs,
            outputs.iter().cloned().zip(tys).collect(),
        );
        for (name, &v) in outputs.iter().zip(&ids) {
            if let Some(name) = name {
                self.define(name, v).map_err(|m| self.node_err(n, m))?;
            }
        }
        if let Some(values) = values {
            for (&v, t) in ids.iter().zip(values) {
                self.known.insert(v, t);
            }
        }
        Ok(ids)
    }

    /// The node's output values, if they can be known at import time: Shape
    /// and Size of a static shape, or any op whose operands are all known
    /// (and small, unless it is a shape op) and whose outputs are small.
    /// An evaluation failure leaves the values unknown (the run will report
    /// it); a result that contradicts inference is an error.
    fn propagate(
        &self,
        op: Op,
        attrs: &Attrs,
        inputs: &[Option<ValueId>],
        tys: &[TensorType],
    ) -> kiln_ir::Result<Option<Vec<Tensor>>> {
        if let (Op::Shape | Op::Size, [Some(x)]) = (op, inputs) {
            if let Some(dims) = self.graph.ty(*x).shape.fixed() {
                return Ok(Some(vec![if op == Op::Shape {
                    shape_value(&dims, attrs)?
                } else {
                    Tensor::scalar(dims.iter().product::<usize>() as i64)
                }]));
            }
        }
        let small = |t: &TensorType| {
            let dims = t.shape.fixed().unwrap_or_default();
            t.shape.is_fixed()
                && dims
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .is_some_and(|n| n <= FOLD_LIMIT)
        };
        if !tys.iter().all(small) {
            return Ok(None);
        }
        let mut args = Vec::with_capacity(inputs.len());
        for o in inputs {
            match o {
                None => args.push(None),
                Some(v) => match self.value(*v) {
                    Some(t) if op.class() == OpClass::Shape || t.numel() <= FOLD_LIMIT => {
                        args.push(Some(t))
                    }
                    _ => return Ok(None),
                },
            }
        }
        let Ok(outs) = eval_op(op, attrs, &args, tys.len()) else {
            return Ok(None);
        };
        if outs.len() != tys.len() {
            return Ok(None);
        }
        for (k, (t, ty)) in outs.iter().zip(tys).enumerate() {
            let fits = t.dtype() == ty.dtype
                && t.rank() == ty.shape.rank()
                && ty
                    .shape
                    .0
                    .iter()
                    .zip(t.shape())
                    .all(|(d, &n)| d.fixed().is_none_or(|m| m == n));
            if !fits {
                return Err(kiln_ir::Error::invalid(format!(
                    "{op}: output {k} is inferred as {ty} but evaluates to {} (an inference bug)",
                    t.ty()
                )));
            }
        }
        Ok(Some(outs))
    }
}

/// The value of `Shape(x)` for a static shape, with ONNX's `start`/`end`
/// (negative counts from the back; both are clamped to `[0, rank]`).
fn shape_value(dims: &[usize], attrs: &Attrs) -> kiln_ir::Result<Tensor> {
    let r = dims.len() as i64;
    let clamp = |a: i64| (if a < 0 { a + r } else { a }).clamp(0, r) as usize;
    let start = clamp(attrs.int_or("start", 0)?);
    let end = clamp(attrs.int_or("end", r)?);
    let v: Vec<i64> = dims
        .get(start..end.max(start))
        .unwrap_or(&[])
        .iter()
        .map(|&d| d as i64)
        .collect();
    Tensor::from_vec(vec![v.len()], v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_value_slices_like_onnx() {
        let a = Attrs::new();
        let v = |t: Tensor| t.to_i64_vec().unwrap();
        assert_eq!(v(shape_value(&[2, 3, 4], &a).unwrap()), vec![2, 3, 4]);
        let a = Attrs::new().with("start", Attr::Int(-2));
        assert_eq!(v(shape_value(&[2, 3, 4], &a).unwrap()), vec![3, 4]);
        let a = Attrs::new()
            .with("start", Attr::Int(1))
            .with("end", Attr::Int(-1));
        assert_eq!(v(shape_value(&[2, 3, 4], &a).unwrap()), vec![3]);
        let a = Attrs::new()
            .with("start", Attr::Int(3))
            .with("end", Attr::Int(1));
        assert_eq!(v(shape_value(&[2, 3, 4], &a).unwrap()), Vec::<i64>::new());
        let a = Attrs::new().with("end", Attr::Int(100));
        assert_eq!(v(shape_value(&[], &a).unwrap()), Vec::<i64>::new());
    }

    fn node(name: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
        NodeProto {
            name: Some(name.into()),
            op_type: Some("Relu".into()),
            input: ins.iter().map(|s| s.to_string()).collect(),
            output: outs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn topological_order_is_stable_and_repairs_misordered_files() {
        let defined: HashMap<String, ValueId> = [("x".to_string(), ValueId(0))].into();
        let ok = [
            node("a", &["x"], &["a"]),
            node("b", &["a"], &["b"]),
            node("c", &["x"], &["c"]),
        ];
        assert_eq!(topological_order(&ok, &defined), vec![0, 1, 2]);
        let swapped = [
            node("b", &["a"], &["b"]),
            node("a", &["x"], &["a"]),
            node("c", &["x"], &["c"]),
        ];
        assert_eq!(topological_order(&swapped, &defined), vec![1, 0, 2]);
        let cycle = [
            node("p", &["q"], &["p"]),
            node("q", &["p"], &["q"]),
            node("r", &["x"], &["r"]),
        ];
        assert_eq!(topological_order(&cycle, &defined), vec![2, 0, 1]);
    }
}
