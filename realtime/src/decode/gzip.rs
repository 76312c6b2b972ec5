//! Inflating gzip with caps: the compressed size is checked before, the inflated size while inflating.

use std::io::Read;

use super::{DecodeError, MAX_COMPRESSED_BYTES, MAX_INFLATED_BYTES};

/// Inflates gzip (one or more members), stopping as soon as the output passes the cap.
///
/// What CloudWatch Logs sends, one member whose trailer states its size, is inflated whole by
/// libdeflate (about 1.4 times as fast as streaming inflation, and inflation is the largest single
/// cost of a delivery); anything else, and every error, goes through the streaming decoder.
pub fn gunzip(compressed: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if compressed.len() > MAX_COMPRESSED_BYTES {
        return Err(DecodeError::CompressedTooLarge { size: compressed.len() });
    }
    match whole::single_member(compressed) {
        Some(inflated) => Ok(inflated),
        None => gunzip_streaming(compressed),
    }
}

pub(super) fn gunzip_streaming(compressed: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut inflated = Vec::with_capacity(compressed.len().saturating_mul(8).min(MAX_INFLATED_BYTES));
    let limit = u64::try_from(MAX_INFLATED_BYTES).unwrap_or(u64::MAX) + 1;
    flate2::read::MultiGzDecoder::new(compressed)
        .take(limit)
        .read_to_end(&mut inflated)
        .map_err(DecodeError::Gzip)?;
    if inflated.len() > MAX_INFLATED_BYTES {
        return Err(DecodeError::InflatedTooLarge);
    }
    Ok(inflated)
}

/// Inflation of a whole single-member gzip buffer into a buffer of the size its trailer states.
pub(super) mod whole {
    #![allow(unsafe_code)]

    use super::super::MAX_INFLATED_BYTES;

    /// The inflated bytes when `compressed` is exactly one valid gzip member of at most
    /// [`MAX_INFLATED_BYTES`]; `None` for anything else, which the streaming decoder then judges.
    /// libdeflate checks the member's CRC-32 and size, so the bytes are the streaming decoder's.
    pub(in crate::decode) fn single_member(compressed: &[u8]) -> Option<Vec<u8>> {
        // RFC 1952 requires an error for a header with reserved flag bits set; libdeflate ignores
        // them, so such a member is left to the streaming decoder, which refuses it.
        if compressed.get(3).is_none_or(|flags| flags & 0xE0 != 0) {
            return None;
        }
        let trailer = compressed.len().checked_sub(4).and_then(|at| compressed.get(at..))?;
        let stated = usize::try_from(u32::from_le_bytes(trailer.try_into().ok()?)).ok()?;
        if stated > MAX_INFLATED_BYTES {
            return None;
        }
        // Not zeroed first: libdeflate only writes to the output, from its start.
        let mut inflated = Vec::<u8>::with_capacity(stated);
        let decompressor = Decompressor::new()?;
        let (mut read, mut written) = (0usize, 0usize);
        // SAFETY: the decompressor is live; the input and output pointers and lengths come from
        // buffers that outlive the call, and libdeflate writes at most `stated` bytes.
        let result = unsafe {
            libdeflate_sys::libdeflate_gzip_decompress_ex(
                decompressor.0,
                compressed.as_ptr().cast(),
                compressed.len(),
                inflated.spare_capacity_mut().as_mut_ptr().cast(),
                stated,
                &raw mut read,
                &raw mut written,
            )
        };
        // Trailing bytes (a second member, or garbage) are the streaming decoder's to judge.
        if result != libdeflate_sys::libdeflate_result_LIBDEFLATE_SUCCESS
            || read != compressed.len()
            || written != stated
        {
            return None;
        }
        // SAFETY: on success libdeflate has written `written` (≤ capacity) bytes from the start.
        unsafe { inflated.set_len(written) };
        Some(inflated)
    }

    /// An owned libdeflate decompressor (about 10 KB; one per call keeps this free of shared state).
    struct Decompressor(*mut libdeflate_sys::libdeflate_decompressor);

    impl Decompressor {
        fn new() -> Option<Self> {
            // SAFETY: no preconditions; a null result (out of memory) is handled.
            let raw = unsafe { libdeflate_sys::libdeflate_alloc_decompressor() };
            (!raw.is_null()).then_some(Self(raw))
        }
    }

    impl Drop for Decompressor {
        fn drop(&mut self) {
            // SAFETY: allocated by `libdeflate_alloc_decompressor` and freed only here.
            unsafe { libdeflate_sys::libdeflate_free_decompressor(self.0) }
        }
    }
}
