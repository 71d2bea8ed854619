//! Opset normalisation: every ONNX node, whatever its opset (7..=28), becomes
//! kiln's one form of its op, the newest opset's (see `kiln_ir::op`).
//!
//! What changes, by op (the opset named is the model's default-domain opset;
//! the full table is in `docs/onnx-import.md`):
//!
//! | op | opsets | rewrite |
//! |---|---|---|
//! | Squeeze, Unsqueeze, ReduceSum | < 13 | `axes` attribute -> input 1 (i64) |
//! | other Reduce* | < 18 | `axes` attribute -> input 1 (i64) |
//! | Split | < 13 | `split` attribute -> input 1 (i64) |
//! | Split | < 18 | no `split`: `num_outputs` = the node's output count |
//! | Slice | < 10 | `starts`/`ends`/`axes` attributes -> inputs 1/2/3 (i64) |
//! | Pad | < 11 | `pads` -> input 1 (i64), `value` -> input 2 (input's dtype) |
//! | Clip | < 11 | `min`/`max` -> inputs 1/2 (scalars of the input's dtype) |
//! | TopK | < 10 | `k` -> input 1 (i64 `[1]`) |
//! | Dropout | < 12 | `ratio` -> input 1 (f32 scalar) |
//! | Softmax, LogSoftmax, Hardmax | < 13 | input coerced to 2-D at `axis` (default 1): same op when `axis` is the last axis, else Flatten -> op(axis=1) -> Reshape back |
//! | BatchNormalization | < 14 | `spatial` (must be 1), `is_test`, `consumed_inputs` dropped; unused training outputs dropped |
//! | GroupNormalization | 18..20 | per-group `scale`/`bias` (`[num_groups]`) repeated to per-channel (`[C]`) |
//! | Gemm | any | `broadcast` dropped (C always broadcasts) |
//! | Upsample | 7..9 | -> Resize(X, -, scales) with `asymmetric` coordinates (`floor` for nearest); `scales` attribute (< 9) -> input |
//! | Resize | 10 | (X, scales) -> Resize(X, -, scales), as Upsample |
//! | Resize | any | empty constant `roi`/`scales`/`sizes` -> omitted; `tf_half_pixel_for_nn` is unsupported |
//! | Scatter | 9..10 | -> ScatterElements |
//!
//! Everything else keeps its attributes and inputs: later opsets only added
//! types, attributes with defaults equal to the old behaviour, or
//! broadcasting that generalises the old rule.

use crate::error::Result;
use crate::import::{Importer, OnnxNode};
use kiln_ir::shape::normalize_axis;
use kiln_ir::{Attr, Attrs, DType, Op, Tensor};

/// The ONNX op (kiln's own fused ops are not ONNX ops, so a model naming them is refused).
fn onnx_op(op_type: &str) -> Option<Op> {
    Op::from_name(op_type).filter(|op| !op.is_internal())
}

/// Op types the frontend can import (kiln ops plus the ones it rewrites).
pub(crate) fn is_known(op_type: &str) -> bool {
    matches!(op_type, "Constant" | "Upsample" | "Scatter") || onnx_op(op_type).is_some()
}

/// Normalises one node and emits it.
pub(crate) fn lower(imp: &mut Importer, mut n: OnnxNode) -> Result<()> {
    let opset = imp.opset;
    let op = match n.op_type.as_str() {
        "Upsample" => return lower_old_resize(imp, n, true),
        "Scatter" => Op::ScatterElements,
        t => onnx_op(t).ok_or_else(|| imp.unsupported(&n.name, t, "", ""))?,
    };
    match op {
        Op::Squeeze | Op::Unsqueeze | Op::ReduceSum if opset < 13 => {
            ints_attr_to_input(imp, &mut n, "axes", 1)?
        }
        Op::ReduceMean
        | Op::ReduceMax
        | Op::ReduceMin
        | Op::ReduceProd
        | Op::ReduceL1
        | Op::ReduceL2
        | Op::ReduceLogSum
        | Op::ReduceLogSumExp
        | Op::ReduceSumSquare
            if opset < 18 =>
        {
            ints_attr_to_input(imp, &mut n, "axes", 1)?
        }
        Op::Split => {
            if opset < 13 {
                ints_attr_to_input(imp, &mut n, "split", 1)?;
            }
            if opset < 18 && n.input(1).is_none() && !n.attrs.has("num_outputs") {
                n.attrs
                    .set("num_outputs", Attr::Int(n.outputs.len() as i64));
            }
        }
        Op::Slice if opset < 10 => {
            ints_attr_to_input(imp, &mut n, "starts", 1)?;
            ints_attr_to_input(imp, &mut n, "ends", 2)?;
            ints_attr_to_input(imp, &mut n, "axes", 3)?;
        }
        Op::Pad if opset < 11 => {
            ints_attr_to_input(imp, &mut n, "pads", 1)?;
            scalar_attr_to_input(imp, &mut n, "value", 2, None)?;
        }
        Op::Clip if opset < 11 => {
            scalar_attr_to_input(imp, &mut n, "min", 1, None)?;
            scalar_attr_to_input(imp, &mut n, "max", 2, None)?;
        }
        Op::TopK if opset < 10 => ints_attr_to_input(imp, &mut n, "k", 1)?,
        Op::Dropout if opset < 12 => {
            n.attrs.remove("is_test");
            scalar_attr_to_input(imp, &mut n, "ratio", 1, Some(DType::F32))?;
        }
        Op::Softmax | Op::LogSoftmax | Op::Hardmax if opset < 13 => {
            return lower_coerced_2d(imp, n, op)
        }
        Op::BatchNormalization if opset < 14 => lower_old_batchnorm(imp, &mut n)?,
        Op::GroupNormalization if opset < 21 => lower_old_groupnorm(imp, &mut n)?,
        Op::Gemm => {
            n.attrs.remove("broadcast");
        }
        Op::Resize if opset < 11 => return lower_old_resize(imp, n, false),
        Op::Resize => {
            if n.attrs.str("coordinate_transformation_mode").ok().flatten()
                == Some("tf_half_pixel_for_nn")
            {
                return Err(imp.node_err(
                    &n,
                    "attribute `coordinate_transformation_mode`: \"tf_half_pixel_for_nn\" (opset 11 only) is not supported",
                ));
            }
            for i in 1..4 {
                if n.input(i)
                    .and_then(|v| imp.value(v))
                    .is_some_and(|t| t.numel() == 0)
                {
                    set_input(&mut n.inputs, i, None);
                }
            }
        }
        _ => {}
    }
    emit_final(imp, op, n)
}

/// Emits the node as `op` with its (normalised) attributes and inputs, bound to
/// its ONNX output names. Trailing omitted outputs are dropped (the op then
/// computes fewer outputs), except for Split, whose output count is its meaning.
fn emit_final(imp: &mut Importer, op: Op, mut n: OnnxNode) -> Result<()> {
    let mut outputs = std::mem::take(&mut n.outputs);
    if op != Op::Split {
        while outputs.last() == Some(&None) {
            outputs.pop();
        }
    }
    let attrs = std::mem::take(&mut n.attrs);
    let inputs = std::mem::take(&mut n.inputs);
    imp.emit(&n, op, attrs, inputs, outputs)?;
    Ok(())
}

/// Sets input `i`, padding with omitted inputs.
fn set_input(inputs: &mut Vec<Option<kiln_ir::ValueId>>, i: usize, v: Option<kiln_ir::ValueId>) {
    if inputs.len() <= i {
        inputs.resize(i + 1, None);
    }
    inputs[i] = v;
}

/// Moves an int or ints attribute to input `pos` as a 1-D i64 constant.
fn ints_attr_to_input(imp: &mut Importer, n: &mut OnnxNode, attr: &str, pos: usize) -> Result<()> {
    let Some(a) = n.attrs.remove(attr) else {
        return Ok(());
    };
    let v = match a {
        Attr::Ints(v) => v,
        Attr::Int(x) => vec![x],
        other => {
            return Err(imp.node_err(
                n,
                format!("attribute `{attr}`: expected ints, found {}", other.kind()),
            ))
        }
    };
    if n.input(pos).is_some() {
        return Err(imp.node_err(
            n,
            format!(
                "has both the attribute `{attr}` and input {pos} (opset {})",
                imp.opset
            ),
        ));
    }
    let t = Tensor::from_vec(vec![v.len()], v).map_err(|e| imp.node_err(n, e.to_string()))?;
    let c = imp.konst(t);
    set_input(&mut n.inputs, pos, Some(c));
    Ok(())
}

/// Moves a float attribute to input `pos` as a scalar of `dtype` (default: the
/// dtype of input 0).
fn scalar_attr_to_input(
    imp: &mut Importer,
    n: &mut OnnxNode,
    attr: &str,
    pos: usize,
    dtype: Option<DType>,
) -> Result<()> {
    let x = n
        .attrs
        .float(attr)
        .map_err(|e| imp.node_err(n, e.to_string()))?;
    let Some(x) = x else { return Ok(()) };
    n.attrs.remove(attr);
    if n.input(pos).is_some() {
        return Err(imp.node_err(
            n,
            format!(
                "has both the attribute `{attr}` and input {pos} (opset {})",
                imp.opset
            ),
        ));
    }
    let dtype = match dtype {
        Some(d) => d,
        None => {
            let x0 = n
                .input(0)
                .ok_or_else(|| imp.node_err(n, "input 0 is missing"))?;
            imp.ty(x0).dtype
        }
    };
    let t = Tensor::from_f64s(dtype, Vec::new(), &[x as f64])
        .map_err(|e| imp.node_err(n, e.to_string()))?;
    let c = imp.konst(t);
    set_input(&mut n.inputs, pos, Some(c));
    Ok(())
}

/// Softmax, LogSoftmax and Hardmax before opset 13 work on the input coerced
/// to 2-D `[prod(dims[..axis]), prod(dims[axis..])]`.
fn lower_coerced_2d(imp: &mut Importer, mut n: OnnxNode, op: Op) -> Result<()> {
    let x = n
        .input(0)
        .ok_or_else(|| imp.node_err(&n, "input 0 is missing"))?;
    let xty = imp.ty(x).clone();
    let rank = xty.shape.rank();
    let axis = n
        .attrs
        .int_or("axis", 1)
        .map_err(|e| imp.node_err(&n, e.to_string()))?;
    let a = normalize_axis(axis, rank).ok_or_else(|| {
        imp.node_err(
            &n,
            format!("attribute `axis`: {axis} is out of range for input {xty}"),
        )
    })?;
    if a + 1 == rank {
        // Coercing at the last axis changes nothing.
        n.attrs.set("axis", Attr::Int(a as i64));
        return emit_final(imp, op, n);
    }
    let flat = Attrs::new().with("axis", Attr::Int(a as i64));
    let flat = imp.emit(&n, Op::Flatten, flat, vec![Some(x)], vec![None])?[0];
    let mut attrs = n.attrs.clone();
    attrs.set("axis", Attr::Int(1));
    let y = imp.emit(&n, op, attrs, vec![Some(flat)], vec![None])?[0];
    let shape = match xty.shape.fixed() {
        Some(dims) => {
            let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
            let t = Tensor::from_vec(vec![dims.len()], dims)
                .map_err(|e| imp.node_err(&n, e.to_string()))?;
            imp.konst(t)
        }
        None => imp.emit(&n, Op::Shape, Attrs::new(), vec![Some(x)], vec![None])?[0],
    };
    // allowzero: a 0 in the shape is a real 0, not "copy the input's dimension"
    let reshape = Attrs::new().with("allowzero", Attr::Int(1));
    let out = n.outputs.first().cloned().flatten();
    let y = imp.emit(
        &n,
        Op::Reshape,
        reshape,
        vec![Some(y), Some(shape)],
        vec![out],
    )?[0];
    // Reshaping to `Shape(x)` gives x's shape, symbolic dimensions included,
    // which inference cannot see when the shape is not a known value.
    imp.graph.values[y.index()].ty = xty;
    Ok(())
}

/// BatchNormalization before opset 14: `spatial` must be 1 (opset < 9), old
/// bookkeeping attributes go, and the training outputs (mean, var,
/// saved_mean, saved_var) are dropped when nothing uses them.
fn lower_old_batchnorm(imp: &mut Importer, n: &mut OnnxNode) -> Result<()> {
    let spatial = n
        .attrs
        .int_or("spatial", 1)
        .map_err(|e| imp.node_err(n, e.to_string()))?;
    if spatial != 1 {
        return Err(imp.node_err(
            n,
            format!("attribute `spatial`: {spatial} (per-activation statistics) is not supported"),
        ));
    }
    for a in ["spatial", "is_test", "consumed_inputs"] {
        n.attrs.remove(a);
    }
    for o in n.outputs.iter().skip(1).flatten() {
        if imp.is_used(o) {
            return Err(imp.node_err(
                n,
                format!(
                    "training-mode outputs are not supported (output `{o}` is used; opset {})",
                    imp.opset
                ),
            ));
        }
    }
    n.outputs.truncate(1);
    Ok(())
}

/// GroupNormalization before opset 21 takes `scale` and `bias` per group
/// (`[num_groups]`); the newest form takes them per channel (`[C]`). Each
/// group's value is repeated `C / num_groups` times: into a new constant when
/// the operand is known, else with Unsqueeze -> Expand -> Reshape.
fn lower_old_groupnorm(imp: &mut Importer, n: &mut OnnxNode) -> Result<()> {
    let x = n
        .input(0)
        .ok_or_else(|| imp.node_err(n, "input 0 is missing"))?;
    let xty = imp.ty(x).clone();
    let groups = n
        .attrs
        .int("num_groups")
        .map_err(|e| imp.node_err(n, e.to_string()))?
        .ok_or_else(|| imp.node_err(n, "attribute `num_groups` is required"))?;
    for pos in [1, 2] {
        let v = n
            .input(pos)
            .ok_or_else(|| imp.node_err(n, format!("input {pos} is missing")))?;
        let vty = imp.ty(v).clone();
        let channels = xty.shape.0.get(1).and_then(|d| d.fixed());
        if channels.is_some_and(|c| vty.shape.fixed() == Some(vec![c])) {
            continue; // already one value per channel (num_groups == C)
        }
        let (Some(c), Ok(g)) = (channels, usize::try_from(groups)) else {
            return Err(imp.node_err(
                n,
                format!(
                    "opset {} per-group scale/bias need a static channel count, input is {xty}",
                    imp.opset
                ),
            ));
        };
        if g == 0 || c % g != 0 || vty.shape.fixed() != Some(vec![g]) {
            return Err(imp.node_err(
                n,
                format!("input {pos} is {vty} but num_groups = {groups} and the input is {xty}"),
            ));
        }
        let per = c / g;
        let repeated = match imp.value(v) {
            Some(t) => {
                let data = kiln_ir::map_data!(t.data(), d => d.iter().flat_map(|x| std::iter::repeat_n(*x, per)).collect());
                let t = Tensor::new(vec![c], data).map_err(|e| imp.node_err(n, e.to_string()))?;
                imp.konst(t)
            }
            None => {
                let axes = imp.konst(
                    Tensor::from_vec(vec![1], vec![1i64])
                        .map_err(|e| imp.node_err(n, e.to_string()))?,
                );
                let col = imp.emit(
                    n,
                    Op::Unsqueeze,
                    Attrs::new(),
                    vec![Some(v), Some(axes)],
                    vec![None],
                )?[0];
                let to = imp.konst(
                    Tensor::from_vec(vec![2], vec![g as i64, per as i64])
                        .map_err(|e| imp.node_err(n, e.to_string()))?,
                );
                let grid = imp.emit(
                    n,
                    Op::Expand,
                    Attrs::new(),
                    vec![Some(col), Some(to)],
                    vec![None],
                )?[0];
                let flat = imp.konst(
                    Tensor::from_vec(vec![1], vec![c as i64])
                        .map_err(|e| imp.node_err(n, e.to_string()))?,
                );
                imp.emit(
                    n,
                    Op::Reshape,
                    Attrs::new(),
                    vec![Some(grid), Some(flat)],
                    vec![None],
                )?[0]
            }
        };
        set_input(&mut n.inputs, pos, Some(repeated));
    }
    Ok(())
}

/// Upsample (opsets 7..9) and Resize (opset 10): `out = floor(in * scale)`,
/// sampling at `x_in = x_out / scale` (ONNX's "asymmetric" coordinates);
/// nearest rounds down when upsampling and up when downsampling.
fn lower_old_resize(imp: &mut Importer, mut n: OnnxNode, upsample: bool) -> Result<()> {
    if upsample && imp.opset < 9 {
        let scales = match n.attrs.remove("scales") {
            Some(Attr::Floats(v)) => v,
            Some(other) => {
                return Err(imp.node_err(
                    &n,
                    format!(
                        "attribute `scales`: expected floats, found {}",
                        other.kind()
                    ),
                ))
            }
            None => return Err(imp.node_err(&n, "attribute `scales` is required")),
        };
        let t = Tensor::from_vec(vec![scales.len()], scales)
            .map_err(|e| imp.node_err(&n, e.to_string()))?;
        let c = imp.konst(t);
        set_input(&mut n.inputs, 1, Some(c));
    }
    let x = n
        .input(0)
        .ok_or_else(|| imp.node_err(&n, "input 0 is missing"))?;
    let scales = n
        .input(1)
        .ok_or_else(|| imp.node_err(&n, "input 1 (scales) is missing"))?;
    let mode = n
        .attrs
        .str_or("mode", "nearest")
        .map_err(|e| imp.node_err(&n, e.to_string()))?;
    let mode = mode.to_string();
    if !matches!(mode.as_str(), "nearest" | "linear") {
        return Err(imp.node_err(&n, format!("attribute `mode`: unknown mode {mode:?}")));
    }
    let mut attrs = n.attrs.clone();
    attrs.set("mode", Attr::Str(mode.clone()));
    attrs.set(
        "coordinate_transformation_mode",
        Attr::Str("asymmetric".into()),
    );
    if mode == "nearest" {
        let downsampling = imp.value(scales).is_some_and(|t| {
            let s = t.to_f64_vec();
            s.iter().any(|&x| x < 1.0) && s.iter().all(|&x| x <= 1.0)
        });
        let rounding = if downsampling { "ceil" } else { "floor" };
        attrs.set("nearest_mode", Attr::Str(rounding.into()));
    }
    let outputs = n.outputs.iter().take(1).cloned().collect();
    imp.emit(
        &n,
        Op::Resize,
        attrs,
        vec![Some(x), None, Some(scales)],
        outputs,
    )?;
    Ok(())
}
