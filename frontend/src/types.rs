//! ONNX `ValueInfoProto` types -> kiln [`TensorType`].
//!
//! Graph inputs must be tensors of a supported dtype with a known rank.
//! `dim_value` becomes [`Dim::Fixed`], `dim_param` a [`Dim::Sym`] of the same
//! name, and a dimension with neither a `Dim::Sym` named after the value and
//! the axis (`input_ids_dim1`). Graph outputs' declared types are read
//! leniently ([`Declared`]) and only compared with what inference found.

use crate::proto::onnx::tensor_shape_proto::dimension::Value as DimValue;
use crate::proto::onnx::type_proto::Value as TypeValue;
use crate::proto::onnx::{TensorShapeProto, ValueInfoProto};
use kiln_ir::{DType, Dim, Shape, TensorType};

/// The tensor type of a graph input. The error is a message about the value.
pub(crate) fn input_type(vi: &ValueInfoProto) -> Result<TensorType, String> {
    let (elem, shape) = tensor_parts(vi)?;
    let dtype = DType::from_onnx_code(elem).ok_or_else(|| {
        format!(
            "unsupported dtype {} (code {elem})",
            DType::onnx_code_name(elem)
        )
    })?;
    let shape = shape.ok_or(
        "has no shape (unknown rank); kiln needs the rank of every graph input".to_string(),
    )?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (i, d) in shape.dim.iter().enumerate() {
        dims.push(match &d.value {
            Some(DimValue::DimValue(n)) => Dim::Fixed(
                usize::try_from(*n).map_err(|_| format!("dimension {i} is negative ({n})"))?,
            ),
            Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Sym(p.clone()),
            _ => Dim::Sym(generated_dim_name(vi.name(), i)),
        });
    }
    let fixed = dims.iter().filter_map(Dim::fixed);
    if fixed
        .clone()
        .try_fold(1usize, |a, d| a.checked_mul(d))
        .is_none_or(|n| n > MAX_ELEMENTS)
    {
        let d: Vec<String> = fixed.map(|d| d.to_string()).collect();
        return Err(format!(
            "dimensions [{}] have too many elements",
            d.join(",")
        ));
    }
    Ok(TensorType {
        dtype,
        shape: Shape(dims),
    })
}

/// More elements than any real tensor has (2^48); bigger declared shapes are
/// corrupt files, and would overflow size arithmetic downstream.
const MAX_ELEMENTS: usize = 1 << 48;

/// The name given to a dimension the model leaves unnamed.
pub(crate) fn generated_dim_name(value: &str, axis: usize) -> String {
    let base: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let base = if base.starts_with(|c: char| c.is_ascii_alphabetic()) {
        base
    } else {
        format!("v{base}")
    };
    format!("{base}_dim{axis}")
}

/// A declared output type, as far as the model states it.
pub(crate) struct Declared {
    /// ONNX dtype code, if stated (non-zero).
    pub elem: Option<i32>,
    /// Dimensions (`Some(n)` for a `dim_value`), if a shape is stated.
    pub dims: Option<Vec<Option<i64>>>,
}

/// Reads a graph output's declared type; `None` when it declares nothing useful.
pub(crate) fn declared(vi: &ValueInfoProto) -> Option<Declared> {
    let (elem, shape) = tensor_parts(vi).ok()?;
    let dims = shape.map(|s| {
        s.dim
            .iter()
            .map(|d| match d.value {
                Some(DimValue::DimValue(n)) => Some(n),
                _ => None,
            })
            .collect()
    });
    Some(Declared {
        elem: (elem != 0).then_some(elem),
        dims,
    })
}

/// Checks an inferred type against a declared one; the error says how they differ.
pub(crate) fn check_declared(d: &Declared, inferred: &TensorType) -> Result<(), String> {
    if let Some(code) = d.elem {
        if code != inferred.dtype.onnx_code() {
            return Err(format!(
                "declared dtype {} but kiln infers {}",
                DType::onnx_code_name(code),
                inferred
            ));
        }
    }
    if let Some(dims) = &d.dims {
        let shown = || {
            let s: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".to_string(), |n| n.to_string()))
                .collect();
            format!("[{}]", s.join(","))
        };
        if dims.len() != inferred.shape.rank() {
            return Err(format!(
                "declared shape {} but kiln infers {}",
                shown(),
                inferred
            ));
        }
        for (i, (want, got)) in dims.iter().zip(&inferred.shape.0).enumerate() {
            if let (Some(w), Dim::Fixed(g)) = (want, got) {
                if *w < 0 || *w as u64 != *g as u64 {
                    return Err(format!(
                        "declared shape {} but kiln infers {} (dimension {i})",
                        shown(),
                        inferred
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The element type code and shape of a tensor-typed value.
fn tensor_parts(vi: &ValueInfoProto) -> Result<(i32, Option<&TensorShapeProto>), String> {
    let tp = vi.r#type.as_ref().ok_or("has no type")?;
    match tp.value.as_ref().ok_or("has no type")? {
        TypeValue::TensorType(t) => Ok((t.elem_type(), t.shape.as_ref())),
        TypeValue::SequenceType(_) => Err("is a sequence; only tensors are supported".into()),
        TypeValue::MapType(_) => Err("is a map; only tensors are supported".into()),
        TypeValue::OptionalType(_) => Err("is an optional; only tensors are supported".into()),
        TypeValue::SparseTensorType(_) => {
            Err("is a sparse tensor; only dense tensors are supported".into())
        }
        TypeValue::OpaqueType(_) => Err("is opaque; only tensors are supported".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_identifiers() {
        assert_eq!(generated_dim_name("input_ids", 1), "input_ids_dim1");
        assert_eq!(generated_dim_name("x:0", 0), "x_0_dim0");
        assert_eq!(generated_dim_name("0", 2), "v0_dim2");
    }
}
