//! Base64url (RFC 4648 §5), as JWKs and instant-acme's stored credentials use it, with the `base64`
//! crate (well kept and fuzzed) instead of a hand-written codec; buffers are wiped when dropped, since
//! what passes through here is key material.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use zeroize::Zeroizing;

/// Base64url that writes no padding and reads it either way (certbot's JWKs have none; other tools
/// keep it), and that ignores stray bits in the last character as the codec it replaces did, so
/// files that imported before still import.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64url without padding (RFC 4648 §5), into a buffer wiped when dropped.
pub fn base64url_encode(bytes: &[u8]) -> Zeroizing<String> {
    // Reserved up front, so the buffer never grows and leaves an unwiped copy behind.
    let mut out = Zeroizing::new(String::with_capacity(bytes.len().div_ceil(3) * 4));
    BASE64URL.encode_string(bytes, &mut out);
    out
}

/// Decodes base64url, with or without padding; the standard alphabet's `+` and `/` are accepted too.
/// `None` for anything else.
pub fn base64url_decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    // The standard alphabet differs only in these two; mapped in a wiped copy.
    let text: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.trim()
            .bytes()
            .map(|c| match c {
                b'+' => b'-',
                b'/' => b'_',
                c => c,
            })
            .collect(),
    );
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 3 / 4 + 3));
    BASE64URL.decode_vec(&*text, &mut out).ok()?;
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
        assert_eq!(*base64url_decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(*base64url_decode("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert!(base64url_decode("a b").is_none());
    }
}
