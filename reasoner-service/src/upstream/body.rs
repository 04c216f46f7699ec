//! The zero-copy request body: a few shared chunks sent back to back with an exact
//! `Content-Length`, so the turn's image bytes go on the wire without being copied into the
//! JSON, and every retry re-sends the same buffers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// A request body as a few shared chunks. Cloning it (once per attempt) clones reference
/// counts, not bytes.
#[derive(Debug, Clone)]
pub struct RequestBody {
    /// In wire order; consumed from the front as the body is sent.
    chunks: VecDeque<Bytes>,
    remaining: u64,
}

impl RequestBody {
    pub(super) fn new<const N: usize>(chunks: [Bytes; N]) -> Self {
        let chunks: VecDeque<Bytes> = chunks
            .into_iter()
            .filter(|chunk| !chunk.is_empty())
            .collect();
        let remaining = chunks.iter().map(|chunk| chunk.len() as u64).sum();
        Self { chunks, remaining }
    }

    pub fn len(&self) -> usize {
        self.remaining as usize
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// The chunks in wire order; a test checks the image's are the turn's own buffers.
    pub fn chunks(&self) -> impl ExactSizeIterator<Item = &Bytes> {
        self.chunks.iter()
    }

    /// The whole body in one buffer (a copy; for tests and logs, not the send path).
    pub fn to_vec(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter().copied())
            .collect()
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.chunks.pop_front().map(|chunk| {
            self.remaining -= chunk.len() as u64;
            Ok(Frame::data(chunk))
        });
        Poll::Ready(next)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
