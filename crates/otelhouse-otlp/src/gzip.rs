use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::PayloadError;

/// Decompresses a gzip body, refusing it as soon as the output passes `max`
/// bytes: a gzip bomb costs us at most `max + 1` bytes of memory and the CPU
/// to produce them, never the whole expansion.
pub fn gunzip_limited(data: &[u8], max: usize) -> Result<Vec<u8>, PayloadError> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max));
    let mut decoder = MultiGzDecoder::new(data).take(max as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| PayloadError::malformed(format!("invalid gzip body: {e}")))?;
    if out.len() > max {
        return Err(PayloadError::too_large(format!(
            "decompressed body exceeds the limit of {max} bytes (max_decompressed_bytes)"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn round_trips_within_limit() {
        assert_eq!(gunzip_limited(&gz(b"hello"), 5).unwrap(), b"hello");
    }

    #[test]
    fn bomb_is_refused_at_the_limit() {
        let bomb = gz(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 100_000);
        let err = gunzip_limited(&bomb, 1 << 20).unwrap_err();
        assert_eq!(err.kind, crate::error::PayloadErrorKind::TooLarge);
    }

    #[test]
    fn garbage_is_malformed() {
        let err = gunzip_limited(b"not gzip", 100).unwrap_err();
        assert_eq!(err.kind, crate::error::PayloadErrorKind::Malformed);
    }
}
