//! Memory planning: places every `Temp` buffer of a kernel [`Program`] in one
//! arena, reusing the bytes of temps whose lifetimes do not overlap.
//!
//! Requires: a program whose kernels run in order and name every buffer they
//! touch in their parameters (what [`crate::schedule::lower`] produces).
//! Establishes: each `Temp` gets a 64-byte aligned `offset`
//! ([`kiln_ir::kernel::ARENA_ALIGN`]) and `arena_bytes` is set; two temps
//! whose live ranges (first to last kernel that touches them, inclusive)
//! overlap never share a byte. Placement is best-fit by size among the gaps
//! left by the temps live at the same time, largest temps first. Constants
//! are stored once already (one `Const` buffer per graph constant, shared by
//! every kernel that reads it); their bytes are reported, not planned.

use kiln_ir::kernel::{BufKind, Program, ARENA_ALIGN};

/// What planning did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemReport {
    /// Arena size: the peak bytes of temporaries at any point.
    pub peak_bytes: usize,
    /// The sum of all temps' (aligned) sizes: the arena without reuse.
    pub unplanned_bytes: usize,
    /// Bytes of constant buffers.
    pub const_bytes: usize,
    /// Number of temps placed.
    pub temps: usize,
}

fn align(n: usize) -> usize {
    n.div_ceil(ARENA_ALIGN) * ARENA_ALIGN
}

/// Plans the arena of `p` in place and reports the sizes.
pub fn plan(p: &mut Program) -> MemReport {
    let nb = p.buffers.len();
    let mut first = vec![usize::MAX; nb];
    let mut last = vec![0usize; nb];
    for (ki, k) in p.kernels.iter().enumerate() {
        for prm in &k.params {
            let i = prm.buf.index();
            if i < nb {
                first[i] = first[i].min(ki);
                last[i] = last[i].max(ki);
            }
        }
    }
    // temps: (index, size, first, last)
    let mut temps: Vec<(usize, usize, usize, usize)> = p
        .buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b.kind, BufKind::Temp { .. }))
        .map(|(i, b)| {
            let (f, l) = if first[i] == usize::MAX {
                (0, 0)
            } else {
                (first[i], last[i])
            };
            (i, align(b.bytes().max(1)), f, l)
        })
        .collect();
    let unplanned: usize = temps.iter().map(|t| t.1).sum();
    temps.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    let mut placed: Vec<(usize, usize, usize, usize)> = Vec::new(); // (offset, size, first, last)
    let mut peak = 0usize;
    for &(i, size, f, l) in &temps {
        // blocks live at the same time, by offset
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|q| q.2 <= l && f <= q.3)
            .map(|q| (q.0, q.0 + q.1))
            .collect();
        busy.sort();
        // best fit: the smallest gap that holds `size`; else after the last block
        let mut best: Option<(usize, usize)> = None; // (gap size, offset)
        let mut cursor = 0usize;
        for &(s, e) in &busy {
            if s > cursor && s - cursor >= size && best.is_none_or(|b| s - cursor < b.0) {
                best = Some((s - cursor, cursor));
            }
            cursor = cursor.max(e);
        }
        let off = best.map_or(cursor, |b| b.1);
        placed.push((off, size, f, l));
        peak = peak.max(off + size);
        p.buffers[i].kind = BufKind::Temp { offset: Some(off) };
    }
    p.arena_bytes = peak;
    let const_bytes = p
        .buffers
        .iter()
        .filter(|b| matches!(b.kind, BufKind::Const(_)))
        .map(|b| b.bytes())
        .sum();
    MemReport {
        peak_bytes: peak,
        unplanned_bytes: unplanned,
        const_bytes,
        temps: temps.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::kernel::{Access, BufId, Buffer, Kernel, Param};
    use kiln_ir::DType;

    fn buf(i: u32, n: usize, kind: BufKind) -> Buffer {
        Buffer {
            id: BufId(i),
            name: None,
            dtype: DType::F32,
            shape: vec![n],
            kind,
        }
    }

    fn k(reads: &[u32], writes: &[u32]) -> Kernel {
        let mut params: Vec<Param> = reads
            .iter()
            .map(|&b| Param {
                buf: BufId(b),
                access: Access::Read,
            })
            .collect();
        params.extend(writes.iter().map(|&b| Param {
            buf: BufId(b),
            access: Access::Write,
        }));
        Kernel {
            name: "k".into(),
            params,
            grid: vec![],
            body: vec![],
        }
    }

    #[test]
    fn a_chain_reuses_dead_temps() {
        // in -> t1 -> t2 -> t3 -> out: t1 and t3 may share; t2 overlaps both.
        let mut p = Program {
            name: "chain".into(),
            buffers: vec![
                buf(0, 100, BufKind::Input(0)),
                buf(1, 100, BufKind::Temp { offset: None }),
                buf(2, 100, BufKind::Temp { offset: None }),
                buf(3, 100, BufKind::Temp { offset: None }),
                buf(4, 100, BufKind::Output(0)),
            ],
            kernels: vec![k(&[0], &[1]), k(&[1], &[2]), k(&[2], &[3]), k(&[3], &[4])],
            arena_bytes: 0,
        };
        let r = plan(&mut p);
        assert_eq!(r.unplanned_bytes, 3 * 448);
        assert_eq!(r.peak_bytes, 2 * 448);
        let off = |i: usize| match p.buffers[i].kind {
            BufKind::Temp { offset: Some(o) } => o,
            _ => panic!("unplanned"),
        };
        assert_eq!(off(1), off(3));
        assert_ne!(off(1), off(2));
        assert!([1, 2, 3].iter().all(|&i| off(i) % ARENA_ALIGN == 0));
        kiln_ir::kernel::verify::verify(&p).unwrap();
    }
}
