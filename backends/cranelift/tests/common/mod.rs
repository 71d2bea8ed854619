//! Shared test support: random inputs for a kernel program, and the
//! comparison of Cranelift results with the kernel-IR interpreter.
//!
//! # Tolerances (the one place they are written down)
//!
//! - Default options: **bit-exact** for every dtype and op, transcendentals
//!   included (the backend calls the same Rust functions per lane as the
//!   interpreter). NaN matches any NaN (payloads are not compared).
//! - `Options::fast_exp` (inline vectorised exp): [`FAST_EXP_ULP`] ulp for
//!   f32 results of normal magnitude.
//! - Graph-level end-to-end tests (graph → schedule → Cranelift against the
//!   graph interpreter, whose f32 ops may compute in f64 and whose reductions
//!   may sum in another order): [`GRAPH_REL_TOL`] relative, [`GRAPH_ABS_TOL`]
//!   absolute.
#![allow(dead_code)]

use kiln_cranelift::{compile, Options};
use kiln_ir::kernel::{interp, text, BufKind, Program};
use kiln_ir::{DType, Tensor};

pub const FAST_EXP_ULP: u32 = 4;
pub const GRAPH_REL_TOL: f64 = 1e-5;
pub const GRAPH_ABS_TOL: f64 = 1e-6;

/// A small deterministic generator (SplitMix64).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const SPECIAL: [f64; 16] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1e10,
    -1e10,
    3.7,
    -2.5,
    65519.0,
    1e-40,
    300.0,
    -129.5,
];

/// Random values for an input buffer. Buffers whose name starts with `nz`
/// get no zeros (divisors); `small` gets values in -3..=3; `idx<N>` gets
/// indices in 0..N.
pub fn random_tensor(dtype: DType, shape: &[usize], name: &str, rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let vals: Vec<f64> = (0..n)
        .map(|_| {
            if let Some(k) = name.strip_prefix("idx") {
                let k: u64 = k.parse().unwrap_or(1);
                return rng.below(k) as f64;
            }
            if name.starts_with("small") {
                return rng.below(7) as f64 - 3.0;
            }
            let v = if dtype.is_float() {
                if rng.below(4) == 0 {
                    SPECIAL[rng.below(SPECIAL.len() as u64) as usize]
                } else {
                    (rng.f64() - 0.5) * 8.0
                }
            } else if dtype == DType::Bool {
                rng.below(2) as f64
            } else {
                match rng.below(3) {
                    0 => rng.below(7) as f64 - 3.0,
                    1 => (rng.f64() - 0.5) * 300.0,
                    _ => (rng.f64() - 0.5) * 2.0 * 2f64.powi(dtype.bits() as i32 - 1),
                }
                .trunc()
            };
            if name.starts_with("nz") && v == 0.0 {
                1.0
            } else {
                v
            }
        })
        .collect();
    if dtype.is_int() {
        // from_f64s may saturate; integers are generated in range anyway.
        let ints: Vec<f64> = vals
            .iter()
            .map(|v| if dtype.is_unsigned_int() { v.abs() } else { *v })
            .collect();
        return Tensor::from_f64s(dtype, shape.to_vec(), &ints).expect("tensor");
    }
    Tensor::from_f64s(dtype, shape.to_vec(), &vals).expect("tensor")
}

pub fn random_inputs(p: &Program, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed);
    p.inputs()
        .into_iter()
        .map(|b| {
            let buf = &p.buffers[b.index()];
            random_tensor(
                buf.dtype,
                &buf.shape,
                buf.name.as_deref().unwrap_or(""),
                &mut rng,
            )
        })
        .collect()
}

fn ulp_diff32(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i32::MIN.wrapping_sub(i)
        } else {
            i
        }
    };
    key(a).wrapping_sub(key(b)).unsigned_abs()
}

/// Compares two output tensors: same dtype and shape, values equal bit for bit
/// (any NaN matches any NaN), or within `ulp` ulp for f32.
pub fn compare(what: &str, want: &Tensor, got: &Tensor, ulp: u32) -> Result<(), String> {
    if want.dtype() != got.dtype() || want.shape() != got.shape() {
        return Err(format!(
            "{what}: want {}{:?}, got {}{:?}",
            want.dtype(),
            want.shape(),
            got.dtype(),
            got.shape()
        ));
    }
    let wb = want.to_le_bytes();
    let gb = got.to_le_bytes();
    let s = want.dtype().size_bytes();
    for i in 0..want.numel() {
        let (w, g) = (&wb[i * s..(i + 1) * s], &gb[i * s..(i + 1) * s]);
        if w == g {
            continue;
        }
        let ok = match want.dtype() {
            DType::F32 => {
                let (x, y) = (
                    f32::from_le_bytes(w.try_into().unwrap()),
                    f32::from_le_bytes(g.try_into().unwrap()),
                );
                (x.is_nan() && y.is_nan()) || (ulp > 0 && ulp_diff32(x, y) <= ulp)
            }
            DType::F64 => {
                let (x, y) = (
                    f64::from_le_bytes(w.try_into().unwrap()),
                    f64::from_le_bytes(g.try_into().unwrap()),
                );
                x.is_nan() && y.is_nan()
            }
            DType::F16 => {
                half::f16::from_le_bytes(w.try_into().unwrap()).is_nan()
                    && half::f16::from_le_bytes(g.try_into().unwrap()).is_nan()
            }
            DType::BF16 => {
                half::bf16::from_le_bytes(w.try_into().unwrap()).is_nan()
                    && half::bf16::from_le_bytes(g.try_into().unwrap()).is_nan()
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{what}: element {i} differs: interpreter {:?}, cranelift {:?}",
                Tensor::from_le_bytes(want.dtype(), vec![1], w)
                    .unwrap()
                    .data(),
                Tensor::from_le_bytes(got.dtype(), vec![1], g)
                    .unwrap()
                    .data()
            ));
        }
    }
    Ok(())
}

/// Runs `p` on the interpreter and on Cranelift (1 and 3 threads) with the
/// given inputs and compares every output.
pub fn check_program_with(
    p: &Program,
    inputs: &[Tensor],
    opts: &Options,
    ulp: u32,
) -> Result<(), String> {
    let want = interp::run(p, inputs).map_err(|e| format!("interpreter: {e}"))?;
    for threads in [1, 3] {
        let o = Options {
            threads,
            ..opts.clone()
        };
        let exe = compile(p, &o).map_err(|e| format!("compile: {e}"))?;
        let got = exe.run(inputs).map_err(|e| format!("run: {e}"))?;
        if got.len() != want.len() {
            return Err(format!("{} outputs, want {}", got.len(), want.len()));
        }
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            compare(
                &format!("program `{}` output {i} ({threads} threads)", p.name),
                w,
                g,
                ulp,
            )?;
        }
    }
    Ok(())
}

/// Parses `src`, then checks it on three sets of random inputs.
pub fn check(src: &str) {
    let p = text::parse(src).unwrap_or_else(|e| panic!("parse: {e}\n{src}"));
    kiln_ir::kernel::verify::verify(&p).unwrap_or_else(|e| panic!("{e}\n{src}"));
    for seed in 1..=3 {
        let inputs = random_inputs(&p, seed);
        if let Err(e) = check_program_with(&p, &inputs, &Options::default(), 0) {
            panic!("{e}\n{}", text::print(&p));
        }
    }
}

/// Whether any buffer is a planned temp (for tests of the arena).
pub fn has_planned_temps(p: &Program) -> bool {
    p.buffers
        .iter()
        .any(|b| matches!(b.kind, BufKind::Temp { offset: Some(_) }))
}
