//! A small, safe expression and template language for computed fields and
//! row filters in read-model files. No loops, no I/O, no user functions:
//! evaluation is bounded by the expression's size.
//!
//! Expressions: column names (or `` `Odd Name` ``), literals (`12`, `1.5`,
//! `'text'`, `"text"`, `true`, `false`, `null`), `+ -` (numbers; `+` joins
//! text), comparisons `== != < <= > >=`, `in [..]`, `and or not` (also
//! `&& || !`), parentheses, and the functions `concat lower upper trim
//! coalesce len str`.
//!
//! Templates: text with `{expression}` holes, e.g. `"{FirstName} {LastName}"`;
//! `{{` and `}}` are literal braces.

use std::borrow::Cow;
use std::fmt;

use crate::decode::{Row, Value, value};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Lit(Value),
    Column(String),
    Not(Box<Expr>),
    Bin(Box<Expr>, BinOp, Box<Expr>),
    In(Box<Expr>, Vec<Expr>),
    Call(Func, Vec<Expr>),
    /// A template: pieces joined as text.
    Template(Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BinOp {
    And,
    Or,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Func {
    Concat,
    Lower,
    Upper,
    Trim,
    Coalesce,
    Len,
    Str,
}

/// A syntax error, with the character offset where it was found.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("at character {at}: {message}")]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Num(String),
    Str(String),
    Ident(String),
    Sym(&'static str),
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, m: &str| ParseError { at: at + 1, message: m.to_string() };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push((start, Tok::Num(chars[start..i].iter().collect())));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
            continue;
        }
        if c == '`' {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == '`')
                .ok_or_else(|| err(start, "unclosed `quoted column name`"))?;
            out.push((start, Tok::Ident(chars[i + 1..i + 1 + end].iter().collect())));
            i += end + 2;
            continue;
        }
        if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(start, "unclosed string literal")),
                    Some('\\') => {
                        s.push(*chars.get(i + 1).ok_or_else(|| err(i, "dangling backslash"))?);
                        i += 2;
                    }
                    Some(&q) if q == c => {
                        i += 1;
                        break;
                    }
                    Some(&x) => {
                        s.push(x);
                        i += 1;
                    }
                }
            }
            out.push((start, Tok::Str(s)));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("and"),
            "||" => Some("or"),
            _ => None,
        };
        if let Some(s) = sym {
            out.push((start, Tok::Sym(s)));
            i += 2;
            continue;
        }
        let one = match c {
            '<' => "<",
            '>' => ">",
            '+' => "+",
            '-' => "-",
            '!' => "not",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            ',' => ",",
            '=' => return Err(err(start, "'=' is not an operator; compare with '=='")),
            _ => return Err(err(start, &format!("unexpected character {c:?}"))),
        };
        out.push((start, Tok::Sym(one)));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
    /// Nesting depth, bounded so hostile input cannot exhaust the stack.
    depth: usize,
}

/// Deepest nesting of parentheses, `not` and unary minus an expression may use.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|(a, _)| a + 1).unwrap_or(self.len + 1)
    }
    fn err(&self, m: impl Into<String>) -> ParseError {
        ParseError { at: self.at(), message: m.into() }
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        let hit = match self.peek() {
            Some(Tok::Sym(x)) => *x == s,
            Some(Tok::Ident(x)) => matches!(s, "and" | "or" | "not" | "in") && x.eq_ignore_ascii_case(s),
            _ => false,
        };
        if hit {
            self.pos += 1;
        }
        hit
    }
    fn expect(&mut self, s: &str) -> Result<(), ParseError> {
        if self.eat_sym(s) { Ok(()) } else { Err(self.err(format!("expected '{s}'"))) }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, ParseError>) -> Result<T, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.err(format!("expression nested more than {MAX_DEPTH} levels deep; simplify it")));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        self.nested(|p| {
            let mut l = p.and()?;
            while p.eat_sym("or") {
                l = Expr::Bin(Box::new(l), BinOp::Or, Box::new(p.and()?));
            }
            Ok(l)
        })
    }
    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.not()?;
        while self.eat_sym("and") {
            l = Expr::Bin(Box::new(l), BinOp::And, Box::new(self.not()?));
        }
        Ok(l)
    }
    fn not(&mut self) -> Result<Expr, ParseError> {
        if self.eat_sym("not") { self.nested(|p| Ok(Expr::Not(Box::new(p.not()?)))) } else { self.cmp() }
    }
    fn cmp(&mut self) -> Result<Expr, ParseError> {
        let l = self.add()?;
        for (s, op) in [
            ("==", BinOp::Eq),
            ("!=", BinOp::Ne),
            ("<=", BinOp::Le),
            (">=", BinOp::Ge),
            ("<", BinOp::Lt),
            (">", BinOp::Gt),
        ] {
            if self.eat_sym(s) {
                return Ok(Expr::Bin(Box::new(l), op, Box::new(self.add()?)));
            }
        }
        if self.eat_sym("in") {
            self.expect("[")?;
            let items = self.list("]")?;
            return Ok(Expr::In(Box::new(l), items));
        }
        Ok(l)
    }
    fn add(&mut self) -> Result<Expr, ParseError> {
        let mut l = self.primary()?;
        loop {
            if self.eat_sym("+") {
                l = Expr::Bin(Box::new(l), BinOp::Add, Box::new(self.primary()?));
            } else if self.eat_sym("-") {
                l = Expr::Bin(Box::new(l), BinOp::Sub, Box::new(self.primary()?));
            } else {
                return Ok(l);
            }
        }
    }
    fn list(&mut self, close: &str) -> Result<Vec<Expr>, ParseError> {
        let mut items = Vec::new();
        if self.eat_sym(close) {
            return Ok(items);
        }
        loop {
            items.push(self.or()?);
            if self.eat_sym(close) {
                return Ok(items);
            }
            self.expect(",")?;
        }
    }
    fn primary(&mut self) -> Result<Expr, ParseError> {
        let Some((_, tok)) = self.toks.get(self.pos).cloned() else {
            return Err(self.err("expression ends too early"));
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => {
                if let Ok(i) = n.parse::<i64>() {
                    Ok(Expr::Lit(Value::Int(i)))
                } else {
                    value::parse_decimal_text(&n)
                        .map(Expr::Lit)
                        .ok_or_else(|| ParseError { at: self.at(), message: format!("{n} is not a number") })
                }
            }
            Tok::Str(s) => Ok(Expr::Lit(Value::String(s.into()))),
            Tok::Sym("-") => match self.nested(|p| p.primary())? {
                Expr::Lit(Value::Int(i)) => Ok(Expr::Lit(Value::Int(-i))),
                Expr::Lit(Value::Decimal { unscaled, scale }) => {
                    Ok(Expr::Lit(Value::Decimal { unscaled: -unscaled, scale }))
                }
                e => Ok(Expr::Bin(Box::new(Expr::Lit(Value::Int(0))), BinOp::Sub, Box::new(e))),
            },
            Tok::Sym("(") => {
                let e = self.or()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Ident(id) => {
                match id.as_str() {
                    "true" => return Ok(Expr::Lit(Value::Bool(true))),
                    "false" => return Ok(Expr::Lit(Value::Bool(false))),
                    "null" => return Ok(Expr::Lit(Value::Null)),
                    _ => {}
                }
                if self.eat_sym("(") {
                    let func = match id.to_ascii_lowercase().as_str() {
                        "concat" => Func::Concat,
                        "lower" => Func::Lower,
                        "upper" => Func::Upper,
                        "trim" => Func::Trim,
                        "coalesce" => Func::Coalesce,
                        "len" => Func::Len,
                        "str" => Func::Str,
                        _ => {
                            return Err(ParseError {
                                at: self.at(),
                                message: format!(
                                    "unknown function {id}(); use concat, lower, upper, trim, coalesce, len or str"
                                ),
                            });
                        }
                    };
                    let args = self.list(")")?;
                    let arity_ok = match func {
                        Func::Concat | Func::Coalesce => !args.is_empty(),
                        _ => args.len() == 1,
                    };
                    if !arity_ok {
                        return Err(self.err(format!(
                            "{id}() takes {}",
                            if matches!(func, Func::Concat | Func::Coalesce) {
                                "one or more arguments"
                            } else {
                                "one argument"
                            }
                        )));
                    }
                    Ok(Expr::Call(func, args))
                } else {
                    Ok(Expr::Column(id))
                }
            }
            Tok::Sym(s) => Err(ParseError { at: self.at() - 1, message: format!("unexpected '{s}'") }),
        }
    }
}

/// Parses an expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = tokenize(src)?;
    if toks.is_empty() {
        return Err(ParseError { at: 1, message: "empty expression".into() });
    }
    let mut p = Parser { toks, pos: 0, len: src.chars().count(), depth: 0 };
    let e = p.or()?;
    if p.pos < p.toks.len() {
        return Err(p.err("unexpected text after the expression"));
    }
    Ok(e)
}

/// Parses a template with `{expression}` holes.
pub fn parse_template(src: &str) -> Result<Expr, ParseError> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '{' if chars.get(i + 1) == Some(&'{') => {
                text.push('{');
                i += 2;
            }
            '}' if chars.get(i + 1) == Some(&'}') => {
                text.push('}');
                i += 2;
            }
            '{' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '}')
                    .ok_or(ParseError { at: i + 1, message: "unclosed '{' in template".into() })?;
                let inner: String = chars[i + 1..i + 1 + end].iter().collect();
                let e = parse(&inner).map_err(|e| ParseError { at: i + 1 + e.at, message: e.message })?;
                if !text.is_empty() {
                    parts.push(Expr::Lit(Value::String(std::mem::take(&mut text).into())));
                }
                parts.push(e);
                i += end + 2;
            }
            '}' => {
                return Err(ParseError {
                    at: i + 1,
                    message: "unmatched '}' in template; write '}}' for a literal brace".into(),
                });
            }
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    if !text.is_empty() {
        parts.push(Expr::Lit(Value::String(text.into())));
    }
    Ok(Expr::Template(parts))
}

impl Expr {
    /// Columns the expression reads.
    pub fn columns(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |e| {
            if let Expr::Column(c) = e {
                out.push(c.as_str());
            }
        });
        out
    }

    fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Not(e) => e.walk(f),
            Expr::Bin(a, _, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::In(a, items) => {
                a.walk(f);
                items.iter().for_each(|i| i.walk(f));
            }
            Expr::Call(_, args) | Expr::Template(args) => args.iter().for_each(|i| i.walk(f)),
            Expr::Lit(_) | Expr::Column(_) => {}
        }
    }

    /// Evaluates against a row. Missing columns read as null.
    pub fn eval(&self, row: &Row) -> Value {
        match self {
            Expr::Lit(v) => v.clone(),
            Expr::Column(c) => row.get(c).cloned().unwrap_or(Value::Null),
            Expr::Not(e) => Value::Bool(!truthy(&e.eval(row))),
            Expr::Bin(a, BinOp::And, b) => Value::Bool(truthy(&a.eval(row)) && truthy(&b.eval(row))),
            Expr::Bin(a, BinOp::Or, b) => Value::Bool(truthy(&a.eval(row)) || truthy(&b.eval(row))),
            Expr::Bin(a, op, b) => binary(&a.eval(row), *op, &b.eval(row)),
            Expr::In(a, items) => {
                let v = a.eval(row);
                Value::Bool(items.iter().any(|i| compare(&v, &i.eval(row)) == Some(std::cmp::Ordering::Equal)))
            }
            Expr::Call(f, args) => call(*f, args.iter().map(|a| a.eval(row)).collect()),
            Expr::Template(parts) => {
                Value::String(parts.iter().map(|p| text(&p.eval(row)).into_owned()).collect::<String>().into())
            }
        }
    }
}

/// Whether a filter result lets the row through: only `true` does.
pub fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// A value as template text (null is empty); text values are borrowed, so
/// that the sinks encode them without a copy.
pub fn text(v: &Value) -> Cow<'_, str> {
    Cow::Owned(match v {
        Value::Null | Value::Unavailable => return Cow::Borrowed(""),
        Value::String(s) | Value::ZonedTimestamp(s) => return Cow::Borrowed(s),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Decimal { unscaled, scale } => value::decimal_text(*unscaled, *scale),
        Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        Value::Date(d) => value::date_text(*d),
        Value::Time(t) => value::time_text(*t),
        Value::Timestamp(t) => value::timestamp_text(*t),
        Value::Json(j) => j.to_string(),
    })
}

/// Exact numeric view: (unscaled, scale).
fn numeric(v: &Value) -> Option<(i128, u32)> {
    match v {
        Value::Int(i) => Some((*i as i128, 0)),
        Value::Decimal { unscaled, scale } => Some((*unscaled, *scale)),
        _ => None,
    }
}

fn rescale(a: (i128, u32), scale: u32) -> Option<i128> {
    a.0.checked_mul(10i128.checked_pow(scale - a.1)?)
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    use Value::*;
    match (a, b) {
        (Null, Null) => Some(std::cmp::Ordering::Equal),
        (Null, _) | (_, Null) => None,
        (Float(x), y) | (y, Float(x)) if numeric(y).is_some() || matches!(y, Float(_)) => {
            let yf = match y {
                Float(f) => *f,
                _ => text(y).parse().ok()?,
            };
            let ord = x.partial_cmp(&yf)?;
            Some(if matches!(a, Float(_)) { ord } else { ord.reverse() })
        }
        _ => {
            if let (Some(x), Some(y)) = (numeric(a), numeric(b)) {
                let s = x.1.max(y.1);
                return Some(rescale(x, s)?.cmp(&rescale(y, s)?));
            }
            match (a, b) {
                (Bool(x), Bool(y)) => Some(x.cmp(y)),
                (Date(x), Date(y)) => Some(x.cmp(y)),
                (Timestamp(x), Timestamp(y)) => Some(x.cmp(y)),
                (Time(x), Time(y)) => Some(x.cmp(y)),
                // Value maps and filters compare codes written as text too.
                _ => Some(text(a).cmp(&text(b))),
            }
        }
    }
}

fn binary(a: &Value, op: BinOp, b: &Value) -> Value {
    use std::cmp::Ordering::*;
    match op {
        BinOp::Eq => Value::Bool(compare(a, b) == Some(Equal)),
        BinOp::Ne => Value::Bool(compare(a, b) != Some(Equal)),
        BinOp::Lt => Value::Bool(compare(a, b) == Some(Less)),
        BinOp::Le => Value::Bool(matches!(compare(a, b), Some(Less | Equal))),
        BinOp::Gt => Value::Bool(compare(a, b) == Some(Greater)),
        BinOp::Ge => Value::Bool(matches!(compare(a, b), Some(Greater | Equal))),
        BinOp::Add | BinOp::Sub => {
            if let (Some(x), Some(y)) = (numeric(a), numeric(b)) {
                let s = x.1.max(y.1);
                let (Some(x), Some(y)) = (rescale(x, s), rescale(y, s)) else { return Value::Null };
                let r = if op == BinOp::Add { x.checked_add(y) } else { x.checked_sub(y) };
                return match (r, s) {
                    (Some(r), 0) => {
                        i64::try_from(r).map(Value::Int).unwrap_or(Value::Decimal { unscaled: r, scale: 0 })
                    }
                    (Some(r), s) => Value::Decimal { unscaled: r, scale: s },
                    (None, _) => Value::Null,
                };
            }
            if let (Value::Float(_), _) | (_, Value::Float(_)) = (a, b) {
                let (Ok(x), Ok(y)) = (text(a).parse::<f64>(), text(b).parse::<f64>()) else { return Value::Null };
                return Value::Float(if op == BinOp::Add { x + y } else { x - y });
            }
            if op == BinOp::Add && (matches!(a, Value::String(_)) || matches!(b, Value::String(_))) {
                if matches!(a, Value::Null) || matches!(b, Value::Null) {
                    return Value::Null;
                }
                return Value::String((text(a) + text(b)).into());
            }
            Value::Null
        }
        BinOp::And | BinOp::Or => unreachable!("handled in eval"),
    }
}

fn call(f: Func, args: Vec<Value>) -> Value {
    let first = args.first().cloned().unwrap_or(Value::Null);
    match f {
        Func::Concat => Value::String(args.iter().map(text).collect::<String>().into()),
        Func::Coalesce => {
            args.into_iter().find(|v| !matches!(v, Value::Null | Value::Unavailable)).unwrap_or(Value::Null)
        }
        _ if matches!(first, Value::Null) => Value::Null,
        Func::Lower => Value::String(text(&first).to_lowercase().into()),
        Func::Upper => Value::String(text(&first).to_uppercase().into()),
        Func::Trim => Value::String(text(&first).trim().into()),
        Func::Len => Value::Int(text(&first).chars().count() as i64),
        Func::Str => match first {
            Value::String(s) => Value::String(s),
            other => Value::String(text(&other).into()),
        },
    }
}

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Row {
        Row {
            columns: vec![
                ("FirstName".into(), Value::String("An".into())),
                ("LastName".into(), Value::String("Nguyen".into())),
                ("Status".into(), Value::Int(1)),
                ("Seats".into(), Value::Int(0)),
                ("Fare".into(), Value::Decimal { unscaled: 35_000_000, scale: 2 }),
                ("Note".into(), Value::Null),
                ("Odd Name".into(), Value::String("x".into())),
            ]
            .into(),
        }
    }

    fn eval(src: &str) -> Value {
        parse(src).unwrap_or_else(|e| panic!("{src}: {e}")).eval(&row())
    }

    #[test]
    fn filters_and_comparisons() {
        assert_eq!(eval("Status == 1 and Seats > 0"), Value::Bool(false));
        assert_eq!(eval("Status == 1 && not (Seats > 0)"), Value::Bool(true));
        assert_eq!(eval("Status in [1, 2, 3]"), Value::Bool(true));
        assert_eq!(eval("Fare >= 350000"), Value::Bool(true));
        assert_eq!(eval("Fare == 350000.00"), Value::Bool(true));
        assert_eq!(eval("Note == null"), Value::Bool(true));
        assert_eq!(eval("Note != 'x'"), Value::Bool(true));
        assert_eq!(eval("`Odd Name` == \"x\""), Value::Bool(true));
        assert_eq!(eval("Missing == null"), Value::Bool(true));
    }

    #[test]
    fn computed_values() {
        assert_eq!(eval("concat('T-', Status)"), Value::String("T-1".into()));
        assert_eq!(eval("FirstName + ' ' + upper(LastName)"), Value::String("An NGUYEN".into()));
        assert_eq!(eval("coalesce(Note, 'none')"), Value::String("none".into()));
        assert_eq!(eval("Fare + 1"), Value::Decimal { unscaled: 35_000_100, scale: 2 });
        assert_eq!(eval("Seats - 2"), Value::Int(-2));
        assert_eq!(eval("len(LastName)"), Value::Int(6));
    }

    #[test]
    fn templates() {
        let t = parse_template("{FirstName} {LastName} ({Status}) {{x}}").unwrap();
        assert_eq!(t.eval(&row()), Value::String("An Nguyen (1) {x}".into()));
        assert_eq!(t.columns(), ["FirstName", "LastName", "Status"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for src in ["(".repeat(10_000), "not ".repeat(10_000) + "x", "-".repeat(10_000) + "1"] {
            assert!(parse(&src).unwrap_err().message.contains("nested more than"), "{}", &src[..10]);
        }
        assert!(parse(&format!("{}1{}", "(".repeat(40), ")".repeat(40))).is_ok());
    }

    #[test]
    fn errors_point_at_the_character() {
        assert_eq!(
            parse("Status = 1").unwrap_err(),
            ParseError { at: 8, message: "'=' is not an operator; compare with '=='".into() }
        );
        assert_eq!(
            parse("frob(Status)").unwrap_err().message,
            "unknown function frob(); use concat, lower, upper, trim, coalesce, len or str"
        );
        assert!(parse("Status ==").unwrap_err().message.contains("too early"));
        assert!(parse("'open").unwrap_err().message.contains("unclosed"));
        assert!(parse_template("{Status").unwrap_err().message.contains("unclosed"));
        assert_eq!(parse_template("ab {Status = 1}").unwrap_err().at, 12);
    }
}
