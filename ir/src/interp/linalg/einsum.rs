//! Einsum, done generically: parse the equation, give every label (letter or
//! ellipsis dimension) a size, then walk the joint index space (output labels
//! outermost, summed labels innermost) and accumulate the product of the
//! operands into the output.
//!
//! The equation grammar and meaning follow numpy's `einsum` (which ONNX's
//! reference uses): spaces are ignored; a label repeated within one term takes
//! a diagonal; in implicit mode (no `->`) the output is the ellipsis
//! dimensions followed by the labels used exactly once, in ASCII order; an
//! ellipsis stands for the same number of trailing-aligned, broadcasting
//! dimensions everywhere; a dimension of size 1 broadcasts against its label's
//! size. The parser is shared with shape inference ([`Equation`]).

use super::num::{Real, Ring};
use crate::{Attrs, Data, Error, Result, Tensor};

/// Number of letter labels: `a`..`z` are 0..26, `A`..`Z` are 26..52.
/// Ellipsis dimension `e` is label `LETTERS + e`.
const LETTERS: usize = 52;

/// One symbol of a term.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Sym {
    Letter(usize),
    Ellipsis,
}

fn err(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("Einsum: {msg}"))
}

fn label_name(l: usize) -> String {
    match l {
        0..=25 => ((b'a' + l as u8) as char).to_string(),
        26..=51 => ((b'A' + (l - 26) as u8) as char).to_string(),
        _ => format!("...[{}]", l - LETTERS),
    }
}

/// ASCII code of a letter label (for implicit-mode output order).
fn ascii(l: usize) -> u8 {
    if l < 26 {
        b'a' + l as u8
    } else {
        b'A' + (l - 26) as u8
    }
}

fn parse_term(term: &str) -> Result<Vec<Sym>> {
    let mut syms = Vec::new();
    let b = term.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c @ b'a'..=b'z' => syms.push(Sym::Letter((c - b'a') as usize)),
            c @ b'A'..=b'Z' => syms.push(Sym::Letter(26 + (c - b'A') as usize)),
            b'.' if b[i..].starts_with(b"...") => {
                if syms.contains(&Sym::Ellipsis) {
                    return Err(err(format!("term `{term}` has more than one ellipsis")));
                }
                syms.push(Sym::Ellipsis);
                i += 2;
            }
            _ => {
                return Err(err(format!(
                    "term `{term}` has an invalid character at position {i} (expected a letter or `...`)"
                )))
            }
        }
        i += 1;
    }
    Ok(syms)
}

/// A parsed equation, bound to the operands' ranks.
#[derive(Debug)]
pub(crate) struct Equation {
    /// Per input, the label of each of its axes.
    pub(crate) inputs: Vec<Vec<usize>>,
    /// The label of each output axis.
    pub(crate) output: Vec<usize>,
}

impl Equation {
    /// Parses `equation` for operands of the given ranks.
    pub(crate) fn parse(equation: &str, ranks: &[usize]) -> Result<Equation> {
        let eq: String = equation.chars().filter(|c| *c != ' ').collect();
        let (lhs, rhs) = match eq.split_once("->") {
            Some((l, r)) => {
                if r.contains("->") {
                    return Err(err(format!("equation `{equation}` has more than one `->`")));
                }
                (l, Some(r))
            }
            None => (eq.as_str(), None),
        };
        let terms: Vec<Vec<Sym>> = lhs.split(',').map(parse_term).collect::<Result<_>>()?;
        if terms.len() != ranks.len() {
            return Err(err(format!(
                "equation `{equation}` has {} input terms but {} inputs were given",
                terms.len(),
                ranks.len()
            )));
        }
        // How many dimensions each ellipsis covers; the widest sets the count.
        let mut n_ell = 0;
        let mut has_ell = false;
        let mut inputs = Vec::with_capacity(terms.len());
        for (i, (t, &rank)) in terms.iter().zip(ranks).enumerate() {
            let letters = t.iter().filter(|s| matches!(s, Sym::Letter(_))).count();
            let ell = t.contains(&Sym::Ellipsis);
            if (!ell && letters != rank) || (ell && letters > rank) {
                return Err(err(format!(
                    "term {i} of `{equation}` has {letters} labels{} but input {i} has rank {rank}",
                    if ell { " and an ellipsis" } else { "" }
                )));
            }
            has_ell |= ell;
            n_ell = n_ell.max(rank - letters);
            inputs.push((t, rank - letters));
        }
        let expand = |t: &[Sym], covers: usize| -> Vec<usize> {
            let mut out = Vec::new();
            for s in t {
                match *s {
                    Sym::Letter(l) => out.push(l),
                    // right-aligned: an ellipsis of `covers` dims takes the last ones
                    Sym::Ellipsis => out.extend((n_ell - covers..n_ell).map(|e| LETTERS + e)),
                }
            }
            out
        };
        let inputs: Vec<Vec<usize>> = inputs.into_iter().map(|(t, c)| expand(t, c)).collect();
        let output = match rhs {
            Some(r) => {
                let t = parse_term(r)?;
                if !t.contains(&Sym::Ellipsis) && n_ell > 0 {
                    return Err(err(format!(
                        "the inputs' ellipsis covers {n_ell} dimensions but the output `{r}` has no `...`"
                    )));
                }
                let out = expand(&t, n_ell);
                for (p, &l) in out.iter().enumerate() {
                    if out[..p].contains(&l) {
                        return Err(err(format!("output label `{}` is repeated", label_name(l))));
                    }
                    if l < LETTERS && !inputs.iter().any(|t| t.contains(&l)) {
                        return Err(err(format!(
                            "output label `{}` appears in no input term",
                            label_name(l)
                        )));
                    }
                }
                out
            }
            None => {
                let mut count = [0usize; LETTERS];
                for l in inputs.iter().flatten().filter(|&&l| l < LETTERS) {
                    count[*l] += 1;
                }
                let mut once: Vec<usize> = (0..LETTERS).filter(|&l| count[l] == 1).collect();
                once.sort_by_key(|&l| ascii(l));
                let mut out: Vec<usize> = if has_ell {
                    (0..n_ell).map(|e| LETTERS + e).collect()
                } else {
                    vec![]
                };
                out.extend(once);
                out
            }
        };
        Ok(Equation { inputs, output })
    }

    /// All labels: output labels first, then summed labels in order of first use.
    pub(crate) fn joint_labels(&self) -> Vec<usize> {
        let mut all = self.output.clone();
        for &l in self.inputs.iter().flatten() {
            if !all.contains(&l) {
                all.push(l);
            }
        }
        all
    }

    /// The size of every label (indexed by label; `None` for unused labels),
    /// given the operands' shapes. Size-1 dimensions broadcast.
    pub(crate) fn label_sizes(&self, shapes: &[&[usize]]) -> Result<Vec<Option<usize>>> {
        let mut size: Vec<Option<usize>> = vec![None; LETTERS + 64];
        for (i, (labels, shape)) in self.inputs.iter().zip(shapes).enumerate() {
            for (ax, (&l, &d)) in labels.iter().zip(*shape).enumerate() {
                // a label repeated within one term must have one size there
                if let Some(p) = labels[..ax].iter().position(|&x| x == l) {
                    if shape[p] != d {
                        return Err(err(format!(
                            "label `{}` is repeated in input {i} with sizes {} and {d}",
                            label_name(l),
                            shape[p]
                        )));
                    }
                }
                let slot = size
                    .get_mut(l)
                    .ok_or_else(|| err("too many ellipsis dimensions"))?;
                *slot = match *slot {
                    None => Some(d),
                    Some(s) if s == d || d == 1 => Some(s),
                    Some(1) => Some(d),
                    Some(s) => {
                        return Err(err(format!(
                            "label `{}` has size {s} in one operand but {d} in input {i} (shape {shape:?})",
                            label_name(l)
                        )))
                    }
                };
            }
        }
        Ok(size)
    }
}

pub(super) fn eval(attrs: &Attrs, inputs: &[Option<&Tensor>]) -> Result<Tensor> {
    let equation = attrs.str("equation")?.ok_or_else(|| Error::Attr {
        attr: "equation".into(),
        msg: "Einsum requires it".into(),
    })?;
    let ts: Vec<&Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| err(format!("input {i} is missing"))))
        .collect::<Result<_>>()?;
    let Some(first) = ts.first() else {
        return Err(err("needs at least one input"));
    };
    let dtype = first.dtype();
    if let Some((i, t)) = ts.iter().enumerate().find(|(_, t)| t.dtype() != dtype) {
        return Err(err(format!(
            "input {i} is {} but input 0 is {dtype}",
            t.dtype()
        )));
    }
    let ranks: Vec<usize> = ts.iter().map(|t| t.rank()).collect();
    let eq = Equation::parse(equation, &ranks)?;
    let shapes: Vec<&[usize]> = ts.iter().map(|t| t.shape()).collect();
    let plan = Plan::new(&eq, &shapes)?;
    macro_rules! native {
        ($($v:ident),*) => {
            match first.data() {
                $(Data::$v(_) => {
                    let xs: Vec<&[_]> = ts.iter().map(|t| match t.data() {
                        Data::$v(x) => x.as_slice(),
                        _ => &[],
                    }).collect();
                    Tensor::new(plan.out_shape.clone(), Data::$v(plan.run(&xs)))
                })*
                Data::F16(_) | Data::BF16(_) => {
                    let xs: Vec<Vec<f32>> = ts.iter().map(|t| f32::read(t)).collect();
                    let xs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
                    f32::write(plan.run(&xs), dtype, plan.out_shape.clone())
                }
                Data::Bool(_) => Err(Error::unsupported("Einsum on bool operands")),
            }
        };
    }
    native!(F32, F64, I8, U8, I16, U16, I32, U32, I64, U64)
}

/// Einsum's iteration space for static operand shapes, for code generators:
/// the joint labels (output labels first, then the summed ones in order of
/// first use) with their sizes, and each operand's element stride per joint
/// label (0 where the operand lacks the label or broadcasts it; a label
/// repeated in one term, a diagonal, adds its strides). The interpreter walks
/// exactly this space, summing over the labels after the first `n_output`.
#[derive(Clone, Debug, PartialEq)]
pub struct EinsumSpace {
    /// Size of each joint label.
    pub sizes: Vec<usize>,
    /// How many leading joint labels are output axes (in output order).
    pub n_output: usize,
    /// `strides[input][joint label]`.
    pub strides: Vec<Vec<usize>>,
    /// The output shape (the first `n_output` sizes).
    pub out_shape: Vec<usize>,
}

/// Parses `equation` for operands of `shapes` and returns its iteration space
/// (errors as the interpreter's).
pub fn einsum_space(equation: &str, shapes: &[&[usize]]) -> Result<EinsumSpace> {
    let ranks: Vec<usize> = shapes.iter().map(|s| s.len()).collect();
    let eq = Equation::parse(equation, &ranks)?;
    let plan = Plan::new(&eq, shapes)?;
    let n = plan.n_inputs;
    let strides = (0..n)
        .map(|i| {
            (0..plan.sizes.len())
                .map(|l| plan.strides[l * n + i])
                .collect()
        })
        .collect();
    Ok(EinsumSpace {
        sizes: plan.sizes,
        n_output: eq.output.len(),
        strides,
        out_shape: plan.out_shape,
    })
}

/// The joint-index walk: sizes of all labels, and each operand's stride per label.
struct Plan {
    sizes: Vec<usize>,
    /// `strides[label_pos * n_inputs + input]`.
    strides: Vec<usize>,
    out_strides: Vec<usize>,
    out_shape: Vec<usize>,
    n_inputs: usize,
}

impl Plan {
    fn new(eq: &Equation, shapes: &[&[usize]]) -> Result<Plan> {
        let size = eq.label_sizes(shapes)?;
        let joint = eq.joint_labels();
        let sizes: Vec<usize> = joint.iter().map(|&l| size[l].unwrap_or(1)).collect();
        let n_inputs = shapes.len();
        let mut strides = vec![0usize; joint.len() * n_inputs];
        for (i, (labels, shape)) in eq.inputs.iter().zip(shapes).enumerate() {
            let st = crate::shape::strides(shape);
            for (ax, &l) in labels.iter().enumerate() {
                let Some(pos) = joint.iter().position(|&x| x == l) else {
                    continue;
                };
                // a broadcast (size-1) dimension contributes no stride
                if shape[ax] != 1 {
                    strides[pos * n_inputs + i] += st[ax];
                }
            }
        }
        let out_shape: Vec<usize> = eq.output.iter().map(|&l| size[l].unwrap_or(1)).collect();
        let ost = crate::shape::strides(&out_shape);
        let mut out_strides = vec![0usize; joint.len()];
        out_strides[..ost.len()].copy_from_slice(&ost);
        Ok(Plan {
            sizes,
            strides,
            out_strides,
            out_shape,
            n_inputs,
        })
    }

    fn run<T: Ring>(&self, xs: &[&[T]]) -> Vec<T> {
        let n_out: usize = self.out_shape.iter().product();
        let mut out = vec![T::ZERO; n_out];
        let total: usize = self.sizes.iter().product();
        let nl = self.sizes.len();
        let ni = self.n_inputs;
        let mut idx = vec![0usize; nl];
        let mut offs = vec![0usize; ni];
        let mut o = 0usize;
        for _ in 0..total {
            let mut p = T::ONE;
            for (x, &off) in xs.iter().zip(&offs) {
                p = p.mul(x[off]);
            }
            out[o] = out[o].add(p);
            for ax in (0..nl).rev() {
                let st = &self.strides[ax * ni..(ax + 1) * ni];
                idx[ax] += 1;
                if idx[ax] < self.sizes[ax] {
                    for (off, &s) in offs.iter_mut().zip(st) {
                        *off += s;
                    }
                    o += self.out_strides[ax];
                    break;
                }
                let back = idx[ax] - 1;
                for (off, &s) in offs.iter_mut().zip(st) {
                    *off -= s * back;
                }
                o -= self.out_strides[ax] * back;
                idx[ax] = 0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attr;

    fn einsum(eq: &str, ins: &[&Tensor]) -> Result<Tensor> {
        let attrs = Attrs::new().with("equation", Attr::Str(eq.into()));
        let ins: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
        eval(&attrs, &ins)
    }

    fn t(shape: &[usize], v: &[f64]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn iota(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        t(shape, &(0..n).map(|x| x as f64).collect::<Vec<_>>())
    }

    #[test]
    fn matmul_transpose_and_sums() {
        let a = iota(&[2, 3]);
        let b = iota(&[3, 2]);
        // [0 1 2; 3 4 5] · [0 1; 2 3; 4 5] = [10 13; 28 40]
        assert_eq!(
            einsum("ij,jk->ik", &[&a, &b]).unwrap(),
            t(&[2, 2], &[10., 13., 28., 40.])
        );
        assert_eq!(
            einsum("ij,jk", &[&a, &b]).unwrap(),
            t(&[2, 2], &[10., 13., 28., 40.])
        );
        assert_eq!(
            einsum("ij->ji", &[&a]).unwrap(),
            t(&[3, 2], &[0., 3., 1., 4., 2., 5.])
        );
        assert_eq!(
            einsum("ji", &[&a]).unwrap(),
            t(&[3, 2], &[0., 3., 1., 4., 2., 5.])
        );
        assert_eq!(einsum("ij->", &[&a]).unwrap(), t(&[], &[15.]));
        assert_eq!(einsum("i j -> j", &[&a]).unwrap(), t(&[3], &[3., 5., 7.]));
    }

    #[test]
    fn diagonals_and_traces() {
        let a = iota(&[3, 3]);
        assert_eq!(einsum("ii->i", &[&a]).unwrap(), t(&[3], &[0., 4., 8.]));
        assert_eq!(einsum("ii", &[&a]).unwrap(), t(&[], &[12.]));
        let v = iota(&[3]);
        assert_eq!(einsum("i,i", &[&v, &v]).unwrap(), t(&[], &[5.]));
        assert_eq!(einsum("i,j->ij", &[&v, &v]).unwrap().shape(), &[3, 3]);
    }

    #[test]
    fn ellipsis_and_broadcasting() {
        let a = iota(&[2, 2, 3]);
        let b = iota(&[3, 1]);
        // batched: ...ij,jk -> ...ik
        let y = einsum("...ij,jk->...ik", &[&a, &b]).unwrap();
        assert_eq!(y, t(&[2, 2, 1], &[5., 14., 23., 32.]));
        // implicit mode puts the ellipsis first
        let y = einsum("...ij,jk", &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 2, 1]);
        // ellipsis dims broadcast: (2,1) with (3,) -> (2,3)
        let y = einsum("...,...", &[&iota(&[2, 1]), &iota(&[3])]).unwrap();
        assert_eq!(y, t(&[2, 3], &[0., 0., 0., 0., 1., 2.]));
        // labelled size-1 dims broadcast too (numpy)
        let y = einsum("ij,jk", &[&t(&[2, 1], &[1., 2.]), &iota(&[3, 2])]).unwrap();
        assert_eq!(y, t(&[2, 2], &[6., 9., 12., 18.]));
        // implicit order is ASCII: uppercase first
        let y = einsum("bA,ab", &[&iota(&[2, 3]), &iota(&[4, 2])]).unwrap();
        assert_eq!(y.shape(), &[3, 4]);
    }

    #[test]
    fn integer_einsum_wraps() {
        let a = Tensor::from_vec(vec![2], vec![100u8, 3]).unwrap();
        let y = einsum("i,i", &[&a, &a]).unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[(10000u32 + 9) as u8]);
    }

    #[test]
    fn malformed_equations_are_errors() {
        let a = iota(&[2, 3]);
        for eq in [
            "ij,jk->ik",
            "ijk->i",
            "i$->i",
            "ij->iz",
            "ij->ii",
            "ij->i->j",
            "i..j->ij",
            "....->",
        ] {
            assert!(einsum(eq, &[&a]).is_err(), "{eq}");
        }
        assert!(
            einsum("...j->j", &[&iota(&[2, 3])]).is_err(),
            "numpy: missing output ellipsis"
        );
        assert!(einsum("ii->i", &[&iota(&[2, 3])]).is_err());
        assert!(einsum("ij,ij->ij", &[&a, &iota(&[3, 2])]).is_err());
    }

    #[test]
    fn empty_sum_is_zero() {
        let y = einsum("ij->i", &[&iota(&[2, 0])]).unwrap();
        assert_eq!(y, t(&[2], &[0., 0.]));
    }
}
