//! Write-time checks the `cel` crate does not make: depth, nested list
//! macros, unknown functions, arity, literal argument types, bad durations
//! and patterns, and comparisons that can never type-check, with positions.

use cel::common::ast::{Expr as Ast, IdedExpr};

use super::{CEL_BUILTINS, ExprError, MAX_DEPTH, OURS, Window};

/// The deepest bracket nesting in the source.
pub(super) fn nesting(src: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in src.chars() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Bool,
    Number,
    String,
    Other,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Other => "value of another type",
        }
    }
}

/// The type of an expression where it is known without data.
pub(super) fn static_kind(e: &Ast) -> Option<Kind> {
    use cel::common::value::CelVal;
    match e {
        Ast::Literal(CelVal::Boolean(_)) => Some(Kind::Bool),
        Ast::Literal(CelVal::Int(_) | CelVal::UInt(_) | CelVal::Double(_)) => Some(Kind::Number),
        Ast::Literal(CelVal::String(_)) => Some(Kind::String),
        Ast::List(_) | Ast::Map(_) => Some(Kind::Other),
        Ast::Call(c) => match c.func_name.as_str() {
            "_==_"
            | "_!=_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "_&&_"
            | "_||_"
            | "!_"
            | "@in"
            | "exists"
            | "all"
            | "startsWith"
            | "endsWith"
            | "matches"
            | "contains"
            | "@not_strictly_false" => Some(Kind::Bool),
            "_+_" | "_-_" | "_*_" | "_/_" | "_%_" | "-_" => {
                c.args.iter().find_map(|a| static_kind(&a.expr)).filter(|k| *k != Kind::Bool)
            }
            name if c.target.is_none() && window_fn(name, c.args.len()) => Some(Kind::Number),
            "age" | "size" | "int" | "uint" | "double" => Some(Kind::Number),
            "string" => Some(Kind::String),
            _ => None,
        },
        _ => None,
    }
}

fn window_fn(name: &str, args: usize) -> bool {
    Window::of(name).is_some() && args == 2
}

/// Walks the tree: its depth, nested list macros, unknown functions, wrong
/// arity, literal arguments of the wrong type, bad durations, and
/// comparisons that can never type-check.
pub(super) fn check(src: &str, e: &IdedExpr, depth: usize, in_macro: bool) -> Result<(), ExprError> {
    if depth > MAX_DEPTH {
        return Err(ExprError::at(src, 0, format!("more than {MAX_DEPTH} levels of operations")));
    }
    let deeper = |x: &IdedExpr| check(src, x, depth + 1, in_macro);
    match &e.expr {
        Ast::Call(c) => {
            let name = c.func_name.as_str();
            let internal = name.starts_with('_') || name.starts_with('@') || name.starts_with('!');
            if !internal && c.target.is_none() && !OURS.contains(&name) && !CEL_BUILTINS.contains(&name) {
                return Err(ExprError::at(src, find_call(src, name), format!("unknown function {name}()")));
            }
            if c.target.is_none() {
                check_ours(src, name, &c.args)?;
            }
            if matches!(name, "_<_" | "_<=_" | "_>_" | "_>=_" | "_==_" | "_!=_") && c.args.len() == 2 {
                let (a, b) = (static_kind(&c.args[0].expr), static_kind(&c.args[1].expr));
                if let (Some(a), Some(b)) = (a, b)
                    && a != b
                    && a != Kind::Other
                    && b != Kind::Other
                {
                    let at = find_operator(src, name);
                    return Err(ExprError::at(src, at, format!("cannot compare a {} with a {}", a.name(), b.name())));
                }
            }
            if let Some(t) = &c.target {
                deeper(t)?;
            }
            c.args.iter().try_for_each(deeper)
        }
        // One list macro costs what its list holds; one inside another multiplies.
        Ast::Comprehension(_) if in_macro => {
            Err(ExprError::at(src, 0, "a list macro (map, filter, all, exists) inside another is not allowed"))
        }
        Ast::Comprehension(c) => {
            check(src, &c.iter_range, depth + 1, in_macro)?;
            [&c.loop_cond, &c.loop_step, &c.result].into_iter().try_for_each(|x| check(src, x, depth + 1, true))
        }
        Ast::List(l) => l.elements.iter().try_for_each(deeper),
        Ast::Map(m) => m.entries.iter().try_for_each(|entry| match &entry.expr {
            cel::common::ast::EntryExpr::MapEntry(me) => deeper(&me.key).and_then(|()| deeper(&me.value)),
            cel::common::ast::EntryExpr::StructField(f) => deeper(&f.value),
        }),
        Ast::Select(s) => deeper(&s.operand),
        _ => Ok(()),
    }
}

fn check_ours(src: &str, name: &str, args: &[IdedExpr]) -> Result<(), ExprError> {
    use cel::common::value::CelVal;
    let at = || find_call(src, name);
    let string_arg = |i: usize, what: &str| -> Result<Option<String>, ExprError> {
        match args.get(i).map(|a| &a.expr) {
            Some(Ast::Literal(CelVal::String(s))) => Ok(Some(s.clone())),
            Some(Ast::Literal(other)) => {
                Err(ExprError::at(src, at(), format!("{name}(): the {what} must be a string, not {other:?}")))
            }
            _ => Ok(None),
        }
    };
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(ExprError::at(src, at(), format!("{name}() takes {n} argument(s), {} given", args.len())))
        }
    };
    match name {
        "value" | "age" => {
            arity(1)?;
            string_arg(0, "path")?;
        }
        "exists" | "all" => {
            arity(2)?;
            if let Some(p) = string_arg(0, "pattern")? {
                crate::rule::check_pattern(&p).map_err(|m| ExprError::at(src, at(), format!("{name}(): {m}")))?;
            }
        }
        // min/max with other than (path, duration) are CEL's own.
        "min" | "max" if args.len() != 2 => {}
        "avg" | "sum" | "count" | "changes" | "min" | "max" => {
            arity(2)?;
            string_arg(0, "path")?;
            if let Some(d) = string_arg(1, "window")? {
                crate::rule::parse_duration(&d).map_err(|m| ExprError::at(src, at(), format!("{name}(): {m}")))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn find_call(src: &str, name: &str) -> usize {
    let mut from = 0;
    while let Some(i) = src[from..].find(name) {
        let at = from + i;
        let before_ok = at == 0 || !src[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.');
        if before_ok && src[at + name.len()..].trim_start().starts_with('(') {
            return at;
        }
        from = at + name.len();
    }
    0
}

fn find_operator(src: &str, name: &str) -> usize {
    let op = name.trim_matches('_');
    src.find(op).unwrap_or(0)
}
