//! Hand-checked Attention cases. With `scale = 1`, q = [1] and keys
//! [0, ln 2], the logits are [0, ln 2], the weights [1/3, 2/3], and with
//! values [3, 6] the output is 1 + 4 = 5.

use super::*;
use crate::Attr;

const LN2: f32 = std::f32::consts::LN_2;

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

fn run(attrs: Attrs, ins: &[Option<&Tensor>], n_out: usize) -> Result<Vec<Tensor>> {
    eval(Op::Attention, &attrs, ins, n_out)
}

fn unit_scale() -> Attrs {
    Attrs::new().with("scale", Attr::Float(1.0))
}

fn close(a: &Tensor, b: &[f32]) {
    let av = a.to_f64_vec();
    assert_eq!(av.len(), b.len(), "{av:?} vs {b:?}");
    for (x, y) in av.iter().zip(b) {
        assert!((x - *y as f64).abs() < 1e-5, "{av:?} vs {b:?}");
    }
}

/// Q [1,1,sq,1] of ones, K [1,1,2,1] = [0, ln 2], V [1,1,2,1] = [3, 6].
fn qkv(sq: usize) -> (Tensor, Tensor, Tensor) {
    (
        t(&[1, 1, sq, 1], &vec![1.0; sq]),
        t(&[1, 1, 2, 1], &[0., LN2]),
        t(&[1, 1, 2, 1], &[3., 6.]),
    )
}

#[test]
fn basic_weights_and_outputs() {
    let (q, k, v) = qkv(1);
    let out = run(unit_scale(), &[Some(&q), Some(&k), Some(&v)], 4).unwrap();
    close(&out[0], &[5.]);
    assert_eq!(out[0].shape(), &[1, 1, 1, 1]);
    assert_eq!(out[1], k, "present_key is K without a cache");
    assert_eq!(out[2], v);
    close(&out[3], &[0., LN2]);
    // the default scale 1/sqrt(head_size) is 1 for head size 1
    let out = run(Attrs::new(), &[Some(&q), Some(&k), Some(&v)], 1).unwrap();
    close(&out[0], &[5.]);
    // scale 4 doubles both Q and K: logits [0, 4 ln 2] -> weights [1/17, 16/17]
    let out = run(
        Attrs::new().with("scale", Attr::Float(4.0)),
        &[Some(&q), Some(&k), Some(&v)],
        1,
    )
    .unwrap();
    close(&out[0], &[(3. + 96.) / 17.]);
}

#[test]
fn causal_window_and_padding() {
    let (q, k, v) = qkv(2);
    let causal = unit_scale().with("is_causal", Attr::Int(1));
    let out = run(causal.clone(), &[Some(&q), Some(&k), Some(&v)], 1).unwrap();
    close(&out[0], &[3., 5.]);
    // a left window of 0 keeps only the diagonal
    let windowed = causal.with("left_window_size", Attr::Int(0));
    let out = run(windowed, &[Some(&q), Some(&k), Some(&v)], 1).unwrap();
    close(&out[0], &[3., 6.]);
    // nonpad_kv_seqlen = 1 hides key 1
    let (q1, _, _) = qkv(1);
    let n = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
    let out = run(
        unit_scale(),
        &[Some(&q1), Some(&k), Some(&v), None, None, None, Some(&n)],
        1,
    )
    .unwrap();
    close(&out[0], &[3.]);
    // causal with an external cache: offset = nonpad - q_seq = 2 - 1, both keys visible
    let n2 = Tensor::from_vec(vec![1], vec![2i64]).unwrap();
    let causal = unit_scale().with("is_causal", Attr::Int(1));
    let out = run(
        causal,
        &[Some(&q1), Some(&k), Some(&v), None, None, None, Some(&n2)],
        1,
    )
    .unwrap();
    close(&out[0], &[5.]);
}

#[test]
fn masks() {
    let (q, k, v) = qkv(1);
    let m = Tensor::from_vec(vec![2], vec![false, true]).unwrap();
    let out = run(unit_scale(), &[Some(&q), Some(&k), Some(&v), Some(&m)], 1).unwrap();
    close(&out[0], &[6.]);
    // fully masked: zeros, also in the mode-3 probabilities
    let none = Tensor::from_vec(vec![1, 2], vec![false, false]).unwrap();
    let mode3 = unit_scale().with("qk_matmul_output_mode", Attr::Int(3));
    let out = run(mode3, &[Some(&q), Some(&k), Some(&v), Some(&none)], 4).unwrap();
    close(&out[0], &[0.]);
    close(&out[3], &[0., 0.]);
    // additive: [ln 2, 0] evens the logits
    let add = t(&[2], &[LN2, 0.]);
    let mode2 = unit_scale().with("qk_matmul_output_mode", Attr::Int(2));
    let out = run(mode2, &[Some(&q), Some(&k), Some(&v), Some(&add)], 4).unwrap();
    close(&out[0], &[4.5]);
    close(&out[3], &[LN2, LN2]);
    // a short mask is padded with -inf, not broadcast
    let short = t(&[1], &[0.]);
    let out = run(
        unit_scale(),
        &[Some(&q), Some(&k), Some(&v), Some(&short)],
        1,
    )
    .unwrap();
    close(&out[0], &[3.]);
    // too long, or not broadcastable
    let long = t(&[3], &[0.; 3]);
    assert!(run(
        unit_scale(),
        &[Some(&q), Some(&k), Some(&v), Some(&long)],
        1
    )
    .is_err());
    let wrong = t(&[2, 1, 2], &[0.; 4]);
    assert!(run(
        unit_scale(),
        &[Some(&q), Some(&k), Some(&v), Some(&wrong)],
        1
    )
    .is_err());
}

#[test]
fn softcap_and_qk_modes() {
    let (q, k, v) = qkv(1);
    let cap = unit_scale().with("softcap", Attr::Float(1.0));
    let c = LN2.tanh();
    let w1 = c.exp() / (1.0 + c.exp());
    for (mode, want) in [(0, [0., LN2]), (1, [0., c]), (2, [0., c])] {
        let attrs = cap.clone().with("qk_matmul_output_mode", Attr::Int(mode));
        let out = run(attrs, &[Some(&q), Some(&k), Some(&v)], 4).unwrap();
        close(&out[0], &[3. * (1. - w1) + 6. * w1]);
        close(&out[3], &want);
    }
    let attrs = cap.with("qk_matmul_output_mode", Attr::Int(3));
    let out = run(attrs, &[Some(&q), Some(&k), Some(&v)], 4).unwrap();
    close(&out[3], &[1. - w1, w1]);
}

#[test]
fn kv_cache() {
    let q = t(&[1, 1, 1, 1], &[1.]);
    let pk = t(&[1, 1, 1, 1], &[0.]);
    let pv = t(&[1, 1, 1, 1], &[3.]);
    let k = t(&[1, 1, 1, 1], &[LN2]);
    let v = t(&[1, 1, 1, 1], &[6.]);
    // causal offset = past length 1: the query sees both keys
    let attrs = unit_scale().with("is_causal", Attr::Int(1));
    let out = run(
        attrs,
        &[Some(&q), Some(&k), Some(&v), None, Some(&pk), Some(&pv)],
        3,
    )
    .unwrap();
    close(&out[0], &[5.]);
    assert_eq!(out[1], t(&[1, 1, 2, 1], &[0., LN2]));
    assert_eq!(out[2], t(&[1, 1, 2, 1], &[3., 6.]));
    assert!(run(
        unit_scale(),
        &[Some(&q), Some(&k), Some(&v), None, Some(&pk), None],
        1
    )
    .is_err());
}

#[test]
fn three_d_inputs_with_grouped_heads() {
    // two query heads share one KV head; head 1 has q = 0 -> equal weights
    let q = t(&[1, 1, 2], &[1., 0.]);
    let k = t(&[1, 2, 1], &[0., LN2]);
    let v = t(&[1, 2, 1], &[3., 6.]);
    let attrs = unit_scale()
        .with("q_num_heads", Attr::Int(2))
        .with("kv_num_heads", Attr::Int(1));
    let out = run(attrs.clone(), &[Some(&q), Some(&k), Some(&v)], 4).unwrap();
    assert_eq!(out[0].shape(), &[1, 1, 2]);
    close(&out[0], &[5., 4.5]);
    assert_eq!(out[1].shape(), &[1, 1, 2, 1]);
    assert_eq!(out[3].shape(), &[1, 2, 1, 2]);
    assert!(
        run(unit_scale(), &[Some(&q), Some(&k), Some(&v)], 1).is_err(),
        "3-D needs head counts"
    );
    let odd = unit_scale()
        .with("q_num_heads", Attr::Int(2))
        .with("kv_num_heads", Attr::Int(2));
    assert!(
        run(odd, &[Some(&q), Some(&k), Some(&v)], 1).is_err(),
        "K hidden 1 is not 2 heads"
    );
}

#[test]
fn half_precision_inputs() {
    let (q, k, v) = qkv(1);
    let h = |x: &Tensor| {
        let v: Vec<half::f16> = x
            .to_f64_vec()
            .iter()
            .map(|&a| half::f16::from_f64(a))
            .collect();
        Tensor::from_vec(x.shape().to_vec(), v).unwrap()
    };
    let out = run(unit_scale(), &[Some(&h(&q)), Some(&h(&k)), Some(&h(&v))], 2).unwrap();
    assert_eq!(out[0].dtype(), DType::F16);
    assert!((out[0].to_f64_vec()[0] - 5.0).abs() < 1e-2);
    assert_eq!(out[1], h(&k));
}
