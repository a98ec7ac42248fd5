//! Minimal BER reader for SNMP: definite lengths only (SNMP forbids indefinite ones),
//! single- and multi-byte tags, every read bounds-checked. Errors are plain strings the
//! caller wraps into a [`DissectError`](super::DissectError).

/// One TLV: its identifier octet (class/constructed/number for low tags), the tag number,
/// and its contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub ident: u8,
    pub tag: u32,
    pub body: &'a [u8],
}

/// Sequential reader over a buffer of TLVs.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

pub const INTEGER: u8 = 0x02;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const SEQUENCE: u8 = 0x30;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn read(&mut self) -> Result<Tlv<'a>, String> {
        let start = self.pos;
        let ident = *self.buf.get(self.pos).ok_or_else(|| format!("no tag at offset {start}"))?;
        self.pos += 1;
        let mut tag = (ident & 0x1f) as u32;
        if tag == 0x1f {
            tag = 0;
            for i in 0.. {
                if i >= 4 {
                    return Err(format!("tag at offset {start} longer than 4 bytes"));
                }
                let b = *self.buf.get(self.pos).ok_or_else(|| format!("tag at offset {start} cut short"))?;
                self.pos += 1;
                tag = (tag << 7) | (b & 0x7f) as u32;
                if b & 0x80 == 0 {
                    break;
                }
            }
        }
        let l0 = *self.buf.get(self.pos).ok_or_else(|| format!("no length at offset {}", self.pos))?;
        self.pos += 1;
        let len = if l0 < 0x80 {
            l0 as usize
        } else {
            let n = (l0 & 0x7f) as usize;
            if n == 0 || n > 4 {
                return Err(format!("unsupported length form 0x{l0:02x} at offset {}", self.pos - 1));
            }
            let bytes = self
                .buf
                .get(self.pos..self.pos + n)
                .ok_or_else(|| format!("length at offset {} cut short", self.pos))?;
            self.pos += n;
            bytes.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize)
        };
        let end = self.pos.checked_add(len).ok_or("length overflows")?;
        let body = self.buf.get(self.pos..end).ok_or_else(|| {
            format!("element at offset {start} says {len} bytes, only {} remain", self.buf.len() - self.pos)
        })?;
        self.pos = end;
        Ok(Tlv { ident, tag, body })
    }

    /// Read an element and require its identifier octet.
    pub fn expect(&mut self, ident: u8, what: &str) -> Result<Tlv<'a>, String> {
        let t = self.read()?;
        if t.ident != ident {
            return Err(format!("{what}: expected tag 0x{ident:02x}, found 0x{:02x}", t.ident));
        }
        Ok(t)
    }
}

/// Two's-complement INTEGER contents as i64 (longer values are rejected).
pub fn integer(body: &[u8]) -> Result<i64, String> {
    if body.is_empty() || body.len() > 8 {
        return Err(format!("INTEGER of {} bytes", body.len()));
    }
    let mut v: i64 = if body[0] & 0x80 != 0 { -1 } else { 0 };
    for &b in body {
        v = (v << 8) | b as i64;
    }
    Ok(v)
}

/// OBJECT IDENTIFIER contents in dotted form.
pub fn oid(body: &[u8]) -> Result<String, String> {
    if body.is_empty() {
        return Err("empty OID".into());
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    let mut in_arc = false;
    for &b in body {
        if v > (u64::MAX >> 7) {
            return Err("OID arc overflows 64 bits".into());
        }
        v = (v << 7) | (b & 0x7f) as u64;
        in_arc = b & 0x80 != 0;
        if !in_arc {
            if arcs.is_empty() {
                let (first, second) = if v < 40 {
                    (0, v)
                } else if v < 80 {
                    (1, v - 40)
                } else {
                    (2, v - 80)
                };
                arcs.push(first);
                arcs.push(second);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    if in_arc {
        return Err("OID ends inside an arc".into());
    }
    Ok(arcs.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_and_integer() {
        assert_eq!(oid(&[0x2b, 6, 1, 2, 1, 1, 1, 0]).unwrap(), "1.3.6.1.2.1.1.1.0");
        assert_eq!(oid(&[0x2b, 6, 1, 4, 1, 0x82, 0x37]).unwrap(), "1.3.6.1.4.1.311");
        assert!(oid(&[0x2b, 0x82]).is_err());
        assert_eq!(integer(&[0xff]).unwrap(), -1);
        assert_eq!(integer(&[0x01, 0x00]).unwrap(), 256);
        let mut r = Reader::new(&[0x30, 0x82, 0x00, 0x01, 0x05]);
        assert_eq!(r.read().unwrap().body, &[0x05]);
        assert!(Reader::new(&[0x30, 0x05, 0x00]).read().is_err());
    }
}
