//! URI patterns for subscriptions: `*` matches one segment, a final `**`
//! matches a whole subtree (the node itself included).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::uri::{Uri, UriError, UriLimits};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternSegment {
    Literal(String),
    /// `*`: exactly one segment.
    Any,
    /// `**`: zero or more segments; always last.
    Subtree,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UriPattern {
    segments: Vec<PatternSegment>,
}

impl UriPattern {
    pub fn parse(text: &str, limits: &UriLimits) -> Result<Self, UriError> {
        // Wildcards are parsed as ordinary names, then recognised.
        let uri = Uri::parse(text, limits)?;
        let count = uri.depth();
        let mut segments = Vec::with_capacity(count);
        for (i, seg) in uri.segments().enumerate() {
            segments.push(match seg {
                "*" => PatternSegment::Any,
                "**" if i + 1 == count => PatternSegment::Subtree,
                "**" => {
                    return Err(UriError::Invalid {
                        uri: text.to_owned(),
                        reason: "\"**\" may only be the last segment".into(),
                    });
                }
                s => PatternSegment::Literal(s.to_owned()),
            });
        }
        Ok(Self { segments })
    }

    pub fn segments(&self) -> &[PatternSegment] {
        &self.segments
    }

    pub fn matches(&self, uri: &Uri) -> bool {
        let mut segs = uri.segments();
        for p in &self.segments {
            match p {
                PatternSegment::Subtree => return true,
                PatternSegment::Any => {
                    if segs.next().is_none() {
                        return false;
                    }
                }
                PatternSegment::Literal(l) => {
                    if segs.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        segs.next().is_none()
    }

    /// Whether `uri` is a match or an ancestor of one: so its ACL governs
    /// some node the pattern matches.
    pub fn reaches(&self, uri: &Uri) -> bool {
        let mut pattern = self.segments.iter();
        for seg in uri.segments() {
            match pattern.next() {
                Some(PatternSegment::Subtree) => return true,
                Some(PatternSegment::Any) => {}
                Some(PatternSegment::Literal(l)) if l == seg => {}
                _ => return false,
            }
        }
        true
    }

    /// The same pattern relative to `base`, if `base` is a literal prefix of it.
    pub fn strip_base(&self, base: &Uri) -> Option<UriPattern> {
        let mut rest = self.segments.iter();
        for seg in base.segments() {
            match rest.next() {
                Some(PatternSegment::Literal(l)) if l == seg => {}
                _ => return None,
            }
        }
        Some(UriPattern { segments: rest.cloned().collect() })
    }

    /// Whether some URI at or below `prefix` can match: a subscription that
    /// may see events from a subtree (lazy handlers poll only while one exists).
    pub fn reaches_into(&self, prefix: &Uri) -> bool {
        let mut segs = prefix.segments();
        for p in &self.segments {
            let Some(seg) = segs.next() else { return true };
            match p {
                PatternSegment::Subtree => return true,
                PatternSegment::Any => {}
                PatternSegment::Literal(l) if l == seg => {}
                PatternSegment::Literal(_) => return false,
            }
        }
        segs.next().is_none()
    }

    /// The longest wildcard-free prefix: every match lies under it.
    pub fn base(&self) -> Uri {
        let lits: Vec<&str> = self
            .segments
            .iter()
            .map_while(|s| match s {
                PatternSegment::Literal(l) => Some(l.as_str()),
                _ => None,
            })
            .collect();
        Uri::from_key(lits.join("\0"))
    }
}

impl fmt::Display for UriPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(".")?;
        for s in &self.segments {
            match s {
                PatternSegment::Any => f.write_str("/*")?,
                PatternSegment::Subtree => f.write_str("/**")?,
                PatternSegment::Literal(l) => {
                    let one = Uri::from_key(l.clone()).to_string();
                    f.write_str(&one[1..])?;
                }
            }
        }
        Ok(())
    }
}

impl Serialize for UriPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UriPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        UriPattern::parse(&String::deserialize(d)?, &UriLimits::default()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> UriPattern {
        UriPattern::parse(s, &UriLimits::default()).unwrap()
    }
    fn uri(s: &str) -> Uri {
        Uri::parse(s, &UriLimits::default()).unwrap()
    }

    #[test]
    fn reaching() {
        let p = pat("./config/*/*/cpu");
        for yes in ["./config", "./config/priv", "./config/priv/vm9", "./config/priv/vm9/cpu"] {
            assert!(p.reaches(&uri(yes)), "{yes}");
        }
        for no in ["./other", "./config/priv/vm9/mem", "./config/priv/vm9/cpu/deeper"] {
            assert!(!p.reaches(&uri(no)), "{no}");
        }
        assert!(pat("./a/**").reaches(&uri("./a/b/c/d")));
    }

    #[test]
    fn matching() {
        assert!(pat("./config/**").matches(&uri("./config")));
        assert!(pat("./config/**").matches(&uri("./config/a/b")));
        assert!(!pat("./config/**").matches(&uri("./configx")));
        assert!(pat("./a/*/c").matches(&uri("./a/b/c")));
        assert!(!pat("./a/*/c").matches(&uri("./a/c")));
        assert!(!pat("./a/*").matches(&uri("./a/b/c")));
        assert!(pat("./**").matches(&Uri::root()));
        assert!(pat(".").matches(&Uri::root()) && !pat(".").matches(&uri("./a")));
    }

    #[test]
    fn reaching_into_a_subtree() {
        let sub = uri("./infra/host");
        assert!(pat("./infra/host/cpu/*").reaches_into(&sub));
        assert!(pat("./infra/**").reaches_into(&sub));
        assert!(pat("./*/host").reaches_into(&sub));
        assert!(pat("./**").reaches_into(&sub));
        assert!(!pat("./infra").reaches_into(&sub));
        assert!(!pat("./infra/other/**").reaches_into(&sub));
        assert!(!pat("./config/**").reaches_into(&sub));
    }

    #[test]
    fn parse_and_display() {
        assert!(UriPattern::parse("./a/**/b", &UriLimits::default()).is_err());
        assert_eq!(pat(r"./a\/b/*/**").to_string(), r"./a\/b/*/**");
        assert_eq!(pat("./a/b/*/c").base(), uri("./a/b"));
        assert_eq!(pat("./a/b/*").strip_base(&uri("./a")).unwrap(), pat("./b/*"));
        assert!(pat("./a/*").strip_base(&uri("./a/b")).is_none());
    }
}
