//! Free loopback ports for servers a test starts.

use std::net::{Ipv4Addr, TcpListener};

/// A port that was free a moment ago. Another process can take it before our server binds it, so
/// callers that start servers retry with a new port when the bind fails.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("the loopback interface has free ports")
}
