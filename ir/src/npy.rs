//! `.npy` (numpy's array format, versions 1.0 to 3.0) reading and writing.
//!
//! Only C-order (row-major), little-endian arrays of kiln's dtypes are read;
//! anything else is a clear error. bf16 is written with ml_dtypes' `<V2`
//! descriptor and read back from it.

use crate::{DType, Error, Result, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

fn err(msg: impl Into<String>) -> Error {
    Error::Tensor(format!("npy: {}", msg.into()))
}

/// Serialises a tensor as an `.npy` (version 1.0) file.
pub fn write(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape() {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        dims => format!("({})", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        t.dtype().npy_descr()
    );
    // magic(6) + version(2) + len(2) + header + '\n' must be a multiple of 64
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.numel() * t.dtype().size_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out
}

/// Parses an `.npy` file.
pub fn read(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err("not an .npy file (bad magic)"));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err("truncated header"));
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(err(format!("unsupported format version {v}"))),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= bytes.len()).ok_or_else(|| err("truncated header"))?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| err("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| err("header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or_else(|| err("header has no 'fortran_order'"))?;
    if fortran.trim() != "False" {
        return Err(err("Fortran-order arrays are not supported"));
    }
    let shape_s = dict_value(header, "shape").ok_or_else(|| err("header has no 'shape'"))?;
    let shape: Vec<usize> = shape_s
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|_| err(format!("bad shape {shape_s}"))))
        .collect::<Result<_>>()?;
    let dtype = match descr {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        "<V2" | "|V2" => DType::BF16,
        "<f8" => DType::F64,
        "|i1" | "<i1" => DType::I8,
        "|u1" | "<u1" => DType::U8,
        "<i2" => DType::I16,
        "<u2" => DType::U16,
        "<i4" => DType::I32,
        "<u4" => DType::U32,
        "<i8" => DType::I64,
        "<u8" => DType::U64,
        "|b1" => DType::Bool,
        other => return Err(err(format!("unsupported dtype '{other}' (kiln reads little-endian numeric and bool arrays)"))),
    };
    let n: usize = shape.iter().product();
    let need = n * dtype.size_bytes();
    let body = &bytes[end..];
    if body.len() < need {
        return Err(err(format!("{dtype}{shape:?} needs {need} data bytes but the file has {}", body.len())));
    }
    Tensor::from_le_bytes(dtype, shape, &body[..need])
}

/// The text after `'key':` in a Python dict literal, up to the matching
/// top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let k = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[k + key.len() + 2..];
    let rest = rest[rest.find(':')? + 1..].trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype_and_rank() {
        for d in DType::ALL {
            for shape in [vec![], vec![3], vec![2, 3], vec![1, 0, 2]] {
                let n: usize = shape.iter().product();
                let vals: Vec<f64> = (0..n).map(|i| i as f64).collect();
                let t = Tensor::from_f64s(d, shape.clone(), &vals).unwrap();
                let u = read(&write(&t)).unwrap();
                assert!(t.bit_eq(&u), "{d} {shape:?}");
            }
        }
    }

    #[test]
    fn header_is_64_byte_aligned() {
        let t = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
        let b = write(&t);
        assert_eq!((b.len() - 8) % 64, 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(read(b"hello").is_err());
        assert!(read(b"\x93NUMPY\x01\x00\xff\xff").is_err());
        let mut b = write(&Tensor::from_vec(vec![4], vec![1i32; 4]).unwrap());
        b.truncate(b.len() - 3);
        assert!(read(&b).is_err());
    }
}
