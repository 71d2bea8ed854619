//! The `.kir` lexer: turns source text into tokens with 1-based line and
//! column positions (columns count characters, not bytes).
//!
//! Whitespace, including newlines, only separates tokens, and `;` starts a
//! comment that runs to the end of the line. The lexer never panics: every
//! malformed token is an [`Error::Parse`] at the token's position.

use crate::{Error, Result};

/// A source position: 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// `[A-Za-z_?][A-Za-z0-9_?]*`: keywords, op names, dtypes, dimension names.
    Ident(String),
    /// A number as written: `-?[0-9]+(.[0-9]*)?([eE][+-]?[0-9]+)?` or `-?0x[0-9a-fA-F]+`.
    /// `is_float` when it has a `.` or an exponent.
    Num {
        text: String,
        is_float: bool,
    },
    /// `%N`.
    Value(u32),
    /// A quoted string, escapes resolved.
    Str(String),
    /// `elided<...>`: a constant the printer left out; the text between the angle brackets.
    Elided(String),
    /// One of `{ } [ ] ( ) < > , : = @ -`.
    Punct(char),
    Eof,
}

impl Tok {
    /// How the token is named in error messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Num { text, .. } => format!("number `{text}`"),
            Tok::Value(v) => format!("value `%{v}`"),
            Tok::Str(_) => "a string".to_string(),
            Tok::Elided(_) => "an elided constant".to_string(),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Eof => "end of input".to_string(),
        }
    }
}

pub struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character (always on a char boundary).
    at: usize,
    line: usize,
    col: usize,
    file: &'a str,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '?'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '?'
}

/// Whether `s` can be written without quotes where the grammar allows an identifier.
pub fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    matches!(cs.next(), Some(c) if is_ident_start(c)) && cs.all(is_ident_char)
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str, file: &'a str) -> Lexer<'a> {
        Lexer {
            src,
            at: 0,
            line: 1,
            col: 1,
            file,
        }
    }

    pub fn error(&self, pos: Pos, msg: impl Into<String>) -> Error {
        Error::Parse {
            file: self.file.to_string(),
            line: pos.line,
            col: pos.col,
            msg: msg.into(),
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }

    fn rest(&self) -> &'a str {
        self.src.get(self.at..).unwrap_or_default()
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn offset(&self) -> usize {
        self.at
    }

    fn skip_trivia(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.bump();
            } else if c == ';' {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    /// The next token and where it starts.
    pub fn next_token(&mut self) -> Result<(Tok, Pos)> {
        self.skip_trivia();
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Ok((Tok::Eof, pos));
        };
        let tok = if is_ident_start(c) {
            let start = self.offset();
            while self.peek().is_some_and(is_ident_char) {
                self.bump();
            }
            let end = self.offset();
            let word = self.src.get(start..end).unwrap_or_default().to_string();
            if word == "elided" && self.peek() == Some('<') {
                self.lex_elided(pos)?
            } else {
                Tok::Ident(word)
            }
        } else if c.is_ascii_digit()
            || (c == '-' && self.peek2().is_some_and(|d| d.is_ascii_digit()))
        {
            self.lex_number(pos)?
        } else if c == '%' {
            self.bump();
            let start = self.offset();
            while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                self.bump();
            }
            let end = self.offset();
            let digits = self.src.get(start..end).unwrap_or_default();
            if digits.is_empty() {
                return Err(self.error(
                    pos,
                    "expected digits after `%` (values are written %0, %1, ...)",
                ));
            }
            let n = digits
                .parse::<u32>()
                .map_err(|_| self.error(pos, format!("value id %{digits} is too large")))?;
            Tok::Value(n)
        } else if c == '"' {
            Tok::Str(self.lex_string(pos)?)
        } else if "{}[]()<>,:=@-".contains(c) {
            self.bump();
            Tok::Punct(c)
        } else {
            return Err(self.error(pos, format!("unexpected character {c:?}")));
        };
        Ok((tok, pos))
    }

    fn lex_number(&mut self, pos: Pos) -> Result<Tok> {
        let start = self.offset();
        if self.peek() == Some('-') {
            self.bump();
        }
        let mut is_float = false;
        if self.peek() == Some('0') && matches!(self.peek2(), Some('x' | 'X')) {
            self.bump();
            self.bump();
            let digits_start = self.offset();
            while self.peek().is_some_and(|d| d.is_ascii_hexdigit()) {
                self.bump();
            }
            if self.offset() == digits_start {
                return Err(self.error(pos, "expected hex digits after `0x`"));
            }
        } else {
            while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                self.bump();
            }
            if self.peek() == Some('.') {
                is_float = true;
                self.bump();
                while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                    self.bump();
                }
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                is_float = true;
                self.bump();
                if matches!(self.peek(), Some('+' | '-')) {
                    self.bump();
                }
                let exp_start = self.offset();
                while self.peek().is_some_and(|d| d.is_ascii_digit()) {
                    self.bump();
                }
                if self.offset() == exp_start {
                    return Err(self.error(pos, "expected digits in the number's exponent"));
                }
            }
        }
        let end = self.offset();
        let text = self.src.get(start..end).unwrap_or_default().to_string();
        if self.peek().is_some_and(is_ident_char) {
            let c = self.peek().unwrap_or(' ');
            return Err(self.error(pos, format!("unexpected {c:?} after number `{text}`")));
        }
        Ok(Tok::Num { text, is_float })
    }

    fn lex_string(&mut self, pos: Pos) -> Result<String> {
        self.bump(); // opening quote
        let mut s = String::new();
        loop {
            // Fast path: copy the run up to the next quote, backslash or newline at once
            // (hex constants are long strings).
            let rest = self.rest();
            let run = rest
                .bytes()
                .position(|b| matches!(b, b'"' | b'\\' | b'\n'))
                .unwrap_or(rest.len());
            if run > 0 {
                let text = rest.get(..run).unwrap_or_default();
                s.push_str(text);
                self.at += run;
                self.col += if text.is_ascii() {
                    run
                } else {
                    text.chars().count()
                };
            }
            let here = self.pos();
            match self.bump() {
                None => return Err(self.error(pos, "unterminated string (missing closing `\"`)")),
                Some('"') => return Ok(s),
                Some('\n') => {
                    return Err(
                        self.error(pos, "unterminated string: a newline must be written \\n")
                    )
                }
                Some('\\') => match self.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('r') => s.push('\r'),
                    Some('t') => s.push('\t'),
                    Some('0') => s.push('\0'),
                    Some('u') => s.push(self.lex_unicode_escape(here)?),
                    Some(c) => {
                        return Err(self.error(
                            here,
                            format!(
                            "unknown escape \\{c} (use \\\\ \\\" \\n \\r \\t \\0 or \\u{{hex}})"
                        ),
                        ))
                    }
                    None => {
                        return Err(self.error(pos, "unterminated string (missing closing `\"`)"))
                    }
                },
                Some(c) => s.push(c),
            }
        }
    }

    /// After `\u`: `{hex}`.
    fn lex_unicode_escape(&mut self, here: Pos) -> Result<char> {
        if self.bump() != Some('{') {
            return Err(self.error(here, "expected `{` after \\u (write \\u{1f600})"));
        }
        let mut code: u32 = 0;
        let mut n = 0;
        loop {
            match self.bump() {
                Some('}') => break,
                Some(c) if c.is_ascii_hexdigit() && n < 6 => {
                    code = code * 16 + c.to_digit(16).unwrap_or(0);
                    n += 1;
                }
                _ => {
                    return Err(self.error(
                        here,
                        "malformed \\u{...} escape: 1 to 6 hex digits, then `}`",
                    ))
                }
            }
        }
        if n == 0 {
            return Err(self.error(here, "empty \\u{} escape"));
        }
        char::from_u32(code).ok_or_else(|| {
            self.error(
                here,
                format!("\\u{{{code:x}}} is not a Unicode scalar value"),
            )
        })
    }

    /// After the word `elided`, at `<`: everything up to the matching `>`.
    fn lex_elided(&mut self, pos: Pos) -> Result<Tok> {
        self.bump(); // '<'
        let start = self.offset();
        loop {
            match self.peek() {
                None => return Err(self.error(pos, "unterminated elided<...> (missing `>`)")),
                Some('>') => break,
                Some(_) => {
                    self.bump();
                }
            }
        }
        let end = self.offset();
        self.bump(); // '>'
        Ok(Tok::Elided(
            self.src.get(start..end).unwrap_or_default().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Result<Vec<Tok>> {
        let mut lx = Lexer::new(src, "t.kir");
        let mut out = Vec::new();
        loop {
            let (t, _) = lx.next_token()?;
            if t == Tok::Eof {
                return Ok(out);
            }
            out.push(t);
        }
    }

    fn num(s: &str, f: bool) -> Tok {
        Tok::Num {
            text: s.to_string(),
            is_float: f,
        }
    }

    #[test]
    fn numbers_values_and_punctuation() {
        assert_eq!(
            toks("%12 = -3 1.5e-3 0x1F -inf ; comment\n[x?y]").unwrap(),
            vec![
                Tok::Value(12),
                Tok::Punct('='),
                num("-3", false),
                num("1.5e-3", true),
                num("0x1F", false),
                Tok::Punct('-'),
                Tok::Ident("inf".into()),
                Tok::Punct('['),
                Tok::Ident("x?y".into()),
                Tok::Punct(']'),
            ]
        );
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(
            toks(r#""a\"b\\c\n\u{1F600}é""#).unwrap(),
            vec![Tok::Str("a\"b\\c\n\u{1F600}é".into())]
        );
    }

    #[test]
    fn elided_is_one_token() {
        assert_eq!(
            toks("elided<12 bytes fnv64=0x1> ]").unwrap(),
            vec![Tok::Elided("12 bytes fnv64=0x1".into()), Tok::Punct(']')]
        );
    }

    #[test]
    fn positions_count_characters() {
        let mut lx = Lexer::new("é  %1\n  x", "t.kir");
        let err = lx.next_token().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Parse {
                    line: 1,
                    col: 1,
                    ..
                }
            ),
            "{err}"
        );
        let mut lx = Lexer::new("\"é\" %1\n  x", "t.kir");
        lx.next_token().unwrap();
        assert_eq!(lx.next_token().unwrap().1, Pos { line: 1, col: 5 });
        assert_eq!(lx.next_token().unwrap().1, Pos { line: 2, col: 3 });
    }

    #[test]
    fn malformed_tokens_are_errors() {
        for bad in [
            "\"abc",
            "\"a\\q\"",
            "%",
            "%99999999999",
            "0x",
            "1e",
            "12abc",
            "\"\\u{110000}\"",
            "elided<",
            "$",
        ] {
            assert!(matches!(toks(bad), Err(Error::Parse { .. })), "{bad}");
        }
    }
}
