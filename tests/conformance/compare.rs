//! Comparing a computed tensor with the expected one, and the tolerance table.
//!
//! [`TOLERANCES`] is the one place that says how close a floating-point result
//! must be. A value `got` matches `want` when
//! `|got - want| <= atol + rtol * |want|` (numpy's `assert_allclose` rule, the
//! one ONNX's own backend runner applies), where `rtol` and `atol` are the
//! larger of the dtype's entry below and the test case's own (every ONNX node
//! test asks for rtol 1e-3, atol 1e-7). NaN matches NaN, an infinity matches
//! only the same infinity. Integers and bools must match exactly, and dtype
//! and shape always must.

use kiln_ir::{DType, Tensor};

/// `(dtype, rtol, atol)` for floating-point outputs.
///
/// - f64, f32: ONNX's rtol 1e-3, with an absolute floor of 1e-5 for f32 (ONNX's
///   atol 1e-7 is below one f32 ulp of 1.0, so a result that should be 0 but is
///   computed by a mathematically equal route, e.g. `sin(pi)`, would fail).
/// - f16 (10-bit mantissa, ulp(1) ~ 1e-3) and bf16 (7-bit mantissa, ulp(1) ~
///   8e-3): a few ulps (f16: 4 relative, 2 absolute; bf16: 2.5 and 2), since
///   kiln computes them in f32 and rounds once while the reference (numpy) may
///   round at other points.
pub const TOLERANCES: &[(DType, f64, f64)] = &[
    (DType::F64, 1e-3, 1e-7),
    (DType::F32, 1e-3, 1e-5),
    (DType::F16, 4e-3, 2e-3),
    (DType::BF16, 2e-2, 1.6e-2),
];

/// The tolerances for an output of `dtype` in a case asking for `(case_rtol, case_atol)`;
/// `None` for dtypes compared exactly.
pub fn tolerance(dtype: DType, case_rtol: f64, case_atol: f64) -> Option<(f64, f64)> {
    TOLERANCES
        .iter()
        .find(|(d, _, _)| *d == dtype)
        .map(|&(_, r, a)| {
            if strict() {
                (case_rtol, case_atol)
            } else {
                (r.max(case_rtol), a.max(case_atol))
            }
        })
}

/// `KILN_CONFORMANCE_STRICT=1`: the case's own tolerances only, without the
/// dtype floors (to see which results lean on them).
fn strict() -> bool {
    static STRICT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *STRICT.get_or_init(|| std::env::var("KILN_CONFORMANCE_STRICT").is_ok_and(|v| v == "1"))
}

/// Element `i` of `t`, formatted for a message.
pub fn fmt_elem(t: &Tensor, i: usize) -> String {
    kiln_ir::with_data!(t.data(), v => v.get(i).map_or_else(|| "?".to_string(), |x| format!("{x:?}")))
}

/// The multi-index of flat index `i` in a row-major `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = i % d;
            i /= d;
        }
    }
    idx
}

fn float_close(got: f64, want: f64, rtol: f64, atol: f64) -> bool {
    if got.is_nan() || want.is_nan() {
        return got.is_nan() && want.is_nan();
    }
    if got.is_infinite() || want.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= atol + rtol * want.abs()
}

/// Checks `got` against `want`; `Err` describes the first difference.
pub fn compare(got: &Tensor, want: &Tensor, case_rtol: f64, case_atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("got {}, expected {}", got.ty(), want.ty()));
    }
    let n = want.numel();
    let tol = tolerance(want.dtype(), case_rtol, case_atol);
    let mut bad = 0usize;
    let mut first: Option<usize> = None;
    let mut max_err = 0f64;
    match tol {
        Some((rtol, atol)) => {
            let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
            for i in 0..n {
                if !float_close(g[i], w[i], rtol, atol) {
                    bad += 1;
                    first.get_or_insert(i);
                    let e = (g[i] - w[i]).abs();
                    if e.is_nan() || e > max_err {
                        max_err = e;
                    }
                }
            }
        }
        None => {
            let size = want.dtype().size_bytes().max(1);
            let (g, w) = (got.to_le_bytes(), want.to_le_bytes());
            for (i, (a, b)) in g.chunks(size).zip(w.chunks(size)).enumerate() {
                if a != b {
                    bad += 1;
                    first.get_or_insert(i);
                }
            }
        }
    }
    let Some(i) = first else { return Ok(()) };
    let tol_text = match tol {
        Some((r, a)) => format!("rtol {r:e}, atol {a:e}; max abs err {max_err:.3e}"),
        None => "exact".to_string(),
    };
    Err(format!(
        "{bad} of {n} elements differ ({}, {tol_text}); first at {:?}: got {}, expected {}",
        want.dtype(),
        unravel(i, want.shape()),
        fmt_elem(got, i),
        fmt_elem(want, i)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn floats_within_tolerance_match() {
        let want = f32s(vec![3], vec![1.0, 1000.0, 0.0]);
        // 1000 * 1e-3 = 1.0 of relative slack; 1e-5 absolute near zero
        let got = f32s(vec![3], vec![1.0005, 1000.9, 9e-6]);
        assert_eq!(compare(&got, &want, 1e-3, 1e-7), Ok(()));
        let got = f32s(vec![3], vec![1.0, 1001.5, 0.0]);
        let e = compare(&got, &want, 1e-3, 1e-7).unwrap_err();
        assert!(e.starts_with("1 of 3 elements differ"), "{e}");
        assert!(
            e.contains("first at [1]: got 1001.5, expected 1000.0"),
            "{e}"
        );
    }

    #[test]
    fn nan_matches_nan_and_infinities_must_agree() {
        let want = f32s(vec![2], vec![f32::NAN, f32::INFINITY]);
        assert_eq!(compare(&want.clone(), &want, 1e-3, 1e-7), Ok(()));
        let got = f32s(vec![2], vec![0.0, f32::INFINITY]);
        assert!(compare(&got, &want, 1e-3, 1e-7).is_err());
        let got = f32s(vec![2], vec![f32::NAN, f32::NEG_INFINITY]);
        assert!(compare(&got, &want, 1e-3, 1e-7).is_err());
        let got = f32s(vec![2], vec![f32::NAN, f32::MAX]);
        assert!(compare(&got, &want, 1e-3, 1e-7).is_err());
    }

    #[test]
    fn integers_are_exact_and_report_multi_index() {
        let want = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, i64::MAX]).unwrap();
        let got = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, i64::MAX - 1]).unwrap();
        let e = compare(&got, &want, 1e-3, 1e-7).unwrap_err();
        assert!(
            e.contains("first at [1, 1]: got 9223372036854775806"),
            "{e}"
        );
        assert!(e.contains("exact"), "{e}");
    }

    #[test]
    fn dtype_and_shape_must_match() {
        let want = f32s(vec![2, 3], vec![0.0; 6]);
        let e = compare(&f32s(vec![3, 2], vec![0.0; 6]), &want, 1e-3, 1e-7).unwrap_err();
        assert_eq!(e, "got f32[3,2], expected f32[2,3]");
        let got = Tensor::zeros(DType::F64, vec![2, 3]);
        assert!(compare(&got, &want, 1e-3, 1e-7).is_err());
    }

    #[test]
    fn case_tolerance_only_loosens() {
        assert_eq!(tolerance(DType::F32, 1e-3, 1e-7), Some((1e-3, 1e-5)));
        assert_eq!(tolerance(DType::F32, 1e-2, 1e-3), Some((1e-2, 1e-3)));
        assert_eq!(tolerance(DType::I32, 1e-3, 1e-7), None);
        assert_eq!(tolerance(DType::Bool, 1e-3, 1e-7), None);
    }

    #[test]
    fn bools_compare_exactly() {
        let want = Tensor::from_vec(vec![2], vec![true, false]).unwrap();
        let got = Tensor::from_vec(vec![2], vec![true, true]).unwrap();
        let e = compare(&got, &want, 1e-3, 1e-7).unwrap_err();
        assert!(e.contains("first at [1]: got true, expected false"), "{e}");
    }
}
