//! Graphviz DOT of a (fused) graph: one box per kernel, coloured by what
//! kind of kernel it is and labelled with the cost model's estimate for the
//! target; views (Reshape, Transpose, ...) are small grey ellipses; inputs,
//! constants and outputs are plain notes.

use kiln_ir::{Graph, OpClass, TargetInfo, ValueId};
use kiln_passes::cost;
use std::collections::HashMap;
use std::fmt::Write;

fn colour(class: OpClass) -> &'static str {
    match class {
        OpClass::Fused => "#f4a582",
        OpClass::Linalg | OpClass::Conv => "#92c5de",
        OpClass::Attention => "#d6604d",
        OpClass::Normalization => "#b2abd2",
        OpClass::Elementwise => "#fddbc7",
        OpClass::Reduction | OpClass::Pool => "#d1e5f0",
        _ => "#e0e0e0",
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn human_time(s: f64) -> String {
    if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// The DOT text.
pub fn to_dot(g: &Graph, target: &TargetInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", esc(&g.name));
    let _ = writeln!(out, "  rankdir=TB; node [fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(out, "  labelloc=t; label=\"{} — estimated for {}\";", esc(&g.name), esc(&target.name));
    let mut producer: HashMap<ValueId, String> = HashMap::new();
    for (i, &v) in g.inputs.iter().enumerate() {
        let id = format!("in{i}");
        let _ = writeln!(out, "  {id} [shape=note, label=\"{}\\n{}\"];", esc(&g.display_name(v)), g.ty(v));
        producer.insert(v, id);
    }
    let mut total = 0.0;
    for (i, n) in g.nodes.iter().enumerate() {
        let id = format!("n{i}");
        let est = cost::node_cost(g, n, target);
        let ty = n.outputs.first().map(|&v| g.ty(v).to_string()).unwrap_or_default();
        if cost::is_view(n.op) {
            let _ = writeln!(out, "  {id} [shape=ellipse, style=filled, fillcolor=\"#f0f0f0\", fontsize=8, label=\"{}\"];", n.op);
        } else {
            let c = est.map(|c| c.seconds).unwrap_or(f64::NAN);
            if c.is_finite() {
                total += c;
            }
            let detail = match n.op {
                kiln_ir::Op::FusedElementwise | kiln_ir::Op::FusedMatMul | kiln_ir::Op::FusedConv => kiln_ir::fused::body(n.op, &n.attrs).map(|e| e.to_string()).unwrap_or_default(),
                _ => String::new(),
            };
            let detail = if detail.len() > 60 { format!("{}…", &detail[..detail.char_indices().take_while(|(i, _)| *i < 60).last().map_or(0, |(i, _)| i)]) } else { detail };
            let est = if c.is_finite() { human_time(c) } else { "no estimate".into() };
            let _ = writeln!(
                out,
                "  {id} [shape=box, style=\"filled,rounded\", fillcolor=\"{}\", label=\"{}\\n{}\\n{}\\n{}\"];",
                colour(n.op.class()),
                esc(&n.op.to_string()),
                esc(&detail),
                ty,
                est
            );
        }
        for &inp in n.inputs.iter().flatten() {
            if let Some(p) = producer.get(&inp) {
                let _ = writeln!(out, "  {p} -> {id};");
            }
        }
        for &o in &n.outputs {
            producer.insert(o, id.clone());
        }
    }
    for (i, &v) in g.outputs.iter().enumerate() {
        let id = format!("out{i}");
        let _ = writeln!(out, "  {id} [shape=note, label=\"{}\\n{}\"];", esc(&g.display_name(v)), g.ty(v));
        if let Some(p) = producer.get(&v) {
            let _ = writeln!(out, "  {p} -> {id};");
        }
    }
    let _ = writeln!(out, "  total [shape=plaintext, label=\"{} kernels, {} estimated\"];", cost::kernel_count(g), human_time(total));
    out.push_str("}\n");
    out
}
