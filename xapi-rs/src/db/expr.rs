//! The expression language of `get_all_records_where`, as in the reference:
//! `true`, `false`, `field "name" = "value"`, `"value" = field "name"`,
//! `<>`, `not E`, `E and E`, `E or E`, parentheses.
//!
//! Input is bounded before it is parsed: at most [`MAX_LEN`] bytes and
//! [`MAX_TOKENS`] tokens, nesting at most [`MAX_DEPTH`] deep. A chain of
//! `and`s is a left-deep tree as deep as it is long, and evaluating or
//! dropping it recurses that deep: the token bound is what keeps it off
//! the end of a worker's stack.

use crate::model::value::{Record, V};

/// Longest expression accepted, in bytes.
pub const MAX_LEN: usize = 64 * 1024;
/// Most tokens accepted: about 1000 `field "x" = "y"` terms.
pub const MAX_TOKENS: usize = 5000;
/// Deepest nesting of parentheses and `not`.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    True,
    False,
    Eq(Operand, Operand),
    Neq(Operand, Operand),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Field(String),
    Literal(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Eq,
    Neq,
    LParen,
    RParen,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    if s.len() > MAX_LEN {
        return Err(format!("expression longer than {MAX_LEN} bytes"));
    }
    let mut out = vec![];
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        if out.len() >= MAX_TOKENS {
            return Err(format!("expression has more than {MAX_TOKENS} tokens"));
        }
        let c = cs[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '=' => {
                out.push(Tok::Eq);
                i += 1
            }
            '<' if cs.get(i + 1) == Some(&'>') => {
                out.push(Tok::Neq);
                i += 2
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err("unterminated string".into()),
                        Some('\\') => {
                            if let Some(n) = cs.get(i + 1) {
                                v.push(*n);
                            }
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            v.push(*c);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut w = String::new();
                while let Some(c) = cs.get(i).filter(|c| c.is_alphanumeric() || **c == '_') {
                    w.push(*c);
                    i += 1;
                }
                out.push(Tok::Word(w.to_lowercase()));
            }
            c => return Err(format!("unexpected character {c:?}")),
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<Tok>,
    pos: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self, depth: usize) -> Result<Expr, String> {
        let mut l = self.and(depth)?;
        while self.peek() == Some(&Tok::Word("or".into())) {
            self.pos += 1;
            l = Expr::Or(Box::new(l), Box::new(self.and(depth)?));
        }
        Ok(l)
    }
    fn and(&mut self, depth: usize) -> Result<Expr, String> {
        let mut l = self.unary(depth)?;
        while self.peek() == Some(&Tok::Word("and".into())) {
            self.pos += 1;
            l = Expr::And(Box::new(l), Box::new(self.unary(depth)?));
        }
        Ok(l)
    }
    fn unary(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > MAX_DEPTH {
            return Err("expression too deep".into());
        }
        match self.peek().cloned() {
            Some(Tok::Word(w)) if w == "not" => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::Word(w)) if w == "true" => {
                self.pos += 1;
                Ok(Expr::True)
            }
            Some(Tok::Word(w)) if w == "false" => {
                self.pos += 1;
                Ok(Expr::False)
            }
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.or(depth + 1)?;
                if self.next() != Some(Tok::RParen) {
                    return Err("expected )".into());
                }
                Ok(e)
            }
            _ => {
                let a = self.operand()?;
                let op = self.next();
                let b = self.operand()?;
                match op {
                    Some(Tok::Eq) => Ok(Expr::Eq(a, b)),
                    Some(Tok::Neq) => Ok(Expr::Neq(a, b)),
                    _ => Err("expected = or <>".into()),
                }
            }
        }
    }
    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Tok::Word(w)) if w == "field" => match self.next() {
                Some(Tok::Str(s)) => Ok(Operand::Field(s)),
                _ => Err("expected field name".into()),
            },
            Some(Tok::Str(s)) => Ok(Operand::Literal(s)),
            t => Err(format!("unexpected {t:?}")),
        }
    }
}

pub fn parse(s: &str) -> Result<Expr, String> {
    let toks = lex(s)?;
    if toks.is_empty() {
        return Ok(Expr::True);
    }
    let mut p = P { toks, pos: 0 };
    let e = p.or(0)?;
    if p.pos != p.toks.len() {
        return Err("trailing input".into());
    }
    Ok(e)
}

fn operand_value(o: &Operand, rec: &Record) -> String {
    match o {
        Operand::Literal(s) => s.clone(),
        Operand::Field(f) => rec.get(f).map(V::to_plain).unwrap_or_default(),
    }
}

impl Expr {
    pub fn eval(&self, rec: &Record) -> bool {
        match self {
            Expr::True => true,
            Expr::False => false,
            Expr::Eq(a, b) => operand_value(a, rec) == operand_value(b, rec),
            Expr::Neq(a, b) => operand_value(a, rec) != operand_value(b, rec),
            Expr::Not(e) => !e.eval(rec),
            Expr::And(a, b) => a.eval(rec) && b.eval(rec),
            Expr::Or(a, b) => a.eval(rec) || b.eval(rec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_eval() {
        let mut r = Record::new();
        r.insert("name_label".into(), V::str("x"));
        r.insert("number".into(), V::I(3));
        assert!(parse("true").unwrap().eval(&r));
        assert!(parse(r#"field "name_label"="x""#).unwrap().eval(&r));
        assert!(
            parse(r#"field "number" = "3" and not (field "name_label" = "y")"#)
                .unwrap()
                .eval(&r)
        );
        assert!(!parse(r#""y" = field "name_label" or false"#)
            .unwrap()
            .eval(&r));
        assert!(parse("field").is_err());
        assert!(parse(&"(".repeat(500)).is_err());
    }

    /// The issue's input: 60,000 `and` terms (1.7 MB) aborted the daemon
    /// when the tree was evaluated and dropped. Now refused up front.
    #[test]
    fn long_chains_are_refused_not_overflowed() {
        let term = r#"field "number" = "3""#;
        let huge = vec![term; 60_000].join(" and ");
        let e = parse(&huge).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        // Under the byte bound but over the token bound.
        let many = vec!["true"; 7_000].join(" and ");
        assert!(many.len() < MAX_LEN);
        assert!(parse(&many).unwrap_err().contains("tokens"));
        // The largest accepted chain evaluates and drops fine.
        let ok = vec![term; MAX_TOKENS / 5].join(" and ");
        let mut r = Record::new();
        r.insert("number".into(), V::I(3));
        assert!(parse(&ok).unwrap().eval(&r));
        // Nesting: `not` and parentheses alike.
        assert!(parse(&format!("{}true", "not ".repeat(MAX_DEPTH + 2))).is_err());
        assert!(parse(&format!(
            "{}true{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        ))
        .is_ok());
    }
}
