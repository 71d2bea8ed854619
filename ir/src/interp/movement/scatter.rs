//! ScatterElements and ScatterND: a copy of `data` with `updates` written at
//! the positions `indices` name, combined per the `reduction` attribute
//! (`none`, `add`, `mul`, `max`, `min`). Updates are applied in index order,
//! so with `none` the last duplicate wins. Integer add/mul wrap; f16/bf16
//! combine in f32; for bool, add/max are `or` and mul/min are `and`.

use super::{ints_of, resolve_index, strides};
use crate::interp::util::{input, norm_axis};
use crate::{with_data, Attrs, Data, Element, Error, Op, Result, Tensor};
use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

fn reduction(op: Op, attrs: &Attrs) -> Result<Reduction> {
    Ok(match attrs.str_or("reduction", "none")? {
        "none" => Reduction::None,
        "add" => Reduction::Add,
        "mul" => Reduction::Mul,
        "max" => Reduction::Max,
        "min" => Reduction::Min,
        r => {
            return Err(Error::Attr {
                attr: "reduction".into(),
                msg: format!("{op} reduction must be none, add, mul, max or min, found {r:?}"),
            })
        }
    })
}

/// How two elements combine under each reduction.
trait Combine: Element {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
}

macro_rules! combine_int {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn max(self, o: Self) -> Self { Ord::max(self, o) }
            fn min(self, o: Self) -> Self { Ord::min(self, o) }
        }
    )*};
}
combine_int!(i8, u8, i16, u16, i32, u32, i64, u64);

/// numpy's maximum/minimum: NaN in either operand gives NaN.
macro_rules! combine_float {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            fn add(self, o: Self) -> Self { self + o }
            fn mul(self, o: Self) -> Self { self * o }
            fn max(self, o: Self) -> Self { if self.is_nan() || self >= o { self } else { o } }
            fn min(self, o: Self) -> Self { if self.is_nan() || self <= o { self } else { o } }
        }
    )*};
}
combine_float!(f32, f64);

macro_rules! combine_half {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            fn add(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() + o.to_f32()) }
            fn mul(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() * o.to_f32()) }
            fn max(self, o: Self) -> Self { <$t>::from_f32(Combine::max(self.to_f32(), o.to_f32())) }
            fn min(self, o: Self) -> Self { <$t>::from_f32(Combine::min(self.to_f32(), o.to_f32())) }
        }
    )*};
}
combine_half!(f16, bf16);

impl Combine for bool {
    fn add(self, o: Self) -> Self {
        self || o
    }
    fn mul(self, o: Self) -> Self {
        self && o
    }
    fn max(self, o: Self) -> Self {
        self || o
    }
    fn min(self, o: Self) -> Self {
        self && o
    }
}

/// Writes `updates[i]` into `out[dst[i]]` under `red`.
fn apply<T: Combine>(out: &mut [T], dst: &[usize], updates: &Data, red: Reduction) -> Option<()> {
    let upd = T::slice(updates)?;
    for (&d, &u) in dst.iter().zip(upd) {
        let o = &mut out[d];
        *o = match red {
            Reduction::None => u,
            Reduction::Add => o.add(u),
            Reduction::Mul => o.mul(u),
            Reduction::Max => Combine::max(*o, u),
            Reduction::Min => Combine::min(*o, u),
        };
    }
    Some(())
}

fn scatter(
    op: Op,
    data: &Tensor,
    dst: &[usize],
    updates: &Tensor,
    red: Reduction,
) -> Result<Tensor> {
    let mut out = data.clone();
    with_data!(out.data_mut(), v => apply(v, dst, updates.data(), red)).ok_or_else(|| {
        Error::invalid(format!(
            "{op}: updates are {} but data is {}",
            updates.dtype(),
            data.dtype()
        ))
    })?;
    Ok(out)
}

pub(super) fn scatter_elements(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::ScatterElements;
    let x = input(op, inputs, 0)?;
    let ind = input(op, inputs, 1)?;
    let upd = input(op, inputs, 2)?;
    let axis = norm_axis(op, attrs.int_or("axis", 0)?, x.rank())?;
    let red = reduction(op, attrs)?;
    if ind.shape() != upd.shape() {
        return Err(Error::invalid(format!(
            "{op}: indices {} and updates {} must have the same shape",
            ind.ty(),
            upd.ty()
        )));
    }
    let dst = super::gather::element_indices(op, x, ind, axis)?;
    scatter(op, x, &dst, upd, red)
}

pub(super) fn scatter_nd(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let op = Op::ScatterND;
    let x = input(op, inputs, 0)?;
    let ind = input(op, inputs, 1)?;
    let upd = input(op, inputs, 2)?;
    let red = reduction(op, attrs)?;
    let (ds, is) = (x.shape(), ind.shape());
    let k = is.last().copied().unwrap_or(usize::MAX);
    let mut want = is[..is.len().saturating_sub(1)].to_vec();
    if k <= ds.len() {
        want.extend_from_slice(&ds[k..]);
    }
    if ind.rank() < 1 || k > ds.len() || upd.shape() != want.as_slice() {
        return Err(Error::invalid(format!(
            "{op}: indices {} and updates {} do not fit data {}",
            ind.ty(),
            upd.ty(),
            x.ty()
        )));
    }
    let slice: usize = ds[k..].iter().product();
    let st = strides(ds);
    let vals = ints_of(op, ind, "indices")?;
    let n_tuples: usize = is[..is.len() - 1].iter().product();
    let mut dst = Vec::with_capacity(n_tuples * slice);
    for t in 0..n_tuples {
        let mut base = 0;
        for j in 0..k {
            base += resolve_index(op, vals[t * k + j], ds[j])? * st[j];
        }
        dst.extend(base..base + slice);
    }
    scatter(op, x, &dst, upd, red)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn scatter_elements_adds_duplicates() {
        // ONNX test: data [[1,2,3,4,5]], indices [[1,1]], updates [[1.1,2.1]], axis 1, add
        let x = t(&[1, 5], &[1., 2., 3., 4., 5.]);
        let i = Tensor::from_vec(vec![1, 2], vec![1i64, 1]).unwrap();
        let u = t(&[1, 2], &[1.1, 2.1]);
        let a = Attrs::new()
            .with("axis", crate::Attr::Int(1))
            .with("reduction", crate::Attr::Str("add".into()));
        let y = scatter_elements(&a, &[Some(&x), Some(&i), Some(&u)]).unwrap();
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[1., 2. + 1.1 + 2.1, 3., 4., 5.]
        );
    }

    #[test]
    fn scatter_nd_replaces_slices_and_takes_max() {
        let x = t(&[4], &[1., 2., 3., 4.]);
        let i = Tensor::from_vec(vec![2, 1], vec![3i64, -4]).unwrap();
        let u = t(&[2], &[9., 0.]);
        let y = scatter_nd(&Attrs::new(), &[Some(&x), Some(&i), Some(&u)]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0., 2., 3., 9.]);
        let a = Attrs::new().with("reduction", crate::Attr::Str("max".into()));
        let y = scatter_nd(&a, &[Some(&x), Some(&i), Some(&u)]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1., 2., 3., 9.]);
    }
}
