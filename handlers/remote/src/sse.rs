//! A reader for Server-Sent Events streams: the event bridge, `dmtree watch`, tests.

use bytes::Bytes;
use futures::{Stream, StreamExt as _};

/// One dispatched event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseFrame {
    /// Feeds one line; returns the finished frame at a blank line.
    fn feed(&mut self, line: &str) -> Option<SseFrame> {
        if line.is_empty() {
            return (!self.data.is_empty()).then(|| std::mem::take(self));
        }
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            _ => {}
        }
        None
    }
}

/// Turns a byte stream into frames.
pub struct SseReader<S> {
    bytes: S,
    buf: String,
    frame: SseFrame,
}

impl<S, E> SseReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    pub fn new(bytes: S) -> Self {
        Self { bytes, buf: String::new(), frame: SseFrame::default() }
    }

    /// The next frame; `None` when the stream ends or fails.
    pub async fn next(&mut self) -> Option<SseFrame> {
        loop {
            while let Some(nl) = self.buf.find('\n') {
                let line = self.buf[..nl].trim_end_matches('\r').to_owned();
                self.buf.drain(..=nl);
                if let Some(done) = self.frame.feed(&line) {
                    return Some(done);
                }
            }
            let chunk = self.bytes.next().await?.ok()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_frames_across_chunks() {
        let chunks: Vec<Result<Bytes, ()>> = vec![
            Ok(Bytes::from_static(b": keep-alive\n\nid: 7\nevent: repl")),
            Ok(Bytes::from_static(b"aced\ndata: {\"a\":1}\n\n")),
        ];
        let mut reader = SseReader::new(futures::stream::iter(chunks));
        let f = reader.next().await.unwrap();
        assert_eq!((f.id.as_deref(), f.event.as_deref(), f.data.as_str()), (Some("7"), Some("replaced"), "{\"a\":1}"));
        assert!(reader.next().await.is_none());
    }
}
