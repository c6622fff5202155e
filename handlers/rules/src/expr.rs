//! CEL expressions: compiled and checked at write time, evaluated per binding
//! against a [`Reader`] that sees the tree (and the ContextStore) through the
//! rule owner's eyes.
//!
//! The `cel` crate's functions are synchronous; the engine runs evaluations on
//! a blocking thread and its reader waits there for the tree.

use std::sync::Arc;
use std::time::Duration;

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
        if let Some(kind) = check::static_kind(&e.program.expression().expr).filter(|k| *k != check::Kind::Bool) {
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
        if check::nesting(src) > MAX_NESTING {
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
        check::check(src, program.expression(), 0, false)?;
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

mod check;
#[cfg(test)]
mod tests;
