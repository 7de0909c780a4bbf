//! Encrypted PKCS#8 (`ENCRYPTED PRIVATE KEY`, RFC 5958 / RFC 8018 PBES2) with PBKDF2 and
//! AES-CBC: what `openssl genpkey -aes-256-cbc` and `openssl pkcs8 -topk8 -v2 …` write.
//!
//! Only the few DER shapes of that structure are read; anything else is refused with a reason.

use std::num::NonZeroU32;

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::pbkdf2;

const PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const SCRYPT: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x04, 0x0b];
const HMAC_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02];
const AES_CBC_PREFIX: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01];
/// Far above any sane setting; a bigger count in a file is refused rather than run for hours.
const MAX_ITERATIONS: u32 = 10_000_000;

const SEQUENCE: u8 = 0x30;
const OCTET_STRING: u8 = 0x04;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;

/// A cursor over DER bytes.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// Reads one element with `tag` and returns its contents.
    fn read(&mut self, tag: u8) -> Result<&'a [u8], String> {
        let bad = || "malformed encrypted key structure".to_string();
        let (&t, rest) = self.0.split_first().ok_or_else(bad)?;
        if t != tag {
            return Err(bad());
        }
        let (&first, rest) = rest.split_first().ok_or_else(bad)?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 3 || rest.len() < n {
                return Err(bad());
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return Err(bad());
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(content)
    }

    fn read_u32(&mut self) -> Result<u32, String> {
        let bytes = self.read(INTEGER)?;
        if bytes.is_empty() || bytes.len() > 5 || bytes[0] & 0x80 != 0 {
            return Err("unsupported integer in encrypted key".into());
        }
        let v = bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        u32::try_from(v).map_err(|_| "integer out of range in encrypted key".into())
    }
}

/// Decrypts an `EncryptedPrivateKeyInfo` (DER) into the inner PKCS#8 `PrivateKeyInfo` (DER).
pub fn decrypt_pkcs8(der: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, String> {
    let mut outer = Der(Der(der).read(SEQUENCE)?);
    let mut algorithm = Der(outer.read(SEQUENCE)?);
    let ciphertext = outer.read(OCTET_STRING)?;
    if algorithm.read(OID)? != PBES2 {
        return Err(
            "only PBES2 encryption is supported (openssl pkcs8 -topk8 -v2 aes-256-cbc)".into(),
        );
    }
    let mut params = Der(algorithm.read(SEQUENCE)?);
    let mut kdf = Der(params.read(SEQUENCE)?);
    let mut scheme = Der(params.read(SEQUENCE)?);

    match kdf.read(OID)? {
        oid if oid == PBKDF2 => {}
        oid if oid == SCRYPT => {
            return Err("scrypt-encrypted keys are not supported; use PBKDF2".into());
        }
        _ => return Err("unsupported key-derivation function".into()),
    }
    let mut kdf_params = Der(kdf.read(SEQUENCE)?);
    let salt = kdf_params.read(OCTET_STRING)?;
    let iterations = kdf_params.read_u32()?;
    if iterations > MAX_ITERATIONS {
        return Err(format!("PBKDF2 iteration count {iterations} is too large"));
    }
    let iterations = NonZeroU32::new(iterations).ok_or("PBKDF2 iteration count is zero")?;
    let declared_len = match kdf_params.peek() {
        Some(INTEGER) => Some(kdf_params.read_u32()?),
        _ => None,
    };
    // RFC 8018: the PRF defaults to HMAC-SHA1 when absent.
    let prf = match kdf_params.peek() {
        Some(SEQUENCE) => {
            let mut prf = Der(kdf_params.read(SEQUENCE)?);
            match prf.read(OID)?.strip_prefix(HMAC_PREFIX) {
                Some([0x07]) => pbkdf2::PBKDF2_HMAC_SHA1,
                Some([0x09]) => pbkdf2::PBKDF2_HMAC_SHA256,
                Some([0x0a]) => pbkdf2::PBKDF2_HMAC_SHA384,
                Some([0x0b]) => pbkdf2::PBKDF2_HMAC_SHA512,
                _ => return Err("unsupported PBKDF2 pseudo-random function".into()),
            }
        }
        _ => pbkdf2::PBKDF2_HMAC_SHA1,
    };

    let (cipher, key_len) = match scheme.read(OID)?.strip_prefix(AES_CBC_PREFIX) {
        Some([0x02]) => (&AES_128, 16),
        Some([0x16]) => (&AES_192, 24),
        Some([0x2a]) => (&AES_256, 32),
        _ => return Err("unsupported cipher; use AES-128/192/256-CBC".into()),
    };
    if declared_len.is_some_and(|l| l as usize != key_len) {
        return Err("declared key length does not match the cipher".into());
    }
    let iv: [u8; 16] = scheme
        .read(OCTET_STRING)?
        .try_into()
        .map_err(|_| "AES-CBC needs a 16-byte IV".to_string())?;

    let mut key = vec![0u8; key_len];
    pbkdf2::derive(prf, iterations, salt, passphrase, &mut key);
    let key = UnboundCipherKey::new(cipher, &key).map_err(|_| "cannot build the cipher key")?;
    let decrypting =
        PaddedBlockDecryptingKey::cbc_pkcs7(key).map_err(|_| "cannot build the cipher")?;
    let mut data = ciphertext.to_vec();
    let plain = decrypting
        .decrypt(&mut data, DecryptionContext::Iv128(FixedLength::from(iv)))
        .map_err(|_| "wrong passphrase or corrupt key".to_string())?;
    Ok(plain.to_vec())
}
