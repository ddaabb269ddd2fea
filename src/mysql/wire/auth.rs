//! Authentication plugins: `mysql_native_password` (MariaDB, old MySQL),
//! `caching_sha2_password` (MySQL 8.0+ default, the only password plugin in MySQL 9.x) and
//! `sha256_password` (older accounts, and the server's stand-in for accounts that do not exist).

use rsa::pkcs8::DecodePublicKey;
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub const NATIVE: &str = "mysql_native_password";
pub const CACHING_SHA2: &str = "caching_sha2_password";
/// The older RSA/TLS plugin. MySQL also switches to it for accounts that do not exist, so that
/// a login attempt cannot tell a missing account from a wrong password.
pub const SHA256: &str = "sha256_password";
/// What a sha256_password client sends to ask for the server's RSA public key.
pub const SHA256_REQUEST_PUBLIC_KEY: u8 = 0x01;

/// caching_sha2_password's one-byte replies inside an "auth more data" packet.
pub const SHA2_FAST_AUTH_OK: u8 = 0x03;
pub const SHA2_FULL_AUTH_NEEDED: u8 = 0x04;
/// What the client sends to ask for the server's RSA public key.
pub const SHA2_REQUEST_PUBLIC_KEY: u8 = 0x02;

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw))).
pub fn native_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha1::digest(password);
    let h2 = Sha1::digest(h1);
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(h2);
    xor(&h1, &h.finalize())
}

/// SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce).
pub fn sha2_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let h1 = Sha256::digest(password);
    let h2 = Sha256::digest(h1);
    let mut h = Sha256::new();
    h.update(h2);
    h.update(nonce);
    xor(&h1, &h.finalize())
}

/// The server side of [`sha2_scramble`]: checks a client's fast-auth answer against the
/// password we know. Used by myvault's own replication source during replay.
pub fn sha2_scramble_matches(password: &[u8], nonce: &[u8], answer: &[u8]) -> bool {
    let expected = sha2_scramble(password, nonce);
    expected.len() == answer.len()
        && expected
            .iter()
            .zip(answer)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Encrypts `password\0 XOR nonce` with the server's RSA key (OAEP, SHA-1), for full
/// caching_sha2 authentication on a connection without TLS.
pub fn sha2_rsa_encrypt(
    password: &[u8],
    nonce: &[u8],
    public_key_pem: &[u8],
) -> Result<Vec<u8>, String> {
    if nonce.is_empty() {
        return Err("empty authentication nonce".into());
    }
    let pem = std::str::from_utf8(public_key_pem)
        .map_err(|_| "the server's public key is not PEM text".to_string())?;
    let key = rsa::RsaPublicKey::from_public_key_pem(pem.trim_end_matches('\0'))
        .or_else(|_| {
            use rsa::pkcs1::DecodeRsaPublicKey;
            rsa::RsaPublicKey::from_pkcs1_pem(pem.trim_end_matches('\0'))
        })
        .map_err(|e| format!("cannot read the server's RSA public key: {e}"))?;
    let mut plain = password.to_vec();
    plain.push(0);
    for (i, b) in plain.iter_mut().enumerate() {
        *b ^= nonce[i % nonce.len()];
    }
    let padding = rsa::Oaep::new::<Sha1>();
    key.encrypt(&mut rsa::rand_core::OsRng, padding, &plain)
        .map_err(|e| format!("RSA encryption of the password failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_password_sends_empty_scramble() {
        assert!(native_scramble(b"", b"12345678901234567890").is_empty());
        assert!(sha2_scramble(b"", b"12345678901234567890").is_empty());
    }

    #[test]
    fn sha2_scramble_checks_out_on_the_server_side() {
        let nonce = b"abcdefghijklmnopqrst";
        let answer = sha2_scramble(b"secret", nonce);
        assert_eq!(answer.len(), 32);
        assert!(sha2_scramble_matches(b"secret", nonce, &answer));
        assert!(!sha2_scramble_matches(b"Secret", nonce, &answer));
    }

    #[test]
    fn native_scramble_known_vector() {
        // Computed with MySQL's own algorithm for password "root" and a fixed nonce.
        let nonce: Vec<u8> = (1..=20).collect();
        let s = native_scramble(b"root", &nonce);
        assert_eq!(s.len(), 20);
        let h1 = Sha1::digest(b"root");
        let h2 = Sha1::digest(h1);
        let mut h = Sha1::new();
        h.update(&nonce);
        h.update(h2);
        let mask = h.finalize();
        let back: Vec<u8> = s.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect();
        assert_eq!(back, h1.to_vec());
    }

    #[test]
    fn rsa_rejects_garbage_key_without_panicking() {
        assert!(sha2_rsa_encrypt(b"pw", b"nonce", b"not a key").is_err());
        assert!(sha2_rsa_encrypt(b"pw", b"", b"").is_err());
    }
}
