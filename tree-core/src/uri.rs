//! OMA-DM URIs: `.` is the root, `./a/b` is absolute, `a/b` is relative.
//!
//! A [`Uri`] stores its unescaped segment names joined by NUL. NUL and other
//! control characters are rejected in names, so the join is unambiguous, two
//! spellings of one node are byte-equal, and sorting the keys keeps every
//! subtree contiguous (see `NodeMap`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Separator inside the stored key. Sorts below every legal name character.
pub(crate) const SEP: char = '\0';

/// Configurable limits on URIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UriLimits {
    pub max_segments: usize,
    pub max_segment_bytes: usize,
    pub max_uri_bytes: usize,
}

impl Default for UriLimits {
    fn default() -> Self {
        Self { max_segments: 64, max_segment_bytes: 255, max_uri_bytes: 4096 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UriError {
    #[error("invalid URI {uri:?}: {reason}")]
    Invalid { uri: String, reason: String },
    #[error("URI {uri:?} exceeds a limit: {reason}")]
    TooLong { uri: String, reason: String },
}

impl UriError {
    pub(crate) fn invalid(uri: &str, reason: impl Into<String>) -> Self {
        Self::Invalid { uri: truncate(uri), reason: reason.into() }
    }
    fn too_long(uri: &str, reason: impl Into<String>) -> Self {
        Self::TooLong { uri: truncate(uri), reason: reason.into() }
    }
    /// The offending URI text, as the user gave it (truncated).
    pub fn uri(&self) -> &str {
        match self {
            Self::Invalid { uri, .. } | Self::TooLong { uri, .. } => uri,
        }
    }
}

/// Error bodies echo the URI; keep them bounded when the URI itself is the problem.
fn truncate(s: &str) -> String {
    const MAX: usize = 256;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A canonical node address. Absolute unless produced by [`Uri::strip_prefix`],
/// where it is relative to a mount point.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uri {
    key: String,
}

impl Uri {
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses an absolute URI: `.` or `./seg/seg`.
    pub fn parse(text: &str, limits: &UriLimits) -> Result<Self, UriError> {
        if text.len() > limits.max_uri_bytes {
            return Err(UriError::too_long(text, format!("longer than {} bytes", limits.max_uri_bytes)));
        }
        match text {
            "." => Ok(Self::root()),
            _ => match text.strip_prefix("./") {
                Some(rest) => Self::parse_segments(text, rest, limits),
                None => Err(UriError::invalid(text, "an absolute URI starts with \"./\" or is \".\"")),
            },
        }
    }

    /// Parses a URI relative to `base`: `a/b`, or an absolute one.
    pub fn parse_relative(base: &Uri, text: &str, limits: &UriLimits) -> Result<Self, UriError> {
        if text == "." || text.starts_with("./") {
            return Self::parse(text, limits);
        }
        if text.is_empty() {
            return Ok(base.clone());
        }
        let rel = Self::parse_segments(text, text, limits)?;
        base.join_uri(&rel, limits)
    }

    fn parse_segments(whole: &str, rest: &str, limits: &UriLimits) -> Result<Self, UriError> {
        let mut key = String::with_capacity(rest.len());
        let mut seg = String::new();
        let mut count = 0usize;
        let mut finish = |seg: &mut String, key: &mut String| {
            validate_segment(whole, seg, limits)?;
            count += 1;
            if count > limits.max_segments {
                return Err(UriError::too_long(whole, format!("more than {} segments", limits.max_segments)));
            }
            if !key.is_empty() {
                key.push(SEP);
            }
            key.push_str(seg);
            seg.clear();
            Ok(())
        };
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('/' | '\\')) => seg.push(e),
                    Some(e) => return Err(UriError::invalid(whole, format!("bad escape \"\\{e}\""))),
                    None => return Err(UriError::invalid(whole, "dangling \"\\\" at the end")),
                },
                '/' => finish(&mut seg, &mut key)?,
                c => seg.push(c),
            }
        }
        finish(&mut seg, &mut key)?;
        Ok(Self { key })
    }

    /// Builds a URI from trusted storage keys (NUL-joined names).
    pub fn from_key(key: impl Into<String>) -> Self {
        Self { key: key.into() }
    }

    /// The stored form: names joined by NUL.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn is_root(&self) -> bool {
        self.key.is_empty()
    }

    pub fn depth(&self) -> usize {
        if self.key.is_empty() { 0 } else { self.key.matches(SEP).count() + 1 }
    }

    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &str> + Clone {
        let s = if self.key.is_empty() { None } else { Some(self.key.as_str()) };
        s.into_iter().flat_map(|k| k.split(SEP))
    }

    /// The last segment, or `None` for the root.
    pub fn name(&self) -> Option<&str> {
        if self.key.is_empty() {
            return None;
        }
        Some(match self.key.rfind(SEP) {
            Some(i) => &self.key[i + 1..],
            None => &self.key,
        })
    }

    pub fn parent(&self) -> Option<Uri> {
        if self.key.is_empty() {
            return None;
        }
        Some(match self.key.rfind(SEP) {
            Some(i) => Self { key: self.key[..i].to_owned() },
            None => Self::root(),
        })
    }

    /// Appends one segment, validating it.
    pub fn child(&self, name: &str, limits: &UriLimits) -> Result<Uri, UriError> {
        let mut out = self.clone();
        validate_segment(name, name, limits)?;
        out.push_unchecked(name);
        out.check_limits(limits)?;
        Ok(out)
    }

    /// Appends a name a handler reported (already valid in its own tree).
    pub fn join_name(&self, name: &str) -> Uri {
        let mut out = self.clone();
        out.push_unchecked(name);
        out
    }

    /// Appends every segment of `rel`, which is already valid.
    pub fn join_uri(&self, rel: &Uri, limits: &UriLimits) -> Result<Uri, UriError> {
        let mut out = self.clone();
        for s in rel.segments() {
            out.push_unchecked(s);
        }
        out.check_limits(limits)?;
        Ok(out)
    }

    /// Joins without checking limits: for rewriting URIs that were valid on another tree.
    pub fn concat(&self, rel: &Uri) -> Uri {
        let mut out = self.clone();
        for s in rel.segments() {
            out.push_unchecked(s);
        }
        out
    }

    fn push_unchecked(&mut self, name: &str) {
        if !self.key.is_empty() {
            self.key.push(SEP);
        }
        self.key.push_str(name);
    }

    fn check_limits(&self, limits: &UriLimits) -> Result<(), UriError> {
        if self.depth() > limits.max_segments {
            return Err(UriError::too_long(&self.to_string(), format!("more than {} segments", limits.max_segments)));
        }
        let len = self.to_string().len();
        if len > limits.max_uri_bytes {
            return Err(UriError::too_long(&self.to_string(), format!("longer than {} bytes", limits.max_uri_bytes)));
        }
        Ok(())
    }

    /// True if `self` is `other` or one of its ancestors.
    pub fn is_prefix_of(&self, other: &Uri) -> bool {
        self.key.is_empty()
            || (other.key.starts_with(&self.key)
                && (other.key.len() == self.key.len() || other.key.as_bytes()[self.key.len()] == SEP as u8))
    }

    /// Two subtrees overlap when one contains the other.
    pub fn overlaps(&self, other: &Uri) -> bool {
        self.is_prefix_of(other) || other.is_prefix_of(self)
    }

    /// The part of `self` below `prefix`, as a relative URI.
    pub fn strip_prefix(&self, prefix: &Uri) -> Option<Uri> {
        if !prefix.is_prefix_of(self) {
            return None;
        }
        if prefix.key.is_empty() {
            return Some(self.clone());
        }
        let rest = &self.key[prefix.key.len()..];
        Some(Self { key: rest.strip_prefix(SEP).unwrap_or(rest).to_owned() })
    }

    /// The path without its first `n` segments, as a relative URI.
    pub fn skip(&self, n: usize) -> Uri {
        let rest = self.key.splitn(n + 1, SEP).nth(n).unwrap_or("");
        Self { key: if n == 0 { self.key.clone() } else { rest.to_owned() } }
    }

    /// Replaces the prefix `from` by `to` (for rename).
    pub fn rebase(&self, from: &Uri, to: &Uri) -> Option<Uri> {
        self.strip_prefix(from).map(|rel| to.concat(&rel))
    }

    /// The path under `/tree` in the REST API, each segment percent-encoded.
    pub fn to_http_path(&self) -> String {
        let mut out = String::from("/tree");
        for s in self.segments() {
            out.push('/');
            percent_encode_segment(s, &mut out);
        }
        out
    }

    /// Parses the part of an HTTP path after `/tree`: `""`, `"/"` or `"/a/b%2Fc"`.
    pub fn from_http_path(path: &str, limits: &UriLimits) -> Result<Self, UriError> {
        let trimmed = path.strip_prefix('/').unwrap_or(path);
        if trimmed.is_empty() {
            return Ok(Self::root());
        }
        // Errors name the URI as the tree spells it.
        let path = &format!("./{trimmed}");
        // Percent-encoding at most triples a byte; the exact limit applies to the decoded URI below.
        if path.len() > 3 * limits.max_uri_bytes {
            return Err(UriError::too_long(path, format!("longer than {} bytes", limits.max_uri_bytes)));
        }
        let mut key = String::with_capacity(trimmed.len());
        for (i, raw) in trimmed.split('/').enumerate() {
            if i >= limits.max_segments {
                return Err(UriError::too_long(path, format!("more than {} segments", limits.max_segments)));
            }
            let decoded;
            let seg = if raw.contains('%') {
                decoded = percent_decode(raw).ok_or_else(|| UriError::invalid(path, "bad percent-encoding"))?;
                decoded.as_str()
            } else {
                raw
            };
            validate_segment(path, seg, limits)?;
            if i > 0 {
                key.push(SEP);
            }
            key.push_str(seg);
        }
        // The same limit as for the URI's text form, so both spellings of a node are accepted alike.
        let uri = Self { key };
        if uri.to_string().len() > limits.max_uri_bytes {
            return Err(UriError::too_long(path, format!("longer than {} bytes", limits.max_uri_bytes)));
        }
        Ok(uri)
    }
}

fn validate_segment(whole: &str, seg: &str, limits: &UriLimits) -> Result<(), UriError> {
    if seg.is_empty() {
        return Err(UriError::invalid(whole, "empty segment"));
    }
    if seg == "." || seg == ".." {
        return Err(UriError::invalid(whole, format!("segment {seg:?} is not allowed")));
    }
    if seg.len() > limits.max_segment_bytes {
        return Err(UriError::too_long(whole, format!("a segment is longer than {} bytes", limits.max_segment_bytes)));
    }
    if seg.chars().any(char::is_control) {
        return Err(UriError::invalid(whole, "control characters are not allowed in names"));
    }
    Ok(())
}

/// Checks a single node name, as given in a request body.
pub fn validate_name(name: &str, limits: &UriLimits) -> Result<(), UriError> {
    validate_segment(name, name, limits)
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode_segment(seg: &str, out: &mut String) {
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl fmt::Display for Uri {
    /// The canonical escaped form: `.` or `./a/b\/c`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(".")?;
        for s in self.segments() {
            f.write_str("/")?;
            let mut rest = s;
            while let Some(i) = rest.find(['/', '\\']) {
                f.write_str(&rest[..i])?;
                f.write_str("\\")?;
                f.write_str(&rest[i..i + 1])?;
                rest = &rest[i + 1..];
            }
            f.write_str(rest)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uri({self})")
    }
}

impl Serialize for Uri {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Uri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Uri::parse(&s, &UriLimits::default()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<Uri, UriError> {
        Uri::parse(s, &UriLimits::default())
    }

    #[test]
    fn skip_drops_leading_segments() {
        let u = Uri::from_key("a\0b\0c");
        assert_eq!(u.skip(0), u);
        assert_eq!(u.skip(1), Uri::from_key("b\0c"));
        assert_eq!(u.skip(3), Uri::root());
        assert_eq!(u.skip(5), Uri::root());
    }

    #[test]
    fn parses_root_and_paths() {
        assert!(p(".").unwrap().is_root());
        let u = p("./a/b").unwrap();
        assert_eq!(u.segments().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(u.to_string(), "./a/b");
        assert_eq!(u.parent().unwrap().to_string(), "./a");
        assert_eq!(u.name(), Some("b"));
    }

    #[test]
    fn escapes_round_trip() {
        let u = p(r"./a\/b/c\\d").unwrap();
        assert_eq!(u.segments().collect::<Vec<_>>(), ["a/b", r"c\d"]);
        assert_eq!(u.to_string(), r"./a\/b/c\\d");
        assert_eq!(u.to_http_path(), "/tree/a%2Fb/c%5Cd");
        assert_eq!(Uri::from_http_path("/a%2Fb/c%5Cd", &UriLimits::default()).unwrap(), u);
    }

    #[test]
    fn rejects_bad_uris() {
        for bad in ["", "a", "/a", "./", "./a//b", "./a/", "./..", "./a/../b", "./a/.", r"./a\x", r"./a\", "./a\u{1}b"]
        {
            assert!(matches!(p(bad), Err(UriError::Invalid { .. })), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn enforces_limits() {
        let limits = UriLimits { max_segments: 2, max_segment_bytes: 3, max_uri_bytes: 20 };
        assert!(matches!(Uri::parse("./a/b/c", &limits), Err(UriError::TooLong { .. })));
        assert!(matches!(Uri::parse("./abcd", &limits), Err(UriError::TooLong { .. })));
        assert!(matches!(Uri::parse(&format!("./{}", "a/".repeat(20)), &limits), Err(UriError::TooLong { .. })));
        assert!(matches!(Uri::from_http_path("/a/b/c", &limits), Err(UriError::TooLong { .. })));
    }

    /// Found by fuzzing: a name of backslashes fit the limit as text but not
    /// as a percent-encoded HTTP path, so a node could be made and not addressed.
    #[test]
    fn both_spellings_share_one_limit() {
        let limits = UriLimits { max_segments: 8, max_segment_bytes: 64, max_uri_bytes: 24 };
        let uri = Uri::parse(&format!("./{}", r"\\".repeat(10)), &limits).unwrap();
        let http = uri.to_http_path();
        assert!(http.len() > 24);
        assert_eq!(Uri::from_http_path(&http["/tree".len()..], &limits).unwrap(), uri);
    }

    #[test]
    fn relative_resolution() {
        let l = UriLimits::default();
        let base = p("./config").unwrap();
        assert_eq!(Uri::parse_relative(&base, "x/y", &l).unwrap().to_string(), "./config/x/y");
        assert_eq!(Uri::parse_relative(&base, "./z", &l).unwrap().to_string(), "./z");
    }

    #[test]
    fn prefix_relations() {
        let a = p("./a").unwrap();
        let ab = p("./a/b").unwrap();
        let abc = p("./abc").unwrap();
        assert!(a.is_prefix_of(&ab));
        assert!(!a.is_prefix_of(&abc));
        assert!(Uri::root().is_prefix_of(&abc));
        assert_eq!(ab.strip_prefix(&a).unwrap().key(), "b");
        assert_eq!(ab.rebase(&a, &abc).unwrap().to_string(), "./abc/b");
        assert!(a.overlaps(&ab) && ab.overlaps(&a) && !ab.overlaps(&abc));
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_ /\\\\.é-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(segs in prop::collection::vec(segment(), 0..8)) {
            let l = UriLimits::default();
            let mut u = Uri::root();
            for s in &segs {
                u = u.child(s, &l).unwrap();
            }
            let text = u.to_string();
            prop_assert_eq!(&Uri::parse(&text, &l).unwrap(), &u);
            prop_assert_eq!(&Uri::from_http_path(u.to_http_path().trim_start_matches("/tree"), &l).unwrap(), &u);
            prop_assert_eq!(u.segments().map(str::to_owned).collect::<Vec<_>>(), segs);
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,64}") {
            let _ = p(&s);
            let _ = Uri::from_http_path(&s, &UriLimits::default());
        }
    }
}
