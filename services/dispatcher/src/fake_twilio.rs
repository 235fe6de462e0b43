//! A fake Twilio for tests and the local demo: a real HTTP server speaking the Messages API, so the
//! production client is what talks to it.
//!
//! It implements create-message (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`) with basic
//! auth, Twilio's validation errors, its success and error shapes; keeps a **ledger** of every accepted
//! message (in process: [`FakeTwilio::ledger`]; over HTTP: `GET /_fake/ledger`); can be told to fail
//! ([`FaultRule`]: 5xx, 429 with `Retry-After`, hangs longer than a client timeout, Twilio error codes
//! for given numbers, undeliverable numbers), in process or by `POST /_fake/faults`; and posts status
//! callbacks (`sent`, then `delivered` or `undelivered`) signed with `X-Twilio-Signature` to each
//! message's `StatusCallback`. Every instance has its own port and state, so a primary and a fallback
//! provider run side by side.
//!
//! Control endpoints (JSON): `GET /_fake/ledger`, `GET /_fake/requests`, `GET /_fake/callbacks`,
//! `POST /_fake/faults` (a [`FaultRule`]), `DELETE /_fake/faults`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use coinalarm_runtime::Shutdown;
use coinalarm_runtime::config::seconds;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::time::Instant;
use url::Url;

use crate::twilio::{self, API_VERSION, codes};

/// One account the fake accepts: the account SID with its auth token, and optional API keys.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeAccount {
    pub account_sid: String,
    /// Also the key status callbacks are signed with, as at Twilio.
    pub auth_token: String,
    /// API key SID → secret, accepted as basic-auth credentials for this account.
    #[serde(default)]
    pub api_keys: BTreeMap<String, String>,
}

impl FakeAccount {
    pub fn new(account_sid: &str, auth_token: &str) -> FakeAccount {
        FakeAccount {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            api_keys: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for FakeAccount {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FakeAccount")
            .field("account_sid", &self.account_sid)
            .field("api_keys", &self.api_keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FakeTwilioConfig {
    /// Written into every ledger entry, to tell two fakes' ledgers apart.
    pub name: String,
    /// Port 0 picks a free port; see [`FakeTwilio::address`].
    pub listen: SocketAddr,
    pub accounts: Vec<FakeAccount>,
    /// Post status callbacks to each message's `StatusCallback`.
    pub send_callbacks: bool,
    /// Delay before the `sent` callback, and again before the final one.
    #[serde(with = "seconds")]
    pub callback_delay: Duration,
}

impl Default for FakeTwilioConfig {
    fn default() -> Self {
        FakeTwilioConfig {
            name: "fake-twilio".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            accounts: vec![FakeAccount::new(
                "ACfake00000000000000000000000000",
                "fake-auth-token",
            )],
            send_callbacks: true,
            callback_delay: Duration::from_millis(50),
        }
    }
}

impl FakeTwilioConfig {
    /// A fake named `name` with one account.
    pub fn with_account(name: &str, account_sid: &str, auth_token: &str) -> FakeTwilioConfig {
        FakeTwilioConfig {
            name: name.to_owned(),
            accounts: vec![FakeAccount::new(account_sid, auth_token)],
            ..FakeTwilioConfig::default()
        }
    }
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub sid: String,
    /// The fake's name.
    pub fake: String,
    /// The account the message was sent through.
    pub account_sid: String,
    /// The basic-auth user: the account SID, or the API key used.
    pub authenticated_as: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub status_callback: Option<String>,
    /// The `traceparent` the request carried, so a test can follow one trace to the provider.
    pub traceparent: Option<String>,
    pub num_segments: u32,
    pub created_at: Timestamp,
}

/// Every request the fake answered, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub received_at: Timestamp,
    pub to: Option<String>,
    pub status: u16,
    pub error_code: Option<u32>,
    pub sid: Option<String>,
}

/// One status callback the fake posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackRecord {
    pub sid: String,
    pub url: String,
    pub message_status: String,
    pub error_code: Option<String>,
    /// The receiver's HTTP status, or `None` when it could not be reached (see `error`).
    pub response_status: Option<u16>,
    pub error: Option<String>,
    pub posted_at: Timestamp,
}

/// A way to misbehave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Answer with this 5xx status and Twilio's error body.
    ServerError { status: u16 },
    /// 429 with error 20429 and a `Retry-After` header.
    TooManyRequests { retry_after_seconds: u64 },
    /// Hold the request this long (longer than the client's timeout makes a timeout). With
    /// `accept_first` the message is accepted (in the ledger) before the wait, as when a provider takes
    /// an SMS and its answer is lost; otherwise the wait ends in a 503.
    Hang { seconds: f64, accept_first: bool },
    /// Refuse with a Twilio error code: 21211 invalid number, 21610 unsubscribed, 21614 not mobile, ...
    Reject { code: u32 },
    /// Accept, then report `undelivered` with this error code (e.g. 30003 unreachable handset).
    Undeliverable { error_code: u32 },
}

/// When a [`Fault`] applies. A rule without `count` or `seconds` applies until cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    pub fault: Fault,
    /// Only for requests to this number.
    #[serde(default)]
    pub to: Option<String>,
    /// For this many matching requests.
    #[serde(default)]
    pub count: Option<u32>,
    /// For this many seconds from when the rule is added.
    #[serde(default)]
    pub seconds: Option<f64>,
}

#[derive(Debug)]
struct ActiveRule {
    fault: Fault,
    to: Option<String>,
    remaining: Option<u32>,
    until: Option<Instant>,
}

#[derive(Debug)]
struct FakeState {
    name: String,
    accounts: Vec<FakeAccount>,
    send_callbacks: bool,
    callback_delay: Duration,
    ledger: Mutex<Vec<LedgerEntry>>,
    requests: Mutex<Vec<RequestRecord>>,
    callbacks: Mutex<Vec<CallbackRecord>>,
    rules: Mutex<Vec<ActiveRule>>,
    /// Create-message requests being answered right now, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    http: reqwest::Client,
    stop: Shutdown,
}

/// Counts one request in flight for as long as it lives.
struct InFlight<'a>(&'a FakeState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a FakeState) -> InFlight<'a> {
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.most_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Records are appended whole; a panic elsewhere cannot leave one half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeState {
    fn add_rule(&self, rule: FaultRule) {
        let until = rule
            .seconds
            .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
            .map(|duration| Instant::now() + duration);
        lock(&self.rules).push(ActiveRule {
            fault: rule.fault,
            to: rule.to,
            remaining: rule.count,
            until,
        });
    }

    /// The fault for a request to `to`, consuming one use of its rule.
    fn take_fault(&self, to: Option<&str>) -> Option<Fault> {
        let now = Instant::now();
        let mut rules = lock(&self.rules);
        rules
            .retain(|rule| rule.remaining != Some(0) && rule.until.is_none_or(|until| now < until));
        let rule = rules
            .iter_mut()
            .find(|rule| rule.to.is_none() || rule.to.as_deref() == to)?;
        if let Some(remaining) = &mut rule.remaining {
            *remaining -= 1;
        }
        Some(rule.fault.clone())
    }

    fn record_request(
        &self,
        to: Option<&str>,
        status: u16,
        error_code: Option<u32>,
        sid: Option<&str>,
    ) {
        lock(&self.requests).push(RequestRecord {
            received_at: Timestamp::now(),
            to: to.map(str::to_owned),
            status,
            error_code,
            sid: sid.map(str::to_owned),
        });
    }

    /// The account the basic-auth credentials belong to, and the user they named.
    fn authenticate(&self, headers: &HeaderMap) -> Option<(&FakeAccount, String)> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let encoded = value.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        let account = self.accounts.iter().find(|account| {
            (account.account_sid == user && account.auth_token == password)
                || account
                    .api_keys
                    .get(user)
                    .is_some_and(|secret| secret == password)
        })?;
        Some((account, user.to_owned()))
    }
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub struct FakeTwilio {
    state: Arc<FakeState>,
    address: SocketAddr,
    /// `None` once stopped.
    server: Option<tokio::task::JoinHandle<()>>,
}

impl FakeTwilio {
    /// Binds `config.listen` and serves until dropped or [`FakeTwilio::stop`]ped.
    pub async fn start(config: FakeTwilioConfig) -> std::io::Result<FakeTwilio> {
        twilio::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(std::io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let address = listener.local_addr()?;
        let state = Arc::new(FakeState {
            name: config.name,
            accounts: config.accounts,
            send_callbacks: config.send_callbacks,
            callback_delay: config.callback_delay,
            ledger: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            callbacks: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
            http,
            stop: Shutdown::new(),
        });
        let router = router(Arc::clone(&state));
        let stop = state.stop.clone();
        let name = state.name.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.wait().await })
                .await;
            if let Err(error) = served {
                tracing::error!(fake = %name, %error, "fake twilio stopped with an error");
            }
        });
        tracing::info!(fake = %state.name, %address, "fake twilio listening");
        Ok(FakeTwilio {
            state,
            address,
            server: Some(server),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:<port>`: what a provider's `base_url` is set to.
    pub fn base_url(&self) -> Url {
        // A socket address always makes a valid http URL.
        Url::parse(&format!("http://{}", self.address))
            .unwrap_or_else(|_| unreachable!("an http URL from a socket address"))
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Every accepted message, oldest first.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        lock(&self.state.ledger).clone()
    }

    /// How many messages were accepted, without copying the ledger (a benchmark polls this).
    pub fn ledger_len(&self) -> usize {
        lock(&self.state.ledger).len()
    }

    /// Every request answered, accepted or refused, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.state.requests).clone()
    }

    /// Every status callback posted, oldest first.
    pub fn callbacks(&self) -> Vec<CallbackRecord> {
        lock(&self.state.callbacks).clone()
    }

    /// The most create-message requests this fake was answering at the same time.
    pub fn most_in_flight(&self) -> usize {
        self.state.most_in_flight.load(Ordering::SeqCst)
    }

    pub fn add_fault(&self, rule: FaultRule) {
        self.state.add_rule(rule);
    }

    /// The next `count` requests fail with `fault`.
    pub fn fail_next(&self, count: u32, fault: Fault) {
        self.add_fault(FaultRule {
            fault,
            to: None,
            count: Some(count),
            seconds: None,
        });
    }

    /// Every request fails with `fault` for `duration`.
    pub fn fail_for(&self, duration: Duration, fault: Fault) {
        self.add_fault(FaultRule {
            fault,
            to: None,
            count: None,
            seconds: Some(duration.as_secs_f64()),
        });
    }

    /// Every request fails with `fault` until [`FakeTwilio::clear_faults`].
    pub fn fail_always(&self, fault: Fault) {
        self.add_fault(FaultRule {
            fault,
            to: None,
            count: None,
            seconds: None,
        });
    }

    /// Every request to `to` fails with `fault` (e.g. `Reject { code: 21610 }` for an opted-out number).
    pub fn fail_number(&self, to: &str, fault: Fault) {
        self.add_fault(FaultRule {
            fault,
            to: Some(to.to_owned()),
            count: None,
            seconds: None,
        });
    }

    pub fn clear_faults(&self) {
        lock(&self.state.rules).clear();
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        self.state.stop.trigger();
        if let Some(server) = self.server.take() {
            // A server task that panicked has nothing left to stop.
            let _ = server.await;
        }
    }
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.state.stop.trigger();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Serves a fake until `shutdown`: for hosting one in its own process (the demo).
pub async fn serve(config: FakeTwilioConfig, shutdown: Shutdown) -> std::io::Result<()> {
    let fake = FakeTwilio::start(config).await?;
    shutdown.wait().await;
    fake.stop().await;
    Ok(())
}

/// Reads a fake's ledger over HTTP (another process's fake).
pub async fn fetch_ledger(base_url: &Url) -> Result<Vec<LedgerEntry>, reqwest::Error> {
    twilio::install_crypto_provider();
    let url = base_url
        .join("/_fake/ledger")
        .unwrap_or_else(|_| base_url.clone());
    reqwest::get(url).await?.error_for_status()?.json().await
}

fn router(state: Arc<FakeState>) -> Router {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account_sid}/Messages.json",
            post(create_message),
        )
        .route("/_fake/ledger", get(read_ledger))
        .route("/_fake/requests", get(read_requests))
        .route("/_fake/callbacks", get(read_callbacks))
        .route("/_fake/faults", post(add_fault).delete(clear_faults))
        .with_state(state)
}

async fn read_ledger(State(state): State<Arc<FakeState>>) -> Json<Vec<LedgerEntry>> {
    Json(lock(&state.ledger).clone())
}

async fn read_requests(State(state): State<Arc<FakeState>>) -> Json<Vec<RequestRecord>> {
    Json(lock(&state.requests).clone())
}

async fn read_callbacks(State(state): State<Arc<FakeState>>) -> Json<Vec<CallbackRecord>> {
    Json(lock(&state.callbacks).clone())
}

async fn add_fault(State(state): State<Arc<FakeState>>, Json(rule): Json<FaultRule>) -> StatusCode {
    state.add_rule(rule);
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(state): State<Arc<FakeState>>) -> StatusCode {
    lock(&state.rules).clear();
    StatusCode::NO_CONTENT
}

/// Twilio's error body and status.
fn twilio_error(status: StatusCode, code: u32, message: String) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

fn rejection_message(code: u32, to: &str) -> String {
    match code {
        codes::INVALID_TO => format!("The 'To' number {to} is not a valid phone number."),
        codes::UNSUBSCRIBED => "Attempt to send to unsubscribed recipient".to_owned(),
        codes::NOT_MOBILE => "'To' number is not a valid mobile number".to_owned(),
        codes::REGION_NOT_ENABLED => format!(
            "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}."
        ),
        other => format!("Error {other}"),
    }
}

fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && !digits.starts_with('0')
            && digits.bytes().all(|byte| byte.is_ascii_digit())
    })
}

struct MessageForm {
    to: Option<String>,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    body: Option<String>,
    status_callback: Option<String>,
}

impl MessageForm {
    fn parse(params: &[(String, String)]) -> MessageForm {
        let get = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
                .filter(|value| !value.is_empty())
        };
        MessageForm {
            to: get("To"),
            from: get("From"),
            messaging_service_sid: get("MessagingServiceSid"),
            body: get("Body"),
            status_callback: get("StatusCallback"),
        }
    }
}

async fn create_message(
    State(state): State<Arc<FakeState>>,
    Path(path_account_sid): Path<String>,
    headers: HeaderMap,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    let _in_flight = InFlight::enter(&state);
    let form = MessageForm::parse(&params);
    let to = form.to.clone();
    let refuse = |status: StatusCode, code: u32, message: String| {
        state.record_request(to.as_deref(), status.as_u16(), Some(code), None);
        twilio_error(status, code, message)
    };
    let Some((account, authenticated_as)) = state.authenticate(&headers) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            codes::AUTHENTICATE,
            "Authenticate".to_owned(),
        );
    };
    if account.account_sid != path_account_sid {
        return refuse(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!(
                "The requested resource /{API_VERSION}/Accounts/{path_account_sid}/Messages.json was not found"
            ),
        );
    }
    let mut undeliverable_code = None;
    match state.take_fault(to.as_deref()) {
        None => {}
        Some(Fault::ServerError { status }) => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(StatusCode::is_server_error)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (code, message) = if status == StatusCode::SERVICE_UNAVAILABLE {
                (codes::SERVICE_UNAVAILABLE, "Service unavailable")
            } else {
                (codes::INTERNAL_ERROR, "Internal server error")
            };
            return refuse(status, code, message.to_owned());
        }
        Some(Fault::TooManyRequests {
            retry_after_seconds,
        }) => {
            let mut response = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                codes::TOO_MANY_REQUESTS,
                "Too Many Requests".to_owned(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            return response;
        }
        Some(Fault::Hang {
            seconds,
            accept_first,
        }) => {
            let hang = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO);
            if accept_first {
                let accepted = accept(&state, account, authenticated_as, &form, &headers, None);
                tokio::time::sleep(hang).await;
                return accepted;
            }
            tokio::time::sleep(hang).await;
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                codes::SERVICE_UNAVAILABLE,
                "Service unavailable".to_owned(),
            );
        }
        Some(Fault::Reject { code }) => {
            let message = rejection_message(code, to.as_deref().unwrap_or_default());
            return refuse(StatusCode::BAD_REQUEST, code, message);
        }
        Some(Fault::Undeliverable { error_code }) => undeliverable_code = Some(error_code),
    }
    let Some(to_number) = form.to.as_deref() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            codes::TO_REQUIRED,
            "A 'To' phone number is required.".to_owned(),
        );
    };
    if form.body.is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            codes::BODY_REQUIRED,
            "Message body is required.".to_owned(),
        );
    }
    if form.from.is_none() && form.messaging_service_sid.is_none() {
        return refuse(
            StatusCode::BAD_REQUEST,
            codes::FROM_REQUIRED,
            "A 'From' phone number is required.".to_owned(),
        );
    }
    if !is_e164(to_number) {
        let message = rejection_message(codes::INVALID_TO, to_number);
        return refuse(StatusCode::BAD_REQUEST, codes::INVALID_TO, message);
    }
    accept(
        &state,
        account,
        authenticated_as,
        &form,
        &headers,
        undeliverable_code,
    )
}

/// Records the message, schedules its callbacks and answers 201 with the message resource.
fn accept(
    state: &Arc<FakeState>,
    account: &FakeAccount,
    authenticated_as: String,
    form: &MessageForm,
    headers: &HeaderMap,
    undeliverable_code: Option<u32>,
) -> Response {
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let now = Timestamp::now();
    let body = form.body.clone().unwrap_or_default();
    let entry = LedgerEntry {
        sid: sid.clone(),
        fake: state.name.clone(),
        account_sid: account.account_sid.clone(),
        authenticated_as,
        to: form.to.clone().unwrap_or_default(),
        from: form.from.clone(),
        messaging_service_sid: form.messaging_service_sid.clone(),
        num_segments: segments(&body),
        body,
        status_callback: form.status_callback.clone(),
        traceparent: headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        created_at: now,
    };
    lock(&state.ledger).push(entry.clone());
    state.record_request(Some(&entry.to), 201, None, Some(&sid));
    tracing::debug!(fake = %state.name, %sid, "fake twilio accepted a message");
    if state.send_callbacks
        && let Some(callback) = entry
            .status_callback
            .as_deref()
            .and_then(|text| Url::parse(text).ok())
    {
        let state = Arc::clone(state);
        let auth_token = account.auth_token.clone();
        let entry = entry.clone();
        tokio::spawn(async move {
            let stop = state.stop.clone();
            tokio::select! {
                () = post_callbacks(&state, &auth_token, &entry, &callback, undeliverable_code) => {}
                () = stop.wait() => {}
            }
        });
    }
    let date =
        jiff::fmt::rfc2822::to_string(&now.to_zoned(jiff::tz::TimeZone::UTC)).unwrap_or_default();
    let status = if entry.messaging_service_sid.is_some() {
        "accepted"
    } else {
        "queued"
    };
    let resource = json!({
        "account_sid": entry.account_sid,
        "api_version": API_VERSION,
        "body": entry.body,
        "date_created": date,
        "date_sent": null,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": entry.from,
        "messaging_service_sid": entry.messaging_service_sid,
        "num_media": "0",
        "num_segments": entry.num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": {
            "media": format!("/{API_VERSION}/Accounts/{}/Messages/{sid}/Media.json", entry.account_sid),
        },
        "to": entry.to,
        "uri": format!("/{API_VERSION}/Accounts/{}/Messages/{sid}.json", entry.account_sid),
    });
    (StatusCode::CREATED, Json(resource)).into_response()
}

/// `sent`, then `delivered` (or `undelivered` with an error code), each signed like Twilio signs.
async fn post_callbacks(
    state: &FakeState,
    auth_token: &str,
    entry: &LedgerEntry,
    url: &Url,
    undeliverable_code: Option<u32>,
) {
    let final_status = match undeliverable_code {
        Some(code) => ("undelivered", Some(code.to_string())),
        None => ("delivered", None),
    };
    for (status, error_code) in [("sent", None), final_status] {
        tokio::time::sleep(state.callback_delay).await;
        let mut params: Vec<(&str, String)> = vec![
            ("AccountSid", entry.account_sid.clone()),
            ("ApiVersion", API_VERSION.to_owned()),
            ("MessageSid", entry.sid.clone()),
            ("MessageStatus", status.to_owned()),
            ("SmsSid", entry.sid.clone()),
            ("SmsStatus", status.to_owned()),
            ("To", entry.to.clone()),
        ];
        if let Some(from) = &entry.from {
            params.push(("From", from.clone()));
        }
        if let Some(service) = &entry.messaging_service_sid {
            params.push(("MessagingServiceSid", service.clone()));
        }
        if let Some(code) = &error_code {
            params.push(("ErrorCode", code.clone()));
        }
        let signature = twilio::signature(auth_token, url.as_str(), &params);
        let result = state
            .http
            .post(url.clone())
            .header(twilio::SIGNATURE_HEADER, signature)
            .form(&params)
            .send()
            .await;
        let (response_status, error) = match result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(error) => (None, Some(error.to_string())),
        };
        lock(&state.callbacks).push(CallbackRecord {
            sid: entry.sid.clone(),
            url: url.to_string(),
            message_status: status.to_owned(),
            error_code,
            response_status,
            error,
            posted_at: Timestamp::now(),
        });
    }
}

/// GSM 03.38 basic characters (one septet each).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension characters (an escape plus one septet each).
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// SMS segments the body takes: GSM-7 (160, or 153 per part) when every character is in the GSM
/// alphabet, else UCS-2 (70, or 67 per part), as for Korean text.
pub fn segments(body: &str) -> u32 {
    let gsm_septets: Option<usize> = body.chars().try_fold(0usize, |septets, character| {
        if GSM_BASIC.contains(character) {
            Some(septets + 1)
        } else if GSM_EXTENDED.contains(character) {
            Some(septets + 2)
        } else {
            None
        }
    });
    let (units, single, per_part) = match gsm_septets {
        Some(septets) => (septets, 160, 153),
        None => (body.encode_utf16().count(), 70, 67),
    };
    let parts = if units <= single {
        1
    } else {
        units.div_ceil(per_part)
    };
    u32::try_from(parts).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_follow_the_encoding() {
        assert_eq!(segments("hello"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"[".repeat(80)), 1);
        assert_eq!(segments(&"가".repeat(70)), 1);
        assert_eq!(segments(&"가".repeat(71)), 2);
        assert_eq!(segments(&"가".repeat(135)), 3);
    }

    #[test]
    fn fault_rules_are_readable_json() {
        let rule: FaultRule = serde_json::from_value(json!({
            "fault": {"kind": "too_many_requests", "retry_after_seconds": 2},
            "count": 1
        }))
        .unwrap();
        assert_eq!(
            rule.fault,
            Fault::TooManyRequests {
                retry_after_seconds: 2
            }
        );
        assert_eq!(rule.count, Some(1));
    }
}
