//! The membership expression language of groups:
//! `class == "infusion_pump" and vulnerable`, `criticality >= "patient_critical"`,
//! `ip in ["10.20.0.0/16", "10.21.0.0/16"] and not tag == "lab"`.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | flag | field op value | field "in" (value | list)
//! flag    := vulnerable | kev | end_of_support
//! field   := class | category | criticality | profile | vendor | model | site | os | tag
//!          | vlan | ip | subnet | risk | vulns     (subnet: another name of ip)
//! op      := == | != | < | <= | > | >=
//! value   := "string" | number          list := "[" value ("," value)* [","] "]"
//! ```
//!
//! Strings compare ignoring ASCII case. Fields with several values (tag, vlan, ip) match
//! when any of the device's values does; `!=` is the negation of `==`. A missing value
//! (no vendor known) never equals anything. Everything is type-checked when parsed, so a
//! policy that loads cannot fail while evaluating.

use super::cidr::Cidr;
use super::device::PolicyDevice;
use crate::model::{Category, Criticality};
use std::fmt;

/// A parsed, type-checked membership expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Flag(Flag),
    Cmp { field: FieldName, op: Op, values: Vec<Value> },
}

/// Yes/no facts about a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// At least one matched vulnerability.
    Vulnerable,
    /// A matched vulnerability is known to be exploited (CISA KEV).
    Kev,
    /// The operating system is past its end of support.
    EndOfSupport,
}

impl Flag {
    fn name(self) -> &'static str {
        match self {
            Flag::Vulnerable => "vulnerable",
            Flag::Kev => "kev",
            Flag::EndOfSupport => "end_of_support",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldName {
    Class,
    Category,
    Criticality,
    Profile,
    Vendor,
    Model,
    Site,
    Os,
    Tag,
    Vlan,
    Ip,
    Risk,
    Vulns,
}

const FIELDS: &[(&str, FieldName)] = &[
    ("class", FieldName::Class),
    ("category", FieldName::Category),
    ("criticality", FieldName::Criticality),
    ("profile", FieldName::Profile),
    ("vendor", FieldName::Vendor),
    ("model", FieldName::Model),
    ("site", FieldName::Site),
    ("os", FieldName::Os),
    ("tag", FieldName::Tag),
    ("vlan", FieldName::Vlan),
    ("ip", FieldName::Ip),
    // `subnet in "10.20.0.0/16"` reads better for networks; the canonical form says `ip`.
    ("subnet", FieldName::Ip),
    ("risk", FieldName::Risk),
    ("vulns", FieldName::Vulns),
];
const FLAGS: &[(&str, Flag)] =
    &[("vulnerable", Flag::Vulnerable), ("kev", Flag::Kev), ("end_of_support", Flag::EndOfSupport)];

impl FieldName {
    fn name(self) -> &'static str {
        FIELDS.iter().find(|(_, f)| *f == self).map(|(n, _)| *n).unwrap_or("?")
    }
    fn kind(self) -> Kind {
        match self {
            FieldName::Category => Kind::Category,
            FieldName::Criticality => Kind::Criticality,
            FieldName::Vlan | FieldName::Risk | FieldName::Vulns => Kind::Number,
            FieldName::Ip => Kind::Network,
            _ => Kind::Text,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Category,
    Criticality,
    Number,
    Network,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
        }
    }
    fn ordering(self) -> bool {
        matches!(self, Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Op::Lt => o == Less,
            Op::Le => o != Greater,
            Op::Gt => o == Greater,
            Op::Ge => o != Less,
            Op::Eq | Op::In => o == Equal,
            Op::Ne => o != Equal,
        }
    }
}

/// A literal after type checking against its field.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Lower-cased.
    Text(String),
    Number(f64),
    Network(Cidr),
    Category(Category),
    Criticality(Criticality),
}

/// A problem in an expression, at a byte offset into it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("at character {offset} of the expression: {message}")]
pub struct ExprError {
    pub offset: usize,
    pub message: String,
}

/// Patient-safety rank: higher is more critical, so `criticality >= "patient_critical"`
/// reads naturally.
fn crit_rank(c: Criticality) -> u8 {
    match c {
        Criticality::LifeSustaining => 3,
        Criticality::PatientCritical => 2,
        Criticality::ClinicalSupport => 1,
        Criticality::NonClinical => 0,
    }
}

const CATEGORIES: &[Category] = &[Category::Medical, Category::Ot, Category::Iot, Category::It];
const CRITICALITIES: &[Criticality] = &[
    Criticality::LifeSustaining,
    Criticality::PatientCritical,
    Criticality::ClinicalSupport,
    Criticality::NonClinical,
];

impl Expr {
    /// Parse and type-check an expression.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let tokens = lex(text)?;
        let mut p = Parser { tokens, pos: 0, end: text.len(), depth: 0 };
        let e = p.or()?;
        if let Some(t) = p.tokens.get(p.pos) {
            return Err(ExprError {
                offset: t.at,
                message: format!("unexpected {}; join conditions with `and` / `or`", t.tok.describe()),
            });
        }
        Ok(e)
    }

    /// Whether `d` satisfies the expression.
    pub fn matches(&self, d: &PolicyDevice) -> bool {
        match self {
            Expr::Or(xs) => xs.iter().any(|x| x.matches(d)),
            Expr::And(xs) => xs.iter().all(|x| x.matches(d)),
            Expr::Not(x) => !x.matches(d),
            Expr::Flag(Flag::Vulnerable) => d.vulns > 0 || d.kev,
            Expr::Flag(Flag::Kev) => d.kev,
            Expr::Flag(Flag::EndOfSupport) => d.end_of_support,
            Expr::Cmp { field, op, values } => {
                let any = values.iter().any(|v| cmp_one(d, *field, *op, v));
                // `!=` is "not equal to the value": negate the equality over all values.
                if *op == Op::Ne {
                    !values.iter().any(|v| cmp_one(d, *field, Op::Eq, v))
                } else {
                    any
                }
            }
        }
    }
}

fn text_eq(a: &str, lowered: &str) -> bool {
    a.eq_ignore_ascii_case(lowered)
}

fn cmp_one(d: &PolicyDevice, field: FieldName, op: Op, v: &Value) -> bool {
    let op = if op == Op::Ne { Op::Eq } else { op };
    match (field, v) {
        (FieldName::Class, Value::Text(t)) => text_eq(&d.class, t),
        (FieldName::Profile, Value::Text(t)) => d.profile.as_deref().is_some_and(|x| text_eq(x, t)),
        (FieldName::Vendor, Value::Text(t)) => d.vendor.as_deref().is_some_and(|x| text_eq(x, t)),
        (FieldName::Model, Value::Text(t)) => d.model.as_deref().is_some_and(|x| text_eq(x, t)),
        (FieldName::Site, Value::Text(t)) => d.site.as_deref().is_some_and(|x| text_eq(x, t)),
        (FieldName::Os, Value::Text(t)) => d.os.as_deref().is_some_and(|x| text_eq(x, t)),
        (FieldName::Tag, Value::Text(t)) => d.tags.iter().any(|x| text_eq(x, t)),
        (FieldName::Category, Value::Category(c)) => d.category == *c,
        (FieldName::Criticality, Value::Criticality(c)) => op.holds(crit_rank(d.criticality).cmp(&crit_rank(*c))),
        (FieldName::Vlan, Value::Number(n)) => d.vlans.iter().any(|v| op.holds(f64::from(*v).total_cmp(n))),
        (FieldName::Risk, Value::Number(n)) => op.holds(d.risk.total_cmp(n)),
        (FieldName::Vulns, Value::Number(n)) => op.holds(f64::from(d.vulns).total_cmp(n)),
        (FieldName::Ip, Value::Network(c)) => d.ips.iter().any(|ip| c.contains(ip)),
        // Type-checked at parse time; kept total rather than panicking.
        _ => false,
    }
}

// ---- canonical text ----------------------------------------------------------------------

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(t) => f.write_str(&quote(t)),
            Value::Number(n) => write!(f, "{n}"),
            Value::Network(c) => f.write_str(&quote(&c.to_string())),
            Value::Category(c) => f.write_str(&quote(c.as_str())),
            Value::Criticality(c) => f.write_str(&quote(c.as_str())),
        }
    }
}

impl fmt::Display for Expr {
    /// The canonical text: one space around operators, parentheses only where needed.
    /// Parsing it gives back an equal expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, xs: &[Expr], sep: &str, wrap_or: bool| -> fmt::Result {
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    f.write_str(sep)?;
                }
                let paren = matches!(x, Expr::Or(_)) || (wrap_or && matches!(x, Expr::And(_)));
                if paren {
                    write!(f, "({x})")?;
                } else {
                    write!(f, "{x}")?;
                }
            }
            Ok(())
        };
        match self {
            Expr::Or(xs) => join(f, xs, " or ", false),
            Expr::And(xs) => join(f, xs, " and ", false),
            Expr::Not(x) => match **x {
                Expr::Or(_) | Expr::And(_) => write!(f, "not ({x})"),
                _ => write!(f, "not {x}"),
            },
            Expr::Flag(fl) => f.write_str(fl.name()),
            Expr::Cmp { field, op, values } => {
                write!(f, "{} {} ", field.name(), op.as_str())?;
                if *op == Op::In {
                    f.write_str("[")?;
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{v}")?;
                    }
                    f.write_str("]")
                } else {
                    write!(f, "{}", values[0])
                }
            }
        }
    }
}

// ---- lexer -------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    Op(Op),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("string {}", quote(s)),
            Tok::Num(n) => format!("number {n}"),
            Tok::Op(o) => format!("`{}`", o.as_str()),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Comma => "`,`".into(),
        }
    }
}

struct Token {
    tok: Tok,
    at: usize,
}

/// Expressions longer than this are refused: a group condition is a line, not a program,
/// and the bound keeps parsing time and recursion depth small on hostile input.
const MAX_EXPR_LEN: usize = 4096;
const MAX_DEPTH: usize = 32;

fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    if text.len() > MAX_EXPR_LEN {
        return Err(ExprError { offset: MAX_EXPR_LEN, message: format!("longer than {MAX_EXPR_LEN} bytes") });
    }
    let err = |at: usize, m: String| ExprError { offset: at, message: m };
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let at = i;
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' | b')' | b'[' | b']' | b',' => {
                i += 1;
                match c {
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b'[' => Tok::LBracket,
                    b']' => Tok::RBracket,
                    _ => Tok::Comma,
                }
            }
            b'=' | b'!' | b'<' | b'>' => {
                let two = b.get(i + 1) == Some(&b'=');
                let op = match (c, two) {
                    (b'=', true) => Op::Eq,
                    (b'!', true) => Op::Ne,
                    (b'<', true) => Op::Le,
                    (b'>', true) => Op::Ge,
                    (b'<', false) => Op::Lt,
                    (b'>', false) => Op::Gt,
                    _ => return Err(err(at, "expected `==` or `!=`".into())),
                };
                i += if two { 2 } else { 1 };
                Tok::Op(op)
            }
            b'"' | b'\'' => {
                let q = c;
                i += 1;
                let mut s = String::new();
                loop {
                    let Some(ch) = text[i..].chars().next() else {
                        return Err(err(at, "string is not closed".into()));
                    };
                    i += ch.len_utf8();
                    if ch as u32 == q as u32 {
                        break;
                    }
                    if ch == '\\' {
                        let Some(next) = text[i..].chars().next() else {
                            return Err(err(at, "string is not closed".into()));
                        };
                        i += next.len_utf8();
                        s.push(next);
                    } else {
                        s.push(ch);
                    }
                }
                Tok::Str(s)
            }
            b'0'..=b'9' | b'-' | b'.' => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                let s = &text[start..i];
                match s.parse::<f64>() {
                    Ok(n) if n.is_finite() => Tok::Num(n),
                    _ => return Err(err(at, format!("{s:?} is not a number"))),
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                Tok::Word(text[start..i].to_ascii_lowercase())
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(err(at, format!("unexpected character {ch:?}")));
            }
        };
        out.push(Token { tok, at });
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }
    fn at(&self) -> usize {
        self.tokens.get(self.pos).map(|t| t.at).unwrap_or(self.end)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError { offset: self.at(), message: message.into() })
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(x)) if x == w)
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut xs = vec![self.and()?];
        while self.is_word("or") {
            self.pos += 1;
            xs.push(self.and()?);
        }
        Ok(if xs.len() == 1 { xs.pop().expect("one") } else { flatten(xs, true) })
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut xs = vec![self.unary()?];
        while self.is_word("and") {
            self.pos += 1;
            xs.push(self.unary()?);
        }
        Ok(if xs.len() == 1 { xs.pop().expect("one") } else { flatten(xs, false) })
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let r = self.unary_inner();
        self.depth -= 1;
        r
    }

    fn unary_inner(&mut self) -> Result<Expr, ExprError> {
        match self.peek().cloned() {
            None => self.err("expression ends where a condition was expected"),
            Some(Tok::LParen) => {
                self.pos += 1;
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.err("expected `)`");
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Word(w)) if w == "not" => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Tok::Word(w)) => {
                if let Some((_, fl)) = FLAGS.iter().find(|(n, _)| *n == w) {
                    self.pos += 1;
                    return Ok(Expr::Flag(*fl));
                }
                let Some((_, field)) = FIELDS.iter().find(|(n, _)| *n == w) else {
                    let names: Vec<&str> =
                        FIELDS.iter().map(|(n, _)| *n).chain(FLAGS.iter().map(|(n, _)| *n)).collect();
                    return self.err(format!("unknown attribute `{w}`; known: {}", names.join(", ")));
                };
                self.pos += 1;
                self.comparison(*field)
            }
            Some(t) => self.err(format!("expected a condition, found {}", t.describe())),
        }
    }

    fn comparison(&mut self, field: FieldName) -> Result<Expr, ExprError> {
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            Some(Tok::Word(w)) if w == "in" => Op::In,
            _ => return self.err(format!("expected an operator (==, !=, <, <=, >, >=, in) after `{}`", field.name())),
        };
        let kind = field.kind();
        if op.ordering() && !matches!(kind, Kind::Number | Kind::Criticality) {
            return self.err(format!("`{}` compares only with == / != / in, not {}", field.name(), op.as_str()));
        }
        self.pos += 1;
        let mut values = Vec::new();
        if op == Op::In && self.peek() == Some(&Tok::LBracket) {
            self.pos += 1;
            loop {
                if self.peek() == Some(&Tok::RBracket) && !values.is_empty() {
                    self.pos += 1;
                    break;
                }
                values.push(self.value(field)?);
                match self.peek() {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::RBracket) => {
                        self.pos += 1;
                        break;
                    }
                    _ => return self.err("expected `,` or `]` in the list"),
                }
            }
        } else {
            values.push(self.value(field)?);
        }
        // One value: `in` and `==` mean the same; keep one spelling for the canonical form.
        let op = if op == Op::In && values.len() == 1 { Op::Eq } else { op };
        Ok(Expr::Cmp { field, op, values })
    }

    fn value(&mut self, field: FieldName) -> Result<Value, ExprError> {
        let name = field.name();
        let v = match (field.kind(), self.peek().cloned()) {
            (Kind::Number, Some(Tok::Num(n))) => Value::Number(n),
            (Kind::Number, _) => return self.err(format!("`{name}` compares with a number")),
            (Kind::Text, Some(Tok::Str(s))) => Value::Text(s.to_ascii_lowercase()),
            (Kind::Network, Some(Tok::Str(s))) => match s.parse::<Cidr>() {
                Ok(c) => Value::Network(c),
                Err(e) => return self.err(e.to_string()),
            },
            (Kind::Category, Some(Tok::Str(s))) => match CATEGORIES.iter().find(|c| c.as_str() == s) {
                Some(c) => Value::Category(*c),
                None => return self.err(format!("{s:?} is not a category; use medical, ot, iot or it")),
            },
            (Kind::Criticality, Some(Tok::Str(s))) => match CRITICALITIES.iter().find(|c| c.as_str() == s) {
                Some(c) => Value::Criticality(*c),
                None => {
                    return self.err(format!(
                        "{s:?} is not a criticality; use life_sustaining, patient_critical, clinical_support or non_clinical"
                    ))
                }
            },
            (_, _) => return self.err(format!("`{name}` compares with a quoted string")),
        };
        self.pos += 1;
        Ok(v)
    }
}

/// `a or (b or c)` is `a or b or c`: flattening keeps the canonical text unique.
fn flatten(xs: Vec<Expr>, or: bool) -> Expr {
    let mut out = Vec::with_capacity(xs.len());
    for x in xs {
        match (x, or) {
            (Expr::Or(inner), true) | (Expr::And(inner), false) => out.extend(inner),
            (x, _) => out.push(x),
        }
    }
    if or {
        Expr::Or(out)
    } else {
        Expr::And(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardline_common::MacAddr;

    /// Every attribute issue 12 lists for rule-based membership has a spelling: class,
    /// category, criticality, vendor, model, site, VLAN, subnet, risk, matched
    /// vulnerabilities, end-of-support OS and tags.
    #[test]
    fn every_listed_attribute_selects_a_device() {
        let mut d = PolicyDevice::new(
            MacAddr([0, 9, 0xfb, 0, 0, 1]),
            "infusion_pump",
            Category::Medical,
            Criticality::LifeSustaining,
        );
        d.vendor = Some("bd".into());
        d.model = Some("alaris_8015".into());
        d.site = Some("north".into());
        d.vlans = vec![40];
        d.ips = vec!["10.20.40.5".parse().unwrap()];
        d.risk = 72.5;
        d.vulns = 3;
        d.kev = true;
        d.end_of_support = true;
        d.tags = vec!["ward-3a".into()];
        let holds = [
            r#"class == "infusion_pump""#,
            r#"category == "medical""#,
            r#"criticality >= "patient_critical""#,
            r#"vendor == "BD""#,
            r#"model == "alaris_8015""#,
            r#"site == "north""#,
            "vlan == 40",
            r#"subnet in "10.20.0.0/16""#,
            r#"ip in ["10.21.0.0/16", "10.20.40.0/24"]"#,
            "risk >= 70",
            "vulns > 2",
            "vulnerable and kev",
            "end_of_support",
            r#"tag == "ward-3a""#,
            r#"class == "infusion_pump" and vulnerable"#,
        ];
        for text in holds {
            assert!(Expr::parse(text).unwrap().matches(&d), "{text}");
        }
        d.vulns = 0;
        d.kev = false;
        assert!(!Expr::parse(r#"class == "infusion_pump" and vulnerable"#).unwrap().matches(&d));
        assert!(!Expr::parse(r#"subnet in "10.21.0.0/16""#).unwrap().matches(&d));
    }

    #[test]
    fn subnet_is_another_name_of_ip_in_canonical_form() {
        let e = Expr::parse(r#"subnet in "10.20.0.0/16""#).unwrap();
        assert_eq!(e.to_string(), r#"ip == "10.20.0.0/16""#);
        assert_eq!(Expr::parse(&e.to_string()).unwrap(), e);
        assert!(Expr::parse("subnet == 4").unwrap_err().message.contains("quoted string"));
    }
}
