//! The federation path of the request being served: the dmtree instances it
//! came through (the `Dmtree-Via` header). A remote handler forwards it one
//! hop longer; a server that finds itself on it refuses (a loop). It is
//! request metadata that handlers need but the tree does not, so it travels
//! as a task-local rather than through every signature.

use std::sync::Arc;

/// The header carrying the instances a request came through.
pub const VIA_HEADER: &str = "Dmtree-Via";
/// The header naming the instance that answers.
pub const INSTANCE_HEADER: &str = "Dmtree-Instance";
/// The header of an event stream giving the revision it starts after.
pub const REVISION_HEADER: &str = "Dmtree-Revision";

tokio::task_local! {
    static CURRENT: Via;
}

/// Instance ids, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Via(pub Vec<Arc<str>>);

impl Via {
    /// The path of the request being served (empty for local callers).
    pub fn current() -> Via {
        CURRENT.try_with(Clone::clone).unwrap_or_default()
    }

    /// Runs `f` with this path as the current one.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }

    pub fn contains(&self, instance: &str) -> bool {
        self.0.iter().any(|i| &**i == instance)
    }

    pub fn hops(&self) -> usize {
        self.0.len()
    }

    /// The header value: ids joined by commas.
    pub fn header(&self) -> String {
        self.0.iter().map(|i| &**i).collect::<Vec<_>>().join(",")
    }

    pub fn parse(header: &str) -> Via {
        Via(header.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Arc::from).collect())
    }

    /// This path with `instance` appended.
    pub fn then(&self, instance: &str) -> Via {
        let mut next = self.0.clone();
        next.push(instance.into());
        Via(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scoped_and_parsed() {
        assert_eq!(Via::current(), Via::default());
        let via = Via::parse("a, b,,c");
        assert_eq!(via.header(), "a,b,c");
        assert!(via.contains("b") && !via.contains("d"));
        let seen = via.clone().scope(async { Via::current() }).await;
        assert_eq!(seen.then("d").hops(), 4);
    }
}
