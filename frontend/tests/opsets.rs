//! Opset normalisation: old forms become the newest opset's form.

mod common;
use common::*;
use kiln_frontend::proto::onnx::ModelProto;
use kiln_ir::{Attr, DType, Tensor, TensorType};

/// A one-node model on `x: f32[dims]`.
fn one(
    opset: i64,
    op: &str,
    dims: &[usize],
    extra_ins: &[&str],
    outs: &[&str],
    attrs: Vec<kiln_frontend::proto::onnx::AttributeProto>,
    inits: Vec<kiln_frontend::proto::onnx::TensorProto>,
) -> ModelProto {
    let mut ins = vec!["x"];
    ins.extend_from_slice(extra_ins);
    model(
        opset,
        graph(
            vec![named(node(op, &ins, outs, attrs), "n")],
            vec![f32s("x", dims)],
            inits,
            vec![],
        ),
    )
}

fn i64_const(g: &kiln_ir::Graph, node: usize, input: usize) -> Vec<i64> {
    const_input(g, node, input).to_i64_vec().unwrap()
}

fn out_ty(g: &kiln_ir::Graph, node: usize, k: usize) -> &TensorType {
    g.ty(g.nodes[node].outputs[k])
}

#[test]
fn squeeze_and_unsqueeze_axes_become_inputs_before_13() {
    let g = import_ok(&one(
        11,
        "Squeeze",
        &[1, 3, 1],
        &[],
        &["y"],
        vec![a_ints("axes", &[0])],
        vec![],
    ));
    assert_eq!(i64_const(&g, 0, 1), vec![0]);
    assert!(g.nodes[0].attrs.is_empty());
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![3, 1]));

    let g = import_ok(&one(
        7,
        "Unsqueeze",
        &[3],
        &[],
        &["y"],
        vec![a_ints("axes", &[0, 2])],
        vec![],
    ));
    assert_eq!(i64_const(&g, 0, 1), vec![0, 2]);
    assert_eq!(
        out_ty(&g, 0, 0),
        &TensorType::new(DType::F32, vec![1, 3, 1])
    );

    // opset 13: already an input
    let g = import_ok(&one(
        13,
        "Squeeze",
        &[1, 3],
        &["a"],
        &["y"],
        vec![],
        vec![init("a", &i64s(&[0]))],
    ));
    assert_eq!(g.nodes[0].inputs.len(), 2);
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![3]));
}

#[test]
fn reduce_axes_become_inputs() {
    let g = import_ok(&one(
        12,
        "ReduceSum",
        &[2, 3],
        &[],
        &["y"],
        vec![a_ints("axes", &[1]), a_int("keepdims", 0)],
        vec![],
    ));
    assert_eq!(i64_const(&g, 0, 1), vec![1]);
    assert_eq!(g.nodes[0].attrs.get("keepdims"), Some(&Attr::Int(0)));
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![2]));

    let g = import_ok(&one(
        13,
        "ReduceMean",
        &[2, 3],
        &[],
        &["y"],
        vec![a_ints("axes", &[-1])],
        vec![],
    ));
    assert_eq!(i64_const(&g, 0, 1), vec![-1]);
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![2, 1]));

    // no axes: reduce everything, same in both forms
    let g = import_ok(&one(11, "ReduceMax", &[2, 3], &[], &["y"], vec![], vec![]));
    assert_eq!(g.nodes[0].inputs.len(), 1);
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![1, 1]));
}

#[test]
fn split_sizes_become_an_input_and_equal_splits_get_num_outputs() {
    let g = import_ok(&one(
        11,
        "Split",
        &[6],
        &[],
        &["a", "b"],
        vec![a_ints("split", &[2, 4])],
        vec![],
    ));
    assert_eq!(i64_const(&g, 0, 1), vec![2, 4]);
    assert_eq!(out_ty(&g, 0, 1), &TensorType::new(DType::F32, vec![4]));

    let g = import_ok(&one(
        13,
        "Split",
        &[6, 2],
        &[],
        &["a", "b", "c"],
        vec![],
        vec![],
    ));
    assert_eq!(g.nodes[0].attrs.get("num_outputs"), Some(&Attr::Int(3)));
    assert_eq!(out_ty(&g, 0, 2), &TensorType::new(DType::F32, vec![2, 2]));
}

#[test]
fn slice_attributes_become_inputs_before_10() {
    let g = import_ok(&one(
        9,
        "Slice",
        &[4, 5],
        &[],
        &["y"],
        vec![
            a_ints("starts", &[1]),
            a_ints("ends", &[3]),
            a_ints("axes", &[1]),
        ],
        vec![],
    ));
    assert_eq!(i64_const(&g, 0, 1), vec![1]);
    assert_eq!(i64_const(&g, 0, 2), vec![3]);
    assert_eq!(i64_const(&g, 0, 3), vec![1]);
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![4, 2]));
}

#[test]
fn pad_and_clip_attributes_become_inputs_before_11() {
    let g = import_ok(&one(
        10,
        "Pad",
        &[2, 2],
        &[],
        &["y"],
        vec![a_ints("pads", &[0, 1, 0, 1]), a_float("value", 1.5)],
        vec![],
    ));
    assert_eq!(i64_const(&g, 0, 1), vec![0, 1, 0, 1]);
    assert!(const_input(&g, 0, 2).bit_eq(&Tensor::scalar(1.5f32)));
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![2, 4]));

    let g = import_ok(&one(
        7,
        "Clip",
        &[3],
        &[],
        &["y"],
        vec![a_float("max", 6.0)],
        vec![],
    ));
    assert_eq!(g.nodes[0].inputs[1], None, "no min");
    assert!(const_input(&g, 0, 2).bit_eq(&Tensor::scalar(6.0f32)));
    assert!(g.nodes[0].attrs.is_empty());
}

#[test]
fn topk_k_and_dropout_ratio_become_inputs() {
    let g = import_ok(&one(
        9,
        "TopK",
        &[5],
        &[],
        &["v", "i"],
        vec![a_int("k", 2)],
        vec![],
    ));
    assert_eq!(i64_const(&g, 0, 1), vec![2]);
    assert_eq!(out_ty(&g, 0, 1), &TensorType::new(DType::I64, vec![2]));

    let g = import_ok(&one(
        7,
        "Dropout",
        &[5],
        &[],
        &["y"],
        vec![a_float("ratio", 0.25)],
        vec![],
    ));
    assert!(const_input(&g, 0, 1).bit_eq(&Tensor::scalar(0.25f32)));
}

#[test]
fn old_softmax_coerces_to_2d() {
    // axis 1 of a rank-3 input: Flatten -> Softmax(axis=1) -> Reshape back
    let g = import_ok(&one(11, "Softmax", &[2, 3, 4], &[], &["y"], vec![], vec![]));
    assert_eq!(ops(&g), vec!["Flatten", "Softmax", "Reshape"]);
    assert!(
        g.nodes.iter().all(|n| n.name == "n"),
        "expanded nodes keep the ONNX node's name"
    );
    assert_eq!(g.nodes[0].attrs.get("axis"), Some(&Attr::Int(1)));
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![2, 12]));
    assert_eq!(g.nodes[1].attrs.get("axis"), Some(&Attr::Int(1)));
    assert_eq!(i64_const(&g, 2, 1), vec![2, 3, 4]);
    let y = g.nodes[2].outputs[0];
    assert_eq!(g.value(y).name.as_deref(), Some("y"));
    assert_eq!(g.ty(y), &TensorType::new(DType::F32, vec![2, 3, 4]));

    // the last axis: one node
    let g = import_ok(&one(12, "LogSoftmax", &[2, 3], &[], &["y"], vec![], vec![]));
    assert_eq!(ops(&g), vec!["LogSoftmax"]);
    assert_eq!(g.nodes[0].attrs.get("axis"), Some(&Attr::Int(1)));
    let g = import_ok(&one(
        11,
        "Hardmax",
        &[2, 3, 4],
        &[],
        &["y"],
        vec![a_int("axis", -1)],
        vec![],
    ));
    assert_eq!(ops(&g), vec!["Hardmax"]);
    assert_eq!(g.nodes[0].attrs.get("axis"), Some(&Attr::Int(2)));

    // symbolic dims: the shape comes from a Shape node
    let m = model(
        11,
        graph(
            vec![node("Softmax", &["x"], &["y"], vec![])],
            vec![vi("x", DType::F32, &[D::P("b"), D::N(3), D::N(4)])],
            vec![],
            vec![],
        ),
    );
    let g = import_ok(&m);
    assert_eq!(ops(&g), vec!["Flatten", "Softmax", "Shape", "Reshape"]);
    assert_eq!(
        g.ty(g.nodes[3].outputs[0]),
        g.ty(g.inputs[0]),
        "the output keeps x's symbolic shape"
    );

    // opset 13: untouched
    let g = import_ok(&one(13, "Softmax", &[2, 3, 4], &[], &["y"], vec![], vec![]));
    assert_eq!(ops(&g), vec!["Softmax"]);
    assert!(g.nodes[0].attrs.is_empty());
}

#[test]
fn old_batchnorm_drops_old_attributes_and_unused_training_outputs() {
    let inits: Vec<_> = ["s", "b", "m", "v"]
        .iter()
        .map(|n| init(n, &Tensor::from_vec(vec![2], vec![1.0f32, 1.0]).unwrap()))
        .collect();
    let bn = |outs: &[&str], graph_outs| {
        model(
            7,
            graph(
                vec![named(
                    node(
                        "BatchNormalization",
                        &["x", "s", "b", "m", "v"],
                        outs,
                        vec![a_int("spatial", 1), a_float("epsilon", 1e-3)],
                    ),
                    "bn",
                )],
                vec![f32s("x", &[1, 2, 3])],
                inits.clone(),
                graph_outs,
            ),
        )
    };
    let g = import_ok(&bn(&["y", "mean", "var"], vec![f32s("y", &[1, 2, 3])]));
    assert_eq!(g.nodes[0].outputs.len(), 1);
    assert_eq!(g.nodes[0].attrs.get("spatial"), None);
    assert!(g.nodes[0].attrs.has("epsilon"));

    let e = import_err(&bn(&["y", "mean"], vec![f32s("mean", &[2])]));
    assert!(
        e.contains("node \"bn\" (op BatchNormalization): training-mode outputs"),
        "{e}"
    );
}

#[test]
fn upsample_and_old_resize_become_resize() {
    let g = import_ok(&one(
        7,
        "Upsample",
        &[1, 1, 2, 2],
        &[],
        &["y"],
        vec![a_floats("scales", &[1.0, 1.0, 2.0, 2.0])],
        vec![],
    ));
    assert_eq!(ops(&g), vec!["Resize"]);
    let n = &g.nodes[0];
    assert_eq!(n.inputs.len(), 3);
    assert_eq!(n.inputs[1], None, "no roi");
    assert_eq!(
        const_input(&g, 0, 2).as_slice::<f32>().unwrap(),
        &[1.0, 1.0, 2.0, 2.0]
    );
    assert_eq!(
        n.attrs.get("coordinate_transformation_mode"),
        Some(&Attr::Str("asymmetric".into()))
    );
    assert_eq!(
        n.attrs.get("nearest_mode"),
        Some(&Attr::Str("floor".into()))
    );
    assert_eq!(
        out_ty(&g, 0, 0),
        &TensorType::new(DType::F32, vec![1, 1, 4, 4])
    );

    let scales = init(
        "sc",
        &Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 2.0, 3.0]).unwrap(),
    );
    let g = import_ok(&one(
        9,
        "Upsample",
        &[1, 1, 2, 2],
        &["sc"],
        &["y"],
        vec![a_str("mode", "linear")],
        vec![scales.clone()],
    ));
    assert_eq!(
        g.nodes[0].attrs.get("mode"),
        Some(&Attr::Str("linear".into()))
    );
    assert_eq!(g.nodes[0].attrs.get("nearest_mode"), None);
    assert_eq!(
        out_ty(&g, 0, 0),
        &TensorType::new(DType::F32, vec![1, 1, 4, 6])
    );

    let g = import_ok(&one(
        10,
        "Resize",
        &[1, 1, 2, 2],
        &["sc"],
        &["y"],
        vec![],
        vec![scales],
    ));
    assert_eq!(g.nodes[0].inputs.len(), 3);
    assert_eq!(g.nodes[0].inputs[1], None);

    // opset 11 exporters pass empty roi and scales when giving sizes
    let empty = Tensor::from_vec(vec![0], Vec::<f32>::new()).unwrap();
    let g = import_ok(&one(
        11,
        "Resize",
        &[1, 1, 2, 2],
        &["roi", "scales", "sizes"],
        &["y"],
        vec![a_str("mode", "nearest")],
        vec![
            init("roi", &empty),
            init("scales", &empty),
            init("sizes", &i64s(&[1, 1, 3, 3])),
        ],
    ));
    let n = &g.nodes[0];
    assert_eq!((n.inputs[1], n.inputs[2]), (None, None));
    assert_eq!(
        out_ty(&g, 0, 0),
        &TensorType::new(DType::F32, vec![1, 1, 3, 3])
    );
}

#[test]
fn scatter_becomes_scatter_elements_and_gemm_loses_broadcast() {
    let m = model(
        9,
        graph(
            vec![node(
                "Scatter",
                &["x", "i", "u"],
                &["y"],
                vec![a_int("axis", 0)],
            )],
            vec![f32s("x", &[3])],
            vec![
                init("i", &i64s(&[1])),
                init("u", &Tensor::from_vec(vec![1], vec![5.0f32]).unwrap()),
            ],
            vec![],
        ),
    );
    let g = import_ok(&m);
    assert_eq!(ops(&g), vec!["ScatterElements"]);

    let w = Tensor::from_vec(vec![2, 2], vec![1.0f32; 4]).unwrap();
    let m = model(
        7,
        graph(
            vec![node(
                "Gemm",
                &["x", "w", "c"],
                &["y"],
                vec![a_int("broadcast", 1)],
            )],
            vec![f32s("x", &[3, 2])],
            vec![
                init("w", &w),
                init("c", &Tensor::from_vec(vec![2], vec![0.0f32; 2]).unwrap()),
            ],
            vec![],
        ),
    );
    let g = import_ok(&m);
    assert!(g.nodes[0].attrs.is_empty());
    assert_eq!(out_ty(&g, 0, 0), &TensorType::new(DType::F32, vec![3, 2]));
}

#[test]
fn old_group_normalization_scales_per_group_become_per_channel() {
    let per_group = |n: &str, v: [f32; 2]| init(n, &Tensor::from_vec(vec![2], v.to_vec()).unwrap());
    let m = model(
        18,
        graph(
            vec![node(
                "GroupNormalization",
                &["x", "s", "b"],
                &["y"],
                vec![a_int("num_groups", 2)],
            )],
            vec![f32s("x", &[1, 4, 3])],
            vec![per_group("s", [1.5, -0.5]), per_group("b", [0.1, 0.2])],
            vec![],
        ),
    );
    let g = import_ok(&m);
    assert_eq!(
        const_input(&g, 0, 1).as_slice::<f32>().unwrap(),
        &[1.5, 1.5, -0.5, -0.5]
    );
    assert_eq!(
        const_input(&g, 0, 2).as_slice::<f32>().unwrap(),
        &[0.1, 0.1, 0.2, 0.2]
    );

    // runtime scale and bias: repeated with Unsqueeze -> Expand -> Reshape
    let m = model(
        20,
        graph(
            vec![node(
                "GroupNormalization",
                &["x", "s", "b"],
                &["y"],
                vec![a_int("num_groups", 2)],
            )],
            vec![f32s("x", &[1, 4, 3]), f32s("s", &[2]), f32s("b", &[2])],
            vec![],
            vec![],
        ),
    );
    let g = import_ok(&m);
    assert_eq!(
        ops(&g),
        vec![
            "Unsqueeze",
            "Expand",
            "Reshape",
            "Unsqueeze",
            "Expand",
            "Reshape",
            "GroupNormalization"
        ]
    );
    assert_eq!(
        g.ty(g.nodes[2].outputs[0]),
        &TensorType::new(DType::F32, vec![4])
    );

    // opset 21: per channel already
    let m = model(
        21,
        graph(
            vec![node(
                "GroupNormalization",
                &["x", "s", "b"],
                &["y"],
                vec![a_int("num_groups", 2)],
            )],
            vec![f32s("x", &[1, 4, 3]), f32s("s", &[4]), f32s("b", &[4])],
            vec![],
            vec![],
        ),
    );
    assert_eq!(ops(&import_ok(&m)), vec!["GroupNormalization"]);
}
