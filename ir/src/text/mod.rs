//! The `.kir` text form of a [`Graph`]: a printer and a parser that round-trip.
//!
//! ```text
//! ; a comment runs from `;` to the end of the line
//! graph @bert_layer {
//!   in %0 "input_ids": i64[batch,128]
//!   const %1 "encoder.weight": f32[384,384] = elided<589824 bytes, fnv64=0x..., min=-0.2, max=0.2>
//!   const %2: f32[3] = [1.0, -0.5, nan]
//!   const %3: f16[2048] = hex"003c00bc..."
//!   const %4: i64[] = 7
//!   %5 "x": f32[batch,128,384] = MatMul(%0, %1) @"/encoder/layer.0/MatMul"
//!   %6: f32[2], %7: f32[2] = Split[axis=0](%2, _) @Split_3
//!   out %5, %6
//! }
//! ```
//!
//! # Grammar
//!
//! Whitespace (newlines included) only separates tokens; by convention the
//! printer puts one statement on a line. Statements may come in any order.
//!
//! ```text
//! file      := graph                       ; comments and blank lines around it are fine
//! graph     := 'graph' '@' name '{' stmt* '}'
//! stmt      := 'in' decl                                   ; a runtime input (in order)
//!            | 'const' decl '=' (data | tensor)            ; a constant
//!            | (decl (',' decl)* '=')? OP attrs? '(' operands? ')' ('@' name)?
//!            | 'out' (value (',' value)*)?                 ; the results (at most one `out`)
//! decl      := value string? ':' type                      ; defines the value, with its source name
//! value     := '%' digits                                  ; a ValueId, exactly
//! type      := DTYPE '[' (dim (',' dim)*)? ']'             ; f32[1,128], i64[] (a scalar)
//! dim       := digits | name                               ; fixed or symbolic
//! operands  := operand (',' operand)*
//! operand   := value | '_'                                 ; `_`: an omitted optional input
//! attrs     := '[' (name '=' attr (',' name '=' attr)* ','?)? ']'
//! attr      := int | float | string | tensor
//!            | '[' elements ']'                            ; ints, floats or strings, by their elements
//!            | ('ints' | 'floats' | 'strs') '[' elements? ']'   ; explicit kind (needed when empty)
//! tensor    := 'tensor' '<' type '>' data                  ; the type must be static
//! data      := '[' (elem (',' elem)* ','?)? ']'            ; row-major, flat
//!            | elem                                        ; a tensor of one element
//!            | 'hex' string                                ; raw little-endian bytes
//!            | 'elided' '<' ... '>'                        ; printed, never parsed
//! elem      := int | float | 'true' | 'false'
//! int       := '-'? digits | '-'? '0x' hexdigits
//! float     := int | '-'? digits '.' digits? exponent? | '-'? digits exponent
//!            | 'inf' | '-inf' | 'nan' | '-nan' | 'nan:0x' hexdigits   ; a NaN's exact bits
//! name      := ident | string                              ; ident: [A-Za-z_?][A-Za-z0-9_?]*
//! string    := '"' ... '"'                                 ; escapes \" \\ \n \r \t \0 \u{hex}
//! ```
//!
//! - Value ids are the graph's [`ValueId`](crate::ValueId)s, not renumbered:
//!   every id in `0..N` must be defined exactly once (by `in`, `const` or a
//!   node result) and every used id must be defined.
//! - A constant's `data` is in its declared type, which must then be static.
//!   `tensor<...>` gives the contents a type of their own, for the (invalid)
//!   graphs whose constant disagrees with its declared type.
//! - Floats are printed with the shortest decimal that reads back to the same
//!   bits, always with a `.` or an exponent so that an attribute `1.0` is a
//!   float and `1` an int; f16 and bf16 elements are written as the exact f32
//!   value. Integers in float data are allowed when writing by hand.
//! - A node without `@provenance` gets `file:line` as its name; the printer
//!   always prints it.
//! - Lossless printing ([`ConstMode::Inline`]) writes up to
//!   [`DECIMAL_MAX_ELEMS`] elements in decimal and larger tensors in hex. The
//!   default ([`PrintOptions::default`], and `Display for Graph`) elides
//!   constants of more than 16 elements; the parser rejects `elided<...>`,
//!   saying how to get a full dump.
//!
//! `parse(&print(g, &PrintOptions::lossless()), _)` gives back `g` exactly (floats
//! bit for bit), for any graph whose values are each defined exactly once
//! with ids `0..N`, whether or not it verifies.

mod lex;
mod parse;
mod print;

pub use lex::is_ident;
pub use parse::{parse, parse_expr};
pub use print::{fnv64, print, print_expr, ConstMode, PrintOptions, DECIMAL_MAX_ELEMS};

use crate::{Error, Graph, Result};
use std::fmt;

impl fmt::Display for Graph {
    /// The `.kir` text with large constants elided ([`PrintOptions::default`]).
    /// `{:#}` prints every constant in full.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opts = if f.alternate() {
            PrintOptions::lossless()
        } else {
            PrintOptions::default()
        };
        f.write_str(&print(self, &opts))
    }
}

/// Checks that `g` survives printing in full and parsing back: the reparsed
/// graph prints to the same text (lossless printing makes that bitwise
/// equality). Costs two full prints and a parse; meant for tests and debug builds.
pub fn check_round_trip(g: &Graph) -> Result<()> {
    let text = print(g, &PrintOptions::lossless());
    let back = parse(&text, "<round trip>")?;
    let again = print(&back, &PrintOptions::lossless());
    if again == text {
        return Ok(());
    }
    let (line, (a, b)) = text
        .lines()
        .zip(again.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .unwrap_or((
            text.lines().count().min(again.lines().count()),
            ("<end>", "<end>"),
        ));
    Err(Error::Parse {
        file: "<round trip>".to_string(),
        line: line + 1,
        col: 1,
        msg: format!(
            "graph `{}` changes when printed and parsed back:\n  before: {a}\n  after:  {b}",
            g.name
        ),
    })
}
