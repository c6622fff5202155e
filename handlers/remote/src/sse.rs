//! A reader for Server-Sent Events streams (the event bridge, `dmtree watch`,
//! the tests), on the `eventsource-stream` parser: it buffers bytes, so a
//! character split across network chunks arrives whole, and it follows the
//! whole line grammar (CR, LF and CRLF endings, `retry:`).

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStream, Eventsource as _};
use futures::{Stream, StreamExt as _};

/// One dispatched event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseFrame {
    /// The event's own `id:`, if it carried one.
    pub id: Option<String>,
    /// The `event:` type; `None` for the default (`message`).
    pub event: Option<String>,
    pub data: String,
}

/// Turns a byte stream into frames.
pub struct SseReader<S> {
    events: EventStream<S>,
    last_id: String,
    retry: Option<Duration>,
}

impl<S, E> SseReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    pub fn new(bytes: S) -> Self {
        Self { events: bytes.eventsource(), last_id: String::new(), retry: None }
    }

    /// The reconnection delay the server asked for (`retry:`), if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The next frame; `None` when the stream ends or fails.
    pub async fn next(&mut self) -> Option<SseFrame> {
        let e = self.events.next().await?.ok()?;
        if e.retry.is_some() {
            self.retry = e.retry;
        }
        // The parser keeps the last id across events (as browsers do); a frame reports only its own.
        let id = (e.id != self.last_id).then(|| e.id.clone());
        self.last_id = e.id;
        Some(SseFrame { id, event: (e.event != "message").then_some(e.event), data: e.data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<Vec<u8>>) -> impl Stream<Item = Result<Bytes, ()>> + Unpin {
        futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))))
    }

    #[tokio::test]
    async fn reads_frames_across_chunks() {
        let mut reader = SseReader::new(chunks(vec![
            b": keep-alive\n\nid: 7\nevent: repl".to_vec(),
            b"aced\ndata: {\"a\":1}\n\n".to_vec(),
        ]));
        let f = reader.next().await.unwrap();
        assert_eq!((f.id.as_deref(), f.event.as_deref(), f.data.as_str()), (Some("7"), Some("replaced"), "{\"a\":1}"));
        assert!(reader.next().await.is_none());
    }

    /// The old reader decoded each chunk on its own and turned a split
    /// character into U+FFFD; cut the stream at every byte to prove it is gone.
    #[tokio::test]
    async fn multibyte_characters_survive_any_chunking() {
        let text = "é€😀".repeat(50);
        let body = format!("id: 1\ndata: {text}\n\n").into_bytes();
        for cut in 1..body.len() {
            let mut reader = SseReader::new(chunks(vec![body[..cut].to_vec(), body[cut..].to_vec()]));
            assert_eq!(reader.next().await.unwrap().data, text, "cut at byte {cut}");
        }
        let bytewise = chunks(body.iter().map(|b| vec![*b]).collect());
        assert_eq!(SseReader::new(bytewise).next().await.unwrap().data, text);
    }

    #[tokio::test]
    async fn lone_cr_line_endings_and_retry() {
        let mut reader =
            SseReader::new(chunks(vec![b"retry: 1500\rid: 3\revent: x\rdata: a\rdata: b\r\r: more\n".to_vec()]));
        let f = reader.next().await.unwrap();
        assert_eq!((f.id.as_deref(), f.event.as_deref(), f.data.as_str()), (Some("3"), Some("x"), "a\nb"));
        assert_eq!(reader.retry(), Some(Duration::from_millis(1500)));
    }
}
