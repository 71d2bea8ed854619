//! Builders for small ONNX models in tests, on the prost structs.
#![allow(dead_code)]

use kiln_frontend::proto::onnx::attribute_proto::AttributeType;
use kiln_frontend::proto::onnx::tensor_shape_proto::{dimension, Dimension};
use kiln_frontend::proto::onnx::type_proto::{self, Value as TypeValue};
use kiln_frontend::proto::onnx::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use kiln_frontend::tensor_to_proto;
use kiln_ir::{DType, Graph, Tensor};
use prost::Message;

/// A dimension of a declared type.
#[derive(Clone, Copy)]
pub enum D {
    N(i64),
    P(&'static str),
    Unknown,
}

pub fn vi(name: &str, dtype: DType, dims: &[D]) -> ValueInfoProto {
    vi_code(name, dtype.onnx_code(), Some(dims))
}

pub fn vi_code(name: &str, elem: i32, dims: Option<&[D]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                denotation: None,
                value: match d {
                    D::N(n) => Some(dimension::Value::DimValue(*n)),
                    D::P(p) => Some(dimension::Value::DimParam(p.to_string())),
                    D::Unknown => None,
                },
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            denotation: None,
            value: Some(TypeValue::TensorType(type_proto::Tensor {
                elem_type: Some(elem),
                shape,
            })),
        }),
        ..Default::default()
    }
}

pub fn f32s(name: &str, dims: &[usize]) -> ValueInfoProto {
    let d: Vec<D> = dims.iter().map(|&n| D::N(n as i64)).collect();
    vi(name, DType::F32, &d)
}

pub fn node(op: &str, ins: &[&str], outs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

pub fn named(mut n: NodeProto, name: &str) -> NodeProto {
    n.name = Some(name.into());
    n
}

fn attr(name: &str, t: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(t as i32),
        ..Default::default()
    }
}

pub fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

pub fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

pub fn a_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, AttributeType::Float)
    }
}

pub fn a_floats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: v.to_vec(),
        ..attr(name, AttributeType::Floats)
    }
}

pub fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

pub fn a_tensor(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        t: Some(tensor_to_proto(t, None)),
        ..attr(name, AttributeType::Tensor)
    }
}

pub fn init(name: &str, t: &Tensor) -> TensorProto {
    tensor_to_proto(t, Some(name))
}

pub fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

pub fn graph(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
    outputs: Vec<ValueInfoProto>,
) -> GraphProto {
    GraphProto {
        name: Some("g".into()),
        node: nodes,
        input: inputs,
        initializer: inits,
        output: outputs,
        ..Default::default()
    }
}

pub fn model(opset: i64, g: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        producer_name: Some("kiln-tests".into()),
        graph: Some(g),
        ..Default::default()
    }
}

pub fn bytes(m: &ModelProto) -> Vec<u8> {
    m.encode_to_vec()
}

pub fn import(m: &ModelProto) -> Result<Graph, kiln_frontend::FrontendError> {
    kiln_frontend::import_bytes(&bytes(m), None, "model.onnx")
}

/// Imports a model that must import, and checks the graph's invariants and types.
pub fn import_ok(m: &ModelProto) -> Graph {
    let g = match import(m) {
        Ok(g) => g,
        Err(e) => panic!("import failed: {e}"),
    };
    if let Err(e) = kiln_ir::verify::verify_types(&g) {
        panic!("the imported graph does not verify: {e}");
    }
    g
}

pub fn import_err(m: &ModelProto) -> String {
    match import(m) {
        Ok(_) => panic!("import should have failed"),
        Err(e) => e.to_string(),
    }
}

/// The ops of the graph's nodes, in order.
pub fn ops(g: &Graph) -> Vec<&'static str> {
    g.nodes.iter().map(|n| n.op.name()).collect()
}

/// The constant value of node `i`'s input `k`.
pub fn const_input(g: &Graph, i: usize, k: usize) -> &Tensor {
    let v = g.nodes[i].inputs[k].expect("input present");
    g.consts.get(&v).expect("input is a constant")
}

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-frontend-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
