//! The error of the cluster clients (producer, consumer, topic administration).

/// A cluster-level failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClusterError {
    /// Route lookup failed (no nameserver answered, or the topic is unknown).
    Route(crate::client::Error),
    /// A broker refused or could not be reached.
    Broker {
        broker_name: String,
        source: tern_quic::Error,
    },
    /// The route lists no usable queue for the topic.
    NoQueue { topic: String },
    /// The request is invalid before anything is sent.
    Invalid(String),
}

impl ClusterError {
    /// The broker error inside, if any.
    pub fn broker_error(&self) -> Option<&tern_quic::Error> {
        match self {
            ClusterError::Broker { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Route(e) => write!(f, "route lookup: {e}"),
            ClusterError::Broker {
                broker_name,
                source,
            } => write!(f, "broker {broker_name}: {source}"),
            ClusterError::NoQueue { topic } => {
                write!(f, "topic {topic:?} has no writable queue on a live broker")
            }
            ClusterError::Invalid(e) => write!(f, "invalid request: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Route(e) => Some(e),
            ClusterError::Broker { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<crate::client::Error> for ClusterError {
    fn from(e: crate::client::Error) -> Self {
        ClusterError::Route(e)
    }
}
