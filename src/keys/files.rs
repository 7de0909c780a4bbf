//! Private-key files: PKCS#8 PEM in and out, generation, and the 0600 file mode.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::config::Alg;

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot write: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },
    #[error("key generation failed")]
    Generate,
}

/// Generates a new private key as PKCS#8 DER: P-256 for ES256, RSA of `rsa_bits` for RS256.
pub fn generate(alg: Alg, rsa_bits: usize) -> Result<Vec<u8>, KeyFileError> {
    match alg {
        Alg::ES256 => {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(|_| KeyFileError::Generate)?;
            let doc = pair.to_pkcs8v1().map_err(|_| KeyFileError::Generate)?;
            Ok(doc.as_ref().to_vec())
        }
        Alg::RS256 => {
            let size = match rsa_bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                _ => return Err(KeyFileError::Generate),
            };
            let pair = RsaKeyPair::generate(size).map_err(|_| KeyFileError::Generate)?;
            let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair)
                .map_err(|_| KeyFileError::Generate)?;
            Ok(der.as_ref().to_vec())
        }
        Alg::EdDSA => {
            let pair = Ed25519KeyPair::generate().map_err(|_| KeyFileError::Generate)?;
            // v1, as `openssl genpkey -algorithm ED25519` writes it.
            let doc = pair.to_pkcs8v1().map_err(|_| KeyFileError::Generate)?;
            Ok(doc.as_ref().to_vec())
        }
    }
}

/// Writes `der` as a `PRIVATE KEY` PEM file readable by its owner only. Never overwrites.
pub fn write_private_pem(path: &Path, der: &[u8]) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    file.write_all(pem_encode("PRIVATE KEY", der).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(err)
}

/// Reads a PKCS#8 private key from a PEM file and returns its DER bytes. An encrypted key
/// (`ENCRYPTED PRIVATE KEY`) needs `passphrase`.
pub fn read_private_der(path: &Path, passphrase: Option<&[u8]>) -> Result<Vec<u8>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let format = |reason: &str| KeyFileError::Format {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let label = pem_label(&text).ok_or_else(|| format("not a PEM file"))?;
    let body =
        || pem_decode(&text, label).ok_or_else(|| format("the PEM body is not valid base64"));
    match label {
        "PRIVATE KEY" => {}
        "ENCRYPTED PRIVATE KEY" => {
            let passphrase = passphrase.ok_or_else(|| {
                format("the key is encrypted: name the variable holding its passphrase with passphrase_env")
            })?;
            return super::encrypted::decrypt_pkcs8(&body()?, passphrase).map_err(|e| format(&e));
        }
        "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
            return Err(format(
                "legacy key format; convert with `openssl pkcs8 -topk8 -nocrypt -in OLD -out NEW`",
            ));
        }
        _ => return Err(format("expected a PKCS#8 \"PRIVATE KEY\" PEM block")),
    }
    body()
}

fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let len = text[start..].find("-----")?;
    Some(&text[start..start + len])
}

fn pem_decode(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body_start = text.find(&begin)? + begin.len();
    let body_len = text[body_start..].find(&end)?;
    let body: String = text[body_start..body_start + body_len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    STANDARD.decode(body).ok()
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        let der = generate(Alg::ES256, 0).unwrap();
        write_private_pem(&path, &der).unwrap();
        assert_eq!(read_private_der(&path, None).unwrap(), der);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never overwrites an existing key.
        assert!(write_private_pem(&path, &der).is_err());
    }

    #[test]
    fn legacy_and_encrypted_pem_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, pem_encode("EC PRIVATE KEY", b"x")).unwrap();
        let err = read_private_der(&path, None).unwrap_err().to_string();
        assert!(err.contains("openssl pkcs8"), "{err}");
        std::fs::write(&path, pem_encode("ENCRYPTED PRIVATE KEY", b"x")).unwrap();
        let err = read_private_der(&path, None).unwrap_err().to_string();
        assert!(err.contains("passphrase_env"), "{err}");
        assert!(read_private_der(&path, Some(b"pw")).is_err());
    }
}
