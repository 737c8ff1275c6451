//! A blocking reader over any `std::io::Read`, built on [`Decoder`].

use std::io::Read;

use super::decoder::{Decoder, DecoderOptions, Item};
use super::error::{Result, StreamError};

/// Largest single read; bigger items are read in several steps.
const CHUNK: usize = 1 << 20;

/// Reads items from a byte source.  It reads only what the current item
/// needs, so the source is left positioned right after the stream.
#[derive(Debug)]
pub struct StreamReader<R> {
    inner: R,
    dec: Decoder,
    scratch: Vec<u8>,
}

impl<R: Read> StreamReader<R> {
    pub fn new(inner: R, opts: DecoderOptions) -> Self {
        StreamReader {
            inner,
            dec: Decoder::new(opts),
            scratch: Vec::new(),
        }
    }

    /// The next item, or `None` after the stream's final END.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some(item) = self.dec.next_item()? {
                return Ok(Some(item));
            }
            if self.dec.is_done() {
                return Ok(None);
            }
            let want = self.dec.needed().clamp(1, CHUNK);
            self.scratch.clear();
            let got = (&mut self.inner)
                .take(want as u64)
                .read_to_end(&mut self.scratch)?;
            if got == 0 {
                // Reports the truncation with the decoder's context.
                self.dec.finish()?;
                return Err(StreamError::Truncated {
                    what: "stream",
                    needed: want,
                });
            }
            self.dec.feed(&self.scratch);
        }
    }

    /// The reader's and decoder's buffers (megabytes after a page batch),
    /// taken out so that they can be freed off a latency-critical path;
    /// for use after the stream's end.
    pub fn take_buffers(&mut self) -> [Vec<u8>; 2] {
        [std::mem::take(&mut self.scratch), self.dec.take_buffer()]
    }

    pub fn decoder(&self) -> &Decoder {
        &self.dec
    }

    /// The underlying source, positioned after the last item read.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Iterator for StreamReader<R> {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

/// Read a whole stream from `r`.
pub fn read_stream<R: Read>(r: R, opts: DecoderOptions) -> Result<Vec<Item>> {
    StreamReader::new(r, opts).collect()
}

/// Decode a complete stream held in memory; trailing bytes are an error.
pub fn decode_bytes(bytes: &[u8], opts: DecoderOptions) -> Result<Vec<Item>> {
    let mut dec = Decoder::new(opts);
    dec.feed(bytes);
    let mut items = Vec::new();
    while let Some(item) = dec.next_item()? {
        items.push(item);
    }
    dec.finish()?;
    Ok(items)
}
