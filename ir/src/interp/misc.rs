//! Interpreter for one op class (placeholder until its ops are implemented).

use crate::{Attrs, Error, Op, Result, Tensor};

pub(crate) fn eval(op: Op, _attrs: &Attrs, _inputs: &[Option<&Tensor>], _n_outputs: usize) -> Result<Vec<Tensor>> {
    Err(Error::unsupported(format!("the interpreter does not implement {op} yet")))
}
