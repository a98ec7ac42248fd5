//! Small text helpers shared by the discovery dissectors: turning untrusted bytes into
//! bounded, printable strings without panicking.

/// Longest string any dissector keeps from one field; longer values are cut (on a char
/// boundary) so a hostile packet cannot make evidence values grow without bound.
pub const MAX_VALUE_CHARS: usize = 1024;

/// Bytes as text: valid UTF-8 kept, everything else replaced, control characters
/// escaped as `\xNN`, trailing NULs and whitespace dropped, length bounded.
pub fn display(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(s.len().min(MAX_VALUE_CHARS));
    for (n, c) in s.trim_end_matches(['\0', ' ', '\t', '\r', '\n']).chars().enumerate() {
        if n >= MAX_VALUE_CHARS {
            break;
        }
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32 & 0xff));
        } else {
            out.push(c);
        }
    }
    out
}

/// Lower-case hex of bytes, bounded to [`MAX_VALUE_CHARS`] characters.
pub fn hex_bounded(bytes: &[u8]) -> String {
    let take = bytes.len().min(MAX_VALUE_CHARS / 2);
    hex::encode(&bytes[..take])
}

/// Read a big-endian u16 at `off`, or None when the slice is too short.
pub fn be16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// Read a big-endian u32 at `off`, or None when the slice is too short.
pub fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
