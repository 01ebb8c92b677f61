//! The embedded default: a nameserver inside the broker process on 127.0.0.1, so a single
//! machine needs one command (`tern broker` with no `--nameserver`).

use std::net::{Ipv4Addr, SocketAddr};

use crate::server::{NameServer, NameServerConfig, NameServerError};

/// Start a nameserver with the DESIGN §4 defaults on `127.0.0.1:port` (0: the OS picks).
/// Its address is [`NameServer::local_addr`]; stop it with [`NameServer::shutdown`].
pub async fn start_embedded(port: u16) -> Result<NameServer, NameServerError> {
    NameServer::start(NameServerConfig::new(SocketAddr::from((
        Ipv4Addr::LOCALHOST,
        port,
    ))))
    .await
}
