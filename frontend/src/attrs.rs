//! ONNX `AttributeProto` -> kiln [`Attr`].
//!
//! Names and kinds are kept as they are (kiln's attributes are ONNX's). Kinds
//! kiln has no use for (graphs, sparse tensors, type protos, lists of
//! tensors) and function-body attribute references are errors. Files from
//! before IR version 0.0.2 may leave `type` unset; the kind is then taken from
//! the field that is filled in.

use crate::proto::onnx::attribute_proto::AttributeType;
use crate::proto::onnx::AttributeProto;
use crate::tensor::tensor_from_proto;
use kiln_ir::Attr;
use std::path::Path;

/// Converts one attribute. The error is a message to be wrapped with the node.
pub(crate) fn convert(
    a: &AttributeProto,
    base_dir: Option<&Path>,
    file: &str,
) -> Result<(String, Attr), String> {
    let name = a.name().to_string();
    let err = |msg: String| format!("attribute `{name}`: {msg}");
    if name.is_empty() {
        return Err("an attribute has no name".into());
    }
    if a.ref_attr_name.as_deref().is_some_and(|r| !r.is_empty()) {
        return Err(err(
            "attribute references (function bodies) are not supported".into(),
        ));
    }
    let kind = match a.r#type() {
        AttributeType::Undefined => guess_kind(a),
        k => k,
    };
    let utf8 = |b: &[u8]| {
        String::from_utf8(b.to_vec()).map_err(|_| err("string is not valid UTF-8".into()))
    };
    let attr = match kind {
        AttributeType::Float => Attr::Float(a.f()),
        AttributeType::Int => Attr::Int(a.i()),
        AttributeType::String => Attr::Str(utf8(a.s())?),
        AttributeType::Tensor => {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| err("tensor attribute has no tensor".into()))?;
            let t = tensor_from_proto(t, base_dir, file).map_err(|e| err(e.to_string()))?;
            Attr::Tensor(t)
        }
        AttributeType::Floats => Attr::Floats(a.floats.clone()),
        AttributeType::Ints => Attr::Ints(a.ints.clone()),
        AttributeType::Strings => Attr::Strs(
            a.strings
                .iter()
                .map(|s| utf8(s))
                .collect::<Result<_, _>>()?,
        ),
        AttributeType::Graph | AttributeType::Graphs => {
            return Err(err("subgraph attributes are not supported".into()))
        }
        AttributeType::Undefined => return Err(err("attribute has no value".into())),
        other => {
            return Err(err(format!(
                "{} attributes are not supported",
                other.as_str_name()
            )))
        }
    };
    Ok((name, attr))
}

/// The kind of an attribute whose `type` is unset, from its filled-in field.
fn guess_kind(a: &AttributeProto) -> AttributeType {
    if a.f.is_some() {
        AttributeType::Float
    } else if a.i.is_some() {
        AttributeType::Int
    } else if a.s.is_some() {
        AttributeType::String
    } else if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else {
        AttributeType::Undefined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_convert_and_untyped_attributes_are_guessed() {
        let a = AttributeProto {
            name: Some("axes".into()),
            r#type: Some(AttributeType::Ints as i32),
            ints: vec![0, -1],
            ..Default::default()
        };
        assert_eq!(
            convert(&a, None, "m").unwrap(),
            ("axes".into(), Attr::Ints(vec![0, -1]))
        );
        let a = AttributeProto {
            name: Some("alpha".into()),
            f: Some(0.5),
            ..Default::default()
        };
        assert_eq!(convert(&a, None, "m").unwrap().1, Attr::Float(0.5));
        let a = AttributeProto {
            name: Some("mode".into()),
            s: Some(b"linear".to_vec()),
            ..Default::default()
        };
        assert_eq!(
            convert(&a, None, "m").unwrap().1,
            Attr::Str("linear".into())
        );
    }

    #[test]
    fn unsupported_kinds_name_the_attribute() {
        let a = AttributeProto {
            name: Some("then_branch".into()),
            r#type: Some(AttributeType::Graph as i32),
            ..Default::default()
        };
        let e = convert(&a, None, "m").unwrap_err();
        assert!(e.contains("`then_branch`") && e.contains("subgraph"), "{e}");
        let a = AttributeProto {
            name: Some("mode".into()),
            s: Some(vec![0xff, 0xfe]),
            ..Default::default()
        };
        assert!(convert(&a, None, "m").unwrap_err().contains("UTF-8"));
    }
}
