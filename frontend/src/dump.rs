//! A readable listing of an ONNX file as it is, before import (`kiln dump
//! --stage onnx`): model header, opsets, graph inputs, initializers (dtype and
//! shape only), nodes with their attributes, and outputs.

use crate::error::{FrontendError, Result};
use crate::proto::onnx::attribute_proto::AttributeType;
use crate::proto::onnx::tensor_shape_proto::dimension::Value as DimValue;
use crate::proto::onnx::type_proto::Value as TypeValue;
use crate::proto::onnx::{AttributeProto, ModelProto, TensorProto, ValueInfoProto};
use kiln_ir::DType;
use prost::Message;
use std::fmt::Write;
use std::path::Path;

/// Lists an ONNX model file.
pub fn dump_onnx_file(path: &Path) -> Result<String> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io {
        file: file.clone(),
        source,
    })?;
    dump_onnx_bytes(&bytes, &file)
}

/// Lists an ONNX model given as bytes; `file_label` names it in errors.
pub fn dump_onnx_bytes(bytes: &[u8], file_label: &str) -> Result<String> {
    let m = ModelProto::decode(bytes).map_err(|e| FrontendError::Decode {
        file: file_label.to_string(),
        what: "model",
        msg: e.to_string(),
    })?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {file_label}: ir_version {}, producer {:?} {:?}",
        m.ir_version(),
        m.producer_name(),
        m.producer_version()
    );
    let opsets: Vec<String> = m
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}={}",
                if o.domain().is_empty() {
                    "ai.onnx"
                } else {
                    o.domain()
                },
                o.version()
            )
        })
        .collect();
    let _ = writeln!(s, "opsets: {}", opsets.join(", "));
    let Some(g) = &m.graph else {
        let _ = writeln!(s, "(no graph)");
        return Ok(s);
    };
    let _ = writeln!(s, "graph {:?}", g.name());
    for vi in &g.input {
        let _ = writeln!(s, "  input {:?}: {}", vi.name(), value_type(vi));
    }
    for t in &g.initializer {
        let _ = writeln!(s, "  initializer {:?}: {}", t.name(), tensor_type(t));
    }
    for (i, n) in g.node.iter().enumerate() {
        let name = if n.name().is_empty() {
            format!("{}_{i}", n.op_type())
        } else {
            n.name().to_string()
        };
        let op = if n.domain().is_empty() {
            n.op_type().to_string()
        } else {
            format!("{}::{}", n.domain(), n.op_type())
        };
        let list = |v: &[String]| {
            v.iter()
                .map(|x| format!("{x:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            s,
            "  node {name:?}: {} = {op}({})",
            list(&n.output),
            list(&n.input)
        );
        if !n.attribute.is_empty() {
            let attrs: Vec<String> = n
                .attribute
                .iter()
                .map(|a| format!("{}={}", a.name(), attr_value(a)))
                .collect();
            let _ = write!(s, " {{{}}}", attrs.join(", "));
        }
        s.push('\n');
    }
    for vi in &g.output {
        let _ = writeln!(s, "  output {:?}: {}", vi.name(), value_type(vi));
    }
    Ok(s)
}

fn dtype_name(code: i32) -> String {
    match DType::from_onnx_code(code) {
        Some(d) => d.name().to_string(),
        None => DType::onnx_code_name(code).to_string(),
    }
}

fn tensor_type(t: &TensorProto) -> String {
    let dims: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
    let ext = if t.data_location == Some(1) {
        " (external)"
    } else {
        ""
    };
    format!("{}[{}]{ext}", dtype_name(t.data_type()), dims.join(","))
}

fn value_type(vi: &ValueInfoProto) -> String {
    match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => {
            let shape = match &t.shape {
                None => "[?rank]".to_string(),
                Some(sh) => {
                    let dims: Vec<String> = sh
                        .dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(DimValue::DimValue(n)) => n.to_string(),
                            Some(DimValue::DimParam(p)) => p.clone(),
                            None => "?".to_string(),
                        })
                        .collect();
                    format!("[{}]", dims.join(","))
                }
            };
            format!("{}{shape}", dtype_name(t.elem_type()))
        }
        Some(_) => "(not a tensor)".to_string(),
        None => "(no type)".to_string(),
    }
}

fn attr_value(a: &AttributeProto) -> String {
    fn short<T: std::fmt::Debug>(v: &[T]) -> String {
        if v.len() <= 16 {
            format!("{v:?}")
        } else {
            format!("{:?}... ({} values)", &v[..16], v.len())
        }
    }
    match a.r#type() {
        AttributeType::Float => format!("{}", a.f()),
        AttributeType::Int => format!("{}", a.i()),
        AttributeType::String => format!("{:?}", String::from_utf8_lossy(a.s())),
        AttributeType::Tensor => a.t.as_ref().map_or("tensor?".into(), tensor_type),
        AttributeType::Floats => short(&a.floats),
        AttributeType::Ints => short(&a.ints),
        AttributeType::Strings => {
            let v: Vec<String> = a
                .strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            short(&v)
        }
        AttributeType::Graph => a.g.as_ref().map_or("graph?".into(), |g| {
            format!("<graph {:?}, {} nodes>", g.name(), g.node.len())
        }),
        other => format!("<{}>", other.as_str_name()),
    }
}
