//! Both NATS sites for a test, started from the repository's own `nats/onprem.conf` and `nats/cloud.conf`
//! on free ports, with the leaf link running through a proxy the test controls: `cut_link` is a real
//! network partition (connections dropped, new ones refused) with both servers still running, and
//! `kill` is a real SIGKILL of a site's server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream;
use proto_events::Site;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::ports::free_port;
use crate::wait;

/// Every user of `nats/accounts.conf`, each given a fresh random password per test.
pub const USERS: [&str; 10] = [
    "sys",
    "admin",
    "leaf",
    "monitor",
    "ingest",
    "matcher",
    "notifier",
    "dispatcher",
    "projector",
    "api",
];

/// How long a server gets to come up (JetStream recovers its store on start).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root, where `nats/` lives.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support sits one level below the repository root")
        .to_path_buf()
}

/// The nats-server binary: `COINALARM_NATS_SERVER`, else the one `scripts/` installs into `.run/venv`,
/// else the first `nats-server` on `PATH` that is 2.14 or newer (durable sourcing consumers).
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("COINALARM_NATS_SERVER") {
        return PathBuf::from(path);
    }
    let project_local = repo_root().join(".run/venv/bin/nats-server");
    if project_local.exists() {
        return project_local;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for directory in std::env::split_paths(&path) {
        let candidate = directory.join("nats-server");
        if candidate.exists() && version_at_least(&candidate, (2, 14)) {
            return candidate;
        }
    }
    panic!(
        "no nats-server 2.14+ found: run scripts/test.sh (it installs 2.15.1 into .run/venv) or set COINALARM_NATS_SERVER"
    );
}

fn version_at_least(binary: &Path, minimum: (u32, u32)) -> bool {
    let Ok(output) = Command::new(binary).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(version) = text.trim().rsplit('v').next() else {
        return false;
    };
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= minimum
}

/// One site's server: its ports stay fixed for the test so it can be killed and restarted in place.
#[derive(Debug)]
pub struct NatsSite {
    pub site: Site,
    pub port: u16,
    pub http_port: u16,
    /// Cloud only: the leaf listener the proxy forwards to.
    pub leaf_port: Option<u16>,
    store_dir: PathBuf,
    log_path: PathBuf,
    process: Option<Child>,
}

impl NatsSite {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// The last lines of this server's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(file) = std::fs::File::open(&self.log_path) else {
            return String::from("<no log>");
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Both sites, the link proxy and the passwords; everything stops and is deleted on drop.
pub struct TwoSites {
    pub onprem: NatsSite,
    pub cloud: NatsSite,
    passwords: BTreeMap<&'static str, String>,
    link: LinkProxy,
    binary: PathBuf,
    // Dropped last: the servers' stores and logs live here.
    directory: tempfile::TempDir,
}

impl std::fmt::Debug for TwoSites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoSites")
            .field("onprem", &self.onprem.url())
            .field("cloud", &self.cloud.url())
            .field("directory", &self.directory.path())
            .finish()
    }
}

impl TwoSites {
    /// Starts cloud (the hub), the link proxy, then on-prem dialing through it, and waits until each
    /// site's JetStream answers and each reaches the other's domain over the link.
    pub async fn start() -> TwoSites {
        let directory = tempfile::Builder::new()
            .prefix("coinalarm-nats-")
            .tempdir()
            .expect("temporary directory");
        let passwords = USERS
            .into_iter()
            .map(|user| (user, uuid::Uuid::new_v4().simple().to_string()))
            .collect();
        let binary = nats_server_binary();
        let cloud_leaf_port = free_port();
        let link = LinkProxy::start(cloud_leaf_port);
        let cloud = NatsSite {
            site: Site::Cloud,
            port: free_port(),
            http_port: free_port(),
            leaf_port: Some(cloud_leaf_port),
            store_dir: directory.path().join("cloud/store"),
            log_path: directory.path().join("cloud.log"),
            process: None,
        };
        let onprem = NatsSite {
            site: Site::Onprem,
            port: free_port(),
            http_port: free_port(),
            leaf_port: None,
            store_dir: directory.path().join("onprem/store"),
            log_path: directory.path().join("onprem.log"),
            process: None,
        };
        let mut sites = TwoSites {
            onprem,
            cloud,
            passwords,
            link,
            binary,
            directory,
        };
        // Ports were free when picked, but a parallel test can take one before the server binds it:
        // a server that exits at start is started again on fresh ports.
        for site in [Site::Cloud, Site::Onprem] {
            sites.start_on_free_ports(site).await;
        }
        sites.wait_link_up(START_TIMEOUT).await;
        sites
    }

    pub fn site(&self, site: Site) -> &NatsSite {
        match site {
            Site::Onprem => &self.onprem,
            Site::Cloud => &self.cloud,
        }
    }

    fn site_mut(&mut self, site: Site) -> &mut NatsSite {
        match site {
            Site::Onprem => &mut self.onprem,
            Site::Cloud => &mut self.cloud,
        }
    }

    pub fn url(&self, site: Site) -> String {
        self.site(site).url()
    }

    pub fn password(&self, user: &str) -> &str {
        self.passwords
            .get(user)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no such nats user {user:?}"))
    }

    /// A client connected to `site` as `user`.
    pub async fn client(&self, site: Site, user: &str) -> async_nats::Client {
        self.try_client(site, user).await.unwrap_or_else(|error| {
            panic!(
                "cannot connect to {site} as {user}: {error}\n{}",
                self.site(site).log_tail(20)
            )
        })
    }

    pub async fn try_client(
        &self,
        site: Site,
        user: &str,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::new()
            .user_and_password(user.to_owned(), self.password(user).to_owned())
            .name(format!("test-{user}@{site}"))
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(5)))
            .connect(self.url(site))
            .await
    }

    /// A JetStream context on `site`'s own domain, as `admin`.
    pub async fn jetstream(&self, site: Site) -> jetstream::Context {
        jetstream::new(self.client(site, "admin").await)
    }

    /// Drops the leaf link's connections and refuses new ones: a partition with both sites alive.
    ///
    /// Returns once every forwarded connection is closed: a write made after `cut_link` returns cannot
    /// cross through a connection the proxy's thread had not yet dropped.
    pub fn cut_link(&self) {
        self.link.set_open(false);
        self.link.wait_no_connections(Duration::from_secs(10));
    }

    /// Lets the leaf link reconnect.
    pub fn restore_link(&self) {
        self.link.set_open(true);
    }

    /// Waits until each site reaches the other's JetStream domain through the link.
    pub async fn wait_link_up(&self, within: Duration) {
        let onprem = self.client(Site::Onprem, "admin").await;
        let cloud = self.client(Site::Cloud, "admin").await;
        let onprem_to_cloud = jetstream::with_domain(onprem, "cloud");
        let cloud_to_onprem = jetstream::with_domain(cloud, "onprem");
        let result = wait::until_true("the leaf link to carry jetstream both ways", within, || {
            let onprem_to_cloud = onprem_to_cloud.clone();
            let cloud_to_onprem = cloud_to_onprem.clone();
            async move {
                onprem_to_cloud.query_account().await.is_ok()
                    && cloud_to_onprem.query_account().await.is_ok()
            }
        })
        .await;
        if let Err(timeout) = result {
            panic!(
                "{timeout}\n--- onprem log ---\n{}\n--- cloud log ---\n{}",
                self.onprem.log_tail(30),
                self.cloud.log_tail(30)
            );
        }
    }

    /// SIGKILLs a site's server, as a crashed machine would stop. Its store stays for `restart`.
    pub fn kill(&mut self, site: Site) {
        let server = self.site_mut(site);
        if let Some(mut process) = server.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Freezes a site's server (SIGSTOP): it keeps its sockets but answers nothing, like a hung host.
    pub fn freeze(&self, site: Site) {
        self.signal(site, nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self, site: Site) {
        self.signal(site, nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, site: Site, signal: nix::sys::signal::Signal) {
        if let Some(process) = &self.site(site).process {
            let pid = nix::unistd::Pid::from_raw(
                i32::try_from(process.id()).expect("process ids fit in i32"),
            );
            nix::sys::signal::kill(pid, signal).expect("signal the nats server");
        }
    }

    async fn start_on_free_ports(&mut self, site: Site) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let binary = self.binary.clone();
            let passwords = self.passwords.clone();
            let link_port = self.link.port;
            spawn_site(self.site_mut(site), &binary, &passwords, link_port);
            match self.wait_ready_or_exit(site).await {
                Ok(()) => return,
                Err(reason) if attempt < ATTEMPTS => {
                    eprintln!(
                        "{site} nats-server did not start ({reason}); retrying on other ports"
                    );
                    let server = self.site_mut(site);
                    server.port = free_port();
                    server.http_port = free_port();
                    if server.leaf_port.is_some() {
                        let leaf_port = free_port();
                        server.leaf_port = Some(leaf_port);
                        self.link.upstream_port.store(leaf_port, Ordering::SeqCst);
                    }
                }
                Err(reason) => panic!(
                    "{site} nats-server did not start: {reason}\n--- {site} log ---\n{}",
                    self.site(site).log_tail(40)
                ),
            }
        }
    }

    /// Waits until the site serves JetStream; `Err` if its process exited first (e.g. a port was taken).
    async fn wait_ready_or_exit(&mut self, site: Site) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(process) = self.site_mut(site).process.as_mut()
                && let Ok(Some(status)) = process.try_wait()
            {
                self.site_mut(site).process = None;
                return Err(format!("exited with {status}"));
            }
            let ready = match self.try_client(site, "admin").await {
                Ok(client) => jetstream::new(client).query_account().await.is_ok(),
                Err(_) => false,
            };
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not ready within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts a killed site again on the same ports and store, and waits until it serves JetStream.
    pub async fn restart(&mut self, site: Site) {
        let binary = self.binary.clone();
        let passwords = self.passwords.clone();
        let link_port = self.link.port;
        spawn_site(self.site_mut(site), &binary, &passwords, link_port);
        self.wait_ready(site).await;
    }

    async fn wait_ready(&self, site: Site) {
        let server = self.site(site);
        let result = wait::until(
            &format!("{site} nats-server to serve jetstream"),
            START_TIMEOUT,
            || async {
                let client = self
                    .try_client(site, "admin")
                    .await
                    .map_err(|error| error.to_string())?;
                jetstream::new(client)
                    .query_account()
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            },
        )
        .await;
        if let Err(timeout) = result {
            panic!("{timeout}\n--- {site} log ---\n{}", server.log_tail(40));
        }
    }
}

impl Drop for TwoSites {
    fn drop(&mut self) {
        for site in Site::ALL {
            // A frozen server ignores SIGKILL only until it is continued; continue it first.
            self.thaw(site);
            self.kill(site);
        }
        self.link.stop();
        if std::env::var_os("COINALARM_KEEP_TEST_DIRS").is_some() {
            let kept = std::mem::replace(
                &mut self.directory,
                tempfile::tempdir().expect("temporary directory"),
            );
            eprintln!("kept nats test directory {}", kept.keep().display());
        }
    }
}

fn spawn_site(
    server: &mut NatsSite,
    binary: &Path,
    passwords: &BTreeMap<&'static str, String>,
    link_port: u16,
) {
    std::fs::create_dir_all(&server.store_dir).expect("create the store directory");
    let config = repo_root().join(format!("nats/{}.conf", server.site));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&server.log_path)
        .expect("open the server log");
    let mut command = Command::new(binary);
    command
        .arg("-c")
        .arg(&config)
        .env("NATS_SITE_HOST", "127.0.0.1")
        .env("NATS_SITE_PORT", server.port.to_string())
        .env("NATS_SITE_HTTP", format!("127.0.0.1:{}", server.http_port))
        .env("NATS_SITE_STORE_DIR", &server.store_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
    for (user, password) in passwords {
        command.env(format!("NATS_PASSWORD_{}", user.to_uppercase()), password);
    }
    match server.site {
        Site::Cloud => {
            let leaf_port = server.leaf_port.expect("cloud has a leaf port");
            command.env("NATS_SITE_LEAF_PORT", leaf_port.to_string());
        }
        Site::Onprem => {
            let leaf_password = &passwords["leaf"];
            command.env(
                "NATS_SITE_LEAF_URL",
                format!("nats-leaf://leaf:{leaf_password}@127.0.0.1:{link_port}"),
            );
        }
    }
    let process = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
    server.process = Some(process);
}

/// A TCP proxy between on-prem and the cloud hub's leaf port, on its own thread so it keeps forwarding
/// whatever the test's runtime is doing.
struct LinkProxy {
    port: u16,
    /// The cloud hub's leaf port; changes if the hub had to move to another free port at start.
    upstream_port: Arc<AtomicU16>,
    open: Arc<AtomicBool>,
    open_changes: watch::Sender<bool>,
    stopped: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Connections being forwarded, and a signal each time one closes.
    connections: Arc<(Mutex<usize>, Condvar)>,
}

impl LinkProxy {
    fn start(upstream_port: u16) -> LinkProxy {
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the link proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("proxy address").port();
        let open = Arc::new(AtomicBool::new(true));
        let (open_changes, open_watch) = watch::channel(true);
        let (stopped, stop_watch) = watch::channel(false);
        let thread_open = open.clone();
        let upstream_port = Arc::new(AtomicU16::new(upstream_port));
        let thread_upstream = upstream_port.clone();
        let connections = Arc::new((Mutex::new(0), Condvar::new()));
        let thread_connections = connections.clone();
        let thread = std::thread::Builder::new()
            .name("nats-link-proxy".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                runtime.block_on(proxy_loop(
                    listener,
                    thread_upstream,
                    thread_open,
                    open_watch,
                    stop_watch,
                    thread_connections,
                ));
            })
            .expect("spawn the link proxy thread");
        LinkProxy {
            port,
            upstream_port,
            open,
            open_changes,
            stopped,
            thread: Some(thread),
            connections,
        }
    }

    /// Blocks until no connection is forwarded any more (the proxy runs on its own thread, so this
    /// cannot hold it up), or panics after `within`.
    fn wait_no_connections(&self, within: Duration) {
        let (count, closed) = &*self.connections;
        let count = count.lock().unwrap_or_else(PoisonError::into_inner);
        let (count, timeout) = closed
            .wait_timeout_while(count, within, |count| *count > 0)
            .unwrap_or_else(PoisonError::into_inner);
        assert!(
            !timeout.timed_out(),
            "the link proxy still forwards {} connection(s) {within:?} after the cut",
            *count
        );
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        let _ = self.open_changes.send(open);
    }

    fn stop(&mut self) {
        let _ = self.stopped.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn proxy_loop(
    listener: std::net::TcpListener,
    upstream_port: Arc<AtomicU16>,
    open: Arc<AtomicBool>,
    open_watch: watch::Receiver<bool>,
    mut stop_watch: watch::Receiver<bool>,
    live: Arc<(Mutex<usize>, Condvar)>,
) {
    let listener = TcpListener::from_std(listener).expect("tokio listener");
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop_watch.changed() => break,
        };
        let Ok((downstream, _)) = accepted else {
            continue;
        };
        if !open.load(Ordering::SeqCst) {
            drop(downstream);
            continue;
        }
        let mut open_watch = open_watch.clone();
        let upstream_port = upstream_port.load(Ordering::SeqCst);
        let forwarding = Forwarding::start(live.clone());
        connections.spawn(async move {
            let _forwarding = forwarding;
            let Ok(mut upstream) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream_port)).await
            else {
                return;
            };
            let mut downstream = downstream;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream) => {}
                _ = open_watch.wait_for(|open| !open) => {}
            }
        });
    }
    connections.abort_all();
}

/// Counts one forwarded connection for as long as it lives (its task ends or is aborted).
struct Forwarding(Arc<(Mutex<usize>, Condvar)>);

impl Forwarding {
    fn start(live: Arc<(Mutex<usize>, Condvar)>) -> Forwarding {
        *live.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Forwarding(live)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        let (count, closed) = &*self.0;
        *count.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        closed.notify_all();
    }
}

/// One message as stored in a stream, enough to check convergence: position, subject and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub sequence: u64,
    pub subject: String,
    pub message_id: Option<String>,
    /// The W3C trace context the event was published with.
    pub traceparent: Option<String>,
    pub payload: bytes::Bytes,
}

/// Reads every message of `stream` in order, through an ephemeral consumer that acknowledges nothing.
pub async fn read_stream(jetstream: &jetstream::Context, stream: &str) -> Vec<StoredMessage> {
    use futures::StreamExt;
    let mut handle = jetstream
        .get_stream(stream)
        .await
        .unwrap_or_else(|error| panic!("stream {stream}: {error}"));
    let total = handle
        .info()
        .await
        .unwrap_or_else(|error| panic!("stream {stream} info: {error}"))
        .state
        .messages;
    let mut stored = Vec::new();
    if total == 0 {
        return stored;
    }
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|error| panic!("consumer on {stream}: {error}"));
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await
        .unwrap_or_else(|error| panic!("read {stream}: {error}"));
    while (stored.len() as u64) < total {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let Ok(Some(Ok(message))) = next else {
            panic!("stream {stream}: read {} of {total} messages", stored.len());
        };
        let info = message.info().expect("jetstream message metadata");
        stored.push(StoredMessage {
            sequence: info.stream_sequence,
            subject: message.subject.to_string(),
            message_id: message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("Nats-Msg-Id"))
                .map(|value| value.to_string()),
            traceparent: message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("traceparent"))
                .map(|value| value.to_string()),
            payload: message.payload.clone(),
        });
    }
    stored
}
