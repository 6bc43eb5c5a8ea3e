//! Base64url (RFC 4648 §5), as JWKs and instant-acme's stored credentials use it. Hand-written because
//! it is small and certd has no base64 dependency; buffers are wiped when dropped, since what passes
//! through here is key material.

use zeroize::Zeroizing;

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 4648 §5), into a buffer wiped when dropped.
pub fn base64url_encode(bytes: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(3) * 4));
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for i in 0..=chunk.len() {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(BASE64URL[index as usize]));
        }
    }
    out
}

/// Decodes base64url, with or without padding; the standard alphabet's `+` and `/` are accepted too.
/// `None` for anything else.
pub fn base64url_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let text = text.trim().trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 3 / 4 + 1));
    let (mut acc, mut bits) = (0_u32, 0_u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn base64url_round_trips_every_length() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
            let encoded = base64url_encode(&bytes);
            assert!(!encoded.contains(['=', '+', '/']), "{}", *encoded);
            assert_eq!(*base64url_decode(&encoded).unwrap(), bytes);
        }
        assert_eq!(*base64url_decode("AQAB").unwrap(), vec![1, 0, 1]);
        assert_eq!(*base64url_decode("YQ==").unwrap(), b"a".to_vec());
        assert!(base64url_decode("A").is_none());
        assert!(base64url_decode("a b").is_none());
    }
}
