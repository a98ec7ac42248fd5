//! Decimal digits without `core::fmt`. These run per packet or per flow (port labels, SYN
//! signatures, flow lines), where the formatter's machinery cost more than the digits.

/// The decimal digits of `n` as ASCII bytes, written at the end of `buf`.
pub fn decimal_bytes(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut k = buf.len();
    loop {
        k -= 1;
        buf[k] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[k..]
}

/// Append the decimal digits of `n` to `out`.
pub fn push_decimal(out: &mut String, n: u64) {
    // Char pushes of known ASCII: no UTF-8 check of the digits (per flow and per SYN).
    let mut buf = [0u8; 20];
    let digits = decimal_bytes(n, &mut buf);
    out.reserve(digits.len());
    for &d in digits {
        out.push(d as char);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_match_the_formatter() {
        for n in (0..2000u64).chain([9_999, 10_000, 65_535, u32::MAX as u64, u64::MAX - 1, u64::MAX]) {
            assert_eq!(decimal_bytes(n, &mut [0u8; 20]), n.to_string().as_bytes());
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
