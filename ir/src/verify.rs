//! The graph verifier. [`verify`] checks every invariant below and reports
//! all the broken ones at once, each with its location (a node as
//! `node I `provenance` (Op)`, a value as `%N`):
//!
//! 1. Every [`ValueId`] mentioned (graph inputs, constants, node inputs and
//!    outputs, graph outputs) is below `values.len()`.
//! 2. Every value is defined exactly once: as a graph input, as a constant,
//!    or as one output of one node. In particular no value is both an input
//!    and a constant, no input is listed twice, and no node lists an output twice.
//! 3. Nodes are in topological order: each operand is a graph input, a
//!    constant, or an output of an earlier node (never of the node itself).
//! 4. Every graph output is defined (it may be an input or a constant, and
//!    may be listed more than once).
//! 5. A constant's tensor has exactly its value's declared type (dtype and
//!    shape; so a constant's declared shape is static).
//! 6. Each node's arity fits its op's ONNX schema ([`arity`]): the number of
//!    inputs and of outputs is within the op's bounds, and no required input
//!    (the leading `min_inputs`, or every input of a variadic op) is omitted.
//! 7. Graph input names are unique (unnamed inputs are allowed).
//!
//! [`verify_types`] additionally re-runs shape inference on every node and
//! checks the declared output types against it (see its documentation).

use crate::infer::{infer_op, Operand};
use crate::{Dim, Error, Graph, Node, Op, Result, TensorType, ValueId};
use std::collections::HashMap;

/// How many inputs and outputs a node of an op may have (ONNX's newest schema).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arity {
    /// Inputs below this position are required.
    pub min_inputs: usize,
    /// `None`: variadic, and then every input is required.
    pub max_inputs: Option<usize>,
    pub min_outputs: usize,
    /// `None`: variadic.
    pub max_outputs: Option<usize>,
}

const fn ar(min_in: usize, max_in: Option<usize>, min_out: usize, max_out: Option<usize>) -> Arity {
    Arity {
        min_inputs: min_in,
        max_inputs: max_in,
        min_outputs: min_out,
        max_outputs: max_out,
    }
}

/// The arity of `op`, from ONNX's schemas (onnx 1.23, newest opset).
pub fn arity(op: Op) -> Arity {
    use Op::*;
    match op {
        Abs
        | Neg
        | Sqrt
        | Reciprocal
        | Exp
        | Log
        | Tanh
        | Erf
        | Relu
        | Sigmoid
        | Softplus
        | Softsign
        | Floor
        | Ceil
        | Round
        | Sign
        | Sin
        | Cos
        | Tan
        | Asin
        | Acos
        | Atan
        | Sinh
        | Cosh
        | Asinh
        | Acosh
        | Atanh
        | Not
        | IsNaN
        | IsInf
        | HardSigmoid
        | HardSwish
        | LeakyRelu
        | Elu
        | Selu
        | Celu
        | ThresholdedRelu
        | Gelu
        | Mish
        | Identity
        | BitwiseNot
        | Cast
        | ArgMax
        | ArgMin
        | Softmax
        | LogSoftmax
        | Hardmax
        | LpNormalization
        | MeanVarianceNormalization
        | AveragePool
        | GlobalAveragePool
        | GlobalMaxPool
        | LpPool
        | Transpose
        | Flatten
        | DepthToSpace
        | SpaceToDepth
        | Shape
        | Size
        | ConstantOfShape
        | EyeLike
        | NonZero => ar(1, Some(1), 1, Some(1)),
        CastLike | Add | Sub | Mul | Div | Pow | Mod | Equal | Greater | Less | GreaterOrEqual
        | LessOrEqual | And | Or | Xor | BitShift | BitwiseAnd | BitwiseOr | BitwiseXor | PRelu
        | CumSum | RMSNormalization | MatMul | Reshape | Unsqueeze | Gather | GatherElements
        | GatherND | Expand | Tile | ReverseSequence => ar(2, Some(2), 1, Some(1)),
        Where
        | InstanceNormalization
        | GroupNormalization
        | ScatterElements
        | ScatterND
        | OneHot
        | Range => ar(3, Some(3), 1, Some(1)),
        Min | Max | Sum | Mean | Einsum | Concat => ar(1, None, 1, Some(1)),
        Dropout => ar(1, Some(3), 1, Some(2)),
        Clip => ar(1, Some(3), 1, Some(1)),
        ReduceMean | ReduceSum | ReduceMax | ReduceMin | ReduceProd | ReduceL1 | ReduceL2
        | ReduceLogSum | ReduceLogSumExp | ReduceSumSquare | Squeeze | Trilu => {
            ar(1, Some(2), 1, Some(1))
        }
        LayerNormalization => ar(2, Some(3), 1, Some(3)),
        BatchNormalization => ar(5, Some(5), 1, Some(3)),
        Gemm | Conv | ConvTranspose | QuantizeLinear | DequantizeLinear => {
            ar(2, Some(3), 1, Some(1))
        }
        MatMulInteger | ConvInteger | Pad => ar(2, Some(4), 1, Some(1)),
        QLinearMatMul => ar(8, Some(8), 1, Some(1)),
        QLinearConv => ar(8, Some(9), 1, Some(1)),
        MaxPool => ar(1, Some(1), 1, Some(2)),
        Split => ar(1, Some(2), 1, None),
        Slice => ar(3, Some(5), 1, Some(1)),
        DynamicQuantizeLinear => ar(1, Some(1), 3, Some(3)),
        Attention => ar(3, Some(7), 1, Some(4)),
        Resize => ar(1, Some(4), 1, Some(1)),
        TopK => ar(2, Some(2), 2, Some(2)),
        // kiln's fused ops (crate::fused): variadic, every operand present.
        FusedElementwise => ar(1, None, 1, Some(1)),
        FusedMatMul | FusedConv => ar(2, None, 1, Some(1)),
    }
}

/// Where a value is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Def {
    Input(usize),
    Const,
    /// Node index, output index.
    Node(usize, usize),
}

/// `node 3 `name` (Op)`
fn node_loc(i: usize, n: &Node) -> String {
    format!("node {i} `{}` ({})", n.name, n.op)
}

struct Checker<'a> {
    g: &'a Graph,
    errors: Vec<String>,
    /// Definitions of each value, indexed by id.
    defs: Vec<Vec<Def>>,
}

impl Checker<'_> {
    fn describe_def(&self, d: Def) -> String {
        match d {
            Def::Input(k) => format!("graph input {k}"),
            Def::Const => "a constant".to_string(),
            Def::Node(i, k) => match self.g.nodes.get(i) {
                Some(n) => format!("output {k} of {}", node_loc(i, n)),
                None => format!("output {k} of node {i}"),
            },
        }
    }

    /// `%N` with its name, if any.
    fn val(&self, v: ValueId) -> String {
        match self.g.values.get(v.index()).and_then(|i| i.name.as_deref()) {
            Some(name) => format!("{v} `{name}`"),
            None => v.to_string(),
        }
    }

    fn in_range(&self, v: ValueId) -> bool {
        v.index() < self.g.values.len()
    }

    fn no_such_value(&self, v: ValueId) -> String {
        format!(
            "{v} does not exist (the graph has {} values)",
            self.g.values.len()
        )
    }

    /// Invariants 1 and 2.
    fn definitions(&mut self) {
        let g = self.g;
        for (k, &v) in g.inputs.iter().enumerate() {
            self.define(v, Def::Input(k), || format!("graph input {k}"));
        }
        for &v in g.consts.keys() {
            self.define(v, Def::Const, || "constant".to_string());
        }
        for (i, n) in g.nodes.iter().enumerate() {
            for (k, &v) in n.outputs.iter().enumerate() {
                self.define(v, Def::Node(i, k), || {
                    format!("{}: output {k}", node_loc(i, n))
                });
            }
        }
        for (id, defs) in self.defs.iter().enumerate() {
            let v = ValueId(id as u32);
            match defs.len() {
                1 => {}
                0 => self
                    .errors
                    .push(format!("value {}: never defined", self.val(v))),
                _ => {
                    let all: Vec<String> = defs.iter().map(|&d| self.describe_def(d)).collect();
                    self.errors.push(format!(
                        "value {}: defined {} times, as {}",
                        self.val(v),
                        defs.len(),
                        all.join(" and as ")
                    ));
                }
            }
        }
    }

    fn define(&mut self, v: ValueId, d: Def, loc: impl FnOnce() -> String) {
        match self.defs.get_mut(v.index()) {
            Some(ds) => ds.push(d),
            None => {
                let msg = format!("{}: {}", loc(), self.no_such_value(v));
                self.errors.push(msg);
            }
        }
    }

    /// The first node that defines `v`, if any.
    fn defining_node(&self, v: ValueId) -> Option<usize> {
        self.defs.get(v.index())?.iter().find_map(|d| match d {
            Def::Node(i, _) => Some(*i),
            _ => None,
        })
    }

    /// Invariants 3 and 6.
    fn nodes(&mut self) {
        let g = self.g;
        let mut avail = vec![false; g.values.len()];
        for v in g.inputs.iter().chain(g.consts.keys()) {
            if let Some(a) = avail.get_mut(v.index()) {
                *a = true;
            }
        }
        for (i, n) in g.nodes.iter().enumerate() {
            let loc = node_loc(i, n);
            for (j, v) in n.inputs.iter().enumerate() {
                let Some(v) = *v else { continue };
                if !self.in_range(v) {
                    self.errors
                        .push(format!("{loc}: input {j}: {}", self.no_such_value(v)));
                } else if !avail.get(v.index()).copied().unwrap_or(false) {
                    let why = match self.defining_node(v) {
                        Some(k) if k == i => "is this node's own output".to_string(),
                        Some(k) => format!("is defined later, by {}", node_loc(k, &g.nodes[k])),
                        None => "is never defined".to_string(),
                    };
                    self.errors
                        .push(format!("{loc}: input {j} {} {why}", self.val(v)));
                }
            }
            self.arity(&loc, n);
            for v in &n.outputs {
                if let Some(a) = avail.get_mut(v.index()) {
                    *a = true;
                }
            }
        }
    }

    fn arity(&mut self, loc: &str, n: &Node) {
        let a = arity(n.op);
        let (ni, no) = (n.inputs.len(), n.outputs.len());
        let range = |lo: usize, hi: Option<usize>| match hi {
            Some(hi) if hi == lo => format!("{lo}"),
            Some(hi) => format!("{lo} to {hi}"),
            None => format!("at least {lo}"),
        };
        if ni < a.min_inputs || a.max_inputs.is_some_and(|m| ni > m) {
            self.errors.push(format!(
                "{loc}: has {ni} inputs, {} takes {}",
                n.op,
                range(a.min_inputs, a.max_inputs)
            ));
        }
        let required = if a.max_inputs.is_none() {
            ni
        } else {
            a.min_inputs.min(ni)
        };
        for (j, inp) in n.inputs.iter().take(required).enumerate() {
            if inp.is_none() {
                self.errors.push(format!(
                    "{loc}: input {j} is required by {} but omitted",
                    n.op
                ));
            }
        }
        if no < a.min_outputs || a.max_outputs.is_some_and(|m| no > m) {
            self.errors.push(format!(
                "{loc}: has {no} outputs, {} gives {}",
                n.op,
                range(a.min_outputs, a.max_outputs)
            ));
        }
    }

    /// Invariant 4.
    fn outputs(&mut self) {
        for (k, &v) in self.g.outputs.iter().enumerate() {
            if !self.in_range(v) {
                self.errors
                    .push(format!("graph output {k}: {}", self.no_such_value(v)));
            } else if self.defs.get(v.index()).is_some_and(|d| d.is_empty()) {
                self.errors.push(format!(
                    "graph output {k}: {} is never defined",
                    self.val(v)
                ));
            }
        }
    }

    /// Invariant 5.
    fn const_types(&mut self) {
        for (&v, t) in &self.g.consts {
            if let Some(info) = self.g.values.get(v.index()) {
                let actual = t.ty();
                if info.ty != actual {
                    self.errors.push(format!(
                        "constant {}: declared {} but its tensor is {actual}",
                        self.val(v),
                        info.ty
                    ));
                }
            }
        }
    }

    /// Invariant 7.
    fn input_names(&mut self) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (k, &v) in self.g.inputs.iter().enumerate() {
            let Some(name) = self.g.values.get(v.index()).and_then(|i| i.name.as_deref()) else {
                continue;
            };
            if let Some(&first) = seen.get(name) {
                self.errors.push(format!(
                    "graph input {k} ({v}): name `{name}` is also graph input {first}'s"
                ));
            } else {
                seen.insert(name, k);
            }
        }
    }
}

/// Checks the structural invariants listed in the [module documentation](self).
/// On failure, the error lists every broken invariant.
pub fn verify(g: &Graph) -> Result<()> {
    let mut c = Checker {
        g,
        errors: Vec::new(),
        defs: vec![Vec::new(); g.values.len()],
    };
    c.definitions();
    c.nodes();
    c.outputs();
    c.const_types();
    c.input_names();
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Verify {
            graph: g.name.clone(),
            errors: c.errors,
        })
    }
}

/// [`verify`], then re-runs [`infer_op`] on every node (operands typed as
/// declared, with constants' values) and checks that each declared output
/// type agrees with the inferred one:
///
/// - the dtype and rank are equal;
/// - each dimension is equal, except that an unknown dimension (a symbol
///   starting with `?`, which inference makes when it cannot know a size)
///   on either side agrees with anything.
///
/// An op whose inference returns [`Error::Unsupported`] is skipped; any
/// other inference error is reported as that node's error.
pub fn verify_types(g: &Graph) -> Result<()> {
    verify(g)?;
    let mut errors = Vec::new();
    for (i, n) in g.nodes.iter().enumerate() {
        let loc = node_loc(i, n);
        let operands: Vec<Option<Operand>> = n
            .inputs
            .iter()
            .map(|v| {
                v.and_then(|v| {
                    Some(Operand {
                        ty: &g.values.get(v.index())?.ty,
                        value: g.consts.get(&v),
                    })
                })
            })
            .collect();
        match infer_op(n.op, &n.attrs, &operands, n.outputs.len()) {
            Ok(tys) => {
                if tys.len() != n.outputs.len() {
                    errors.push(format!(
                        "{loc}: inference gives {} outputs, the node has {}",
                        tys.len(),
                        n.outputs.len()
                    ));
                }
                for (k, (v, inferred)) in n.outputs.iter().zip(&tys).enumerate() {
                    let Some(declared) = g.values.get(v.index()).map(|i| &i.ty) else {
                        continue;
                    };
                    if !types_agree(declared, inferred) {
                        errors.push(format!(
                            "{loc}: output {k} {v} is declared {declared}, but inference gives {inferred}"
                        ));
                    }
                }
            }
            Err(Error::Unsupported(_)) => {}
            Err(e) => errors.push(format!("{loc}: inference fails: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Verify {
            graph: g.name.clone(),
            errors,
        })
    }
}

fn is_unknown(d: &Dim) -> bool {
    matches!(d, Dim::Sym(s) if s.starts_with('?'))
}

fn types_agree(declared: &TensorType, inferred: &TensorType) -> bool {
    declared.dtype == inferred.dtype
        && declared.shape.rank() == inferred.shape.rank()
        && declared
            .shape
            .0
            .iter()
            .zip(&inferred.shape.0)
            .all(|(a, b)| a == b || is_unknown(a) || is_unknown(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attrs, DType, Tensor};

    fn f32t(dims: &[usize]) -> TensorType {
        TensorType::new(DType::F32, dims)
    }

    fn errors(g: &Graph) -> Vec<String> {
        match verify(g) {
            Ok(()) => Vec::new(),
            Err(Error::Verify { errors, .. }) => errors,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    /// x -> Relu -> Add(relu, c) -> out
    fn good() -> Graph {
        let mut g = Graph::new("g");
        let x = g.add_input("x", f32t(&[2]));
        let c = g.add_const(
            Some("c".into()),
            Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap(),
        );
        let r = g.add_node(
            "relu",
            Op::Relu,
            Attrs::new(),
            vec![Some(x)],
            vec![(None, f32t(&[2]))],
        );
        let a = g.add_node(
            "add",
            Op::Add,
            Attrs::new(),
            vec![Some(r[0]), Some(c)],
            vec![(None, f32t(&[2]))],
        );
        g.outputs = vec![a[0], x, c];
        g
    }

    #[test]
    fn a_good_graph_verifies() {
        verify(&good()).unwrap();
        verify_types(&Graph::new("empty")).unwrap();
    }

    #[test]
    fn every_error_is_reported_with_its_location() {
        let mut g = good();
        g.nodes.swap(0, 1); // add uses relu's output before relu runs
        g.nodes[1].inputs.push(Some(ValueId(99))); // relu: bad id, and arity 2
        g.inputs.push(ValueId(1)); // the constant is also an input
        g.outputs.push(ValueId(42));
        g.add_value(None, f32t(&[3])); // %4, never defined
        let errs = errors(&g);
        let want = [
            "value %1 `c`: defined 2 times, as graph input 1 and as a constant",
            "value %4: never defined",
            "node 0 `add` (Add): input 0 %2 is defined later, by node 1 `relu` (Relu)",
            "node 1 `relu` (Relu): input 1: %99 does not exist (the graph has 5 values)",
            "node 1 `relu` (Relu): has 2 inputs, Relu takes 1",
            "graph output 3: %42 does not exist",
        ];
        for w in want {
            assert!(
                errs.iter().any(|e| e.contains(w)),
                "missing {w:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
    }

    #[test]
    fn const_type_and_required_inputs() {
        let mut g = good();
        g.values[1].ty = TensorType {
            dtype: DType::F32,
            shape: crate::Shape(vec![Dim::Sym("n".into())]),
        };
        g.nodes[1].inputs[1] = None;
        g.nodes[0].outputs.push(ValueId(2)); // defined twice by the same node
        let errs = errors(&g);
        assert!(
            errs.iter()
                .any(|e| e == "constant %1 `c`: declared f32[n] but its tensor is f32[2]"),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e == "node 1 `add` (Add): input 1 is required by Add but omitted"),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("node 0 `relu` (Relu): has 2 outputs, Relu gives 1")),
            "{errs:#?}"
        );
        assert!(
            errs.iter().any(|e| e.contains(
                "value %2: defined 2 times, as output 0 of node 0 `relu` (Relu) and as output 1"
            )),
            "{errs:#?}"
        );
    }

    #[test]
    fn self_use_and_variadics() {
        let mut g = Graph::new("g");
        let x = g.add_input("x", f32t(&[1]));
        let o = g.add_node(
            "cat",
            Op::Concat,
            Attrs::new(),
            vec![Some(x), None, Some(ValueId(1))],
            vec![(None, f32t(&[2]))],
        );
        g.outputs = o;
        let errs = errors(&g);
        assert_eq!(
            errs,
            vec![
                "node 0 `cat` (Concat): input 2 %1 is this node's own output".to_string(),
                "node 0 `cat` (Concat): input 1 is required by Concat but omitted".to_string(),
            ]
        );
    }

    #[test]
    fn types_agree_up_to_unknown_dims() {
        let sym = |s: &str| Dim::Sym(s.to_string());
        let t = |dims: Vec<Dim>| TensorType {
            dtype: DType::F32,
            shape: crate::Shape(dims),
        };
        assert!(types_agree(
            &t(vec![Dim::Fixed(2), sym("n")]),
            &t(vec![Dim::Fixed(2), sym("n")])
        ));
        assert!(types_agree(
            &t(vec![sym("batch")]),
            &t(vec![sym("?MatMul")])
        ));
        assert!(!types_agree(
            &t(vec![sym("batch")]),
            &t(vec![Dim::Fixed(3)])
        ));
        assert!(!types_agree(
            &t(vec![Dim::Fixed(2)]),
            &t(vec![Dim::Fixed(2), Dim::Fixed(1)])
        ));
    }

    #[test]
    fn arity_table_is_total_and_sane() {
        for &op in Op::ALL {
            let a = arity(op);
            assert!(!matches!(a.max_inputs, Some(m) if m < a.min_inputs), "{op}");
            assert!(
                !matches!(a.max_outputs, Some(m) if m < a.min_outputs.max(1)),
                "{op}"
            );
        }
    }
}
