//! Signing keys held in an HSM, over PKCS#11: the private key never enters the process. The
//! token signs (ECDSA P-256 over a SHA-256 digest computed here, or RSASSA-PKCS1-v1_5 with
//! SHA-256), and the public key is read from the token's public object of the same label for the
//! JWKS. Each module is loaded and initialized once per process; each key keeps a few sessions
//! so signing runs in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde_json::json;

use super::SignError;
use crate::config::{Alg, PinSource, Pkcs11Key};

/// Sessions per key: signatures in flight at once.
const SESSIONS: usize = 4;
/// DER of the P-256 curve's OID (`CKA_EC_PARAMS`).
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// One HSM key, ready to sign.
pub(super) struct HsmSigner {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    key: ObjectHandle,
    alg: Alg,
    public: HsmPublic,
}

/// The public half, read from the token, for checking signatures of this key.
enum HsmPublic {
    /// The uncompressed P-256 point.
    Ec(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

/// The module at `path`, loaded and initialized once for the whole process (PKCS#11 allows one
/// `C_Initialize` per process and module).
fn module(path: &Path) -> Result<Pkcs11, String> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(module) = modules.get(path) {
        return Ok(module.clone());
    }
    let module = Pkcs11::new(path)
        .map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", path.display()))?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(format!(
                "the PKCS#11 module {} does not initialize: {e}",
                path.display()
            ));
        }
    }
    modules.insert(path.to_owned(), module.clone());
    Ok(module)
}

fn read_pin(source: &PinSource) -> Result<AuthPin, String> {
    let pin = match source {
        PinSource::File(file) => std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the PIN file {}: {e}", file.display()))?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        PinSource::Env(var) => {
            std::env::var(var).map_err(|_| format!("the PIN variable {var} is not set"))?
        }
    };
    Ok(AuthPin::new(pin.into()))
}

/// Loads the key `hsm` names for `alg`: logs in, finds the private and public objects, and
/// returns the signer with the public JWK (without `kid`, `use`, `alg`).
pub(super) fn load(alg: Alg, hsm: &Pkcs11Key) -> Result<(HsmSigner, serde_json::Value), String> {
    let module = module(&hsm.module)?;
    let pin = read_pin(&hsm.pin)?;
    let slot = module
        .get_slots_with_token()
        .map_err(|e| format!("cannot list the module's tokens: {e}"))?
        .into_iter()
        .find(|slot| {
            module
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == hsm.token)
        })
        .ok_or_else(|| format!("no token labelled {:?} in the PKCS#11 module", hsm.token))?;
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let session = module
            .open_ro_session(slot)
            .map_err(|e| format!("cannot open a session on token {:?}: {e}", hsm.token))?;
        sessions.push(session);
    }
    // A login is the application's, for every session on the token.
    match sessions[0].login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            return Err(format!("token {:?} refused the PIN (wrong PIN)", hsm.token));
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
            return Err(format!("token {:?}: the user PIN is locked", hsm.token));
        }
        Err(e) => return Err(format!("cannot log in to token {:?}: {e}", hsm.token)),
    }
    let session = &sessions[0];
    let label = hsm.key_label.as_bytes().to_vec();
    let find = |class: ObjectClass| -> Result<Option<ObjectHandle>, String> {
        let found = session
            .find_objects(&[Attribute::Class(class), Attribute::Label(label.clone())])
            .map_err(|e| format!("cannot search token {:?}: {e}", hsm.token))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            _ => Err(format!(
                "token {:?} holds several objects labelled {:?}",
                hsm.token, hsm.key_label
            )),
        }
    };
    let key = find(ObjectClass::PRIVATE_KEY)?.ok_or_else(|| {
        format!(
            "no private key labelled {:?} on token {:?}",
            hsm.key_label, hsm.token
        )
    })?;
    let public = find(ObjectClass::PUBLIC_KEY)?.ok_or_else(|| {
        format!(
            "no public key labelled {:?} on token {:?} (its public half is published)",
            hsm.key_label, hsm.token
        )
    })?;
    let attribute = |object: ObjectHandle, kind: AttributeType| -> Result<Attribute, String> {
        session
            .get_attributes(object, &[kind])
            .map_err(|e| format!("cannot read the key's attributes: {e}"))?
            .into_iter()
            .next()
            .ok_or_else(|| format!("the key has no {kind}"))
    };
    let key_type = match attribute(key, AttributeType::KeyType)? {
        Attribute::KeyType(t) => t,
        _ => return Err("unexpected key type attribute".into()),
    };
    let (jwk, public_key) = match alg {
        Alg::ES256 => {
            if key_type != KeyType::EC {
                return Err(format!(
                    "{:?} is not an EC key; alg is ES256",
                    hsm.key_label
                ));
            }
            match attribute(public, AttributeType::EcParams)? {
                Attribute::EcParams(params) if params == P256_PARAMS => {}
                _ => return Err(format!("{:?} is not a P-256 key", hsm.key_label)),
            }
            let point = match attribute(public, AttributeType::EcPoint)? {
                Attribute::EcPoint(point) => point,
                _ => return Err("unexpected EC point attribute".into()),
            };
            // A DER OCTET STRING around the uncompressed point 0x04 || x || y.
            let raw = match point.as_slice() {
                [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
                rest if rest.len() == 65 => rest,
                _ => return Err("unexpected P-256 public key encoding".into()),
            };
            if raw[0] != 0x04 {
                return Err("the P-256 public key is not uncompressed".into());
            }
            (
                json!({"kty": "EC", "crv": "P-256", "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65])}),
                HsmPublic::Ec(raw.to_vec()),
            )
        }
        Alg::RS256 => {
            if key_type != KeyType::RSA {
                return Err(format!(
                    "{:?} is not an RSA key; alg is RS256",
                    hsm.key_label
                ));
            }
            let n = match attribute(public, AttributeType::Modulus)? {
                Attribute::Modulus(n) => n,
                _ => return Err("unexpected modulus attribute".into()),
            };
            let e = match attribute(public, AttributeType::PublicExponent)? {
                Attribute::PublicExponent(e) => e,
                _ => return Err("unexpected exponent attribute".into()),
            };
            let n: Vec<u8> = n.into_iter().skip_while(|b| *b == 0).collect();
            if n.len() * 8 < super::MIN_RSA_BITS {
                return Err(format!(
                    "RSA key of {} bits; at least {} are required",
                    n.len() * 8,
                    super::MIN_RSA_BITS
                ));
            }
            let e: Vec<u8> = e.into_iter().skip_while(|b| *b == 0).collect();
            (
                json!({"kty": "RSA", "n": B64.encode(&n), "e": B64.encode(&e)}),
                HsmPublic::Rsa { n, e },
            )
        }
        Alg::EdDSA => return Err("an HSM key signs ES256 or RS256".into()),
    };
    let signer = HsmSigner {
        sessions: sessions.into_iter().map(Mutex::new).collect(),
        next: AtomicUsize::new(0),
        key,
        alg,
        public: public_key,
    };
    // One signature now, checked with the public half: a key that cannot sign, or whose public
    // object is another key's, is refused at start, not at the first login.
    let probe = b"latchkey: the key signs";
    let signature = signer.sign(probe).map_err(|_| {
        format!(
            "token {:?} does not sign with {:?}",
            hsm.token, hsm.key_label
        )
    })?;
    if !signer.verifies(probe, &signature) {
        return Err(format!(
            "the public key labelled {:?} does not match its private key",
            hsm.key_label
        ));
    }
    Ok((signer, jwk))
}

impl HsmSigner {
    /// Whether `signature` over `message` is this key's.
    pub(super) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
            UnparsedPublicKey,
        };
        match &self.public {
            HsmPublic::Ec(point) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                .verify(message, signature)
                .is_ok(),
            HsmPublic::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }

    /// The JWS signature of `message`: `r || s` for ES256, PKCS#1 v1.5 for RS256.
    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        let session = self.sessions[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match self.alg {
            Alg::ES256 => {
                let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
                let signature = session
                    .sign(&Mechanism::Ecdsa, self.key, digest.as_ref())
                    .map_err(|_| SignError)?;
                (signature.len() == 64)
                    .then_some(signature)
                    .ok_or(SignError)
            }
            Alg::RS256 => session
                .sign(&Mechanism::Sha256RsaPkcs, self.key, message)
                .map_err(|_| SignError),
            Alg::EdDSA => Err(SignError),
        }
    }
}

/// Generates a key pair inside the token `hsm` names (`keys generate-hsm`): a private key that
/// is sensitive and never extractable, and its public object under the same label. Refuses a
/// label already taken.
pub fn generate(alg: Alg, hsm: &Pkcs11Key, bits: u64) -> Result<(), String> {
    let module = module(&hsm.module)?;
    let pin = read_pin(&hsm.pin)?;
    let slot = module
        .get_slots_with_token()
        .map_err(|e| format!("cannot list the module's tokens: {e}"))?
        .into_iter()
        .find(|slot| {
            module
                .get_token_info(*slot)
                .is_ok_and(|info| info.label().trim_end() == hsm.token)
        })
        .ok_or_else(|| format!("no token labelled {:?} in the PKCS#11 module", hsm.token))?;
    let session = module
        .open_rw_session(slot)
        .map_err(|e| format!("cannot open a session on token {:?}: {e}", hsm.token))?;
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            return Err(format!("token {:?} refused the PIN (wrong PIN)", hsm.token));
        }
        Err(e) => return Err(format!("cannot log in to token {:?}: {e}", hsm.token)),
    }
    let label = hsm.key_label.as_bytes().to_vec();
    let taken = session
        .find_objects(&[Attribute::Label(label.clone())])
        .map_err(|e| format!("cannot search token {:?}: {e}", hsm.token))?;
    if !taken.is_empty() {
        return Err(format!(
            "token {:?} already holds an object labelled {:?}",
            hsm.token, hsm.key_label
        ));
    }
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.clone()),
    ];
    let (mechanism, public) = match alg {
        Alg::ES256 => (
            Mechanism::EccKeyPairGen,
            vec![
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                Attribute::Label(label),
            ],
        ),
        Alg::RS256 => (
            Mechanism::RsaPkcsKeyPairGen,
            vec![
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::ModulusBits(bits.into()),
                Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                Attribute::Label(label),
            ],
        ),
        Alg::EdDSA => return Err("an HSM key signs ES256 or RS256".into()),
    };
    session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| format!("token {:?} did not generate the key: {e}", hsm.token))?;
    Ok(())
}
