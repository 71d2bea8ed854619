//! Every kernel-IR construct, compiled by Cranelift and compared with the
//! kernel-IR interpreter (bit-exact; see `common` for the tolerances).

mod common;

use common::check;
use kiln_ir::DType;

const INT_DTYPES: [&str; 8] = ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"];
const ALL_DTYPES: [&str; 13] = [
    "f32", "f64", "f16", "bf16", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64", "bool",
];

/// The interpreter's own all-constructs program: block axes, a barrier,
/// shared and private allocs, a tile matmul, vectors, locals, NaN constants
/// and dynamic indices.
#[test]
fn every_construct_program() {
    check(
        r#"
program "all" arena 64 {
  buffer b0 "a": f32[2,3] input 0
  buffer b1: f32[3,4] const hex"0000803f000000400000404000008040000080bf000000c0000040c0000080c00000003f0000803e0000003e0000803d"
  buffer b2 "idx2": i64[2] input 1
  buffer b3: f32[2,4] temp @0
  buffer b4: f32[2,4] output 0
  buffer b5: f32[4] output 1
  kernel "tile" (b0 read, b1 read, b3 write) grid [] {
    alloc b100: f32[8] private
    tile_matmul m 2 n 4 k 3 acc b100 a b0[0] stride 3 1 b b1[0] stride 4 1
    for v0 in 0 .. 8 step 4 {
      store b3[v0] = load(b100, v0, 4)
    }
  }
  kernel "blocks" (b3 read, b4 write, b2 read) grid [v0 < 2, v1 < 4 block] {
    alloc b101: f32[4] shared
    store b101[v1] = load(b3, v0 * 4 + v1, 1)
    barrier
    let v2 = load(b101, 3 + v1 * -1, 1)
    local v3: f32 = bits(0x7fc00000):f32
    if is_nan(v3) {
      set v3 = fma(v2, 2.0:f32, -1e-8:f32)
    } else {
    }
    store b4[v0 * 4 + v1] = select(gt(v3, 0.0:f32), v3, neg(v3))
  }
  kernel "gather" (b2 read, b3 read, b5 write) grid [v0 < 4] {
    store b5[v0] = reduce_add(splat(2, load(b3, dyn(load(b2, 1, 1)) * 4 + v0, 1)))
  }
}
"#,
    );
}

/// `store y[i] = OP(x[i], z[i])` over `n` elements with `lanes` lanes, in a
/// 3-point grid.
fn binary_prog(dt: &str, op: &str, lanes: u32, n: usize, y_dt: &str) -> String {
    let per = n / 3;
    format!(
        r#"
program "{op}_{dt}x{lanes}" arena 0 {{
  buffer b0 "x": {dt}[{n}] input 0
  buffer b1 "nzz": {dt}[{n}] input 1
  buffer b2: {y_dt}[{n}] output 0
  kernel "k" (b0 read, b1 read, b2 write) grid [v0 < 3] {{
    for v1 in 0 .. {per} step {lanes} {{
      store b2[v0 * {per} + v1] = {op}(load(b0, v0 * {per} + v1, {lanes}), load(b1, v0 * {per} + v1, {lanes}))
    }}
  }}
}}
"#
    )
}

fn unary_prog(dt: &str, op: &str, lanes: u32, n: usize, y_dt: &str) -> String {
    let per = n / 3;
    format!(
        r#"
program "{op}_{dt}x{lanes}" arena 0 {{
  buffer b0 "x": {dt}[{n}] input 0
  buffer b1: {y_dt}[{n}] output 0
  kernel "k" (b0 read, b1 write) grid [v0 < 3] {{
    for v1 in 0 .. {per} step {lanes} {{
      store b1[v0 * {per} + v1] = {op}(load(b0, v0 * {per} + v1, {lanes}))
    }}
  }}
}}
"#
    )
}

#[test]
fn float_arithmetic_scalar_and_vector() {
    for dt in ["f32", "f64"] {
        let wide = [1, 2, 4, 8];
        for lanes in wide {
            for op in ["add", "sub", "mul", "div", "min", "max", "rem", "pow"] {
                check(&binary_prog(dt, op, lanes, 48, dt));
            }
            for op in [
                "neg", "abs", "sqrt", "rsqrt", "recip", "floor", "ceil", "round", "trunc",
            ] {
                check(&unary_prog(dt, op, lanes, 48, dt));
            }
            for op in ["is_nan", "is_inf"] {
                check(&unary_prog(dt, op, lanes, 48, "bool"));
            }
        }
    }
}

#[test]
fn transcendentals_match_exactly() {
    for dt in ["f32", "f64"] {
        for lanes in [1, 4] {
            for op in [
                "exp", "log", "tanh", "erf", "sin", "cos", "tan", "asin", "acos", "atan", "sinh",
                "cosh", "asinh", "acosh", "atanh",
            ] {
                check(&unary_prog(dt, op, lanes, 24, dt));
            }
        }
    }
}

#[test]
fn integer_arithmetic_every_width() {
    for dt in INT_DTYPES {
        let d = DType::from_name(dt).unwrap();
        let full = 16 / d.size_bytes() as u32;
        for lanes in [1, 2, full, full * 2] {
            let n = (lanes as usize * 3 * 4).max(48);
            for op in [
                "add", "sub", "mul", "div", "rem", "min", "max", "pow", "and", "or", "xor", "shl",
                "shr",
            ] {
                check(&binary_prog(dt, op, lanes, n, dt));
            }
            for op in ["neg", "abs", "not", "floor"] {
                check(&unary_prog(dt, op, lanes, n, dt));
            }
        }
    }
}

#[test]
fn bool_logic() {
    for lanes in [1, 4, 16] {
        for op in ["and", "or", "xor", "min", "max"] {
            check(&binary_prog("bool", op, lanes, 48, "bool"));
        }
        check(&unary_prog("bool", "not", lanes, 48, "bool"));
    }
}

#[test]
fn casts_between_every_dtype_pair() {
    for from in ALL_DTYPES {
        for to in ALL_DTYPES {
            let half = |d: &str| d == "f16" || d == "bf16";
            // The IR converts f16/bf16 only to and from f32.
            if (half(from) || half(to)) && from != to && from != "f32" && to != "f32" {
                continue;
            }
            for lanes in [1, 4, 8] {
                let src = format!(
                    r#"
program "cast_{from}_{to}" arena 0 {{
  buffer b0 "x": {from}[48] input 0
  buffer b1: {to}[48] output 0
  kernel "k" (b0 read, b1 write) grid [v0 < 3] {{
    for v1 in 0 .. 16 step {lanes} {{
      store b1[v0 * 16 + v1] = cast({to}, load(b0, v0 * 16 + v1, {lanes}))
    }}
  }}
}}
"#
                );
                check(&src);
            }
        }
    }
}

#[test]
fn comparisons_and_select() {
    for dt in ALL_DTYPES {
        if dt == "f16" || dt == "bf16" {
            continue;
        }
        for lanes in [1, 4, 8] {
            for op in ["eq", "ne", "lt", "le", "gt", "ge"] {
                let src = format!(
                    r#"
program "cmp_{op}_{dt}" arena 0 {{
  buffer b0 "x": {dt}[48] input 0
  buffer b1 "z": {dt}[48] input 1
  buffer b2: bool[48] output 0
  buffer b3: {dt}[48] output 1
  kernel "k" (b0 read, b1 read, b2 write, b3 write) grid [v0 < 3] {{
    for v1 in 0 .. 16 step {lanes} {{
      let v2 = load(b0, v0 * 16 + v1, {lanes})
      let v3 = load(b1, v0 * 16 + v1, {lanes})
      let v4 = {op}(v2, v3)
      store b2[v0 * 16 + v1] = v4
      store b3[v0 * 16 + v1] = select(v4, v2, v3)
    }}
  }}
}}
"#
                );
                check(&src);
            }
        }
    }
    // A scalar condition selecting vectors.
    check(
        r#"
program "scalar_select" arena 0 {
  buffer b0 "x": f16[16] input 0
  buffer b1: f32[16] output 0
  kernel "k" (b0 read, b1 write) grid [v0 < 4] {
    let v1 = cast(f32, load(b0, v0 * 4, 4))
    store b1[v0 * 4] = select(gt(v0, 1:i64), v1, splat(4, 2.5:f32))
  }
}
"#,
    );
}

#[test]
fn reductions_over_lanes() {
    for (dt, lanes) in [
        ("f32", 4),
        ("f32", 8),
        ("f32", 2),
        ("f64", 2),
        ("i32", 4),
        ("u8", 16),
        ("i64", 2),
        ("bool", 4),
    ] {
        for op in ["reduce_add", "reduce_mul", "reduce_min", "reduce_max"] {
            if dt == "bool" && op != "reduce_min" && op != "reduce_max" {
                continue;
            }
            let n = lanes * 6;
            let src = format!(
                r#"
program "{op}_{dt}" arena 0 {{
  buffer b0 "x": {dt}[{n}] input 0
  buffer b1: {dt}[6] output 0
  kernel "k" (b0 read, b1 write) grid [v0 < 6] {{
    store b1[v0] = {op}(load(b0, v0 * {lanes}, {lanes}))
  }}
}}
"#
            );
            check(&src);
        }
    }
}

#[test]
fn loops_locals_ifs_and_index_arithmetic() {
    // A row sum with a vector accumulator and scalar tail, over a 3-D grid with
    // extents that are not powers of two, and index arithmetic with negative
    // operands for / and %.
    check(
        r#"
program "rowsum" arena 0 {
  buffer b0 "x": f32[2,3,5,11] input 0
  buffer b1: f32[2,3,5] output 0
  buffer b2: i64[2,3,5] output 1
  kernel "k" (b0 read, b1 write, b2 write) grid [v0 < 2, v1 < 3, v2 < 5] {
    let v3 = idx(v0 * 165 + v1 * 55 + v2 * 11)
    local v4: f32x4 = splat(4, 0.0:f32)
    for v5 in 0 .. 8 step 4 {
      set v4 = add(v4, load(b0, v3 + v5, 4))
    }
    local v6: f32 = reduce_add(v4)
    for v7 in 8 .. 11 step 1 {
      if gt(load(b0, v3 + v7, 1), 0.0:f32) {
        set v6 = add(v6, load(b0, v3 + v7, 1))
      } else {
        set v6 = sub(v6, 1.0:f32)
      }
    }
    store b1[v0 * 15 + v1 * 5 + v2] = v6
    store b2[v0 * 15 + v1 * 5 + v2] = idx((v2 + -3) / 2 + (v2 + -3) % 3 + (v1 + -7) / 4 + (v1 + -7) % 4 + min(v0, v1) * 10 + max(v2, 3) * 100)
  }
}
"#,
    );
}

#[test]
fn half_precision_storage() {
    for h in ["f16", "bf16"] {
        let src = format!(
            r#"
program "half_{h}" arena 0 {{
  buffer b0 "x": {h}[40] input 0
  buffer b1 "z": f32[40] input 1
  buffer b2: {h}[40] output 0
  buffer b3: {h}[40] output 1
  kernel "k" (b0 read, b1 read, b2 write, b3 write) grid [v0 < 5] {{
    let v1 = cast(f32, load(b0, v0 * 8, 8))
    store b2[v0 * 8] = cast({h}, mul(v1, load(b1, v0 * 8, 8)))
    store b3[v0 * 8] = cast({h}, cast(f32, cast(f64, load(b1, v0 * 8, 8))))
  }}
}}
"#
        );
        check(&src);
    }
}

#[test]
fn integer_locals_as_indices_and_gather() {
    check(
        r#"
program "gather" arena 0 {
  buffer b0 "x": f32[7,4] input 0
  buffer b1 "idx7": i32[5] input 1
  buffer b2 "idx7": u8[5] input 2
  buffer b3: f32[5,4] output 0
  buffer b4: f32[5,4] output 1
  kernel "k" (b0 read, b1 read, b2 read, b3 write, b4 write) grid [v0 < 5] {
    let v1 = load(b1, v0, 1)
    store b3[v0 * 4] = load(b0, v1 * 4, 4)
    store b4[v0 * 4] = load(b0, dyn(load(b2, v0, 1)) * 4, 4)
  }
}
"#,
    );
}

#[test]
fn large_private_alloc_goes_to_scratch() {
    // 8192 f32 = 32 KiB per grid point: above the stack limit, so per-thread
    // scratch; each grid point fills, then reads back reversed.
    check(
        r#"
program "scratch" arena 0 {
  buffer b0 "x": f32[4,8192] input 0
  buffer b1: f32[4,8192] output 0
  kernel "k" (b0 read, b1 write) grid [v0 < 4] {
    alloc b100: f32[8192] private
    alloc b101: f32[16] global
    for v1 in 0 .. 8192 step 4 {
      store b100[v1] = add(load(b0, v0 * 8192 + v1, 4), load(b101, 0, 4))
    }
    for v2 in 0 .. 8192 step 1 {
      store b1[v0 * 8192 + v2] = load(b100, 8191 + v2 * -1, 1)
    }
  }
}
"#,
    );
}

#[test]
fn tile_matmul_fast_and_general_paths() {
    // fast: f32 B with unit column stride, n % 4 == 0
    // general: f16 A, transposed B (column stride != 1), odd n
    check(
        r#"
program "tiles" arena 0 {
  buffer b0 "x": f32[6,9] input 0
  buffer b1 "w": f32[9,8] input 1
  buffer b2 "h": f16[6,9] input 2
  buffer b3: f32[6,8] output 0
  buffer b4: f32[6,3] output 1
  kernel "fast" (b0 read, b1 read, b3 write) grid [v0 < 3] {
    alloc b100: f32[16] private
    tile_matmul m 2 n 8 k 9 acc b100 a b0[v0 * 18] stride 9 1 b b1[0] stride 8 1
    store b3[v0 * 16] = load(b100, 0, 8)
    store b3[v0 * 16 + 8] = load(b100, 8, 8)
  }
  kernel "general" (b2 read, b1 read, b4 write) grid [v0 < 6] {
    alloc b101: f32[3] private
    tile_matmul m 1 n 3 k v0 + 3 acc b101 a b2[v0 * 9] stride 9 1 b b1[1] stride 1 8
    store b4[v0 * 3] = load(b101, 0, 3)
  }
}
"#,
    );
}

#[test]
fn planned_arena_temps_are_shared_between_kernels() {
    check(
        r#"
program "arena" arena 128 {
  buffer b0 "x": f32[16] input 0
  buffer b1: f32[16] temp @0
  buffer b2: f32[16] temp @64
  buffer b3: f32[16] output 0
  kernel "a" (b0 read, b1 write) grid [v0 < 4] {
    store b1[v0 * 4] = mul(load(b0, v0 * 4, 4), splat(4, 2.0:f32))
  }
  kernel "b" (b1 read, b2 write) grid [v0 < 16] {
    store b2[v0] = add(load(b1, v0, 1), 1.0:f32)
  }
  kernel "c" (b2 read, b1 read, b3 write) grid [] {
    for v0 in 0 .. 16 step 8 {
      store b3[v0] = fma(load(b2, v0, 8), load(b1, v0, 8), splat(8, 0.5:f32))
    }
  }
}
"#,
    );
}
