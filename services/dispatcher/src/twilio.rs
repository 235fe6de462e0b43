//! A client for Twilio's Messages API (create-message), the classification of its errors into
//! "retry" and "give up", and Twilio's `X-Twilio-Signature` for status callbacks.
//!
//! Wire protocol (what the fake in [`crate::fake_twilio`] speaks too):
//! `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP basic auth with the account
//! SID and auth token (or an API key SID and secret), form fields `To`, `From` or
//! `MessagingServiceSid`, `Body`, `StatusCallback`. Success is `201` with the message resource
//! (`sid`, `status`, ...); failure is a JSON body `{"code", "message", "more_info", "status"}`.
//! The base URL is configurable for Twilio's regional edges (`https://api.dublin.ie1.twilio.com`) and
//! for the local fake.

use std::sync::Once;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use url::Url;

/// The API version in every Messages API path.
pub const API_VERSION: &str = "2010-04-01";
/// Twilio's default (US1) edge.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// The header Twilio signs webhooks and status callbacks with.
pub const SIGNATURE_HEADER: &str = "X-Twilio-Signature";

/// Who the client authenticates as. The account SID is always the one in the URL; the basic-auth user
/// is either that SID (with the auth token) or an API key SID (with the key's secret).
#[derive(Clone)]
pub struct Credentials {
    account_sid: String,
    username: String,
    secret: String,
}

impl Credentials {
    /// The account SID and its auth token.
    pub fn auth_token(account_sid: &str, auth_token: &str) -> Credentials {
        Credentials {
            account_sid: account_sid.to_owned(),
            username: account_sid.to_owned(),
            secret: auth_token.to_owned(),
        }
    }

    /// An API key (`SK...`) and its secret, acting for `account_sid`.
    pub fn api_key(account_sid: &str, key_sid: &str, key_secret: &str) -> Credentials {
        Credentials {
            account_sid: account_sid.to_owned(),
            username: key_sid.to_owned(),
            secret: key_secret.to_owned(),
        }
    }

    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }
}

// Hand-written so a token never reaches a log line through `{:?}`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Credentials")
            .field("account_sid", &self.account_sid)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Where the SMS comes from: a number (or alphanumeric sender id) or a Messaging Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    From(String),
    MessagingService(String),
}

impl Sender {
    /// A label for metrics and logs (the number or the service SID).
    pub fn label(&self) -> &str {
        match self {
            Sender::From(from) => from,
            Sender::MessagingService(sid) => sid,
        }
    }
}

/// Everything a [`Client`] needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Scheme, host and optional port (and path prefix) in front of `/2010-04-01/...`.
    pub base_url: Url,
    pub credentials: Credentials,
    pub sender: Sender,
    /// Bound on one whole request, connect to last byte.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

/// One SMS to create.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub to: &'a str,
    pub body: &'a str,
    /// Where Twilio posts status changes (`sent`, `delivered`, `undelivered`, ...).
    pub status_callback: Option<&'a Url>,
    /// W3C `traceparent` sent along, so the provider call shows in the trace of the event that caused it.
    pub traceparent: Option<String>,
}

/// The message resource Twilio answers with (the fields the dispatcher uses or logs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageResource {
    pub sid: String,
    pub status: String,
    #[serde(default)]
    pub account_sid: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    #[serde(default)]
    pub num_segments: Option<String>,
    #[serde(default)]
    pub date_created: Option<String>,
}

/// Twilio's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    #[serde(default)]
    pub code: Option<u32>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub more_info: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
}

/// Whether another attempt may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request itself is refused (bad or opted-out number, validation): retrying sends the same
    /// refusal, and every attempt may cost money.
    Permanent,
    /// The provider or the path to it is unwell (5xx, 429, timeouts, connection errors, refused
    /// credentials): a later attempt, or the fallback provider, may succeed.
    Transient,
}

/// Twilio error codes that mean the destination number cannot receive this SMS.
pub mod codes {
    /// "The 'To' number is not a valid phone number."
    pub const INVALID_TO: u32 = 21211;
    /// "Permission to send an SMS has not been enabled for the region indicated by the 'To' number."
    pub const REGION_NOT_ENABLED: u32 = 21408;
    /// "Attempt to send to unsubscribed recipient" (the person replied STOP).
    pub const UNSUBSCRIBED: u32 = 21610;
    /// "'To' number is not a valid mobile number."
    pub const NOT_MOBILE: u32 = 21614;
    /// "Authenticate": wrong account SID or token.
    pub const AUTHENTICATE: u32 = 20003;
    /// "The requested resource was not found" (e.g. an unknown account SID in the path).
    pub const NOT_FOUND: u32 = 20404;
    /// "Too Many Requests".
    pub const TOO_MANY_REQUESTS: u32 = 20429;
    /// "Internal server error".
    pub const INTERNAL_ERROR: u32 = 20500;
    /// "Service unavailable".
    pub const SERVICE_UNAVAILABLE: u32 = 20503;
    /// Required parameters missing.
    pub const BODY_REQUIRED: u32 = 21602;
    pub const FROM_REQUIRED: u32 = 21603;
    pub const TO_REQUIRED: u32 = 21604;

    /// True for codes that say the destination itself is unusable (not the account or the message).
    pub fn is_invalid_destination(code: u32) -> bool {
        matches!(code, INVALID_TO | NOT_MOBILE | REGION_NOT_ENABLED)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("twilio answered HTTP {status}{}: {message}", code.map(|code| format!(" error {code}")).unwrap_or_default())]
    Api {
        status: u16,
        code: Option<u32>,
        message: String,
        more_info: Option<String>,
        /// From the `Retry-After` header (429 and some 503s).
        retry_after: Option<Duration>,
    },
    #[error("twilio did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach twilio: {0}")]
    Connection(#[source] reqwest::Error),
    #[error("unreadable answer from twilio (HTTP {status}): {detail}")]
    InvalidResponse { status: u16, detail: String },
    #[error("cannot build the http client: {0}")]
    Build(#[source] reqwest::Error),
}

/// What kind of [`Error`] it is, without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Api,
    Timeout,
    Connection,
    InvalidResponse,
    Build,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Api { .. } => ErrorKind::Api,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Connection(_) => ErrorKind::Connection,
            Error::InvalidResponse { .. } => ErrorKind::InvalidResponse,
            Error::Build(_) => ErrorKind::Build,
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Api { status, .. } => classify_status(*status),
            Error::Timeout(_) | Error::Connection(_) | Error::Build(_) => ErrorClass::Transient,
            // A 2xx we cannot read most likely means the SMS was accepted: retrying would send it
            // twice, so it is given up on (and dead-lettered, where an operator can look at it).
            Error::InvalidResponse { status, .. } if (200..300).contains(status) => {
                ErrorClass::Permanent
            }
            Error::InvalidResponse { status, .. } => classify_status(*status),
        }
    }

    /// True when the failure says something about the provider's health (what a circuit breaker
    /// counts). A 429 does not: the provider is up and pacing us, and `Retry-After` says when to
    /// return. A permanent error does not either: the provider answered sensibly.
    pub fn counts_against_provider(&self) -> bool {
        match self {
            Error::Api { status: 429, .. } => false,
            other => other.class() == ErrorClass::Transient,
        }
    }

    /// How long the provider asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Twilio's numeric code as text, else a transport code: what `DispatchFailed.error_code` holds.
    pub fn code(&self) -> String {
        match self {
            Error::Api {
                code: Some(code), ..
            } => code.to_string(),
            Error::Api { status, .. } => format!("http_{status}"),
            Error::Timeout(_) => "timeout".to_owned(),
            Error::Connection(_) => "connection".to_owned(),
            Error::InvalidResponse { .. } => "invalid_response".to_owned(),
            Error::Build(_) => "client".to_owned(),
        }
    }

    /// The Twilio error code, for API errors that carry one.
    pub fn twilio_code(&self) -> Option<u32> {
        match self {
            Error::Api { code, .. } => *code,
            _ => None,
        }
    }
}

/// 401/403/404 are transient on purpose: they mean this provider *as configured* is unusable (revoked
/// token, wrong account), which is not the message's fault. Counting them against the provider opens
/// its breaker and moves traffic to the fallback, instead of dead-lettering every SMS.
fn classify_status(status: u16) -> ErrorClass {
    match status {
        429 | 401 | 403 | 404 | 408 => ErrorClass::Transient,
        500.. => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Installs rustls' ring provider for the process once (reqwest is built without a default one, so
/// that no aws-lc build enters the tree).
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means another part of the process installed one first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A Messages API client for one account and sender.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    messages_url: Url,
    credentials: Credentials,
    sender: Sender,
    timeout: Duration,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("coinalarm-dispatcher/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Build)?;
        let messages_url = messages_url(&config.base_url, config.credentials.account_sid());
        Ok(Client {
            http,
            messages_url,
            credentials: config.credentials,
            sender: config.sender,
            timeout: config.timeout,
        })
    }

    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    pub fn messages_url(&self) -> &Url {
        &self.messages_url
    }

    /// Creates one message. Errors are classified by [`Error::class`].
    pub async fn send(&self, message: &NewMessage<'_>) -> Result<MessageResource, Error> {
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(4);
        form.push(("To", message.to));
        match &self.sender {
            Sender::From(from) => form.push(("From", from)),
            Sender::MessagingService(sid) => form.push(("MessagingServiceSid", sid)),
        }
        form.push(("Body", message.body));
        if let Some(callback) = message.status_callback {
            form.push(("StatusCallback", callback.as_str()));
        }
        let mut request = self
            .http
            .post(self.messages_url.clone())
            .basic_auth(&self.credentials.username, Some(&self.credentials.secret))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form);
        if let Some(traceparent) = &message.traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request
            .send()
            .await
            .map_err(|error| self.transport(error))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = response
            .bytes()
            .await
            .map_err(|error| self.transport(error))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice::<MessageResource>(&bytes).map_err(|error| {
                Error::InvalidResponse {
                    status,
                    detail: error.to_string(),
                }
            });
        }
        let body: Option<ApiErrorBody> = serde_json::from_slice(&bytes).ok();
        Err(match body {
            Some(body) => Error::Api {
                status,
                code: body.code,
                message: body.message,
                more_info: body.more_info,
                retry_after,
            },
            // Proxies and load balancers answer with HTML; the status alone still classifies it.
            None => Error::Api {
                status,
                code: None,
                message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                more_info: None,
                retry_after,
            },
        })
    }

    fn transport(&self, error: reqwest::Error) -> Error {
        if error.is_timeout() {
            Error::Timeout(self.timeout)
        } else {
            Error::Connection(error)
        }
    }
}

/// `{base}/2010-04-01/Accounts/{sid}/Messages.json`, keeping any path prefix of the base URL.
pub fn messages_url(base_url: &Url, account_sid: &str) -> Url {
    let mut url = base_url.clone();
    let prefix = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!(
        "{prefix}/{API_VERSION}/Accounts/{account_sid}/Messages.json"
    ));
    url.set_query(None);
    url
}

/// `Retry-After` as delay-seconds or as an HTTP date (RFC 9110 allows both).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::parse(value).ok()?;
    let wait = date.timestamp().duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

type HmacSha1 = Hmac<sha1::Sha1>;

/// The bytes Twilio signs: the full URL, then every POST parameter sorted by name (then value), each
/// written as name immediately followed by value. Repeated identical pairs count once, as in Twilio's
/// own libraries.
fn signed_payload<K: AsRef<str>, V: AsRef<str>>(url: &str, params: &[(K, V)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_ref(), value.as_ref()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let mut payload = String::with_capacity(url.len() + pairs.len() * 24);
    payload.push_str(url);
    for (name, value) in pairs {
        payload.push_str(name);
        payload.push_str(value);
    }
    payload
}

fn mac_over(auth_token: &str, payload: &str) -> HmacSha1 {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = HmacSha1::new_from_slice(auth_token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(payload.as_bytes());
    mac
}

/// Twilio's `X-Twilio-Signature` of a request to `url` with form `params`: base64 of HMAC-SHA1 keyed
/// with the account's auth token over the URL and the sorted, concatenated parameters.
pub fn signature<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: &[(K, V)],
) -> String {
    let mac = mac_over(auth_token, &signed_payload(url, params));
    BASE64.encode(mac.finalize().into_bytes())
}

/// Checks an `X-Twilio-Signature` in constant time. Like Twilio's libraries, it also accepts the
/// signature made over the URL with the default port spelt out or left out (`:443` on https), since
/// proxies differ in which form reaches the application.
pub fn verify_signature<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: &[(K, V)],
    provided: &str,
) -> bool {
    let Ok(provided) = BASE64.decode(provided.trim()) else {
        return false;
    };
    let mut candidates = vec![url.to_owned()];
    candidates.extend(port_variants(url));
    // Every candidate is checked (no early exit) so timing does not tell which form matched.
    let mut valid = false;
    for candidate in candidates {
        let mac = mac_over(auth_token, &signed_payload(&candidate, params));
        valid |= mac.verify_slice(&provided).is_ok();
    }
    valid
}

/// The URL with its scheme's default port added, and with it removed, when they differ from `url`.
fn port_variants(url: &str) -> Vec<String> {
    let Ok(parsed) = Url::parse(url) else {
        return Vec::new();
    };
    let Some(default_port) = parsed.port_or_known_default() else {
        return Vec::new();
    };
    if parsed.port().is_some_and(|port| port != default_port) {
        return Vec::new();
    }
    let Some(host) = parsed.host_str() else {
        return Vec::new();
    };
    let scheme_and_authority = |port: Option<u16>| {
        let mut text = format!("{}://", parsed.scheme());
        if !parsed.username().is_empty() {
            text.push_str(parsed.username());
            if let Some(password) = parsed.password() {
                text.push(':');
                text.push_str(password);
            }
            text.push('@');
        }
        text.push_str(host);
        if let Some(port) = port {
            text.push_str(&format!(":{port}"));
        }
        text
    };
    let rest = &parsed[url::Position::BeforePath..];
    [
        format!("{}{rest}", scheme_and_authority(Some(default_port))),
        format!("{}{rest}", scheme_and_authority(None)),
    ]
    .into_iter()
    .filter(|variant| variant != url)
    .collect()
}

/// The form Twilio posts to a `StatusCallback` URL (the fields CoinAlarm reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    pub message_sid: String,
    /// `queued`, `sent`, `delivered`, `undelivered`, `failed`, ...
    pub message_status: String,
    pub to: Option<String>,
    pub from: Option<String>,
    pub account_sid: Option<String>,
    /// Present for `undelivered` and `failed` (e.g. `30003` unreachable handset).
    pub error_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("status callback without {0}")]
pub struct MissingField(pub &'static str);

impl StatusCallback {
    pub fn from_params<K: AsRef<str>, V: AsRef<str>>(
        params: &[(K, V)],
    ) -> Result<StatusCallback, MissingField> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key.as_ref() == name)
                .map(|(_, value)| value.as_ref().to_owned())
                .filter(|value| !value.is_empty())
        };
        Ok(StatusCallback {
            message_sid: get("MessageSid")
                .or_else(|| get("SmsSid"))
                .ok_or(MissingField("MessageSid"))?,
            message_status: get("MessageStatus")
                .or_else(|| get("SmsStatus"))
                .ok_or(MissingField("MessageStatus"))?,
            to: get("To"),
            from: get("From"),
            account_sid: get("AccountSid"),
            error_code: get("ErrorCode"),
        })
    }

    /// A status after which nothing more will happen to the message.
    pub fn is_final(&self) -> bool {
        matches!(
            self.message_status.as_str(),
            "delivered" | "undelivered" | "failed" | "read" | "canceled"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const DOC_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn signature_matches_twilios_documented_example() {
        // twilio.com/docs/usage/webhooks/webhooks-security, auth token 12345.
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ];
        assert_eq!(
            signature("12345", DOC_URL, &params),
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        );
        assert!(verify_signature(
            "12345",
            DOC_URL,
            &params,
            "GvWf1cFY/Q7PnoempGyD5oXAezc="
        ));
    }

    #[test]
    fn signature_matches_the_older_documented_example_in_any_parameter_order() {
        // The same page's earlier revision used +12349013030, which signs to a different value.
        let params = [
            ("To", "+18005551212"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
        ];
        assert_eq!(
            signature("12345", DOC_URL, &params),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }

    #[test]
    fn verification_rejects_any_change() {
        let params = vec![
            ("MessageSid".to_owned(), "SM1".to_owned()),
            ("MessageStatus".to_owned(), "delivered".to_owned()),
        ];
        let url = "https://api.example.com/v1/twilio/status?dispatch_id=dsp-1";
        let signed = signature("token", url, &params);
        assert!(verify_signature("token", url, &params, &signed));
        assert!(!verify_signature("other", url, &params, &signed));
        assert!(!verify_signature(
            "token",
            "https://api.example.com/v1/twilio/status?dispatch_id=dsp-2",
            &params,
            &signed
        ));
        let mut changed = params.clone();
        changed[1].1 = "undelivered".to_owned();
        assert!(!verify_signature("token", url, &changed, &signed));
        assert!(!verify_signature("token", url, &params, "not base64!"));
        assert!(!verify_signature("token", url, &params, ""));
    }

    #[test]
    fn verification_accepts_the_default_port_spelt_out_or_not() {
        let params = [("MessageSid", "SM1")];
        let with_port = "https://api.example.com:443/status?x=1";
        let without_port = "https://api.example.com/status?x=1";
        let signed_with = signature("t", with_port, &params);
        assert!(verify_signature("t", without_port, &params, &signed_with));
        let signed_without = signature("t", without_port, &params);
        assert!(verify_signature("t", with_port, &params, &signed_without));
        let other_port = signature("t", "https://api.example.com:8443/status?x=1", &params);
        assert!(!verify_signature("t", without_port, &params, &other_port));
    }

    #[test]
    fn errors_are_classified() {
        let api = |status: u16, code: Option<u32>| Error::Api {
            status,
            code,
            message: String::new(),
            more_info: None,
            retry_after: None,
        };
        assert_eq!(
            api(400, Some(codes::INVALID_TO)).class(),
            ErrorClass::Permanent
        );
        assert_eq!(
            api(400, Some(codes::UNSUBSCRIBED)).class(),
            ErrorClass::Permanent
        );
        assert_eq!(api(422, None).class(), ErrorClass::Permanent);
        assert_eq!(api(500, None).class(), ErrorClass::Transient);
        assert_eq!(api(503, None).class(), ErrorClass::Transient);
        assert_eq!(api(429, Some(20429)).class(), ErrorClass::Transient);
        assert!(!api(429, Some(20429)).counts_against_provider());
        assert!(api(503, None).counts_against_provider());
        assert!(api(401, Some(codes::AUTHENTICATE)).counts_against_provider());
        assert!(!api(400, Some(codes::INVALID_TO)).counts_against_provider());
        assert_eq!(api(400, Some(21211)).code(), "21211");
        assert_eq!(api(502, None).code(), "http_502");
        assert_eq!(
            Error::Timeout(Duration::from_secs(1)).class(),
            ErrorClass::Transient
        );
        let unreadable_success = Error::InvalidResponse {
            status: 201,
            detail: String::new(),
        };
        assert_eq!(unreadable_success.class(), ErrorClass::Permanent);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let date = jiff::fmt::rfc2822::to_string(&later.to_zoned(jiff::tz::TimeZone::UTC))
            .expect("format");
        let parsed = parse_retry_after(&date).expect("a date parses");
        assert!(
            parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120),
            "{parsed:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn messages_url_keeps_the_base_path_and_drops_its_query() {
        let base = Url::parse("https://api.dublin.ie1.twilio.com").unwrap();
        assert_eq!(
            messages_url(&base, "AC123").as_str(),
            "https://api.dublin.ie1.twilio.com/2010-04-01/Accounts/AC123/Messages.json"
        );
        let prefixed = Url::parse("http://127.0.0.1:9000/twilio/?x=1").unwrap();
        assert_eq!(
            messages_url(&prefixed, "AC1").as_str(),
            "http://127.0.0.1:9000/twilio/2010-04-01/Accounts/AC1/Messages.json"
        );
    }

    #[test]
    fn status_callbacks_parse_from_form_fields() {
        let params = [
            ("SmsSid", "SM1"),
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
            ("To", "+821012345678"),
        ];
        let callback = StatusCallback::from_params(&params).unwrap();
        assert_eq!(callback.message_sid, "SM1");
        assert_eq!(callback.error_code.as_deref(), Some("30003"));
        assert!(callback.is_final());
        assert_eq!(
            StatusCallback::from_params(&[("MessageStatus", "sent")]),
            Err(MissingField("MessageSid"))
        );
    }
}
