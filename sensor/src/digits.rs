//! Decimal digits without `core::fmt`. These run per packet or per flow (port labels, SYN
//! signatures, flow lines), where the formatter's machinery cost more than the digits.

/// The decimal digits of `n`, written at the end of `buf` and returned as a str.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut k = buf.len();
    loop {
        k -= 1;
        buf[k] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[k..]).unwrap_or("0")
}

/// Append the decimal digits of `n` to `out`.
pub fn push_decimal(out: &mut String, n: u64) {
    out.push_str(decimal(n, &mut [0u8; 20]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_match_the_formatter() {
        for n in (0..2000u64).chain([9_999, 10_000, 65_535, u32::MAX as u64, u64::MAX - 1, u64::MAX]) {
            assert_eq!(decimal(n, &mut [0u8; 20]), n.to_string());
            let mut s = String::from("x");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
