//! Prints the kernel IR and CLIF of a graph file's lowering:
//! `cargo run -p kiln-cranelift --example dump_kernel -- FILE.kir`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: dump_kernel FILE");
    let src = std::fs::read_to_string(&path).expect("read");
    let g = kiln_ir::text::parse(&src, &path).expect("parse");
    let mut p = kiln_passes::schedule::lower(&g, &kiln_passes::schedule::Options::default())
        .expect("lower");
    kiln_passes::memplan::plan(&mut p);
    println!("{}", kiln_ir::kernel::text::print(&p));
    println!("{}", kiln_cranelift::dump_clif(&p).expect("clif"));
}
