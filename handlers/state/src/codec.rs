//! Rows to and from node entries. Values are stored as their JSON form plus
//! the format, so the database is readable with the sqlite3 shell.

use dmtree_core::nodemap::{Entry, Extra};
use dmtree_core::{Format, Value};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

pub(crate) struct NodeRow {
    pub format: Option<&'static str>,
    pub value: Option<String>,
    pub title: Option<String>,
    pub mime: Option<String>,
    pub version: i64,
    pub modified_ms: i64,
}

pub(crate) fn encode(entry: &Entry) -> NodeRow {
    let extra = entry.extra.as_deref();
    NodeRow {
        format: entry.value.as_ref().map(|v| v.format().as_str()),
        value: entry.value.as_ref().map(|v| v.to_json().to_string()),
        title: extra.and_then(|e| e.title.as_deref()).map(str::to_owned),
        mime: extra.and_then(|e| e.mime.as_deref()).map(str::to_owned),
        version: entry.version as i64,
        modified_ms: entry.modified_ms,
    }
}

/// Decodes one `nodes` row; `None` for rows this build cannot read (logged by the caller).
pub(crate) fn decode(row: &SqliteRow) -> Result<(Box<str>, Entry), String> {
    let path: Vec<u8> = row.get("path");
    let path = String::from_utf8(path).map_err(|e| format!("path is not UTF-8: {e}"))?;
    let format: Option<String> = row.get("format");
    let value = match format {
        None => None,
        Some(f) => {
            let format: Format = f.parse().map_err(|e: dmtree_core::value::ValueError| e.0)?;
            let text: String = row.get("value");
            let json = serde_json::from_str(&text).map_err(|e| format!("value of {path:?}: {e}"))?;
            Some(Value::from_json(&json, Some(format)).map_err(|e| e.0)?)
        }
    };
    let title: Option<String> = row.get("title");
    let mime: Option<String> = row.get("mime");
    let extra = (title.is_some() || mime.is_some())
        .then(|| Box::new(Extra { title: title.map(Into::into), mime: mime.map(Into::into) }));
    let version: i64 = row.get("version");
    let modified_ms: i64 = row.get("modified_ms");
    Ok((path.into(), Entry { value, version: version as u64, modified_ms, extra }))
}
