//! [`VerifyingReader`]: hashes what passes through and fails at the end when the bytes are not
//! the ones the digest names, so a corrupted or truncated blob never reads as a good one.

use std::io::{self, Read};

use crate::digest::{Digest, Hasher};

/// Why a stream was refused; carried inside the `io::Error` (kind `InvalidData`) that
/// [`VerifyingReader::read`] returns. Get it back with [`VerifyError::of`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("blob {expected} has digest {actual}: its content is not what was asked for")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("blob {digest} is larger than its {size} bytes")]
    TooLong { digest: Digest, size: u64 },
    #[error("blob {digest} ended after {got} of its {size} bytes")]
    TooShort { digest: Digest, size: u64, got: u64 },
}

impl VerifyError {
    /// The verification failure inside an `io::Error` from a [`VerifyingReader`] (possibly
    /// passed on by a decompressor or `io::copy`), if that is what it is.
    pub fn of(err: &io::Error) -> Option<&VerifyError> {
        err.get_ref()?.downcast_ref::<VerifyError>()
    }
}

/// Wraps a blob's bytes: passes them on unchanged while hashing them, and at end of stream
/// returns an error instead of `Ok(0)` when the digest (or the announced size) does not match.
/// Reading on after the end keeps returning the verdict.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    expected: Digest,
    size: Option<u64>,
    hasher: Option<Hasher>,
    read: u64,
    verdict: Option<Result<(), VerifyError>>,
}

impl<R: Read> VerifyingReader<R> {
    /// Verifies the whole blob `expected` as read from `inner`.
    pub fn new(inner: R, expected: Digest) -> VerifyingReader<R> {
        let hasher = expected.verifier();
        VerifyingReader::continuing(inner, expected, hasher, 0)
    }

    /// Resumes a verification: `hasher` has already seen the first `already` bytes (e.g. a
    /// partial download re-hashed from disk), `inner` yields the rest.
    pub fn continuing(
        inner: R,
        expected: Digest,
        hasher: Hasher,
        already: u64,
    ) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            expected,
            size: None,
            hasher: Some(hasher),
            read: already,
            verdict: None,
        }
    }

    /// Also checks the length: more than `size` bytes fail at once, fewer at the end.
    pub fn with_size(mut self, size: u64) -> VerifyingReader<R> {
        self.size = Some(size);
        self
    }

    /// Bytes of the blob seen so far (including those a resumed hasher had seen).
    pub fn position(&self) -> u64 {
        self.read
    }

    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn finish(&mut self) -> Result<(), VerifyError> {
        if let Some(size) = self.size {
            if self.read < size {
                return Err(VerifyError::TooShort {
                    digest: self.expected.clone(),
                    size,
                    got: self.read,
                });
            }
        }
        let actual = match self.hasher.take() {
            Some(h) => h.finish(),
            None => return Ok(()),
        };
        if actual == self.expected {
            Ok(())
        } else {
            Err(VerifyError::Mismatch {
                expected: self.expected.clone(),
                actual,
            })
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(verdict) = &self.verdict {
            return match verdict {
                Ok(()) => Ok(0),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())),
            };
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            let verdict = self.finish();
            self.verdict = Some(verdict.clone());
            return verdict
                .map(|()| 0)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
        self.read += n as u64;
        if let Some(size) = self.size {
            if self.read > size {
                let e = VerifyError::TooLong {
                    digest: self.expected.clone(),
                    size,
                };
                self.verdict = Some(Err(e.clone()));
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn passes_good_bytes_and_names_the_digest_of_bad_ones() {
        let blob = b"hello blob";
        let d = Digest::sha256_of(blob);
        let mut out = Vec::new();
        VerifyingReader::new(&blob[..], d.clone())
            .with_size(10)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, blob);

        let err = VerifyingReader::new(&b"hello blub"[..], d.clone())
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&d.to_string()), "{err}");
        assert!(matches!(
            VerifyError::of(&err),
            Some(VerifyError::Mismatch { .. })
        ));

        let err = VerifyingReader::new(&blob[..5], d.clone())
            .with_size(10)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            VerifyError::of(&err),
            Some(VerifyError::TooShort { got: 5, .. })
        ));
        let err = VerifyingReader::new(&b"hello blob!"[..], d.clone())
            .with_size(10)
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert!(matches!(
            VerifyError::of(&err),
            Some(VerifyError::TooLong { .. })
        ));
    }

    #[test]
    fn resumes_from_a_hashed_prefix() {
        let blob = b"0123456789";
        let d = Digest::sha256_of(blob);
        let mut h = d.verifier();
        h.update(&blob[..4]);
        let mut r = VerifyingReader::continuing(&blob[4..], d, h, 4).with_size(10);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert_eq!((rest.as_slice(), r.position()), (&blob[4..], 10));
        // The verdict sticks.
        assert_eq!(r.read(&mut [0; 4]).unwrap(), 0);
    }
}
