//! `kiln calibrate`: fits the cost model's coefficients to this machine.
//!
//! A handful of one-kernel micro-benchmarks (a dispatch of a one-element
//! kernel, a large elementwise Add, a MatMul, a row reduction, a Softmax, and
//! Conv and Attention where the backend compiles them) are compiled with the
//! Cranelift backend and timed (median of several runs). Each one fixes one
//! coefficient of [`Coefficients`]: the fixed overhead first, then the
//! fraction of the target's bandwidth or compute peak the kernel reached
//! (roofline time ÷ measured time without the overhead). The report prints
//! what the model predicted before and after calibration against what was
//! measured, and the coefficients are written as JSON, which `kiln opt`,
//! `run`, `bench`, `explain` and `dump` read back with `--calibration FILE`.

use crate::{Compiler, Error, Result};
use kiln_ir::{Graph, TargetInfo, Tensor};
use kiln_passes::cost::{self, Coefficients};
use std::fmt::Write;
use std::time::Instant;

/// One micro-benchmark's result.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub name: &'static str,
    /// Which coefficient it fits.
    pub fits: &'static str,
    pub measured_s: f64,
    pub predicted_default_s: f64,
    pub predicted_calibrated_s: f64,
}

/// The calibration: fitted coefficients and the evidence.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub target: String,
    pub coefficients: Coefficients,
    pub measurements: Vec<Measurement>,
    /// Benchmarks that could not run (the backend refused the kernel), with the reason.
    pub skipped: Vec<(&'static str, String)>,
}

struct Bench {
    name: &'static str,
    fits: &'static str,
    kir: String,
}

fn benches() -> Vec<Bench> {
    let b = |name, fits, kir: &str| Bench { name, fits, kir: kir.to_string() };
    vec![
        b("dispatch", "overhead_scale", "graph @dispatch { in %0: f32[1] in %1: f32[1] %2: f32[1] = Add(%0, %1) out %2 }"),
        b("add-4M", "memory_efficiency", "graph @add { in %0: f32[4194304] in %1: f32[4194304] %2: f32[4194304] = Add(%0, %1) out %2 }"),
        b("matmul-512", "matmul_efficiency", "graph @mm { in %0: f32[512,512] in %1: f32[512,512] %2: f32[512,512] = MatMul(%0, %1) out %2 }"),
        b("reducesum-1024x4096", "reduction_efficiency", "graph @red { in %0: f32[1024,4096] const %1: i64[1] = [-1] %2: f32[1024,1] = ReduceSum(%0, %1) out %2 }"),
        b("softmax-1024x1024", "normalization_efficiency", "graph @sm { in %0: f32[1024,1024] %1: f32[1024,1024] = Softmax(%0) out %1 }"),
        b("conv-64x56x56-3x3", "conv_efficiency", "graph @conv { in %0: f32[1,64,56,56] in %1: f32[64,64,3,3] %2: f32[1,64,56,56] = Conv[pads=[1,1,1,1]](%0, %1) out %2 }"),
        b("attention-4x512x64", "attention_efficiency", "graph @attn { in %0: f32[1,4,512,64] in %1: f32[1,4,512,64] in %2: f32[1,4,512,64] %3: f32[1,4,512,64] = Attention(%0, %1, %2) out %3 }"),
    ]
}

fn predicted(g: &Graph, t: &TargetInfo, k: &Coefficients) -> f64 {
    cost::graph_cost_with(g, t, k).seconds
}

/// The roofline part of the single node's estimate (without overhead), and its flops/bytes bound.
fn roofline(g: &Graph, t: &TargetInfo) -> Option<(f64, f64)> {
    let n = g.nodes.first()?;
    let c = cost::node_cost(g, n, t)?;
    let compute = c.flops as f64 / t.peak_flops(kiln_ir::DType::F32);
    let memory = c.bytes as f64 / t.mem_bandwidth;
    Some((compute, memory))
}

fn set(k: &mut Coefficients, name: &str, v: f64) {
    let v = v.clamp(1e-6, 1e3);
    match name {
        "overhead_scale" => k.overhead_scale = v,
        "memory_efficiency" => k.memory_efficiency = v,
        "matmul_efficiency" => k.matmul_efficiency = v,
        "reduction_efficiency" => k.reduction_efficiency = v,
        "normalization_efficiency" => k.normalization_efficiency = v,
        "conv_efficiency" => k.conv_efficiency = v,
        "attention_efficiency" => k.attention_efficiency = v,
        _ => {}
    }
}

/// Runs the micro-benchmarks for `target` (`runs` timed runs each).
pub fn calibrate(target: &TargetInfo, runs: usize) -> Result<Calibration> {
    let mut k = Coefficients::default();
    let mut raw = Vec::new();
    let mut skipped = Vec::new();
    let mut overhead = 0.0;
    for b in benches() {
        let g = kiln_ir::text::parse(&b.kir, b.name)?;
        let model = match Compiler::new().target(target.clone()).optimize(false).compile(g.clone()) {
            Ok(m) => m,
            Err(e) => {
                skipped.push((b.name, e.to_string()));
                continue;
            }
        };
        let inputs = crate::io::random_inputs(&g, 1)?;
        model.run(&inputs)?;
        let mut ts: Vec<f64> = (0..runs.max(1))
            .map(|_| {
                let t0 = Instant::now();
                let r = model.run(&inputs);
                (t0.elapsed().as_secs_f64(), r)
            })
            .map(|(t, r)| r.map(|_: Vec<Tensor>| t))
            .collect::<Result<_>>()?;
        ts.sort_by(f64::total_cmp);
        let measured = ts[ts.len() / 2];
        let (compute, memory) = roofline(&g, target).ok_or_else(|| Error::Usage(format!("{}: no cost estimate", b.name)))?;
        if b.fits == "overhead_scale" {
            overhead = measured;
            set(&mut k, b.fits, measured / target.launch_overhead);
        } else {
            // time = max(compute / eff_c, memory / eff_m) + overhead: the memory
            // benchmark fits eff_m, each other one the compute efficiency that
            // makes its kernel take the measured time
            let work = (measured - overhead).max(measured * 0.1);
            let bound = if b.fits == "memory_efficiency" { memory } else { compute };
            set(&mut k, b.fits, bound / work);
        }
        raw.push((b.name, b.fits, g, measured));
    }
    let measurements = raw
        .into_iter()
        .map(|(name, fits, g, measured_s)| Measurement {
            name,
            fits,
            measured_s,
            predicted_default_s: predicted(&g, target, &Coefficients::default()),
            predicted_calibrated_s: predicted(&g, target, &k),
        })
        .collect();
    Ok(Calibration { target: target.name.clone(), coefficients: k, measurements, skipped })
}

impl Calibration {
    /// The report table: predicted (default and calibrated) against measured.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<22} {:<26} {:>12} {:>14} {:>16}\n",
            "benchmark", "fits", "measured", "predicted", "calibrated"
        );
        for m in &self.measurements {
            let _ = writeln!(
                s,
                "{:<22} {:<26} {:>9.1} µs {:>11.1} µs {:>13.1} µs",
                m.name,
                m.fits,
                m.measured_s * 1e6,
                m.predicted_default_s * 1e6,
                m.predicted_calibrated_s * 1e6
            );
        }
        for (name, why) in &self.skipped {
            let _ = writeln!(s, "{name:<22} skipped: {why}");
        }
        s
    }

    /// `{"target": ..., "coefficients": {...}, "measurements": [...]}`.
    pub fn to_json(&self) -> String {
        let c = &self.coefficients;
        let mut s = format!("{{\n  \"target\": \"{}\",\n  \"coefficients\": {{\n", self.target);
        let fields = coefficient_fields(c);
        for (i, (name, v)) in fields.iter().enumerate() {
            let _ = writeln!(s, "    \"{name}\": {v}{}", if i + 1 < fields.len() { "," } else { "" });
        }
        s.push_str("  },\n  \"measurements\": [\n");
        for (i, m) in self.measurements.iter().enumerate() {
            let _ = writeln!(
                s,
                "    {{\"name\": \"{}\", \"fits\": \"{}\", \"measured_s\": {}, \"predicted_default_s\": {}, \"predicted_calibrated_s\": {}}}{}",
                m.name,
                m.fits,
                m.measured_s,
                m.predicted_default_s,
                m.predicted_calibrated_s,
                if i + 1 < self.measurements.len() { "," } else { "" }
            );
        }
        s.push_str("  ]\n}\n");
        s
    }
}

fn coefficient_fields(c: &Coefficients) -> Vec<(&'static str, f64)> {
    vec![
        ("matmul_efficiency", c.matmul_efficiency),
        ("conv_efficiency", c.conv_efficiency),
        ("attention_efficiency", c.attention_efficiency),
        ("elementwise_efficiency", c.elementwise_efficiency),
        ("reduction_efficiency", c.reduction_efficiency),
        ("normalization_efficiency", c.normalization_efficiency),
        ("other_efficiency", c.other_efficiency),
        ("memory_efficiency", c.memory_efficiency),
        ("overhead_scale", c.overhead_scale),
        ("view_seconds", c.view_seconds),
    ]
}

/// Reads the `coefficients` object of a calibration file. Unknown keys are
/// an error (a typo would otherwise be silently ignored); missing ones keep
/// their defaults.
pub fn read_coefficients(path: &std::path::Path) -> Result<Coefficients> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let bad = |msg: String| Error::File { path: path.to_path_buf(), msg };
    let start = text.find("\"coefficients\"").ok_or_else(|| bad("no \"coefficients\" object".into()))?;
    let rest = &text[start..];
    let open = rest.find('{').ok_or_else(|| bad("\"coefficients\" is not an object".into()))?;
    let close = rest[open..].find('}').ok_or_else(|| bad("unterminated \"coefficients\" object".into()))?;
    let body = &rest[open + 1..open + close];
    let mut k = Coefficients::default();
    let known: Vec<&str> = coefficient_fields(&k).iter().map(|f| f.0).collect();
    for pair in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, v) = pair.split_once(':').ok_or_else(|| bad(format!("expected \"name\": number, found `{pair}`")))?;
        let key = key.trim().trim_matches('"');
        let v: f64 = v.trim().parse().map_err(|_| bad(format!("`{key}`: `{}` is not a number", v.trim())))?;
        if !known.contains(&key) {
            return Err(bad(format!("unknown coefficient `{key}` (known: {})", known.join(", "))));
        }
        if !(v.is_finite() && v >= 0.0) {
            return Err(bad(format!("`{key}` must be a finite non-negative number, found {v}")));
        }
        match key {
            "matmul_efficiency" => k.matmul_efficiency = v,
            "conv_efficiency" => k.conv_efficiency = v,
            "attention_efficiency" => k.attention_efficiency = v,
            "elementwise_efficiency" => k.elementwise_efficiency = v,
            "reduction_efficiency" => k.reduction_efficiency = v,
            "normalization_efficiency" => k.normalization_efficiency = v,
            "other_efficiency" => k.other_efficiency = v,
            "memory_efficiency" => k.memory_efficiency = v,
            "overhead_scale" => k.overhead_scale = v,
            _ => k.view_seconds = v,
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_round_trip_through_json() {
        let mut k = Coefficients::default();
        k.matmul_efficiency = 0.25;
        k.overhead_scale = 7.5;
        let c = Calibration { target: "cranelift".into(), coefficients: k.clone(), measurements: vec![], skipped: vec![] };
        let dir = std::env::temp_dir().join(format!("kiln-calib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.json");
        std::fs::write(&p, c.to_json()).unwrap();
        assert_eq!(read_coefficients(&p).unwrap(), k);
        std::fs::write(&p, "{\"coefficients\": {\"matmul_efficency\": 1}}").unwrap();
        assert!(read_coefficients(&p).unwrap_err().to_string().contains("unknown coefficient"));
    }
}
