//! Shape and dtype inference for one op class (placeholder until its ops are implemented).

use super::Operand;
use crate::{Attrs, Error, Op, Result, TensorType};

pub(crate) fn infer(op: Op, _attrs: &Attrs, _inputs: &[Option<Operand>], _n_outputs: usize) -> Result<Vec<TensorType>> {
    Err(Error::unsupported(format!("shape inference for {op} is not implemented yet")))
}
