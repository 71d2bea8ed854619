//! Compilation targets as plain data: what a backend can run and how fast.
//!
//! A [`TargetInfo`] is filled in by a backend (or taken from one of the
//! presets below) and read by analyses such as the cost model: peak
//! arithmetic throughput per dtype, memory bandwidth, per-kernel overhead,
//! cache sizes and the register/tensor-core tile shapes the code generator
//! uses. It holds no behaviour beyond small lookups.
//!
//! The presets are round, public figures for one representative machine per
//! target, each with its source or derivation in a comment. They are meant to
//! rank alternative forms of a graph, not to predict wall-clock time; a
//! backend that measures its machine should overwrite them. Per-op-class
//! efficiency factors (how close each kind of kernel gets to peak) are
//! deliberately not here: they describe the code generator as much as the
//! machine, and belong to a calibrated cost model.

use crate::DType;

/// CPU or GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    Cpu,
    Gpu,
}

/// Cache and on-chip memory sizes, in bytes, as vendors report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheInfo {
    /// L1 data cache per core (CPU) or combined L1/shared memory per SM (GPU).
    pub l1_bytes: u64,
    /// L2 per core (CPU) or for the whole chip (GPU).
    pub l2_bytes: u64,
    /// Last-level cache for the whole chip, where there is an L3.
    pub l3_bytes: Option<u64>,
    /// Largest shared memory one thread block may use (GPU only).
    pub shared_per_block_bytes: Option<u64>,
}

/// Peak arithmetic throughput, in operations per second (a multiply-add
/// counts as 2), for the whole chip. On GPUs the f16/bf16/i8 figures are the
/// dense tensor-core peaks; f32 is the non-tensor (CUDA-core) FMA peak.
/// `None` means the target has no faster path for that dtype than f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakFlops {
    pub f32: f64,
    pub f16: Option<f64>,
    pub bf16: Option<f64>,
    pub i8: Option<f64>,
}

/// A register or tensor-core tile the code generator uses for matrix
/// products: `m × k` times `k × n` per instruction (or micro-kernel step),
/// with operands of `dtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub dtype: DType,
}

/// A compilation target, described as plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetInfo {
    /// The name [`TargetInfo::by_name`] accepts.
    pub name: String,
    pub kind: TargetKind,
    /// SIMD register width (CPU), or the widest per-thread memory access (GPU).
    pub vector_bits: u32,
    /// Element types the target computes in natively.
    pub dtypes: Vec<DType>,
    /// Cores (CPU) or streaming multiprocessors (GPU).
    pub compute_units: u32,
    pub cache: CacheInfo,
    pub peak: PeakFlops,
    /// Sustained main-memory (DRAM/HBM) bandwidth, bytes per second.
    pub mem_bandwidth: f64,
    /// Fixed cost of running one kernel, in seconds: a GPU kernel launch, or a
    /// CPU thread-pool dispatch and join.
    pub launch_overhead: f64,
    /// Matrix-product tiles, preferred first.
    pub tiles: Vec<Tile>,
}

const fn tile(m: u32, n: u32, k: u32, dtype: DType) -> Tile {
    Tile { m, n, k, dtype }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

const NAMES: [&str; 5] = ["x86-64-avx512", "x86-64-avx2", "cranelift", "sm80", "sm90"];

impl TargetInfo {
    /// The preset names, in the order [`TargetInfo::by_name`] knows them.
    pub fn names() -> &'static [&'static str] {
        &NAMES
    }

    /// The preset called `name`, if there is one.
    pub fn by_name(name: &str) -> Option<TargetInfo> {
        match name {
            "x86-64-avx512" => Some(TargetInfo::x86_64_avx512()),
            "x86-64-avx2" => Some(TargetInfo::x86_64_avx2()),
            "cranelift" => Some(TargetInfo::cranelift()),
            "sm80" => Some(TargetInfo::sm80()),
            "sm90" => Some(TargetInfo::sm90()),
            _ => None,
        }
    }

    /// Peak operations per second for arithmetic in `dtype`, falling back to
    /// the f32 peak for dtypes without an entry (f64 and wide integers too:
    /// optimistic, but no preset targets them).
    pub fn peak_flops(&self, dtype: DType) -> f64 {
        let p = &self.peak;
        match dtype {
            DType::F16 => p.f16,
            DType::BF16 => p.bf16,
            DType::I8 | DType::U8 => p.i8,
            _ => None,
        }
        .unwrap_or(p.f32)
    }

    /// Whether the target computes in `dtype` natively.
    pub fn supports(&self, dtype: DType) -> bool {
        self.dtypes.contains(&dtype)
    }

    /// A 16-core AVX-512 server CPU (Ice Lake-SP class, e.g. Xeon Gold 6338
    /// cut to 16 cores), with VNNI (i8) and AVX512-BF16.
    pub fn x86_64_avx512() -> TargetInfo {
        TargetInfo {
            name: "x86-64-avx512".into(),
            kind: TargetKind::Cpu,
            vector_bits: 512,
            dtypes: vec![DType::F32, DType::BF16, DType::I8, DType::U8, DType::I32],
            compute_units: 16,
            // Ice Lake-SP: 48 KiB L1d, 1.25 MiB L2 per core, 1.5 MiB L3 per core.
            cache: CacheInfo {
                l1_bytes: 48 * KIB,
                l2_bytes: 1280 * KIB,
                l3_bytes: Some(24 * MIB),
                shared_per_block_bytes: None,
            },
            peak: PeakFlops {
                // 16 cores × 2.5 GHz (AVX-512 all-core) × 2 FMA ports × 16 lanes × 2
                f32: 2.56e12,
                // no AVX512-FP16 on Ice Lake: f16 computes via f32
                f16: None,
                // vdpbf16ps: 2 bf16 pairs per f32 lane → 2× f32
                bf16: Some(5.12e12),
                // vpdpbusd (VNNI): 4 u8×i8 pairs per i32 lane → 4× f32
                i8: Some(10.24e12),
            },
            // 8 channels DDR4-3200 × 25.6 GB/s ≈ 205 GB/s peak; round down
            mem_bandwidth: 200e9,
            // thread-pool fork/join of a parallel loop: on the order of 1 µs
            launch_overhead: 1e-6,
            // 14 rows × 2 zmm (32 floats) = 28 accumulators of 32 zmm registers
            tiles: vec![tile(14, 32, 1, DType::F32), tile(14, 32, 4, DType::U8)],
        }
    }

    /// An 8-core AVX2+FMA desktop CPU (Zen 3 class, e.g. Ryzen 7 5800X).
    pub fn x86_64_avx2() -> TargetInfo {
        TargetInfo {
            name: "x86-64-avx2".into(),
            kind: TargetKind::Cpu,
            vector_bits: 256,
            dtypes: vec![DType::F32, DType::I8, DType::U8, DType::I32],
            compute_units: 8,
            // Zen 3: 32 KiB L1d, 512 KiB L2 per core, 32 MiB L3 per CCD.
            cache: CacheInfo {
                l1_bytes: 32 * KIB,
                l2_bytes: 512 * KIB,
                l3_bytes: Some(32 * MIB),
                shared_per_block_bytes: None,
            },
            peak: PeakFlops {
                // 8 cores × 3.5 GHz × 2 FMA pipes × 8 lanes × 2 = 896 GFLOP/s
                f32: 0.9e12,
                f16: None,
                bf16: None,
                // vpmaddubsw + vpmaddwd: about 2× the f32 rate
                i8: Some(1.8e12),
            },
            // dual-channel DDR4-3200: 2 × 25.6 GB/s ≈ 51 GB/s; round down
            mem_bandwidth: 50e9,
            launch_overhead: 1e-6,
            // 6 rows × 2 ymm (16 floats) = 12 accumulators of 16 ymm registers
            tiles: vec![tile(6, 16, 1, DType::F32), tile(6, 16, 4, DType::U8)],
        }
    }

    /// Cranelift's portable 128-bit SIMD tier (f32x4, i32x4...), on the same
    /// 8-core host as [`TargetInfo::x86_64_avx2`]: half the AVX2 peak, for
    /// half the lanes (Cranelift has `fma`, so nothing more is lost). No i8
    /// dot-product instructions, so i8 runs at the f32 rate.
    pub fn cranelift() -> TargetInfo {
        TargetInfo {
            name: "cranelift".into(),
            kind: TargetKind::Cpu,
            vector_bits: 128,
            dtypes: vec![
                DType::F32,
                DType::F64,
                DType::I8,
                DType::U8,
                DType::I32,
                DType::I64,
            ],
            compute_units: 8,
            cache: CacheInfo {
                l1_bytes: 32 * KIB,
                l2_bytes: 512 * KIB,
                l3_bytes: Some(32 * MIB),
                shared_per_block_bytes: None,
            },
            peak: PeakFlops {
                // 8 cores × 3.5 GHz × 2 FMA pipes × 4 lanes × 2 = 448 GFLOP/s
                f32: 0.45e12,
                f16: None,
                bf16: None,
                i8: None,
            },
            mem_bandwidth: 50e9,
            launch_overhead: 1e-6,
            // 4 rows × 2 f32x4 = 8 accumulators of 16 xmm registers
            tiles: vec![tile(4, 8, 1, DType::F32)],
        }
    }

    /// NVIDIA A100 SXM4 40 GB (compute capability 8.0). Figures from the
    /// A100 datasheet and the Ampere tuning guide.
    pub fn sm80() -> TargetInfo {
        TargetInfo {
            name: "sm80".into(),
            kind: TargetKind::Gpu,
            // LDG.128 / float4 per thread
            vector_bits: 128,
            dtypes: vec![
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::I8,
                DType::U8,
                DType::I32,
            ],
            compute_units: 108,
            // 192 KiB L1/shared per SM, 40 MiB L2, 163 KiB shared per block (opt-in)
            cache: CacheInfo {
                l1_bytes: 192 * KIB,
                l2_bytes: 40 * MIB,
                l3_bytes: None,
                shared_per_block_bytes: Some(163 * KIB),
            },
            peak: PeakFlops {
                f32: 19.5e12,       // CUDA cores FP32
                f16: Some(312e12),  // tensor cores, dense
                bf16: Some(312e12), // tensor cores, dense
                i8: Some(624e12),   // tensor cores, dense
            },
            mem_bandwidth: 1555e9, // HBM2, 40 GB part
            // kernel launch latency is a few µs; 5 µs is the usual round figure
            launch_overhead: 5e-6,
            // mma.sync shapes (PTX ISA)
            tiles: vec![
                tile(16, 8, 16, DType::F16),
                tile(16, 8, 16, DType::BF16),
                tile(16, 8, 32, DType::I8),
            ],
        }
    }

    /// NVIDIA H100 SXM5 (compute capability 9.0). Figures from the H100
    /// datasheet and the Hopper tuning guide.
    pub fn sm90() -> TargetInfo {
        TargetInfo {
            name: "sm90".into(),
            kind: TargetKind::Gpu,
            vector_bits: 128,
            dtypes: vec![
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::I8,
                DType::U8,
                DType::I32,
            ],
            compute_units: 132,
            // 256 KiB L1/shared per SM, 50 MiB L2, 227 KiB shared per block (opt-in)
            cache: CacheInfo {
                l1_bytes: 256 * KIB,
                l2_bytes: 50 * MIB,
                l3_bytes: None,
                shared_per_block_bytes: Some(227 * KIB),
            },
            peak: PeakFlops {
                f32: 67e12,         // CUDA cores FP32
                f16: Some(989e12),  // tensor cores, dense
                bf16: Some(989e12), // tensor cores, dense
                i8: Some(1979e12),  // tensor cores, dense
            },
            mem_bandwidth: 3.35e12, // HBM3
            launch_overhead: 5e-6,
            // wgmma (one warpgroup, N up to 256) first, then mma.sync
            tiles: vec![
                tile(64, 256, 16, DType::F16),
                tile(64, 256, 16, DType::BF16),
                tile(64, 256, 32, DType::I8),
                tile(16, 8, 16, DType::F16),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<TargetInfo> {
        TargetInfo::names()
            .iter()
            .filter_map(|n| TargetInfo::by_name(n))
            .collect()
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(all().len(), TargetInfo::names().len());
        for n in TargetInfo::names() {
            assert_eq!(TargetInfo::by_name(n).map(|t| t.name), Some(n.to_string()));
        }
        assert_eq!(TargetInfo::by_name("sm70"), None);
    }

    #[test]
    fn presets_are_sane() {
        let cpu_max = all()
            .iter()
            .filter(|t| t.kind == TargetKind::Cpu)
            .map(|t| t.launch_overhead)
            .fold(0.0, f64::max);
        for t in all() {
            let p = t.peak;
            assert!(p.f32 > 0.0, "{}", t.name);
            for x in [p.f16, p.bf16, p.i8].into_iter().flatten() {
                assert!(x >= p.f32, "{}: a special path slower than f32", t.name);
            }
            assert!(
                t.mem_bandwidth > 0.0 && t.launch_overhead > 0.0,
                "{}",
                t.name
            );
            assert!(t.compute_units > 0 && t.vector_bits >= 128, "{}", t.name);
            assert!(t.supports(DType::F32), "{}", t.name);
            assert!(!t.tiles.is_empty(), "{}", t.name);
            assert!(
                t.cache.l1_bytes > 0 && t.cache.l2_bytes > t.cache.l1_bytes,
                "{}",
                t.name
            );
            match t.kind {
                TargetKind::Gpu => {
                    assert!(t.launch_overhead > cpu_max, "{}", t.name);
                    assert!(
                        t.peak_flops(DType::F16) >= t.peak_flops(DType::F32),
                        "{}",
                        t.name
                    );
                    assert!(t.cache.shared_per_block_bytes.is_some(), "{}", t.name);
                }
                TargetKind::Cpu => assert!(t.cache.shared_per_block_bytes.is_none()),
            }
        }
    }

    #[test]
    fn peak_falls_back_to_f32() {
        let t = TargetInfo::x86_64_avx2();
        assert_eq!(t.peak_flops(DType::F16), t.peak.f32);
        assert_eq!(t.peak_flops(DType::F64), t.peak.f32);
        assert_eq!(t.peak_flops(DType::U8), 1.8e12);
        assert_eq!(TargetInfo::sm90().peak_flops(DType::BF16), 989e12);
    }
}
