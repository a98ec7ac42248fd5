//! Bearer tokens: `wlt_<id>_<secret>` with a 16-hex-digit public id (how the token is
//! listed, revoked and audited) and a 64-hex-digit secret (32 random bytes). Only
//! SHA-256(secret) is replicated; a presented token is checked by hashing its secret and
//! comparing in constant time.

use ring::rand::{SecureRandom, SystemRandom};

pub const TOKEN_PREFIX: &str = "wlt_";
pub const ID_HEX: usize = 16;
pub const SECRET_HEX: usize = 64;
/// Longest Authorization header value looked at; anything longer is not a Wardline token.
pub const MAX_HEADER_LEN: usize = 256;

/// A freshly created token: the text handed to the operator once, and what is stored.
pub struct NewToken {
    pub id: String,
    pub text: String,
    pub secret_sha256: [u8; 32],
}

/// A token as parsed from a request (secret still in clear, never stored).
#[derive(Debug, PartialEq, Eq)]
pub struct PresentedToken {
    pub id: String,
    pub secret: [u8; 32],
}

impl PresentedToken {
    pub fn secret_sha256(&self) -> [u8; 32] {
        sha256(&self.secret)
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equal without an early exit, so the time taken says nothing about where two digests differ.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Create a token from the system's secure random source.
pub fn generate() -> Result<NewToken, String> {
    let rng = SystemRandom::new();
    let mut id = [0u8; ID_HEX / 2];
    let mut secret = [0u8; SECRET_HEX / 2];
    rng.fill(&mut id).map_err(|_| "the system random source failed; cannot create a token".to_string())?;
    rng.fill(&mut secret).map_err(|_| "the system random source failed; cannot create a token".to_string())?;
    let id = hex::encode(id);
    Ok(NewToken { text: format!("{TOKEN_PREFIX}{id}_{}", hex::encode(secret)), id, secret_sha256: sha256(&secret) })
}

/// Parse the text of a token (as printed by `admin token create`).
pub fn parse_token(text: &str) -> Result<PresentedToken, String> {
    const SHAPE: &str = "a Wardline token looks like wlt_<16 hex digits>_<64 hex digits>";
    let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(|| format!("not a Wardline token: {SHAPE}"))?;
    let (id, secret) = rest.split_once('_').ok_or_else(|| format!("malformed token: {SHAPE}"))?;
    let is_lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if id.len() != ID_HEX || secret.len() != SECRET_HEX || !is_lower_hex(id) || !is_lower_hex(secret) {
        return Err(format!("malformed token: {SHAPE}"));
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(secret, &mut bytes).map_err(|_| format!("malformed token: {SHAPE}"))?;
    Ok(PresentedToken { id: id.to_string(), secret: bytes })
}

/// Parse an `Authorization` header value: `Bearer <token>` (scheme case-insensitive).
pub fn parse_authorization(value: &[u8]) -> Result<PresentedToken, String> {
    if value.len() > MAX_HEADER_LEN {
        return Err(format!("the Authorization header is longer than {MAX_HEADER_LEN} bytes"));
    }
    let text = std::str::from_utf8(value).map_err(|_| "the Authorization header is not text".to_string())?;
    let (scheme, rest) =
        text.trim().split_once(' ').ok_or_else(|| "the Authorization header must be `Bearer <token>`".to_string())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!("unsupported Authorization scheme {scheme:?}: use `Bearer <token>`"));
    }
    parse_token(rest.trim())
}

/// Token names (who or what uses it): `[A-Za-z0-9._-]{1,64}`, like sensor ids.
pub fn validate_name(name: &str) -> Result<(), String> {
    if !wardline_common::wire::is_valid_id(name) {
        return Err(format!(
            "invalid token name {name:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_token_parses_back_to_its_hash() {
        let t = generate().unwrap();
        let p = parse_authorization(format!("Bearer {}", t.text).as_bytes()).unwrap();
        assert_eq!(p.id, t.id);
        assert!(digests_equal(&p.secret_sha256(), &t.secret_sha256));
        let other = generate().unwrap();
        assert!(!digests_equal(&other.secret_sha256, &t.secret_sha256));
        assert!(parse_authorization(format!("bearer  {} ", t.text).as_bytes()).is_ok());
        assert!(parse_authorization(format!("Basic {}", t.text).as_bytes()).unwrap_err().contains("Basic"));
        assert!(parse_authorization(t.text.as_bytes()).is_err());
        assert!(parse_token(&t.text.to_uppercase()).is_err());
    }

    proptest! {
        /// Arbitrary header bytes never panic, and anything accepted has the exact shape.
        #[test]
        fn authorization_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(t) = parse_authorization(&bytes) {
                prop_assert_eq!(t.id.len(), ID_HEX);
            }
        }

        /// Near-miss texts built from token characters are parsed or refused, never panic.
        #[test]
        fn token_like_text(s in "(Bearer |bearer |Basic )?(wlt_)?[0-9a-fA-F_]{0,90}") {
            let _ = parse_authorization(s.as_bytes());
        }

        /// Every well-formed token round-trips.
        #[test]
        fn well_formed_round_trip(id in proptest::array::uniform8(any::<u8>()), secret in proptest::array::uniform32(any::<u8>())) {
            let text = format!("Bearer {TOKEN_PREFIX}{}_{}", hex::encode(id), hex::encode(secret));
            let p = parse_authorization(text.as_bytes()).unwrap();
            prop_assert_eq!(p.id, hex::encode(id));
            prop_assert_eq!(p.secret, secret);
        }
    }
}
