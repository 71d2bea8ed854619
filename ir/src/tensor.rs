//! Dense tensors: the values the interpreter computes with and constants hold.
//!
//! A [`Tensor`] is a static shape plus a typed, row-major, contiguous buffer.
//! Raw bytes (ONNX `raw_data`, `.npy`, the text IR's lossless constants) are
//! always little-endian.

use crate::{DType, Error, Result};
use half::{bf16, f16};

/// Typed storage, one variant per [`DType`].
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    F64(Vec<f64>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
}

/// Runs `$body` with `$v` bound to the typed `Vec` inside a [`Data`]
/// (by value, reference or mutable reference, following `$data`).
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $body,
            $crate::Data::F16($v) => $body,
            $crate::Data::BF16($v) => $body,
            $crate::Data::F64($v) => $body,
            $crate::Data::I8($v) => $body,
            $crate::Data::U8($v) => $body,
            $crate::Data::I16($v) => $body,
            $crate::Data::U16($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::U32($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::U64($v) => $body,
            $crate::Data::Bool($v) => $body,
        }
    };
}

/// Like [`with_data!`], for a body that builds a new `Vec` of the same element
/// type: the result is re-wrapped in the same `Data` variant.
#[macro_export]
macro_rules! map_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $crate::Data::F32($body),
            $crate::Data::F16($v) => $crate::Data::F16($body),
            $crate::Data::BF16($v) => $crate::Data::BF16($body),
            $crate::Data::F64($v) => $crate::Data::F64($body),
            $crate::Data::I8($v) => $crate::Data::I8($body),
            $crate::Data::U8($v) => $crate::Data::U8($body),
            $crate::Data::I16($v) => $crate::Data::I16($body),
            $crate::Data::U16($v) => $crate::Data::U16($body),
            $crate::Data::I32($v) => $crate::Data::I32($body),
            $crate::Data::U32($v) => $crate::Data::U32($body),
            $crate::Data::I64($v) => $crate::Data::I64($body),
            $crate::Data::U64($v) => $crate::Data::U64($body),
            $crate::Data::Bool($v) => $crate::Data::Bool($body),
        }
    };
}

impl Data {
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::F16(_) => DType::F16,
            Data::BF16(_) => DType::BF16,
            Data::F64(_) => DType::F64,
            Data::I8(_) => DType::I8,
            Data::U8(_) => DType::U8,
            Data::I16(_) => DType::I16,
            Data::U16(_) => DType::U16,
            Data::I32(_) => DType::I32,
            Data::U32(_) => DType::U32,
            Data::I64(_) => DType::I64,
            Data::U64(_) => DType::U64,
            Data::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros (or `false`) of `dtype`.
    pub fn zeros(dtype: DType, n: usize) -> Data {
        match dtype {
            DType::F32 => Data::F32(vec![0.0; n]),
            DType::F16 => Data::F16(vec![f16::ZERO; n]),
            DType::BF16 => Data::BF16(vec![bf16::ZERO; n]),
            DType::F64 => Data::F64(vec![0.0; n]),
            DType::I8 => Data::I8(vec![0; n]),
            DType::U8 => Data::U8(vec![0; n]),
            DType::I16 => Data::I16(vec![0; n]),
            DType::U16 => Data::U16(vec![0; n]),
            DType::I32 => Data::I32(vec![0; n]),
            DType::U32 => Data::U32(vec![0; n]),
            DType::I64 => Data::I64(vec![0; n]),
            DType::U64 => Data::U64(vec![0; n]),
            DType::Bool => Data::Bool(vec![false; n]),
        }
    }
}

/// A Rust scalar type that is the element of some [`DType`].
pub trait Element: Copy + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    const DTYPE: DType;
    fn wrap(v: Vec<Self>) -> Data;
    fn slice(d: &Data) -> Option<&[Self]>;
    fn slice_mut(d: &mut Data) -> Option<&mut [Self]>;
    /// Widening conversion used by generic code; exact for every type but
    /// 64-bit integers beyond 2^53.
    fn to_f64(self) -> f64;
    /// Numeric conversion with Rust `as` semantics (saturating for integers,
    /// NaN to 0); bool is `x != 0`.
    fn from_f64(x: f64) -> Self;
    fn write_le(self, out: &mut Vec<u8>);
    fn read_le(b: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $variant:ident, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(v: Vec<Self>) -> Data {
                Data::$variant(v)
            }
            fn slice(d: &Data) -> Option<&[Self]> {
                match d {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(d: &mut Data) -> Option<&mut [Self]> {
                match d {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn to_f64(self) -> f64 {
                let f: fn($t) -> f64 = $to;
                f(self)
            }
            fn from_f64(x: f64) -> Self {
                let f: fn(f64) -> $t = $from;
                f(x)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(b);
                <$t>::from_le_bytes(a)
            }
        }
    };
}

element!(f32, F32, |x| x as f64, |x| x as f32);
element!(f64, F64, |x| x, |x| x);
element!(f16, F16, |x| x.to_f64(), f16::from_f64);
element!(bf16, BF16, |x| x.to_f64(), bf16::from_f64);
element!(i8, I8, |x| x as f64, |x| x as i8);
element!(u8, U8, |x| x as f64, |x| x as u8);
element!(i16, I16, |x| x as f64, |x| x as i16);
element!(u16, U16, |x| x as f64, |x| x as u16);
element!(i32, I32, |x| x as f64, |x| x as i32);
element!(u32, U32, |x| x as f64, |x| x as u32);
element!(i64, I64, |x| x as f64, |x| x as i64);
element!(u64, U64, |x| x as f64, |x| x as u64);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn wrap(v: Vec<Self>) -> Data {
        Data::Bool(v)
    }
    fn slice(d: &Data) -> Option<&[Self]> {
        match d {
            Data::Bool(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(d: &mut Data) -> Option<&mut [Self]> {
        match d {
            Data::Bool(v) => Some(v),
            _ => None,
        }
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(x: f64) -> Self {
        x != 0.0
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn read_le(b: &[u8]) -> Self {
        b[0] != 0
    }
}

/// A dense, row-major tensor with a static shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

impl Tensor {
    /// Builds a tensor, checking that `data` holds exactly `shape.product()` elements.
    pub fn new(shape: Vec<usize>, data: Data) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Tensor(format!(
                "shape {shape:?} needs {n} elements but {} were given",
                data.len()
            )));
        }
        Ok(Tensor { shape, data })
    }

    /// Builds a tensor from a typed vector.
    pub fn from_vec<T: Element>(shape: Vec<usize>, v: Vec<T>) -> Result<Tensor> {
        Tensor::new(shape, T::wrap(v))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(x: T) -> Tensor {
        Tensor { shape: Vec::new(), data: T::wrap(vec![x]) }
    }

    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor { shape, data: Data::zeros(dtype, n) }
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut Data {
        &mut self.data
    }

    pub fn into_data(self) -> Data {
        self.data
    }

    pub fn ty(&self) -> crate::TensorType {
        crate::TensorType::new(self.dtype(), self.shape.clone())
    }

    /// The elements as `&[T]`, or `None` if `T` is not this tensor's element type.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::slice(&self.data)
    }

    pub fn as_slice_mut<T: Element>(&mut self) -> Option<&mut [T]> {
        T::slice_mut(&mut self.data)
    }

    /// Same data, new shape (element counts must agree).
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Tensor> {
        Tensor::new(shape, self.data)
    }

    /// Every element widened to f64 (exact for all but huge 64-bit integers).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_data!(&self.data, v => v.iter().map(|x| x.to_f64()).collect())
    }

    /// Integer contents as i64 (for shape, axes and index tensors).
    /// Fails on floating-point or bool tensors.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        Ok(match &self.data {
            Data::I64(v) => v.clone(),
            Data::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I16(v) => v.iter().map(|&x| x as i64).collect(),
            Data::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U16(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U32(v) => v.iter().map(|&x| x as i64).collect(),
            Data::U64(v) => v.iter().map(|&x| x as i64).collect(),
            other => {
                return Err(Error::Tensor(format!(
                    "expected an integer tensor, found {}",
                    other.dtype()
                )))
            }
        })
    }

    /// Little-endian raw bytes (bool as one byte each).
    /// A hash of the dtype, the shape and at most 4096 evenly spaced
    /// elements' bits: O(1) in the tensor's size, equal for bit-identical
    /// tensors. For interning tables, which must confirm a hit with
    /// [`Tensor::bit_eq`] (different tensors may share a hash).
    pub fn sample_hash(&self) -> u64 {
        const SAMPLES: usize = 4096;
        let mut h: u64 = 0xcbf29ce484222325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
        };
        eat(self.dtype().name().as_bytes());
        for &d in &self.shape {
            eat(&(d as u64).to_le_bytes());
        }
        let n = self.numel();
        let step = n.div_ceil(SAMPLES).max(1);
        let mut buf = Vec::with_capacity(16);
        with_data!(&self.data, v => {
            let mut i = 0;
            while i < v.len() {
                buf.clear();
                Element::write_le(v[i], &mut buf);
                eat(&buf);
                i += step;
            }
        });
        h
    }

    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.numel() * self.dtype().size_bytes());
        with_data!(&self.data, v => for x in v.iter() { Element::write_le(*x, &mut out) });
        out
    }

    /// Builds a tensor from little-endian raw bytes.
    pub fn from_le_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let size = dtype.size_bytes();
        if bytes.len() != n * size {
            return Err(Error::Tensor(format!(
                "{dtype}{shape:?} needs {} bytes but {} were given",
                n * size,
                bytes.len()
            )));
        }
        fn read<T: Element>(b: &[u8], size: usize) -> Vec<T> {
            b.chunks_exact(size).map(T::read_le).collect()
        }
        let data = match dtype {
            DType::F32 => Data::F32(read(bytes, size)),
            DType::F16 => Data::F16(read(bytes, size)),
            DType::BF16 => Data::BF16(read(bytes, size)),
            DType::F64 => Data::F64(read(bytes, size)),
            DType::I8 => Data::I8(read(bytes, size)),
            DType::U8 => Data::U8(read(bytes, size)),
            DType::I16 => Data::I16(read(bytes, size)),
            DType::U16 => Data::U16(read(bytes, size)),
            DType::I32 => Data::I32(read(bytes, size)),
            DType::U32 => Data::U32(read(bytes, size)),
            DType::I64 => Data::I64(read(bytes, size)),
            DType::U64 => Data::U64(read(bytes, size)),
            DType::Bool => Data::Bool(read(bytes, size)),
        };
        Tensor::new(shape, data)
    }

    /// Builds a tensor of `dtype` from f64 values (Rust `as` conversion semantics).
    pub fn from_f64s(dtype: DType, shape: Vec<usize>, vals: &[f64]) -> Result<Tensor> {
        fn conv<T: Element>(v: &[f64]) -> Vec<T> {
            v.iter().map(|&x| T::from_f64(x)).collect()
        }
        let data = match dtype {
            DType::F32 => Data::F32(conv(vals)),
            DType::F16 => Data::F16(conv(vals)),
            DType::BF16 => Data::BF16(conv(vals)),
            DType::F64 => Data::F64(conv(vals)),
            DType::I8 => Data::I8(conv(vals)),
            DType::U8 => Data::U8(conv(vals)),
            DType::I16 => Data::I16(conv(vals)),
            DType::U16 => Data::U16(conv(vals)),
            DType::I32 => Data::I32(conv(vals)),
            DType::U32 => Data::U32(conv(vals)),
            DType::I64 => Data::I64(conv(vals)),
            DType::U64 => Data::U64(conv(vals)),
            DType::Bool => Data::Bool(conv(vals)),
        };
        Tensor::new(shape, data)
    }

    /// Bitwise equality of contents (so NaN == NaN), shape and dtype.
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape
            && self.dtype() == other.dtype()
            && self.to_le_bytes() == other.to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_for_every_dtype() {
        for d in DType::ALL {
            let t = Tensor::from_f64s(d, vec![2, 2], &[0.0, 1.0, 2.0, 3.0]).unwrap();
            let b = t.to_le_bytes();
            assert_eq!(b.len(), 4 * d.size_bytes());
            let u = Tensor::from_le_bytes(d, vec![2, 2], &b).unwrap();
            assert!(t.bit_eq(&u), "{d}");
        }
    }

    #[test]
    fn wrong_element_count_is_an_error() {
        assert!(Tensor::from_vec(vec![2, 3], vec![1.0f32; 5]).is_err());
    }
}
