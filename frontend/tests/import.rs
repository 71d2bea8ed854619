//! Whole-model import: constants, inputs, names, provenance, value propagation.

mod common;
use common::*;
use kiln_ir::{DType, Dim, Shape, Tensor, TensorType};

#[test]
fn inputs_initializers_and_names() {
    let w = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap();
    let g = graph(
        vec![
            named(node("Add", &["x", "w"], &["s"], vec![]), "add"),
            node("Relu", &["s"], &["y"], vec![]),
        ],
        // `w` is listed as an input too (old IR style): it is a constant
        vec![
            vi("x", DType::F32, &[D::P("batch"), D::Unknown, D::N(3)]),
            f32s("w", &[3]),
        ],
        vec![init("w", &w)],
        vec![vi("y", DType::F32, &[D::P("batch"), D::Unknown, D::N(3)])],
    );
    let g = import_ok(&model(17, g));
    assert_eq!(g.name, "g");
    assert_eq!(g.inputs.len(), 1);
    let x = g.inputs[0];
    assert_eq!(g.value(x).name.as_deref(), Some("x"));
    assert_eq!(
        g.ty(x),
        &TensorType {
            dtype: DType::F32,
            shape: Shape(vec![
                Dim::Sym("batch".into()),
                Dim::Sym("x_dim1".into()),
                Dim::Fixed(3)
            ])
        }
    );
    assert_eq!(g.consts.len(), 1);
    let (&wid, wt) = g.consts.iter().next().unwrap();
    assert_eq!(g.value(wid).name.as_deref(), Some("w"));
    assert!(wt.bit_eq(&w));
    assert_eq!(ops(&g), vec!["Add", "Relu"]);
    assert_eq!(g.nodes[0].name, "add");
    assert_eq!(
        g.nodes[1].name, "Relu_1",
        "an unnamed node is named <OpType>_<index>"
    );
    assert_eq!(g.nodes[0].inputs, vec![Some(x), Some(wid)]);
    let y = g.outputs[0];
    assert_eq!(g.value(y).name.as_deref(), Some("y"));
    assert_eq!(g.ty(y).shape.0[2], Dim::Fixed(3));
    assert_eq!(g.value(g.nodes[0].outputs[0]).name.as_deref(), Some("s"));
}

#[test]
fn constant_nodes_become_constants() {
    let t = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
    let g = graph(
        vec![
            named(
                node("Constant", &[], &["a"], vec![a_tensor("value", &t)]),
                "ca",
            ),
            node("Constant", &[], &["b"], vec![a_float("value_float", 0.5)]),
            node(
                "Constant",
                &[],
                &["c"],
                vec![a_ints("value_ints", &[3, 4, 5])],
            ),
            node("Constant", &[], &["d"], vec![a_int("value_int", 7)]),
            node(
                "Constant",
                &[],
                &["e"],
                vec![a_floats("value_floats", &[1.0, 2.0])],
            ),
        ],
        vec![],
        vec![],
        vec![f32s("b", &[]), vi("c", DType::I64, &[D::N(3)])],
    );
    let g = import_ok(&model(17, g));
    assert!(g.nodes.is_empty());
    assert_eq!(g.consts.len(), 5);
    let by_name = |n: &str| {
        let (_, t) = g
            .consts
            .iter()
            .find(|(v, _)| g.value(**v).name.as_deref() == Some(n))
            .unwrap();
        t.clone()
    };
    assert!(by_name("a").bit_eq(&t));
    assert!(by_name("b").bit_eq(&Tensor::scalar(0.5f32)));
    assert!(by_name("c").bit_eq(&i64s(&[3, 4, 5])));
    assert!(by_name("d").bit_eq(&Tensor::scalar(7i64)));
    assert_eq!(by_name("e").shape(), &[2]);
    assert_eq!(g.outputs.len(), 2);
    assert!(g.consts.contains_key(&g.outputs[0]));
}

#[test]
fn shape_chains_give_static_shapes_and_stay_in_the_graph() {
    // PyTorch's view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape
    let g = graph(
        vec![
            node("Shape", &["x"], &["s"], vec![]),
            node("Gather", &["s", "zero"], &["n"], vec![a_int("axis", 0)]),
            node("Unsqueeze", &["n", "axes"], &["n1"], vec![]),
            node(
                "Concat",
                &["n1", "minus1"],
                &["shape"],
                vec![a_int("axis", 0)],
            ),
            node("Reshape", &["x", "shape"], &["y"], vec![]),
        ],
        vec![f32s("x", &[2, 3, 4])],
        vec![
            init("zero", &Tensor::scalar(0i64)),
            init("axes", &i64s(&[0])),
            init("minus1", &i64s(&[-1])),
        ],
        vec![f32s("y", &[2, 12])],
    );
    let g = import_ok(&model(17, g));
    assert_eq!(
        ops(&g),
        vec!["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"]
    );
    assert_eq!(
        g.consts.len(),
        3,
        "propagated values are not added as constants"
    );
    assert_eq!(
        g.ty(g.outputs[0]),
        &TensorType::new(DType::F32, vec![2, 12])
    );
}

#[test]
fn omitted_outputs_and_misordered_nodes() {
    let g = graph(
        vec![
            node("Relu", &["d"], &["y"], vec![]),
            node("Dropout", &["x"], &["d", ""], vec![]),
        ],
        vec![f32s("x", &[4])],
        vec![],
        vec![f32s("y", &[4])],
    );
    let g = import_ok(&model(17, g));
    assert_eq!(
        ops(&g),
        vec!["Dropout", "Relu"],
        "nodes are sorted topologically"
    );
    assert_eq!(
        g.nodes[0].outputs.len(),
        1,
        "a trailing omitted output is dropped"
    );
    assert_eq!(
        g.nodes[0].name, "Dropout_1",
        "generated names use the file's index"
    );
}

#[test]
fn outputs_may_be_inputs_or_constants() {
    let g = graph(
        vec![],
        vec![f32s("x", &[2])],
        vec![init("w", &Tensor::scalar(1.0f32))],
        vec![f32s("x", &[2]), f32s("w", &[])],
    );
    let g = import_ok(&model(17, g));
    assert_eq!(
        g.outputs,
        vec![g.inputs[0], *g.consts.keys().next().unwrap()]
    );
}

#[test]
fn dump_lists_the_model() {
    let g = graph(
        vec![named(
            node("Relu", &["x"], &["y"], vec![a_int("foo", 1)]),
            "r",
        )],
        vec![vi("x", DType::F32, &[D::P("n"), D::N(2)])],
        vec![init("w", &Tensor::scalar(1.0f32))],
        vec![f32s("y", &[2])],
    );
    let s = kiln_frontend::dump_onnx_bytes(&bytes(&model(17, g)), "m.onnx").unwrap();
    assert!(s.contains("opsets: ai.onnx=17"), "{s}");
    assert!(s.contains("input \"x\": f32[n,2]"), "{s}");
    assert!(s.contains("initializer \"w\": f32[]"), "{s}");
    assert!(s.contains("node \"r\": \"y\" = Relu(\"x\") {foo=1}"), "{s}");
}
