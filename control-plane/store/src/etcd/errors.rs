//! What etcd's errors mean to the store.

use crate::StoreError;

/// An etcd error sorted by what the store makes of it. Some need another request to fill in
/// (the compaction point, the current revision), which the caller makes.
#[derive(Debug)]
pub(super) enum Failure {
    /// The revision asked for is below etcd's compaction point.
    Compacted,
    /// The revision asked for is above etcd's.
    Future,
    /// etcd refused the request's size (its `--max-request-bytes`).
    TooLarge,
    /// Done with: the store's error.
    Plain(StoreError),
}

/// Sorts `error`, from doing `what`.
pub(super) fn classify(what: &str, error: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    use tonic::Code;
    match error {
        E::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                Failure::Compacted
            } else if message.contains("required revision is a future revision") {
                Failure::Future
            } else if message.contains("request is too large") {
                Failure::TooLarge
            } else {
                match status.code() {
                    // No leader, a leader change, a timeout inside etcd, a dropped connection:
                    // all pass, so a client may retry.
                    Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Cancelled
                    | Code::Aborted
                    | Code::Unknown => {
                        Failure::Plain(StoreError::Unavailable(format!("etcd: {what}: {message}")))
                    }
                    code => Failure::Plain(StoreError::Internal(format!(
                        "etcd: {what}: {code:?}: {message}"
                    ))),
                }
            }
        }
        E::TransportError(e) => {
            Failure::Plain(StoreError::Unavailable(format!("etcd: {what}: {e}")))
        }
        E::IoError(e) => Failure::Plain(StoreError::Unavailable(format!("etcd: {what}: {e}"))),
        E::WatchError(e) => Failure::Plain(StoreError::Unavailable(format!("etcd: {what}: {e}"))),
        other => Failure::Plain(StoreError::Internal(format!("etcd: {what}: {other}"))),
    }
}

/// Whether a request that failed so was never sent (no connection to the member it was routed
/// to), so that sending it again cannot apply it twice.
pub(super) fn never_sent(error: &StoreError) -> bool {
    match error {
        StoreError::Unavailable(message) => {
            let message = message.to_ascii_lowercase();
            message.contains("tcp connect error") || message.contains("connection refused")
        }
        _ => false,
    }
}
