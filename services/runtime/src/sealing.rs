//! Sealing of short secrets — sign-in codes and the SMS bodies that carry them — so they can travel
//! through long-lived streams without ever resting there in clear text.
//!
//! ChaCha20-Poly1305 (RFC 8439, RustCrypto, pure Rust) with a random 96-bit nonce per seal and a keyring
//! for rotation: new secrets are sealed with the *current* key, and every key still in the ring opens
//! what it sealed. Rotate by adding a new key, making it current everywhere, and removing the old one once
//! nothing sealed with it can still be in flight (sign-in codes live minutes; the AUTH stream keeps an
//! hour).
//!
//! The associated data binds a sealed value to its [`Purpose`] and to the id of the key that sealed it, so
//! a sealed sign-in code cannot be replayed as another phone's code or as an SMS body, and relabelling the
//! key id breaks authentication instead of trying another key.
//!
//! Who holds the keys: the API (seals sign-in codes), the notifier (opens codes, seals SMS bodies) and the
//! dispatcher (opens SMS bodies just before the provider call). Each reads the same [`SealingKeys`] from
//! its own config section (`api.sealing_keys`, `notifier.sealing_keys`, `dispatcher.sealing_keys`):
//!
//! ```toml
//! [notifier.sealing_keys]
//! current = "k2"
//! [notifier.sealing_keys.keys]
//! k1 = "base64 of 32 random bytes"   # still opens codes sealed before the rotation
//! k2 = "base64 of 32 random bytes"
//! ```
//!
//! or `COINALARM_NOTIFIER__SEALING_KEYS__CURRENT=k2`, `COINALARM_NOTIFIER__SEALING_KEYS__KEYS__K2=…`
//! (environment keys arrive lower-cased, so use lower-case key ids). [`generate_key`] makes a new key.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use proto_events::DispatchId;
use proto_events::domain::{Base64Text, KeyId, PhoneHash, PhoneNumber, SealedSecret};
use serde::Deserialize;

pub use zeroize::Zeroizing;

/// Bytes of a ChaCha20-Poly1305 key.
pub const KEY_LENGTH: usize = 32;
/// Bytes of a ChaCha20-Poly1305 nonce.
pub const NONCE_LENGTH: usize = 12;

/// Separates CoinAlarm's associated data from any other use of the same keys, and versions its layout.
const ASSOCIATED_DATA_DOMAIN: &str = "coinalarm.sealed.v1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no sealing keys are configured: set `sealing_keys.current` and that key under `sealing_keys.keys`"
    )]
    NoKeys,
    #[error("the current sealing key {key_id:?} is not among the configured keys")]
    CurrentKeyMissing { key_id: String },
    #[error(
        "{key_id:?} is not a valid sealing key id: expected 1 to 64 ASCII letters, digits, '_' or '-'"
    )]
    InvalidKeyId { key_id: String },
    #[error("sealing key {key_id:?} is not standard base64 of exactly 32 bytes")]
    InvalidKey { key_id: String },
    #[error(
        "sealed with key {key_id:?}, which this keyring does not hold (not rotated in yet, or already retired)"
    )]
    UnknownKey { key_id: String },
    #[error("the sealed secret's nonce is not 12 bytes")]
    MalformedNonce,
    #[error(
        "the sealed secret does not open: tampered with, sealed for another purpose, or with another key of the same id"
    )]
    Unauthentic,
    #[error("the system's random generator failed")]
    Random,
    #[error("the secret is too long to seal")]
    TooLong,
}

/// What a sealed value is for; it becomes the associated data, so opening with any other purpose fails.
#[derive(Debug, Clone, Copy)]
pub enum Purpose<'a> {
    /// The one-time code of a sign-in request (`SignInCodeRequested.sealed_code`): sealed by the API,
    /// opened by the notifier.
    SignInCode {
        phone_hash: &'a PhoneHash,
        request_id: &'a uuid::Uuid,
    },
    /// The text of an SMS (`DispatchRequested.body` when sealed): sealed by the notifier, opened by the
    /// dispatcher just before the provider call.
    MessageBody {
        dispatch_id: &'a DispatchId,
        destination: &'a PhoneNumber,
    },
}

impl Purpose<'_> {
    fn associated_data(&self, key_id: &KeyId) -> Vec<u8> {
        // Every field has an alphabet without '\n', so the layout is unambiguous.
        let text = match self {
            Purpose::SignInCode {
                phone_hash,
                request_id,
            } => format!(
                "{ASSOCIATED_DATA_DOMAIN}\nsign-in-code\n{phone_hash}\n{request_id}\n{key_id}"
            ),
            Purpose::MessageBody {
                dispatch_id,
                destination,
            } => format!(
                "{ASSOCIATED_DATA_DOMAIN}\nmessage-body\n{dispatch_id}\n{destination}\n{key_id}"
            ),
        };
        text.into_bytes()
    }
}

/// The keys from config: which one seals, and every one that may open. `Debug` never shows key material.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealingKeys {
    /// Id of the key new secrets are sealed with.
    pub current: String,
    /// Every key that may open a sealed secret, by id: standard base64 of 32 random bytes.
    pub keys: BTreeMap<String, String>,
}

impl SealingKeys {
    pub fn is_configured(&self) -> bool {
        !self.current.is_empty() && !self.keys.is_empty()
    }
}

impl fmt::Debug for SealingKeys {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SealingKeys")
            .field("current", &self.current)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A keyring that seals with its current key and opens with any of its keys.
#[derive(Clone)]
pub struct Sealer {
    current: KeyId,
    ciphers: BTreeMap<KeyId, ChaCha20Poly1305>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Sealer")
            .field("current", &self.current)
            .field("key_ids", &self.ciphers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A keyring from `(key id, base64 key)` pairs; `current_id` must be one of them.
    pub fn from_keys<I, K, V>(current_id: &str, keys: I) -> Result<Sealer, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut ciphers = BTreeMap::new();
        for (key_id, key_text) in keys {
            let key_id = key_id.as_ref();
            let parsed_id = KeyId::parse(key_id).map_err(|_| Error::InvalidKeyId {
                key_id: key_id.to_owned(),
            })?;
            let invalid_key = || Error::InvalidKey {
                key_id: key_id.to_owned(),
            };
            let key_bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(key_text.as_ref().trim())
                    .map_err(|_| invalid_key())?,
            );
            if key_bytes.len() != KEY_LENGTH {
                return Err(invalid_key());
            }
            let cipher = ChaCha20Poly1305::new_from_slice(&key_bytes).map_err(|_| invalid_key())?;
            ciphers.insert(parsed_id, cipher);
        }
        if current_id.is_empty() || ciphers.is_empty() {
            return Err(Error::NoKeys);
        }
        let current = KeyId::parse(current_id).map_err(|_| Error::InvalidKeyId {
            key_id: current_id.to_owned(),
        })?;
        if !ciphers.contains_key(&current) {
            return Err(Error::CurrentKeyMissing {
                key_id: current_id.to_owned(),
            });
        }
        Ok(Sealer { current, ciphers })
    }

    /// A keyring from a service's `sealing_keys` config.
    pub fn from_config(keys: &SealingKeys) -> Result<Sealer, Error> {
        Sealer::from_keys(&keys.current, &keys.keys)
    }

    /// The id new secrets are sealed with.
    pub fn current_key_id(&self) -> &KeyId {
        &self.current
    }

    /// Every key id this keyring opens.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyId> {
        self.ciphers.keys()
    }

    /// Seals `plaintext` for `purpose` with the current key and a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], purpose: &Purpose<'_>) -> Result<SealedSecret, Error> {
        let cipher = self
            .ciphers
            .get(&self.current)
            .ok_or_else(|| Error::UnknownKey {
                key_id: self.current.as_str().to_owned(),
            })?;
        // The operating system's CSPRNG; 96 random bits keep collisions negligible for the few secrets
        // sealed per key (rotate long before 2^32 seals).
        let nonce_bytes = <[u8; NONCE_LENGTH]>::try_generate().map_err(|_| Error::Random)?;
        let nonce = Nonce::from(nonce_bytes);
        let aad = purpose.associated_data(&self.current);
        let ciphertext = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // Encryption fails only for messages beyond ChaCha20's 256 GiB limit.
            .map_err(|_| Error::TooLong)?;
        Ok(SealedSecret {
            key_id: self.current.clone(),
            nonce: Base64Text::encode(&nonce_bytes),
            ciphertext: Base64Text::encode(&ciphertext),
        })
    }

    /// Opens a sealed secret for `purpose`; the plaintext is wiped from memory when dropped.
    pub fn open(
        &self,
        sealed: &SealedSecret,
        purpose: &Purpose<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let cipher = self
            .ciphers
            .get(&sealed.key_id)
            .ok_or_else(|| Error::UnknownKey {
                key_id: sealed.key_id.as_str().to_owned(),
            })?;
        let nonce_bytes: [u8; NONCE_LENGTH] = sealed
            .nonce
            .to_bytes()
            .try_into()
            .map_err(|_| Error::MalformedNonce)?;
        let nonce = Nonce::from(nonce_bytes);
        let aad = purpose.associated_data(&sealed.key_id);
        let ciphertext = sealed.ciphertext.to_bytes();
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| Error::Unauthentic)
    }
}

/// A new random key as standard base64, for `sealing_keys.keys.<id>`.
pub fn generate_key() -> Result<Zeroizing<String>, Error> {
    let key = Zeroizing::new(<[u8; KEY_LENGTH]>::try_generate().map_err(|_| Error::Random)?);
    Ok(Zeroizing::new(
        base64::engine::general_purpose::STANDARD.encode(key.as_ref()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_ONE: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const KEY_TWO: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    fn phone_hash() -> PhoneHash {
        PhoneHash::parse(&"a".repeat(64)).unwrap()
    }

    fn request_id() -> uuid::Uuid {
        uuid::Uuid::from_u128(0x0190_a1b2_c3d4_7e5f_8a6b_7c8d_9e0f_1a2b)
    }

    fn sign_in<'a>(phone_hash: &'a PhoneHash, request_id: &'a uuid::Uuid) -> Purpose<'a> {
        Purpose::SignInCode {
            phone_hash,
            request_id,
        }
    }

    fn one_key() -> Sealer {
        Sealer::from_keys("k1", [("k1", KEY_ONE)]).unwrap()
    }

    #[test]
    fn seals_and_opens_with_a_fresh_nonce_each_time() {
        let sealer = one_key();
        let (hash, id) = (phone_hash(), request_id());
        let first = sealer.seal(b"483920", &sign_in(&hash, &id)).unwrap();
        let second = sealer.seal(b"483920", &sign_in(&hash, &id)).unwrap();
        assert_ne!(first.nonce, second.nonce);
        assert_ne!(first.ciphertext, second.ciphertext);
        assert_eq!(first.key_id.as_str(), "k1");
        assert_eq!(first.nonce.to_bytes().len(), NONCE_LENGTH);
        assert_eq!(
            sealer
                .open(&first, &sign_in(&hash, &id))
                .unwrap()
                .as_slice(),
            b"483920"
        );
        let text = serde_json::to_string(&first).unwrap();
        assert!(!text.contains("483920"), "{text}");
    }

    #[test]
    fn tampering_fails_authentication() {
        let sealer = one_key();
        let (hash, id) = (phone_hash(), request_id());
        let sealed = sealer.seal(b"483920", &sign_in(&hash, &id)).unwrap();

        let mut ciphertext = sealed.ciphertext.to_bytes();
        ciphertext[0] ^= 1;
        let tampered = SealedSecret {
            ciphertext: Base64Text::encode(&ciphertext),
            ..sealed.clone()
        };
        assert!(matches!(
            sealer.open(&tampered, &sign_in(&hash, &id)),
            Err(Error::Unauthentic)
        ));

        let mut nonce = sealed.nonce.to_bytes();
        nonce[3] ^= 0x80;
        let tampered = SealedSecret {
            nonce: Base64Text::encode(&nonce),
            ..sealed.clone()
        };
        assert!(matches!(
            sealer.open(&tampered, &sign_in(&hash, &id)),
            Err(Error::Unauthentic)
        ));

        let short_nonce = SealedSecret {
            nonce: Base64Text::encode(b"short"),
            ..sealed.clone()
        };
        assert!(matches!(
            sealer.open(&short_nonce, &sign_in(&hash, &id)),
            Err(Error::MalformedNonce)
        ));
    }

    #[test]
    fn a_sealed_code_does_not_open_for_another_purpose() {
        let sealer = one_key();
        let (hash, id) = (phone_hash(), request_id());
        let sealed = sealer.seal(b"483920", &sign_in(&hash, &id)).unwrap();

        let other_phone = PhoneHash::parse(&"b".repeat(64)).unwrap();
        assert!(matches!(
            sealer.open(&sealed, &sign_in(&other_phone, &id)),
            Err(Error::Unauthentic)
        ));
        let other_request = uuid::Uuid::from_u128(7);
        assert!(matches!(
            sealer.open(&sealed, &sign_in(&hash, &other_request)),
            Err(Error::Unauthentic)
        ));
        let dispatch_id = DispatchId::for_sign_in(&hash, &id);
        let destination = PhoneNumber::parse("010-1234-5678").unwrap();
        let as_body = Purpose::MessageBody {
            dispatch_id: &dispatch_id,
            destination: &destination,
        };
        assert!(matches!(
            sealer.open(&sealed, &as_body),
            Err(Error::Unauthentic)
        ));
    }

    #[test]
    fn unknown_and_relabelled_key_ids_are_refused() {
        let sealer = one_key();
        let (hash, id) = (phone_hash(), request_id());
        let sealed = sealer.seal(b"483920", &sign_in(&hash, &id)).unwrap();

        let unknown = SealedSecret {
            key_id: KeyId::parse("k9").unwrap(),
            ..sealed.clone()
        };
        assert!(matches!(
            sealer.open(&unknown, &sign_in(&hash, &id)),
            Err(Error::UnknownKey { key_id }) if key_id == "k9"
        ));

        // Same key material under two ids: relabelling still fails, the key id is authenticated.
        let aliased = Sealer::from_keys("k1", [("k1", KEY_ONE), ("k2", KEY_ONE)]).unwrap();
        let relabelled = SealedSecret {
            key_id: KeyId::parse("k2").unwrap(),
            ..sealed.clone()
        };
        assert!(matches!(
            aliased.open(&relabelled, &sign_in(&hash, &id)),
            Err(Error::Unauthentic)
        ));

        // Same id, different key material (a misconfigured site).
        let impostor = Sealer::from_keys("k1", [("k1", KEY_TWO)]).unwrap();
        assert!(matches!(
            impostor.open(&sealed, &sign_in(&hash, &id)),
            Err(Error::Unauthentic)
        ));
    }

    #[test]
    fn rotation_keeps_old_secrets_open() {
        let (hash, id) = (phone_hash(), request_id());
        let before = one_key();
        let sealed_before = before.seal(b"111111", &sign_in(&hash, &id)).unwrap();

        let during = Sealer::from_keys("k2", [("k1", KEY_ONE), ("k2", KEY_TWO)]).unwrap();
        assert_eq!(during.current_key_id().as_str(), "k2");
        assert_eq!(
            during
                .open(&sealed_before, &sign_in(&hash, &id))
                .unwrap()
                .as_slice(),
            b"111111"
        );
        let sealed_during = during.seal(b"222222", &sign_in(&hash, &id)).unwrap();
        assert_eq!(sealed_during.key_id.as_str(), "k2");
        // A service not yet rotated cannot open the new key's secrets, and says why.
        assert!(matches!(
            before.open(&sealed_during, &sign_in(&hash, &id)),
            Err(Error::UnknownKey { .. })
        ));

        let after = Sealer::from_keys("k2", [("k2", KEY_TWO)]).unwrap();
        assert!(after.open(&sealed_during, &sign_in(&hash, &id)).is_ok());
        assert!(matches!(
            after.open(&sealed_before, &sign_in(&hash, &id)),
            Err(Error::UnknownKey { .. })
        ));
    }

    #[test]
    fn configuration_errors_are_specific() {
        let none: [(&str, &str); 0] = [];
        assert!(matches!(Sealer::from_keys("k1", none), Err(Error::NoKeys)));
        assert!(matches!(
            Sealer::from_keys("", [("k1", KEY_ONE)]),
            Err(Error::NoKeys)
        ));
        assert!(matches!(
            Sealer::from_keys("k2", [("k1", KEY_ONE)]),
            Err(Error::CurrentKeyMissing { .. })
        ));
        assert!(matches!(
            Sealer::from_keys("k1", [("k1", "c2hvcnQ=")]),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            Sealer::from_keys("k1", [("k1", "not base64!")]),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            Sealer::from_keys("k.1", [("k.1", KEY_ONE)]),
            Err(Error::InvalidKeyId { .. })
        ));
        assert!(matches!(
            Sealer::from_config(&SealingKeys::default()),
            Err(Error::NoKeys)
        ));
    }

    #[test]
    fn key_material_is_never_printed() {
        let keys = SealingKeys {
            current: "k1".to_owned(),
            keys: BTreeMap::from([("k1".to_owned(), KEY_ONE.to_owned())]),
        };
        let printed = format!("{keys:?} {:?}", Sealer::from_config(&keys).unwrap());
        assert!(!printed.contains(KEY_ONE), "{printed}");
        assert!(printed.contains("k1"), "{printed}");
    }

    #[test]
    fn generated_keys_work_and_differ() {
        let first = generate_key().unwrap();
        let second = generate_key().unwrap();
        assert_ne!(*first, *second);
        let sealer = Sealer::from_keys("fresh", [("fresh", first.as_str())]).unwrap();
        let (hash, id) = (phone_hash(), request_id());
        let sealed = sealer.seal(b"x", &sign_in(&hash, &id)).unwrap();
        assert_eq!(
            sealer
                .open(&sealed, &sign_in(&hash, &id))
                .unwrap()
                .as_slice(),
            b"x"
        );
    }
}
