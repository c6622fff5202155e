//! CEL expressions: compiled and checked at write time, evaluated per binding
//! against a [`Reader`] that sees the tree (and the ContextStore) through the
//! rule owner's eyes.
//!
//! The `cel` crate's functions are synchronous; the engine runs evaluations on
//! a blocking thread and its reader waits there for the tree.

use std::sync::Arc;
use std::time::Duration;

use cel::common::ast::{Expr as Ast, IdedExpr};
use cel::objects::Value;
use cel::{Context, ExecutionError, FunctionContext, Program};
use serde_json::Value as Json;

/// Where an expression reads. Paths given to it are absolute.
pub trait Reader: Send + Sync {
    /// A leaf's value (`null` when it does not exist or cannot be read).
    fn value(&self, uri: &str) -> Result<Json, String>;
    /// An aggregate of a leaf's recorded history in the ContextStore.
    fn window(&self, uri: &str, f: Window, over: Duration) -> Result<Json, String>;
    /// Seconds since the node last changed, if known.
    fn age(&self, uri: &str) -> Result<Json, String>;
    /// The nodes matching `pattern`, each with its variables (for `exists`/`all`).
    fn bindings(&self, pattern: &str) -> Result<Vec<Binding>, String>;
    /// Fails once the evaluation is over its budget.
    fn charge(&self) -> Result<(), String>;
}

/// One node a rule is bound to, and the variables it offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub uri: String,
    /// The node's leaf children, plus `id` (its name) and `uri`.
    pub vars: serde_json::Map<String, Json>,
}

impl Binding {
    pub fn new(uri: &str, mut vars: serde_json::Map<String, Json>) -> Self {
        let id = uri.rsplit('/').next().unwrap_or_default();
        vars.entry("id").or_insert_with(|| Json::from(id));
        vars.insert("uri".into(), Json::from(uri));
        Self { uri: uri.to_owned(), vars }
    }

    /// The binding of a global rule: no node, no variables.
    pub fn global() -> Self {
        Self { uri: String::new(), vars: serde_json::Map::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    /// How many times the value changed.
    Changes,
}

impl Window {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "avg" => Window::Avg,
            "min" => Window::Min,
            "max" => Window::Max,
            "sum" => Window::Sum,
            "count" => Window::Count,
            "changes" => Window::Changes,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Window::Avg => "avg",
            Window::Min => "min",
            Window::Max => "max",
            Window::Sum => "sum",
            Window::Count => "count",
            Window::Changes => "changes",
        }
    }
}

/// The functions a rule may call beyond CEL's own.
const OURS: &[&str] = &["value", "avg", "min", "max", "sum", "count", "changes", "age", "exists", "all"];
const CEL_BUILTINS: &[&str] = &[
    "contains",
    "size",
    "max",
    "min",
    "startsWith",
    "endsWith",
    "string",
    "bytes",
    "double",
    "int",
    "uint",
    "matches",
    "duration",
    "timestamp",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
    "has",
    "exists_one",
    "map",
    "filter",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    #[error("{line}:{column}: {message}")]
    At { line: usize, column: usize, message: String },
}

impl ExprError {
    fn at(src: &str, offset: usize, message: impl Into<String>) -> Self {
        let before = &src[..offset.min(src.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ExprError::At { line, column, message: message.into() }
    }
}

/// A compiled CEL expression and its source.
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    program: Arc<Program>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Expr {
    /// An expression whose result must be a boolean.
    pub fn condition(src: &str) -> Result<Self, ExprError> {
        let e = Self::value(src)?;
        if let Some(kind) = static_kind(&e.program.expression().expr).filter(|k| *k != Kind::Bool) {
            return Err(ExprError::at(src, 0, format!("a condition must be a boolean, this is a {}", kind.name())));
        }
        Ok(e)
    }

    /// Any expression (an action's computed value).
    pub fn value(src: &str) -> Result<Self, ExprError> {
        if src.trim().is_empty() {
            return Err(ExprError::at(src, 0, "empty expression"));
        }
        if src.len() > MAX_SOURCE {
            return Err(ExprError::at(src, MAX_SOURCE, format!("longer than {MAX_SOURCE} characters")));
        }
        // The parser recurses deeply per bracket: bound the brackets, and parse on a large stack.
        if nesting(src) > MAX_NESTING {
            return Err(ExprError::at(src, 0, format!("brackets nested more than {MAX_NESTING} levels")));
        }
        let owned = src.to_owned();
        let parsed = on_large_stack(move || std::panic::catch_unwind(|| Program::compile(&owned)).ok())
            .flatten()
            .ok_or_else(|| ExprError::at(src, 0, "the expression could not be parsed"))?;
        let program = parsed.map_err(|errs| match errs.errors.first() {
            Some(e) => {
                let (line, col) = (e.pos.0.max(1) as usize, e.pos.1.max(0) as usize + 1);
                ExprError::At { line, column: col, message: e.msg.clone() }
            }
            None => ExprError::at(src, 0, "syntax error"),
        })?;
        check(src, program.expression(), 0, false)?;
        Ok(Self { source: src.into(), program: Arc::new(program) })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates in a binding's scope; a panic inside CEL becomes an error.
    pub fn eval(&self, scope: &Scope<'_>) -> Result<Json, String> {
        let run = std::panic::AssertUnwindSafe(|| self.program.execute(&scope.ctx));
        match std::panic::catch_unwind(run) {
            Ok(Ok(v)) => cel_to_json(&v),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err("the expression failed inside the evaluator".into()),
        }
    }

    pub fn eval_bool(&self, scope: &Scope<'_>) -> Result<bool, String> {
        match self.eval(scope)? {
            Json::Bool(b) => Ok(b),
            other => Err(format!("{} gave a {}, not a boolean", self.source, json_type(&other))),
        }
    }
}

/// A binding's variables, built once and shared by every rule evaluated on it.
pub struct Scope<'a> {
    ctx: Context<'a>,
}

/// Longest expression source.
pub const MAX_SOURCE: usize = 1024;
/// Deepest bracket nesting (the parser's recursion per level is large).
pub const MAX_NESTING: usize = 32;
/// Deepest expression tree (evaluation recurses once per level).
pub const MAX_DEPTH: usize = 64;
/// The stack parsing and evaluation run on (reserved, not committed, memory).
pub const LARGE_STACK: usize = 256 << 20;

/// Runs `f` on a thread of its own with [`LARGE_STACK`]; `None` if it could not run.
pub fn on_large_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::Builder::new().name("dmtree-cel".into()).stack_size(LARGE_STACK).spawn(f).ok()?.join().ok()
}

fn nesting(src: &str) -> usize {
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

/// An evaluation error in words that name types, never values: the error
/// shows on the rule to its readers, who may not read what it read.
fn describe(e: &ExecutionError) -> String {
    use ExecutionError as E;
    let t = |v: &Value| v.type_of().to_string();
    match e {
        E::FunctionError { function, message } if OURS.contains(&function.as_str()) => {
            format!("{function}(): {message}")
        }
        E::FunctionError { function, .. } => format!("{function}() failed on its argument"),
        E::UndeclaredReference(name) => format!("{name} is not defined for this binding"),
        E::InvalidArgumentCount { expected, actual } => format!("{actual} arguments given, {expected} expected"),
        E::UnexpectedType { got, want } => format!("a {got} where a {want} is expected"),
        E::ValuesNotComparable(a, b) => format!("a {} cannot be compared with a {}", t(a), t(b)),
        E::UnsupportedBinaryOperator(op, a, b) => format!("'{op}' does not apply to a {} and a {}", t(a), t(b)),
        E::UnsupportedUnaryOperator(op, v) => format!("'{op}' does not apply to a {}", t(v)),
        E::UnsupportedTargetType { target } => format!("not supported on a {}", t(target)),
        E::NotSupportedAsMethod { method, target } => format!("{method}() is not a method of a {}", t(target)),
        E::NoSuchKey(_) => "no such key".into(),
        E::NoSuchOverload => "no such overload".into(),
        E::DivisionByZero(_) | E::RemainderByZero(_) => "division by zero".into(),
        E::Overflow(op, ..) => format!("'{op}' overflowed"),
        E::IndexOutOfBounds(_) => "index out of bounds".into(),
        _ => "the expression cannot be evaluated on these values".into(),
    }
}

/// The variable that carries the binding's URI to our functions; `@` keeps
/// it out of reach of (and unshadowable by) user expressions.
const BINDING_VAR: &str = "@binding";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Number,
    String,
    Other,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bool => "boolean",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Other => "value of another type",
        }
    }
}

/// The type of an expression where it is known without data.
fn static_kind(e: &Ast) -> Option<Kind> {
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
fn check(src: &str, e: &IdedExpr, depth: usize, in_macro: bool) -> Result<(), ExprError> {
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

/// The functions' shared state for one epoch: the reader, and CEL's builtins.
pub struct Env {
    root: Context<'static>,
}

impl Env {
    pub fn new(reader: Arc<dyn Reader>) -> Self {
        let mut root = Context::default();
        let r = reader.clone();
        root.add_function("value", move |ftx: &FunctionContext| -> cel::ResolveResult {
            let path = path_arg(ftx, 0)?;
            r.charge().map_err(|m| ftx.error(m))?;
            r.value(&path).map(|v| json_to_cel(&v)).map_err(|m| ftx.error(m))
        });
        let r = reader.clone();
        root.add_function("age", move |ftx: &FunctionContext| -> cel::ResolveResult {
            let path = path_arg(ftx, 0)?;
            r.charge().map_err(|m| ftx.error(m))?;
            r.age(&path).map(|v| json_to_cel(&v)).map_err(|m| ftx.error(m))
        });
        for name in ["avg", "sum", "count", "changes", "min", "max"] {
            let r = reader.clone();
            let window = Window::of(name).unwrap_or(Window::Count);
            root.add_function(name, move |ftx: &FunctionContext| -> cel::ResolveResult {
                if matches!(window, Window::Min | Window::Max) && !is_window_call(ftx) {
                    let args = arg_values(ftx)?;
                    return if window == Window::Min {
                        cel::functions::min(cel::extractors::Arguments(args))
                    } else {
                        cel::functions::max(cel::extractors::Arguments(args))
                    };
                }
                let path = path_arg(ftx, 0)?;
                let over = duration_arg(ftx, 1)?;
                r.charge().map_err(|m| ftx.error(m))?;
                r.window(&path, window, over).map(|v| json_to_cel(&v)).map_err(|m| ftx.error(m))
            });
        }
        for (name, want_all) in [("exists", false), ("all", true)] {
            let r = reader.clone();
            root.add_function(name, move |ftx: &FunctionContext| -> cel::ResolveResult {
                quantifier(ftx, r.as_ref(), want_all)
            });
        }
        Self { root }
    }

    pub fn scope(&self, binding: &Binding) -> Scope<'_> {
        let mut ctx = self.root.new_inner_scope();
        ctx.add_variable_from_value(BINDING_VAR, binding.uri.clone());
        for (k, v) in &binding.vars {
            ctx.add_variable_from_value(k.clone(), json_to_cel(v));
        }
        Scope { ctx }
    }
}

/// `exists(pattern, cond)` / `all(pattern, cond)`: `cond` sees each match's variables.
fn quantifier(ftx: &FunctionContext, r: &dyn Reader, want_all: bool) -> cel::ResolveResult {
    if ftx.args.len() != 2 {
        return Err(ExecutionError::invalid_argument_count(2, ftx.args.len()));
    }
    let pattern = string_arg(ftx, 0)?;
    r.charge().map_err(|m| ftx.error(m))?;
    for b in r.bindings(&pattern).map_err(|m| ftx.error(m))? {
        let mut scope = ftx.ptx.new_inner_scope();
        scope.add_variable_from_value(BINDING_VAR, b.uri.clone());
        for (k, v) in &b.vars {
            scope.add_variable_from_value(k.clone(), json_to_cel(v));
        }
        let hit = matches!(scope.resolve(&ftx.args[1])?, Value::Bool(true));
        if hit != want_all {
            return Ok(Value::Bool(!want_all));
        }
    }
    Ok(Value::Bool(want_all))
}

fn arg_values(ftx: &FunctionContext) -> Result<Arc<Vec<Value>>, ExecutionError> {
    let vals = ftx.args.iter().map(|a| ftx.ptx.resolve(a)).collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(vals))
}

/// `min`/`max` are windows when called as (path, duration-string).
fn is_window_call(ftx: &FunctionContext) -> bool {
    ftx.args.len() == 2
        && matches!(ftx.ptx.resolve(&ftx.args[1]), Ok(Value::String(s)) if crate::rule::parse_duration(&s).is_ok())
        && matches!(ftx.ptx.resolve(&ftx.args[0]), Ok(Value::String(_)))
}

fn string_arg(ftx: &FunctionContext, i: usize) -> Result<String, ExecutionError> {
    let arg = ftx.args.get(i).ok_or_else(|| ExecutionError::invalid_argument_count(i + 1, ftx.args.len()))?;
    match ftx.ptx.resolve(arg)? {
        Value::String(s) => Ok(s.to_string()),
        other => Err(ftx.error(format!("argument {} must be a string, got {:?}", i + 1, other.type_of()))),
    }
}

/// A path argument, made absolute against the binding (`..` climbs).
fn path_arg(ftx: &FunctionContext, i: usize) -> Result<String, ExecutionError> {
    if ftx.args.len() <= i {
        return Err(ExecutionError::invalid_argument_count(i + 1, ftx.args.len()));
    }
    let path = string_arg(ftx, i)?;
    let base = match ftx.ptx.get_variable(BINDING_VAR) {
        Ok(Value::String(s)) => s.to_string(),
        _ => String::new(),
    };
    resolve(&base, &path).map_err(|m| ftx.error(m))
}

fn duration_arg(ftx: &FunctionContext, i: usize) -> Result<Duration, ExecutionError> {
    let d = string_arg(ftx, i)?;
    crate::rule::parse_duration(&d).map_err(|m| ftx.error(m))
}

/// Resolves `path` against the binding URI `base`: absolute (`./…`), `.`
/// (the binding itself; the root for a global rule), relative, with `..`
/// segments climbing.
pub fn resolve(base: &str, path: &str) -> Result<String, String> {
    if path.starts_with("./") || (path == "." && base.is_empty()) {
        return Ok(path.to_owned());
    }
    if base.is_empty() {
        return Err(format!("{path:?} is relative, and a global rule has no binding: write ./…"));
    }
    // The common case, `load` or `properties/load`: one allocation.
    if !path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Ok(format!("{base}/{path}"));
    }
    let mut out: Vec<&str> = base.split('/').collect();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." if out.len() > 1 => {
                out.pop();
            }
            ".." => return Err(format!("{path:?} climbs above the root")),
            s => out.push(s),
        }
    }
    Ok(out.join("/"))
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "map",
    }
}

pub fn json_to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(json_to_cel).collect())),
        Json::Object(o) => {
            let map: std::collections::HashMap<String, Value> =
                o.iter().map(|(k, v)| (k.clone(), json_to_cel(v))).collect();
            Value::Map(map.into())
        }
    }
}

pub fn cel_to_json(v: &Value) -> Result<Json, String> {
    Ok(match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(s.to_string()),
        Value::List(l) => Json::Array(l.iter().map(cel_to_json).collect::<Result<_, _>>()?),
        Value::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m.map.iter() {
                out.insert(k.to_string(), cel_to_json(v)?);
            }
            Json::Object(out)
        }
        Value::Duration(d) => Json::from(d.num_milliseconds() as f64 / 1000.0),
        Value::Timestamp(t) => Json::String(t.to_rfc3339()),
        Value::Bytes(_) | Value::Function(..) => return Err("the result is not representable as JSON".into()),
    })
}

#[cfg(test)]
mod tests;
