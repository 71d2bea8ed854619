//! ONNX `TensorProto` <-> [`Tensor`].
//!
//! Decoding accepts every storage form onnx.proto allows for the dtypes kiln
//! supports: `raw_data` (little-endian), the typed fields (`float_data`,
//! `int32_data`, which also packs int8/uint8/int16/uint16/bool and the bit
//! patterns of float16/bfloat16, `int64_data`, `double_data`, `uint64_data`
//! for uint32/uint64), and external data (`data_location = EXTERNAL`: a file
//! named relative to the model's directory, with an optional offset and
//! length). Sizes are checked before anything is allocated, so a corrupt
//! header cannot ask for terabytes. Encoding always writes `raw_data`.

use crate::error::{FrontendError, Result};
use crate::proto::onnx::{tensor_proto, TensorProto};
use half::{bf16, f16};
use kiln_ir::{DType, Data, Tensor};
use prost::Message;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

/// Decodes a `TensorProto`. `base_dir` is the directory external data is
/// relative to (the model's or the `.pb` file's); `file` labels errors.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>, file: &str) -> Result<Tensor> {
    decode(t, base_dir).map_err(|msg| FrontendError::Tensor {
        file: file.to_string(),
        tensor: tensor_label(t),
        msg,
    })
}

/// The name errors use for a tensor.
pub(crate) fn tensor_label(t: &TensorProto) -> String {
    match t.name() {
        "" => "<unnamed>".to_string(),
        n => n.to_string(),
    }
}

/// Encodes a tensor as a `TensorProto` with `raw_data`.
pub fn tensor_to_proto(t: &Tensor, name: Option<&str>) -> TensorProto {
    TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(t.dtype().onnx_code()),
        name: name.map(str::to_string),
        raw_data: Some(t.to_le_bytes()),
        ..TensorProto::default()
    }
}

/// Reads an ONNX `TensorProto` file (such as the test data's `input_0.pb`).
/// Returns the tensor's name (if it has one) and the tensor.
pub fn read_tensor_pb(path: &Path) -> Result<(Option<String>, Tensor)> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| FrontendError::Io {
        file: file.clone(),
        source,
    })?;
    let proto = TensorProto::decode(bytes.as_slice()).map_err(|e| FrontendError::Decode {
        file: file.clone(),
        what: "tensor",
        msg: e.to_string(),
    })?;
    let t = tensor_from_proto(&proto, path.parent(), &file)?;
    let name = proto.name.filter(|n| !n.is_empty());
    Ok((name, t))
}

/// Writes a tensor as an ONNX `TensorProto` file.
pub fn write_tensor_pb(path: &Path, name: Option<&str>, t: &Tensor) -> Result<()> {
    let bytes = tensor_to_proto(t, name).encode_to_vec();
    std::fs::write(path, bytes).map_err(|source| FrontendError::Io {
        file: path.display().to_string(),
        source,
    })
}

fn decode(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, String> {
    let code = t.data_type();
    let dtype = DType::from_onnx_code(code).ok_or_else(|| {
        format!(
            "unsupported dtype {} (code {code})",
            DType::onnx_code_name(code)
        )
    })?;
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d =
            usize::try_from(d).map_err(|_| format!("negative dimension {d} in {:?}", t.dims))?;
        shape.push(d);
    }
    let too_big = || format!("shape {:?} has too many elements", t.dims);
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(too_big)?;
    let nbytes = numel.checked_mul(dtype.size_bytes()).ok_or_else(too_big)?;
    let what = || format!("{dtype}{shape:?}");

    if t.data_location() == tensor_proto::DataLocation::External {
        let bytes = read_external(t, base_dir, nbytes, &what())?;
        return Tensor::from_le_bytes(dtype, shape, &bytes).map_err(|e| e.to_string());
    }
    let typed_len = t.float_data.len()
        + t.int32_data.len()
        + t.int64_data.len()
        + t.double_data.len()
        + t.uint64_data.len();
    if let Some(raw) = &t.raw_data {
        if !raw.is_empty() || typed_len == 0 {
            if raw.len() != nbytes {
                return Err(format!(
                    "raw_data has {} bytes but {} needs {nbytes}",
                    raw.len(),
                    what()
                ));
            }
            return Tensor::from_le_bytes(dtype, shape, raw).map_err(|e| e.to_string());
        }
    }
    if !t.string_data.is_empty() {
        return Err("string data is not supported".into());
    }

    fn check(field: &str, len: usize, numel: usize, what: &str) -> Result<(), String> {
        if len == numel {
            Ok(())
        } else {
            Err(format!(
                "{what} needs {numel} values but {field} has {len} (and there is no raw_data)"
            ))
        }
    }
    let data = match dtype {
        DType::F32 => {
            check("float_data", t.float_data.len(), numel, &what())?;
            Data::F32(t.float_data.clone())
        }
        DType::F64 => {
            check("double_data", t.double_data.len(), numel, &what())?;
            Data::F64(t.double_data.clone())
        }
        DType::I64 => {
            check("int64_data", t.int64_data.len(), numel, &what())?;
            Data::I64(t.int64_data.clone())
        }
        DType::U32 | DType::U64 => {
            check("uint64_data", t.uint64_data.len(), numel, &what())?;
            let v = &t.uint64_data;
            if dtype == DType::U32 {
                Data::U32(v.iter().map(|&x| x as u32).collect())
            } else {
                Data::U64(v.clone())
            }
        }
        DType::I32
        | DType::I16
        | DType::I8
        | DType::U16
        | DType::U8
        | DType::Bool
        | DType::F16
        | DType::BF16 => {
            check("int32_data", t.int32_data.len(), numel, &what())?;
            let v = &t.int32_data;
            match dtype {
                DType::I32 => Data::I32(v.clone()),
                DType::I16 => Data::I16(v.iter().map(|&x| x as i16).collect()),
                DType::I8 => Data::I8(v.iter().map(|&x| x as i8).collect()),
                DType::U16 => Data::U16(v.iter().map(|&x| x as u16).collect()),
                DType::U8 => Data::U8(v.iter().map(|&x| x as u8).collect()),
                DType::Bool => Data::Bool(v.iter().map(|&x| x != 0).collect()),
                DType::F16 => Data::F16(v.iter().map(|&x| f16::from_bits(x as u16)).collect()),
                _ => Data::BF16(v.iter().map(|&x| bf16::from_bits(x as u16)).collect()),
            }
        }
    };
    Tensor::new(shape, data).map_err(|e| e.to_string())
}

/// Reads `nbytes` of external data for `t` (whose type is `what`, for messages).
fn read_external(
    t: &TensorProto,
    base_dir: Option<&Path>,
    nbytes: usize,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for kv in &t.external_data {
        let parse = |v: &str| {
            v.trim().parse::<u64>().map_err(|_| {
                format!(
                    "external data `{}` is not a non-negative integer: {v:?}",
                    kv.key()
                )
            })
        };
        match kv.key() {
            "location" => location = Some(kv.value()),
            "offset" => offset = parse(kv.value())?,
            "length" => length = Some(parse(kv.value())?),
            _ => {}
        }
    }
    let location = location
        .filter(|l| !l.is_empty())
        .ok_or("external data has no `location`")?;
    let rel = Path::new(location);
    if !rel
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location {location:?} must be a relative path inside the model's directory"
        ));
    }
    let base = base_dir.ok_or_else(|| {
        format!("external data in {location:?} needs the model's directory, and none was given")
    })?;
    let path = base.join(rel);
    let shown = path.display();
    let mut f = std::fs::File::open(&path)
        .map_err(|e| format!("cannot open external data file {shown}: {e}"))?;
    let file_len = f
        .metadata()
        .map_err(|e| format!("cannot read external data file {shown}: {e}"))?
        .len();
    let want = nbytes as u64;
    if let Some(len) = length {
        if len != want {
            return Err(format!(
                "external data length is {len} bytes but {what} needs {want} (file {shown})"
            ));
        }
    }
    let end = offset
        .checked_add(want)
        .ok_or("external data offset overflows")?;
    if end > file_len {
        return Err(format!(
            "external data file {shown} is too short: {what} needs bytes {offset}..{end} but the file has {file_len}"
        ));
    }
    if length.is_none() && end != file_len {
        return Err(format!(
            "external data has no `length` and file {shown} holds {} bytes after offset {offset}, but {what} needs {want}",
            file_len - offset
        ));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot seek in external data file {shown}: {e}"))?;
    let mut buf = vec![0u8; nbytes];
    f.read_exact(&mut buf)
        .map_err(|e| format!("cannot read external data file {shown}: {e}"))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DType, dims: &[i64]) -> TensorProto {
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(dtype.onnx_code()),
            name: Some("t".into()),
            ..TensorProto::default()
        }
    }

    #[test]
    fn int32_data_packs_small_types_and_half_bits() {
        let mut p = proto(DType::F16, &[2]);
        p.int32_data = vec![0x3C00, 0xC000]; // 1.0, -2.0
        let t = tensor_from_proto(&p, None, "m.onnx").unwrap();
        assert_eq!(
            t.as_slice::<f16>().unwrap(),
            &[f16::from_f32(1.0), f16::from_f32(-2.0)]
        );

        let mut p = proto(DType::BF16, &[1]);
        p.int32_data = vec![0x3F80]; // 1.0
        let t = tensor_from_proto(&p, None, "m.onnx").unwrap();
        assert_eq!(t.as_slice::<bf16>().unwrap(), &[bf16::from_f32(1.0)]);

        let mut p = proto(DType::I8, &[3]);
        p.int32_data = vec![-1, 127, -128];
        let t = tensor_from_proto(&p, None, "m.onnx").unwrap();
        assert_eq!(t.as_slice::<i8>().unwrap(), &[-1, 127, -128]);

        let mut p = proto(DType::Bool, &[2]);
        p.int32_data = vec![0, 1];
        let t = tensor_from_proto(&p, None, "m.onnx").unwrap();
        assert_eq!(t.as_slice::<bool>().unwrap(), &[false, true]);
    }

    #[test]
    fn uint32_lives_in_uint64_data() {
        let mut p = proto(DType::U32, &[2]);
        p.uint64_data = vec![7, 4_000_000_000];
        let t = tensor_from_proto(&p, None, "m.onnx").unwrap();
        assert_eq!(t.as_slice::<u32>().unwrap(), &[7, 4_000_000_000]);
    }

    #[test]
    fn raw_data_is_little_endian_and_checked() {
        let mut p = proto(DType::I32, &[2]);
        p.raw_data = Some(vec![1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        let t = tensor_from_proto(&p, None, "m.onnx").unwrap();
        assert_eq!(t.as_slice::<i32>().unwrap(), &[1, -1]);
        p.raw_data = Some(vec![1, 0, 0]);
        let e = tensor_from_proto(&p, None, "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.onnx: tensor \"t\": raw_data has 3 bytes"),
            "{e}"
        );
    }

    #[test]
    fn scalars_and_empty_tensors() {
        let mut p = proto(DType::F32, &[]);
        p.float_data = vec![2.5];
        let t = tensor_from_proto(&p, None, "m.onnx").unwrap();
        assert_eq!(t.shape(), &[] as &[usize]);
        let p = proto(DType::F32, &[0, 3]);
        assert_eq!(tensor_from_proto(&p, None, "m.onnx").unwrap().numel(), 0);
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let p = proto(DType::F32, &[-1]);
        let e = tensor_from_proto(&p, None, "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("negative dimension"), "{e}");
        let p = proto(DType::F32, &[i64::MAX, i64::MAX]);
        let e = tensor_from_proto(&p, None, "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("too many elements"), "{e}");
        let mut p = proto(DType::F32, &[2]);
        p.data_type = Some(8);
        let e = tensor_from_proto(&p, None, "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported dtype STRING"), "{e}");
        let p = proto(DType::F32, &[2]);
        let e = tensor_from_proto(&p, None, "m.onnx")
            .unwrap_err()
            .to_string();
        assert!(e.contains("float_data has 0"), "{e}");
    }

    #[test]
    fn round_trips_through_proto_for_every_dtype() {
        for d in DType::ALL {
            let t = Tensor::from_f64s(d, vec![2, 2], &[0.0, 1.0, 2.0, 3.0]).unwrap();
            let p = tensor_to_proto(&t, Some("x"));
            let bytes = p.encode_to_vec();
            let q = TensorProto::decode(bytes.as_slice()).unwrap();
            let u = tensor_from_proto(&q, None, "x.pb").unwrap();
            assert!(t.bit_eq(&u), "{d}");
        }
    }
}
