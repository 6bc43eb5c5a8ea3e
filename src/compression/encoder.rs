//! The compressing response body: wraps a body and encodes it as it streams, never holding more than
//! the frames that arrived since the last one it sent.
//!
//! The encoder is flushed whenever the wrapped body has nothing more to give right now (it returned
//! `Pending`), so a server-sent event or a long-poll answer reaches the client as soon as the
//! upstream sends it, compressed; while the body keeps coming (a file, a fast upstream) frames are
//! gathered into chunks of up to [`CHUNK`] bytes for a better ratio and fewer frames.
//!
//! The codecs are those of `compression-codecs` (the crate `async-compression` is built on): a push
//! interface (`encode`/`flush`/`finish` into a buffer) that fits `Body::poll_frame` directly, with no
//! `AsyncRead` adapter and no extra task in between.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use compression_codecs::core::util::{PartialBuffer, WriteBuffer};
use compression_codecs::core::Level;
use compression_codecs::EncodeV2;
use hyper::body::{Body, Frame, SizeHint};

use super::{Encoding, Levels};
use crate::response::ProxyBody;

/// How much compressed output is gathered before it is sent while the body keeps coming.
const CHUNK: usize = 32 * 1024;

/// Room added to the output buffer before each call into the codec.
const SPARE: usize = 16 * 1024;

/// The window of brotli and zstd, as a power of two: 512 KiB. Each response being compressed
/// holds its window in memory, so the codecs' defaults for large inputs (4 MiB for brotli, 2 MiB
/// and more for zstd) would cost a lot across many connections for little gain on web pages; it
/// also stays well inside the 8 MiB that RFC 9659 lets HTTP clients refuse zstd windows above.
const WINDOW_LOG: u32 = 19;

/// A codec of one of the [`Encoding`]s.
pub(super) fn codec(encoding: Encoding, levels: Levels) -> Box<dyn EncodeV2 + Send + Sync> {
    match encoding {
        Encoding::Gzip => Box::new(compression_codecs::GzipEncoder::new(
            Level::Precise(i32::from(levels.gzip)).into(),
        )),
        Encoding::Brotli => Box::new(compression_codecs::BrotliEncoder::new(
            compression_codecs::brotli::params::EncoderParams::default()
                .quality(Level::Precise(i32::from(levels.brotli)))
                .window_size(WINDOW_LOG as i32),
        )),
        Encoding::Zstd => Box::new(compression_codecs::ZstdEncoder::new_with_params(
            i32::from(levels.zstd),
            &[compression_codecs::zstd::params::CParameter::window_log(
                WINDOW_LOG,
            )],
        )),
    }
}

/// `inner`, encoded with `codec` as it streams.
pub(super) struct CompressedBody {
    inner: ProxyBody,
    codec: Box<dyn EncodeV2 + Send + Sync>,
    /// Compressed bytes not yet sent.
    output: Vec<u8>,
    /// Input has gone into the codec since it was last flushed.
    unflushed: bool,
    done: bool,
}

impl CompressedBody {
    pub(super) fn new(inner: ProxyBody, codec: Box<dyn EncodeV2 + Send + Sync>) -> Self {
        Self {
            inner,
            codec,
            output: Vec::new(),
            unflushed: false,
            done: false,
        }
    }

    /// Feeds `input` to the codec, appending what it writes to `output`.
    fn encode(&mut self, input: &[u8]) -> io::Result<()> {
        let mut input = PartialBuffer::new(input);
        while !input.unwritten().is_empty() {
            let consumed = input.written_len();
            let (written, _) = self.with_spare(|codec, output| {
                codec.encode(&mut input, output)?;
                Ok(false)
            })?;
            if written == 0 && input.written_len() == consumed {
                return Err(io::Error::other("the encoder made no progress"));
            }
        }
        Ok(())
    }

    /// Flushes (or, with `finish`, ends) the codec's stream into `output`.
    fn drain(&mut self, finish: bool) -> io::Result<()> {
        loop {
            let (written, complete) = self.with_spare(|codec, output| {
                if finish {
                    codec.finish(output)
                } else {
                    codec.flush(output)
                }
            })?;
            if complete {
                return Ok(());
            }
            if written == 0 {
                return Err(io::Error::other("the encoder made no progress"));
            }
        }
    }

    /// Runs `step` with [`SPARE`] bytes of room at the end of `output`; how much it wrote and
    /// what it returned.
    fn with_spare(
        &mut self,
        step: impl FnOnce(&mut dyn EncodeV2, &mut WriteBuffer<'_>) -> io::Result<bool>,
    ) -> io::Result<(usize, bool)> {
        let start = self.output.len();
        self.output.resize(start + SPARE, 0);
        let (written, result) = {
            let mut buffer = WriteBuffer::new_initialized(&mut self.output[start..]);
            let result = step(self.codec.as_mut(), &mut buffer);
            (buffer.written_len(), result)
        };
        self.output.truncate(start + written);
        result.map(|complete| (written, complete))
    }

    /// Ends the body with `error`: nothing more is sent.
    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.done = true;
        self.output = Vec::new();
        Poll::Ready(Some(Err(error)))
    }

    fn take_output(&mut self) -> Option<Frame<Bytes>> {
        if self.output.is_empty() {
            return None;
        }
        Some(Frame::data(Bytes::from(std::mem::take(&mut self.output))))
    }
}

impl Body for CompressedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.take_output().map(Ok));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers cannot follow a body whose encoding changed its framing; like nginx
                    // (which forwards none), they are dropped.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if let Err(error) = this.encode(&data) {
                        return this.fail(error);
                    }
                    this.unflushed = true;
                    if this.output.len() >= CHUNK {
                        if let Some(frame) = this.take_output() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                }
                Poll::Ready(Some(Err(error))) => return this.fail(error),
                Poll::Ready(None) => {
                    this.done = true;
                    if let Err(error) = this.drain(true) {
                        return this.fail(error);
                    }
                }
                Poll::Pending => {
                    // Nothing more for now: send what the codec holds, so nothing waits on the
                    // next frame (server-sent events, long polls).
                    if this.unflushed {
                        this.unflushed = false;
                        if let Err(error) = this.drain(false) {
                            return this.fail(error);
                        }
                    }
                    return match this.take_output() {
                        Some(frame) => Poll::Ready(Some(Ok(frame))),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.output.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
