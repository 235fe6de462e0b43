//! Sessions as signed, expiring tokens, checked without any store, so a session issued at one site is
//! accepted at the other even when the issuing site (and its Redis) is gone.
//!
//! A token is `ca1.<claims>.<mac>`: base64url (no padding) of the JSON claims, and of HMAC-SHA256 over
//! `ca1.<claims>` with the session key named in the claims (`kid`; keys rotate by adding one, making it
//! current at both sites, and removing the old one after the session lifetime). Sign-out revokes a
//! session id until the token's expiry: see [`crate::revocations`].

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use jiff::Timestamp;
use proto_events::Site;
use proto_events::domain::{PhoneHash, UserId};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "ca1.";

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Session id; what sign-out revokes.
    pub sid: uuid::Uuid,
    pub uid: UserId,
    /// The user's phone hash (the subject of the AUTH events of this session).
    pub ph: PhoneHash,
    /// Key id of the signing key.
    pub kid: String,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Expires at, unix seconds.
    pub exp: i64,
    /// Site that issued it (informational).
    pub site: Site,
}

impl Claims {
    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_second(self.exp).unwrap_or(Timestamp::MAX)
    }
}

/// Why a token is refused; all become `401 unauthenticated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the session token is malformed")]
    Malformed,
    #[error("the session token was signed with a key this deployment does not hold")]
    UnknownKey,
    #[error("the session token's signature does not verify")]
    BadSignature,
    #[error("the session has expired")]
    Expired,
}

/// Signs and verifies tokens.
#[derive(Clone)]
pub struct SessionKeyring {
    current: String,
    keys: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for SessionKeyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SessionKeyring")
            .field("current", &self.current)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SessionKeyring {
    /// `current` must be among `keys` (checked by the config validation).
    pub fn new(current: String, keys: BTreeMap<String, Vec<u8>>) -> SessionKeyring {
        SessionKeyring { current, keys }
    }

    /// A token for a new session of `user_id`, valid until `expires_at`.
    pub fn issue(
        &self,
        user_id: UserId,
        phone_hash: PhoneHash,
        site: Site,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> (String, Claims) {
        let claims = Claims {
            sid: uuid::Uuid::new_v4(),
            uid: user_id,
            ph: phone_hash,
            kid: self.current.clone(),
            iat: now.as_second(),
            exp: expires_at.as_second(),
            site,
        };
        // Claims of validated types always serialize.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let mut token = String::with_capacity(PREFIX.len() + json.len() * 2);
        token.push_str(PREFIX);
        token.push_str(&URL_SAFE_NO_PAD.encode(json));
        let signature = self.mac(&self.current, &token).map(|mac| mac.finalize());
        token.push('.');
        if let Some(signature) = signature {
            token.push_str(&URL_SAFE_NO_PAD.encode(signature.into_bytes()));
        }
        (token, claims)
    }

    /// The claims of a genuine, unexpired token.
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Claims, TokenError> {
        let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        let (claims_text, signature_text) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        let claims_json = URL_SAFE_NO_PAD
            .decode(claims_text)
            .map_err(|_| TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_text)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims =
            serde_json::from_slice(&claims_json).map_err(|_| TokenError::Malformed)?;
        let signed = &token[..PREFIX.len() + claims_text.len()];
        let mac = self
            .mac(&claims.kid, signed)
            .ok_or(TokenError::UnknownKey)?;
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        if claims.exp <= now.as_second() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    fn mac(&self, key_id: &str, text: &str) -> Option<Hmac<Sha256>> {
        let key = self.keys.get(key_id)?;
        let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(text.as_bytes());
        Some(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(current: &str) -> SessionKeyring {
        SessionKeyring::new(
            current.to_owned(),
            BTreeMap::from([
                ("s1".to_owned(), vec![1u8; 32]),
                ("s2".to_owned(), vec![2u8; 32]),
            ]),
        )
    }

    fn issue(keyring: &SessionKeyring, now: Timestamp) -> (String, Claims) {
        keyring.issue(
            UserId::parse("u-1").expect("id"),
            PhoneHash::parse(&"ab".repeat(32)).expect("hash"),
            Site::Onprem,
            now,
            now + jiff::SignedDuration::from_hours(1),
        )
    }

    #[test]
    fn tokens_verify_until_they_expire_and_survive_rotation() {
        let now = Timestamp::now();
        let (token, claims) = issue(&keyring("s1"), now);
        assert_eq!(keyring("s1").verify(&token, now), Ok(claims.clone()));
        // After rotation the old key still verifies what it signed.
        assert_eq!(keyring("s2").verify(&token, now), Ok(claims));
        assert_eq!(
            keyring("s1").verify(&token, now + jiff::SignedDuration::from_hours(2)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn tampering_is_detected() {
        let now = Timestamp::now();
        let keyring = keyring("s1");
        let (token, _) = issue(&keyring, now);
        let (head, signature) = token.rsplit_once('.').expect("two dots");
        // Another user's claims under the old signature.
        let forged_claims = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&serde_json::json!({
                "sid": uuid::Uuid::nil(), "uid": "u-2", "ph": "ab".repeat(32), "kid": "s1",
                "iat": 0, "exp": i64::MAX, "site": "onprem"
            }))
            .expect("json"),
        );
        let forged = format!("{PREFIX}{forged_claims}.{signature}");
        assert_eq!(keyring.verify(&forged, now), Err(TokenError::BadSignature));
        assert_eq!(
            keyring.verify(&format!("{head}.AAAA"), now),
            Err(TokenError::BadSignature)
        );
        assert_eq!(keyring.verify("nonsense", now), Err(TokenError::Malformed));
        let unknown = SessionKeyring::new(
            "s9".to_owned(),
            BTreeMap::from([("s9".to_owned(), vec![9u8; 32])]),
        );
        assert_eq!(unknown.verify(&token, now), Err(TokenError::UnknownKey));
    }
}
