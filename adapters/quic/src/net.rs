//! Sockets and QUIC transport settings, sized on purpose.
//!
//! DESIGN §7: a QUIC producer elsewhere reached only 29 MB/s because the kernel's default
//! ~212 KiB UDP receive buffer overflowed and datagrams were dropped. Here both ends ask for
//! [`UDP_SOCKET_BUFFER_BYTES_DEFAULT`] send and receive buffers and log what the kernel granted,
//! and the flow-control windows are large enough that one 100-message batch or one pull answer
//! never waits for credit.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use quinn::{TransportConfig, VarInt};
use socket2::{Domain, Protocol, Socket, Type};

use crate::limits::*;

/// What the kernel granted for a socket's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketBuffers {
    pub requested_bytes: usize,
    pub recv_bytes: usize,
    pub send_bytes: usize,
}

/// Bind a UDP socket with large buffers.
pub fn bind_udp(
    addr: SocketAddr,
    buffer_bytes: usize,
) -> std::io::Result<(UdpSocket, SocketBuffers)> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Dual-stack behaviour differs by platform; an IPv6 address means IPv6 here.
        socket.set_only_v6(true)?;
    }
    // Failures to grow the buffers are not fatal: the granted size is reported below.
    if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
        tracing::warn!("SO_RCVBUF {buffer_bytes}: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
        tracing::warn!("SO_SNDBUF {buffer_bytes}: {e}");
    }
    socket.bind(&addr.into())?;
    let buffers = SocketBuffers {
        requested_bytes: buffer_bytes,
        recv_bytes: socket.recv_buffer_size().unwrap_or(0),
        send_bytes: socket.send_buffer_size().unwrap_or(0),
    };
    // Linux reports twice the usable size it granted; less than asked means rmem_max capped it.
    if buffers.recv_bytes < buffer_bytes {
        tracing::warn!(
            granted = buffers.recv_bytes,
            requested = buffer_bytes,
            "the kernel capped the UDP receive buffer; raise net.core.rmem_max to avoid drops"
        );
    }
    Ok((socket.into(), buffers))
}

/// Endpoint settings: the largest UDP payload this end accepts follows `mtu_upper_bound`.
pub fn endpoint_config(mtu_upper_bound: u16) -> quinn::EndpointConfig {
    let mut e = quinn::EndpointConfig::default();
    let payload = mtu_upper_bound
        .max(MTU_UPPER_BOUND_DEFAULT)
        .saturating_add(20);
    if e.max_udp_payload_size(payload).is_err() {
        tracing::warn!(
            payload,
            "max_udp_payload_size refused; keeping quinn's default"
        );
    }
    e
}

/// Transport settings shared by broker and client. Path-MTU discovery probes up to
/// `mtu_upper_bound` (quinn's default 1452 suits Ethernet; loopback and jumbo-frame networks
/// gain from more: fewer packets to encrypt and send per batch).
pub fn transport_config(
    streams_max: u32,
    uni_streams_max: u32,
    keep_alive: bool,
    mtu_upper_bound: u16,
) -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(mtu_upper_bound.max(1200));
    t.mtu_discovery_config(Some(mtu));
    t.max_concurrent_bidi_streams(VarInt::from_u32(streams_max));
    t.max_concurrent_uni_streams(VarInt::from_u32(uni_streams_max));
    t.stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES));
    t.receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES));
    t.send_window(SEND_WINDOW_BYTES);
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .expect("the idle timeout fits a QUIC varint"),
    ));
    if keep_alive {
        t.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    }
    Arc::new(t)
}
