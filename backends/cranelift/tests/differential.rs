//! Property tests: random kernel programs (expression trees over every value
//! type, lanes 1/2/4/8) and random elementwise graphs lowered by the
//! scheduler, Cranelift against the interpreters.

mod common;

use common::{check_program_with, random_inputs, Rng};
use kiln_cranelift::Options;
use kiln_ir::kernel::*;
use kiln_ir::DType;
use proptest::prelude::*;

/// A random expression of type `d` x `lanes` over the loads of inputs
/// `b0`, `b1` (both of `d`) at `index`.
fn gen_expr(rng: &mut Rng, d: DType, lanes: u32, depth: u32, index: &IndexExpr) -> Expr {
    let leaf = depth == 0 || rng.below(4) == 0;
    if leaf {
        return match rng.below(3) {
            0 => Expr::load(BufId(0), index.clone(), lanes),
            1 => Expr::load(BufId(1), index.clone(), lanes),
            _ => {
                let c = if d.is_float() {
                    Expr::float(d, (rng.below(9) as f64 - 4.0) * 0.75)
                } else {
                    Expr::int(d, rng.below(9) as i64 - 4)
                };
                Expr::splat(lanes, c)
            }
        };
    }
    let sub = |rng: &mut Rng| gen_expr(rng, d, lanes, depth - 1, index);
    let float = d.is_float();
    match rng.below(8) {
        0 | 1 => {
            let ops: &[BinOp] = if float {
                &[
                    BinOp::Add,
                    BinOp::Sub,
                    BinOp::Mul,
                    BinOp::Div,
                    BinOp::Min,
                    BinOp::Max,
                    BinOp::Rem,
                    BinOp::Pow,
                ]
            } else {
                &[
                    BinOp::Add,
                    BinOp::Sub,
                    BinOp::Mul,
                    BinOp::Min,
                    BinOp::Max,
                    BinOp::And,
                    BinOp::Or,
                    BinOp::Xor,
                    BinOp::Shl,
                    BinOp::Shr,
                ]
            };
            let op = ops[rng.below(ops.len() as u64) as usize];
            Expr::binary(op, sub(rng), sub(rng))
        }
        2 => {
            let ops: &[UnOp] = if float {
                &[
                    UnOp::Neg,
                    UnOp::Abs,
                    UnOp::Sqrt,
                    UnOp::Exp,
                    UnOp::Tanh,
                    UnOp::Floor,
                    UnOp::Round,
                    UnOp::Recip,
                    UnOp::Erf,
                ]
            } else {
                &[UnOp::Neg, UnOp::Abs, UnOp::Not]
            };
            Expr::unary(ops[rng.below(ops.len() as u64) as usize], sub(rng))
        }
        3 if float => Expr::fma(sub(rng), sub(rng), sub(rng)),
        4 => {
            let ops = [
                CmpOp::Eq,
                CmpOp::Ne,
                CmpOp::Lt,
                CmpOp::Le,
                CmpOp::Gt,
                CmpOp::Ge,
            ];
            let c = Expr::cmp(ops[rng.below(6) as usize], sub(rng), sub(rng));
            Expr::select(c, sub(rng), sub(rng))
        }
        5 => {
            // a round trip through another type
            let others = [
                DType::F32,
                DType::F64,
                DType::I32,
                DType::I8,
                DType::U16,
                DType::I64,
                DType::Bool,
            ];
            let o = others[rng.below(others.len() as u64) as usize];
            Expr::cast(d, Expr::cast(o, sub(rng)))
        }
        6 if lanes > 1 => {
            let ops = [LaneOp::Add, LaneOp::Mul, LaneOp::Min, LaneOp::Max];
            Expr::splat(
                lanes,
                Expr::reduce_lanes(ops[rng.below(4) as usize], sub(rng)),
            )
        }
        _ => sub(rng),
    }
}

fn random_program(seed: u64) -> Program {
    let mut rng = Rng(seed);
    let dts = [
        DType::F32,
        DType::F32,
        DType::F64,
        DType::I32,
        DType::I16,
        DType::U8,
        DType::I64,
    ];
    let d = dts[rng.below(dts.len() as u64) as usize];
    let lanes = [1u32, 2, 4, 8][rng.below(4) as usize];
    let rows = 1 + rng.below(5) as usize;
    let cols = lanes as usize * (1 + rng.below(4) as usize);
    let n = rows * cols;
    let (v0, v1) = (Var(0), Var(1));
    let index = IndexExpr::var(v0).mul(cols as i64).add(IndexExpr::var(v1));
    let e = gen_expr(&mut rng, d, lanes, 4, &index);
    let buf = |id: u32, name: &str, kind: BufKind| Buffer {
        id: BufId(id),
        name: Some(name.into()),
        dtype: d,
        shape: vec![rows, cols],
        kind,
    };
    Program {
        name: format!("random{seed}"),
        buffers: vec![
            buf(0, "x", BufKind::Input(0)),
            buf(1, "z", BufKind::Input(1)),
            buf(2, "y", BufKind::Output(0)),
        ],
        kernels: vec![Kernel {
            name: "k".into(),
            params: vec![
                Param {
                    buf: BufId(0),
                    access: Access::Read,
                },
                Param {
                    buf: BufId(1),
                    access: Access::Read,
                },
                Param {
                    buf: BufId(2),
                    access: Access::Write,
                },
            ],
            grid: vec![ParAxis {
                var: v0,
                extent: rows as u64,
                level: ParLevel::Grid,
            }],
            body: vec![Stmt::For {
                var: v1,
                start: IndexExpr::c(0),
                end: IndexExpr::c(cols as i64),
                step: lanes as i64,
                body: vec![Stmt::Store {
                    buf: BufId(2),
                    index,
                    value: e,
                }],
            }],
        }],
        arena_bytes: 0,
    }
    .with_len_check(n)
}

trait LenCheck {
    fn with_len_check(self, n: usize) -> Self;
}
impl LenCheck for Program {
    fn with_len_check(self, n: usize) -> Self {
        assert_eq!(self.buffers[0].len(), n);
        self
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_kernel_programs_match_the_interpreter(seed in any::<u64>()) {
        let p = random_program(seed);
        verify::verify(&p).map_err(|e| TestCaseError::fail(format!("{e}\n{}", text::print(&p))))?;
        let ins = random_inputs(&p, seed ^ 0x5eed);
        // Integer division by zero is an interpreter error, not a comparison.
        if let Err(e) = interp::run(&p, &ins) {
            prop_assume!(false, "interpreter: {}", e);
        }
        check_program_with(&p, &ins, &Options::default(), 0)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", text::print(&p))))?;
    }
}
