//! [`BlobStream`]: a blob read straight off the connection, from an offset, and reopened with
//! a `Range` request where a connection broke.

use std::io::{self, Read};

use ureq::http::Method;

use crate::digest::Digest;
use crate::reference::Reference;

use super::challenge::Scope;
use super::client::RegistryClient;
use super::error::{Op, RegistryError};
use super::retry::backoff;
use super::transport::{Call, Endpoint, expect_success, header};

/// A blob being downloaded. `Read` yields its bytes from [`BlobStream::start`] on; an error
/// the client could not cure comes as an `io::Error` wrapping the [`RegistryError`].
pub struct BlobStream {
    client: RegistryClient,
    ep: Endpoint,
    digest: Digest,
    body: Option<ureq::BodyReader<'static>>,
    start: u64,
    /// Absolute offset of the next byte.
    pos: u64,
    size: Option<u64>,
    reopens: u32,
}

impl std::fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStream")
            .field("endpoint", &self.ep)
            .field("digest", &self.digest)
            .field("start", &self.start)
            .field("pos", &self.pos)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl BlobStream {
    pub(crate) fn open(
        client: RegistryClient,
        ep: Endpoint,
        digest: Digest,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        let (body, start, size) = request(&client, &ep, &digest, offset)?;
        Ok(BlobStream {
            client,
            ep,
            digest,
            body: Some(body),
            start,
            pos: start,
            size,
            reopens: 0,
        })
    }

    /// Where the bytes begin: the offset asked for when the registry honoured the range
    /// (206), 0 when it sent the whole blob (200). A caller resuming a partial download must
    /// start over when this is 0.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The whole blob's size, when the registry said (`Content-Length` of a 200, the total of
    /// a 206's `Content-Range`).
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// The registry or mirror serving it.
    pub fn source(&self) -> &str {
        &self.ep.key
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// How many times a broken connection was reopened.
    pub fn reopened(&self) -> u32 {
        self.reopens
    }

    pub(crate) fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    /// After a broken connection: asks again from `self.pos`. A registry that now ignores the
    /// range gets its first `pos` bytes skipped, so the reader sees one seamless stream.
    fn reopen(&mut self) -> Result<(), RegistryError> {
        self.body = None;
        let (mut body, start, size) = request(&self.client, &self.ep, &self.digest, self.pos)?;
        if start < self.pos {
            let skip = self.pos - start;
            let skipped = io::copy(&mut (&mut body).take(skip), &mut io::sink()).map_err(|e| {
                RegistryError::Read {
                    registry: self.ep.key.clone(),
                    repository: self.ep.repository.clone(),
                    op: Op::Blob(self.digest.clone()),
                    source: Box::new(ureq::Error::Io(e)),
                }
            })?;
            if skipped < skip {
                return Err(RegistryError::Protocol {
                    registry: self.ep.key.clone(),
                    repository: self.ep.repository.clone(),
                    op: Op::Blob(self.digest.clone()),
                    what: "the blob got shorter between two requests",
                });
            }
        }
        if self.size.is_none() {
            self.size = size;
        }
        self.body = Some(body);
        Ok(())
    }
}

impl Read for BlobStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(0);
            };
            match body.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                // The body is raw bytes off the connection (no decoding), so any error is the
                // connection's: worth reopening.
                Err(e) => {
                    let options = &self.client.transport().options;
                    if self.reopens >= options.retries {
                        return Err(e);
                    }
                    std::thread::sleep(backoff(options.retry_delay, self.reopens));
                    self.reopens += 1;
                    self.reopen().map_err(io::Error::other)?;
                }
            }
        }
    }
}

/// `GET /v2/<repo>/blobs/<digest>` from `offset`: (body, where it starts, the blob's size).
fn request(
    client: &RegistryClient,
    ep: &Endpoint,
    digest: &Digest,
    offset: u64,
) -> Result<(ureq::BodyReader<'static>, u64, Option<u64>), RegistryError> {
    let t = client.transport();
    let op = Op::Blob(digest.clone());
    let scopes = [Scope::pull(&ep.repository).to_string()];
    let target = format!("/v2/{}/blobs/{digest}", ep.repository);
    let mut call = Call::new(Method::GET, target.clone());
    if offset > 0 {
        call = call.header("Range", format!("bytes={offset}-"));
    }
    let mut resp = t.send(ep, &op, &scopes, call)?;
    if offset > 0 && resp.status().as_u16() == 416 {
        // Range not satisfiable: the offset is past the end (a stale partial file of another
        // size). Start over.
        resp = t.send(ep, &op, &scopes, Call::new(Method::GET, target))?;
    }
    let resp = expect_success(t, ep, &op, resp)?;
    let length = header(&resp, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let (start, size) = if resp.status().as_u16() == 206 {
        // `Content-Range: bytes 6-15/16`
        let range = header(&resp, "content-range").and_then(parse_content_range);
        match range {
            Some((first, total)) if first == offset => (offset, total),
            _ => {
                return Err(RegistryError::Protocol {
                    registry: ep.key.clone(),
                    repository: ep.repository.clone(),
                    op,
                    what: "the partial answer does not start where asked",
                });
            }
        }
    } else {
        (0, length)
    };
    Ok((resp.into_body().into_reader(), start, size))
}

/// `bytes <first>-<last>/<total|*>` → (first, total).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((first.parse().ok()?, total))
}

impl RegistryClient {
    /// Opens the blob `digest` of `reference`'s repository for reading from byte `offset`
    /// (`Range: bytes=offset-`), trying the mirrors first. Whether the registry honoured the
    /// range is in [`BlobStream::start`]: it is `offset`, or 0 when the registry sent the
    /// whole blob. The bytes are not verified here: wrap them in a [`VerifyingReader`] (or use
    /// [`RegistryClient::blob_bytes`] for small blobs).
    ///
    /// The stream is never whole in memory, and a connection lost midway is reopened from
    /// where it broke (up to `options.retries` times), invisibly to the reader.
    pub fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, RegistryError> {
        self.pull(reference, |ep| {
            BlobStream::open(self.clone(), ep.clone(), digest.clone(), offset)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_content_ranges() {
        assert_eq!(parse_content_range("bytes 6-15/16"), Some((6, Some(16))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
