//! The JSON string scanner shared by the payload reader and the usage-line reader.

/// The position of the next `"`, `\\` or control character at or after `at` (or the end), eight
/// bytes at a time: the classic bit trick flags bytes equal to (or below) a value, and the lowest
/// flag is always exact. Every JSON string scan of the hot path stops here.
#[must_use]
pub fn next_special(b: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    while let Some(chunk) = b.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let flags =
            below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1) | below(x, 0x20);
        if flags != 0 {
            return at + (flags.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while b.get(at).is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20) {
        at += 1;
    }
    at
}
