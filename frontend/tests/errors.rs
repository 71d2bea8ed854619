//! Bad input: every error names the file and the culprit, and no bytes panic.

mod common;
use common::*;
use kiln_frontend::proto::onnx::tensor_proto::DataLocation;
use kiln_frontend::proto::onnx::{OperatorSetIdProto, StringStringEntryProto};
use kiln_ir::{DType, Tensor};

fn relu_model(opset: i64) -> kiln_frontend::proto::onnx::ModelProto {
    model(
        opset,
        graph(
            vec![node("Relu", &["x"], &["y"], vec![])],
            vec![f32s("x", &[2, 3])],
            vec![init(
                "w",
                &Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap(),
            )],
            vec![f32s("y", &[2, 3])],
        ),
    )
}

#[test]
fn truncated_models_and_garbage_never_panic() {
    let good = bytes(&relu_model(17));
    for n in 0..good.len() {
        // Either an error or (for prefixes that happen to be valid messages) a graph.
        let _ = kiln_frontend::import_bytes(&good[..n], None, "cut.onnx");
    }
    // a deterministic pseudo-random byte soup, and the model with bytes flipped
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for len in [1usize, 7, 64, 1000, 5000] {
        let soup: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = kiln_frontend::import_bytes(&soup, None, "soup.onnx");
        let _ = kiln_frontend::dump_onnx_bytes(&soup, "soup.onnx");
    }
    for _ in 0..300 {
        let mut b = good.clone();
        let i = (next() as usize) % b.len();
        b[i] = next() as u8;
        let _ = kiln_frontend::import_bytes(&b, None, "flipped.onnx");
    }
}

/// A model with many shape-computing ops in their opset-9 forms.
fn rich(opset: i64) -> kiln_frontend::proto::onnx::ModelProto {
    let g = graph(
        vec![
            node("Shape", &["x"], &["s"], vec![]),
            node("Gather", &["s", "zero"], &["n"], vec![a_int("axis", 0)]),
            node("Unsqueeze", &["n"], &["n1"], vec![a_ints("axes", &[0])]),
            node(
                "Concat",
                &["n1", "minus1"],
                &["shape"],
                vec![a_int("axis", 0)],
            ),
            node("Reshape", &["x", "shape"], &["r"], vec![]),
            node(
                "Slice",
                &["r"],
                &["sl"],
                vec![
                    a_ints("starts", &[0]),
                    a_ints("ends", &[5]),
                    a_ints("axes", &[1]),
                ],
            ),
            node("Softmax", &["x"], &["sm"], vec![a_int("axis", 1)]),
            node(
                "Pad",
                &["x"],
                &["p"],
                vec![a_ints("pads", &[0, 1, 0, 0, 1, 0]), a_float("value", 1.0)],
            ),
            node(
                "Split",
                &["x"],
                &["a", "b"],
                vec![a_int("axis", 1), a_ints("split", &[1, 2])],
            ),
            node("TopK", &["x"], &["tv", "ti"], vec![a_int("k", 2)]),
            node(
                "Constant",
                &[],
                &["cs"],
                vec![a_ints("value_ints", &[2, 3])],
            ),
            node(
                "ConstantOfShape",
                &["cs"],
                &["co"],
                vec![a_tensor(
                    "value",
                    &Tensor::from_vec(vec![1], vec![2.0f32]).unwrap(),
                )],
            ),
            node("Expand", &["co", "cs"], &["ex"], vec![]),
            node("Tile", &["co", "cs"], &["ti2"], vec![]),
            node(
                "Transpose",
                &["x"],
                &["tr"],
                vec![a_ints("perm", &[2, 0, 1])],
            ),
            node("Resize", &["x4", "sc"], &["rs"], vec![]),
            node("ReduceSum", &["x"], &["rsum"], vec![a_ints("axes", &[1])]),
            node("Squeeze", &["n1"], &["sq"], vec![a_ints("axes", &[0])]),
            node("Gather", &["co", "idx"], &["gi"], vec![a_int("axis", 1)]),
            node("Cast", &["co"], &["cc"], vec![a_int("to", 7)]),
            node("Where", &["cond", "co", "co"], &["wh"], vec![]),
        ],
        vec![f32s("x", &[2, 3, 4]), f32s("x4", &[1, 1, 2, 2])],
        vec![
            init("zero", &Tensor::scalar(0i64)),
            init("one", &Tensor::scalar(1i64)),
            init("five", &Tensor::scalar(5i64)),
            init("minus1", &i64s(&[-1])),
            init(
                "sc",
                &Tensor::from_vec(vec![4], vec![1.0f32, 1.0, 2.0, 2.0]).unwrap(),
            ),
            init("idx", &i64s(&[0, 2, -1])),
            init(
                "cond",
                &Tensor::from_vec(vec![3], vec![true, false, true]).unwrap(),
            ),
        ],
        vec![f32s("r", &[2, 12])],
    );
    model(opset, g)
}

/// Byte flips in a model with many shape-computing ops: decoding, inference
/// and value propagation see corrupt attributes and constants.
#[test]
fn mutated_models_never_panic() {
    let good = bytes(&rich(9));
    assert!(kiln_frontend::import_bytes(&good, None, "rich.onnx").is_ok());
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut b = good.clone();
        for _ in 0..(1 + next() % 3) {
            let i = (next() as usize) % b.len();
            b[i] = next() as u8;
        }
        let _ = kiln_frontend::import_bytes(&b, None, "f.onnx");
    }
}

#[test]
fn garbage_is_not_a_valid_model() {
    let e = kiln_frontend::import_bytes(&[0xff, 0xff, 0xff], None, "junk.onnx").unwrap_err();
    let e = e.to_string();
    assert!(e.starts_with("junk.onnx: not a valid ONNX model:"), "{e}");
    let good = bytes(&relu_model(17));
    let e = kiln_frontend::import_bytes(&good[..good.len() - 3], None, "cut.onnx")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cut.onnx: not a valid ONNX model:"), "{e}");
}

#[test]
fn a_missing_file_names_the_path() {
    let e = kiln_frontend::import_file("/nonexistent/kiln/m.onnx".as_ref()).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/kiln/m.onnx: cannot read"),
        "{e}"
    );
}

#[test]
fn opsets_out_of_range_are_rejected() {
    let e = import_err(&relu_model(6));
    assert!(
        e.contains("model.onnx: unsupported opset 6") && e.contains("7 to 28"),
        "{e}"
    );
    let e = import_err(&relu_model(29));
    assert!(e.contains("unsupported opset 29"), "{e}");
    let mut m = relu_model(17);
    m.opset_import = vec![OperatorSetIdProto {
        domain: Some("ai.onnx.ml".into()),
        version: Some(3),
    }];
    let e = import_err(&m);
    assert!(
        e.contains("imports no opset of the default ONNX domain"),
        "{e}"
    );
    // a model of another domain only: the node is what is unsupported
    let mut n = named(node("Binarizer", &["x"], &["y"], vec![]), "bin");
    n.domain = Some("ai.onnx.ml".into());
    m.graph = Some(graph(vec![n], vec![f32s("x", &[2])], vec![], vec![]));
    let e = import_err(&m);
    assert!(
        e.contains("node \"bin\" (op Binarizer, domain \"ai.onnx.ml\"): unsupported op"),
        "{e}"
    );
    // "ai.onnx" is the default domain too
    m.opset_import = vec![OperatorSetIdProto {
        domain: Some("ai.onnx".into()),
        version: Some(6),
    }];
    assert!(import_err(&m).contains("unsupported opset 6"));
}

#[test]
fn a_model_without_graph_is_an_error() {
    let mut m = relu_model(17);
    m.graph = None;
    assert!(import_err(&m).contains("model.onnx: the model has no graph"));
}

#[test]
fn unknown_ops_and_other_domains_name_the_node() {
    let g = graph(
        vec![named(node("FancyOp", &["x"], &["y"], vec![]), "Foo_3")],
        vec![f32s("x", &[2])],
        vec![],
        vec![f32s("y", &[2])],
    );
    let e = import_err(&model(17, g));
    assert_eq!(
        e,
        "model.onnx: node \"Foo_3\" (op FancyOp, domain \"\"): unsupported op"
    );

    let mut n = node("FusedGemm", &["x"], &["y"], vec![]);
    n.domain = Some("com.microsoft".into());
    let g = graph(
        vec![n],
        vec![f32s("x", &[2])],
        vec![],
        vec![f32s("y", &[2])],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.starts_with("model.onnx: node \"FusedGemm_0\" (op FusedGemm, domain \"com.microsoft\"): unsupported op"),
        "{e}"
    );

    let g = graph(
        vec![node("If", &["c"], &["y"], vec![])],
        vec![vi("c", DType::Bool, &[])],
        vec![],
        vec![f32s("y", &[2])],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains("node \"If_0\" (op If, domain \"\"): unsupported op") && e.contains("subgraph"),
        "{e}"
    );
}

#[test]
fn unsupported_dtypes_are_named() {
    // a string graph input
    let g = graph(
        vec![],
        vec![vi_code("s", 8, Some(&[D::N(2)]))],
        vec![],
        vec![],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains("graph input \"s\": unsupported dtype STRING"),
        "{e}"
    );
    // a complex initializer
    let mut t = init("c", &Tensor::from_vec(vec![1], vec![0.0f64]).unwrap());
    t.data_type = Some(14);
    let g = graph(vec![], vec![], vec![t], vec![]);
    let e = import_err(&model(17, g));
    assert!(
        e.contains("tensor \"c\": unsupported dtype COMPLEX64"),
        "{e}"
    );
}

#[test]
fn graph_inputs_need_a_tensor_type_and_a_rank() {
    let g = graph(vec![], vec![vi_code("x", 1, None)], vec![], vec![]);
    let e = import_err(&model(17, g));
    assert!(
        e.contains("graph input \"x\": has no shape (unknown rank)"),
        "{e}"
    );
    let mut v = f32s("x", &[2]);
    v.r#type = None;
    let g = graph(vec![], vec![v], vec![], vec![]);
    assert!(import_err(&model(17, g)).contains("graph input \"x\": has no type"));
    let g = graph(
        vec![],
        vec![vi(
            "x",
            DType::F32,
            &[D::N(1 << 40), D::P("n"), D::N(1 << 40)],
        )],
        vec![],
        vec![],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains(
            "graph input \"x\": dimensions [1099511627776,1099511627776] have too many elements"
        ),
        "{e}"
    );
    let g = graph(
        vec![],
        vec![vi("x", DType::F32, &[D::N(-2)])],
        vec![],
        vec![],
    );
    assert!(import_err(&model(17, g)).contains("graph input \"x\": dimension 0 is negative (-2)"));
}

#[test]
fn bad_attributes_name_node_and_attribute() {
    let mut a = a_str("value_string", "hello");
    a.name = Some("value_string".into());
    let g = graph(
        vec![named(node("Constant", &[], &["c"], vec![a]), "k")],
        vec![],
        vec![],
        vec![],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains("node \"k\" (op Constant): attribute `value_string`"),
        "{e}"
    );

    // Squeeze-11's axes must be ints
    let g = graph(
        vec![named(
            node("Squeeze", &["x"], &["y"], vec![a_str("axes", "zero")]),
            "sq",
        )],
        vec![f32s("x", &[1, 2])],
        vec![],
        vec![],
    );
    let e = import_err(&model(11, g));
    assert!(
        e.contains("node \"sq\" (op Squeeze): attribute `axes`: expected ints"),
        "{e}"
    );

    // a graph-valued attribute on an op that takes none
    let mut ga = a_int("body", 0);
    ga.r#type = Some(5);
    let g = graph(
        vec![named(node("Relu", &["x"], &["y"], vec![ga]), "r")],
        vec![f32s("x", &[2])],
        vec![],
        vec![],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains("node \"r\" (op Relu): attribute `body`: subgraph"),
        "{e}"
    );
}

#[test]
fn undefined_inputs_and_duplicate_names_are_errors() {
    let g = graph(
        vec![named(node("Relu", &["nope"], &["y"], vec![]), "r")],
        vec![],
        vec![],
        vec![],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains("node \"r\" (op Relu): input 0 `nope` is not defined"),
        "{e}"
    );

    let g = graph(
        vec![],
        vec![],
        vec![
            init("w", &Tensor::scalar(1.0f32)),
            init("w", &Tensor::scalar(2.0f32)),
        ],
        vec![],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains("tensor \"w\": the name `w` is defined more than once"),
        "{e}"
    );

    let g = graph(vec![], vec![f32s("x", &[1])], vec![], vec![f32s("z", &[1])]);
    let e = import_err(&model(17, g));
    assert!(e.contains("graph output \"z\": is not computed"), "{e}");
}

fn external_model(
    location: &str,
    offset: Option<u64>,
    length: Option<u64>,
) -> kiln_frontend::proto::onnx::ModelProto {
    let mut t = init("w", &Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap());
    t.raw_data = None;
    t.data_location = Some(DataLocation::External as i32);
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.external_data.push(kv("location", location.into()));
    if let Some(o) = offset {
        t.external_data.push(kv("offset", o.to_string()));
    }
    if let Some(l) = length {
        t.external_data.push(kv("length", l.to_string()));
    }
    model(17, graph(vec![], vec![], vec![t], vec![f32s("w", &[2])]))
}

#[test]
fn external_data_is_read_and_checked() {
    let dir = temp_dir("external");
    let mut data = vec![0u8; 4];
    data.extend_from_slice(&1.5f32.to_le_bytes());
    data.extend_from_slice(&(-2.0f32).to_le_bytes());
    std::fs::write(dir.join("w.bin"), &data).unwrap();

    let path = dir.join("m.onnx");
    std::fs::write(&path, bytes(&external_model("w.bin", Some(4), Some(8)))).unwrap();
    let g = kiln_frontend::import_file(&path).unwrap();
    let w = g.consts.values().next().unwrap();
    assert_eq!(w.as_slice::<f32>().unwrap(), &[1.5, -2.0]);

    // missing file
    std::fs::write(&path, bytes(&external_model("gone.bin", None, None))).unwrap();
    let e = kiln_frontend::import_file(&path).unwrap_err().to_string();
    assert!(e.contains("tensor \"w\"") && e.contains("gone.bin"), "{e}");

    // short file
    std::fs::write(&path, bytes(&external_model("w.bin", Some(8), None))).unwrap();
    let e = kiln_frontend::import_file(&path).unwrap_err().to_string();
    assert!(
        e.contains("tensor \"w\"") && e.contains("too short") && e.contains("w.bin"),
        "{e}"
    );

    // wrong length
    std::fs::write(&path, bytes(&external_model("w.bin", Some(0), Some(12)))).unwrap();
    let e = kiln_frontend::import_file(&path).unwrap_err().to_string();
    assert!(e.contains("length is 12 bytes but f32[2] needs 8"), "{e}");

    // escaping the model's directory
    std::fs::write(&path, bytes(&external_model("../w.bin", None, None))).unwrap();
    let e = kiln_frontend::import_file(&path).unwrap_err().to_string();
    assert!(e.contains("inside the model's directory"), "{e}");

    // from bytes, with no directory to look in
    let e = import_err(&external_model("w.bin", None, None));
    assert!(
        e.contains("tensor \"w\"") && e.contains("needs the model's directory"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shape_inference_failures_name_the_node() {
    let g = graph(
        vec![named(node("Add", &["a", "b"], &["c"], vec![]), "add_1")],
        vec![f32s("a", &[2, 3]), f32s("b", &[4])],
        vec![],
        vec![],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.starts_with("model.onnx: node \"add_1\" (op Add): shape inference failed:"),
        "{e}"
    );
}

#[test]
fn declared_output_types_must_agree_with_inference() {
    let g = graph(
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![f32s("x", &[2, 3])],
        vec![],
        vec![f32s("y", &[2, 4])],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains("graph output \"y\": declared shape [2,4] but kiln infers f32[2,3]"),
        "{e}"
    );
    let g = graph(
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![f32s("x", &[2, 3])],
        vec![],
        vec![vi("y", DType::F16, &[D::N(2), D::N(3)])],
    );
    let e = import_err(&model(17, g));
    assert!(
        e.contains("graph output \"y\": declared dtype FLOAT16 but kiln infers f32[2,3]"),
        "{e}"
    );
}

#[test]
fn tensor_pb_files_round_trip_and_bad_ones_are_named() {
    let dir = temp_dir("pb");
    let p = dir.join("input_0.pb");
    let t = Tensor::from_vec(vec![2, 2], vec![1i64, -2, 3, 4]).unwrap();
    kiln_frontend::write_tensor_pb(&p, Some("ids"), &t).unwrap();
    let (name, u) = kiln_frontend::read_tensor_pb(&p).unwrap();
    assert_eq!(name.as_deref(), Some("ids"));
    assert!(t.bit_eq(&u));
    std::fs::write(&p, [0xffu8, 0xff]).unwrap();
    let e = kiln_frontend::read_tensor_pb(&p).unwrap_err().to_string();
    assert!(e.contains("input_0.pb: not a valid ONNX tensor"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
