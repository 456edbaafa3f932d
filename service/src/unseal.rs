//! The unseal ceremony: a daemon whose key is opened by operators
//! (`unseal = "ceremony"`) starts sealed and waits on a local Unix socket for
//! the passphrase, or for k of n Shamir shares of it, from `custos unseal`.
//!
//! While it waits, its metrics listener answers `/healthz` with 503 "sealed"
//! (how many shares it holds, how many it needs) and `/metrics` with
//! `custos_sealed 1`; nothing else listens. The socket is created mode 0600
//! in the daemon's private data directory and only accepts peers of the
//! daemon's own user (or root), checked with `SO_PEERCRED`. Shares and
//! passphrases stay in zeroizing memory and are never logged; a wrong
//! passphrase (or a combination of shares that is not it) is reported to
//! the operator who completed it and every share held is dropped, so a bad
//! share cannot poison later attempts. SIGTERM or Ctrl-C ends the wait.
//!
//! Protocol: one JSON object per connection each way, newline-terminated.
//! A request has `passphrase` or `share` (or neither: status only); the
//! answer is an [`UnsealStatus`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use custos_hsm::Passphrase;
use custos_hsm::shamir::{self, Share};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

/// Default socket file name, in the daemon's data directory.
pub const SOCKET_NAME: &str = "unseal.sock";

/// Largest request accepted, bytes (a share of a 1 KiB passphrase is ~2 KiB).
const MAX_REQUEST: u64 = 16 * 1024;

/// What an operator sends.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsealRequest {
    /// The whole passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<Zeroizing<String>>,
    /// One share (`custos-share1-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<Zeroizing<String>>,
    /// Drop every share held (a wrong one was given).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reset: bool,
}

impl std::fmt::Debug for UnsealRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsealRequest")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("share", &self.share.as_ref().map(|_| "<redacted>"))
            .field("reset", &self.reset)
            .finish()
    }
}

/// What the daemon answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsealStatus {
    /// The daemon ("signer signer-1", "coordinator").
    pub daemon: String,
    /// `sealed` or `unsealed`.
    pub state: String,
    /// Shares held (of the split named by `split`).
    pub shares: u8,
    /// Shares needed, once the first share told it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u8>,
    /// The split the held shares belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
    /// What happened to this request.
    pub message: String,
    /// Set when this request was refused or the attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the wait ended without a key.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// The socket could not be set up.
    #[error("unseal socket {}: {reason}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// SIGTERM or Ctrl-C while sealed.
    #[error("stopped while sealed")]
    Stopped,
}

struct Held {
    shares: Vec<Share>,
}

impl Held {
    fn status(
        &self,
        daemon: &str,
        state: &str,
        message: String,
        error: Option<String>,
    ) -> UnsealStatus {
        UnsealStatus {
            daemon: daemon.to_owned(),
            state: state.to_owned(),
            shares: u8::try_from(self.shares.len()).unwrap_or(u8::MAX),
            threshold: self.shares.first().map(|s| s.threshold),
            split: self.shares.first().map(Share::set_id),
            message,
            error,
        }
    }
}

/// A sealed daemon's `/healthz` and `/metrics`.
struct SealedHealth {
    held: Arc<Mutex<Held>>,
}

impl crate::http::Health for SealedHealth {
    fn ready(&self) -> Result<(), String> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        Err(match held.shares.first() {
            Some(s) => format!(
                "sealed ({} of {} shares received)",
                held.shares.len(),
                s.threshold
            ),
            None => "sealed (waiting for `custos unseal`)".to_owned(),
        })
    }
    fn metrics(&self) -> String {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "# TYPE custos_sealed gauge\ncustos_sealed 1\n# TYPE custos_unseal_shares_held gauge\ncustos_unseal_shares_held {}\n",
            held.shares.len()
        )
    }
}

/// Binds the socket: a stale socket file from an earlier run is replaced,
/// anything else at the path is refused.
fn bind(path: &Path) -> Result<UnixListener, UnsealError> {
    let fail = |reason: String| UnsealError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(fail(
                "exists and is not a socket; refusing to replace it".into(),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("cannot make it private: {e}")))?;
    Ok(listener)
}

/// Waits sealed until `open` accepts a passphrase given on `socket` (whole,
/// or combined from shares), serving the sealed health on `metrics`. `open`
/// gets each candidate passphrase and returns the opened key, or why the
/// passphrase does not open it. The socket is removed when the wait ends.
pub async fn wait_for_unseal<T>(
    daemon: &str,
    socket: &Path,
    metrics: SocketAddr,
    mut open: impl FnMut(&Passphrase) -> Result<T, String>,
) -> Result<T, UnsealError> {
    let held = Arc::new(Mutex::new(Held { shares: Vec::new() }));
    let stop_health = CancellationToken::new();
    let health_task = match tokio::net::TcpListener::bind(metrics).await {
        Ok(l) => Some(tokio::spawn(crate::http::serve_metrics(
            l,
            Arc::new(SealedHealth { held: held.clone() }),
            CancellationToken::new(),
            stop_health.clone().cancelled_owned(),
        ))),
        Err(e) => {
            tracing::warn!(%metrics, error = %e, "cannot serve /healthz while sealed");
            None
        }
    };
    // The socket last: once it exists, `/healthz` already says "sealed".
    let listener = match bind(socket) {
        Ok(l) => l,
        Err(e) => {
            stop_health.cancel();
            return Err(e);
        }
    };
    tracing::warn!(socket = %socket.display(), "{daemon} is sealed: waiting for `custos unseal --socket {}`", socket.display());
    let uid = own_uid();
    let result = loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = crate::daemon::shutdown_signal() => break Err(UnsealError::Stopped),
        };
        let Ok((stream, _)) = accepted else { continue };
        match stream.peer_cred() {
            Ok(c) if c.uid() == 0 || Some(c.uid()) == uid => {}
            other => {
                tracing::warn!(peer = ?other.map(|c| c.uid()).ok(), "unseal socket: refused a peer of another user");
                continue;
            }
        }
        let Some(request) = read_request(stream).await else {
            continue;
        };
        let (mut stream, request) = request;
        let (status, opened) = handle(daemon, &held, request, &mut open);
        let _ = write_status(&mut stream, &status).await;
        if let Some(key) = opened {
            break Ok(key);
        }
    };
    drop(listener);
    let _ = std::fs::remove_file(socket);
    stop_health.cancel();
    if let Some(t) = health_task {
        let _ = t.await;
    }
    result
}

/// This process's user id, from the owner of `/proc/self` (no libc call).
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

async fn read_request(stream: UnixStream) -> Option<(UnixStream, Result<UnsealRequest, String>)> {
    let (read, write) = stream.into_split();
    let mut line = Zeroizing::new(String::new());
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        reader.read_line(&mut line),
    )
    .await;
    let stream = reader.into_inner().into_inner().reunite(write).ok()?;
    let parsed = match read {
        Ok(Ok(_)) => serde_json::from_str::<UnsealRequest>(&line)
            .map_err(|e| format!("not an unseal request: {e}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out reading the request".into()),
    };
    Some((stream, parsed))
}

async fn write_status(stream: &mut UnixStream, status: &UnsealStatus) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(status).map_err(std::io::Error::other)?;
    text.push(b'\n');
    stream.write_all(&text).await?;
    stream.shutdown().await
}

/// One request against the held shares: the new status, and the key if
/// this request opened it.
fn handle<T>(
    daemon: &str,
    held: &Mutex<Held>,
    request: Result<UnsealRequest, String>,
    open: &mut impl FnMut(&Passphrase) -> Result<T, String>,
) -> (UnsealStatus, Option<T>) {
    let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
    let refuse = |held: &Held, e: String| held.status(daemon, "sealed", "refused".into(), Some(e));
    let request = match request {
        Ok(r) => r,
        Err(e) => return (refuse(&held, e), None),
    };
    if request.reset {
        let had = held.shares.len();
        held.shares.clear();
        tracing::info!(shares = had, "unseal: shares dropped by an operator");
        let m = format!("{had} share(s) dropped");
        return (held.status(daemon, "sealed", m, None), None);
    }
    let candidate = match (request.passphrase, request.share) {
        (None, None) => {
            return (held.status(daemon, "sealed", "status".into(), None), None);
        }
        (Some(_), Some(_)) => {
            return (
                refuse(&held, "give a passphrase or a share, not both".into()),
                None,
            );
        }
        (Some(p), None) => {
            if p.is_empty() {
                return (refuse(&held, "the passphrase is empty".into()), None);
            }
            Passphrase::new(p.as_bytes().to_vec())
        }
        (None, Some(text)) => {
            let share = match Share::parse(&text) {
                Ok(s) => s,
                Err(e) => return (refuse(&held, e.to_string()), None),
            };
            if let Some(first) = held.shares.first()
                && (first.set != share.set || first.threshold != share.threshold)
            {
                let e = format!(
                    "share of split {} (threshold {}), but the shares held are of split {} (threshold {}); `custos unseal reset` drops them",
                    share.set_id(),
                    share.threshold,
                    first.set_id(),
                    first.threshold
                );
                return (refuse(&held, e), None);
            }
            if held.shares.iter().any(|s| s.index == share.index) {
                let e = format!("share {} was already given", share.index);
                return (refuse(&held, e), None);
            }
            tracing::info!(index = share.index, split = %share.set_id(), "unseal: share received");
            held.shares.push(share);
            let needed = usize::from(held.shares[0].threshold);
            if held.shares.len() < needed {
                let m = format!("share accepted: {} of {needed}", held.shares.len());
                return (held.status(daemon, "sealed", m, None), None);
            }
            match shamir::combine(&held.shares) {
                Ok(p) => p,
                Err(e) => {
                    held.shares.clear();
                    return (refuse(&held, e.to_string()), None);
                }
            }
        }
    };
    match open(&candidate) {
        Ok(key) => {
            held.shares.clear();
            tracing::info!("{daemon} unsealed");
            (
                held.status(daemon, "unsealed", "unsealed".into(), None),
                Some(key),
            )
        }
        Err(e) => {
            let had = held.shares.len();
            held.shares.clear();
            tracing::warn!(shares = had, "unseal attempt failed: {e}");
            let e = if had > 0 {
                format!(
                    "the {had} shares combined do not open the key ({e}); all shares were dropped, start again"
                )
            } else {
                format!("the passphrase does not open the key: {e}")
            };
            (refuse(&held, e), None)
        }
    }
}

/// Sends `request` to the daemon at `socket` and returns its answer.
pub async fn ask(socket: &Path, request: &UnsealRequest) -> std::io::Result<UnsealStatus> {
    let mut stream = UnixStream::connect(socket).await?;
    let mut text = Zeroizing::new(serde_json::to_vec(request).map_err(std::io::Error::other)?);
    text.push(b'\n');
    stream.write_all(&text).await?;
    let mut line = String::new();
    BufReader::new(tokio::io::AsyncReadExt::take(stream, MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    serde_json::from_str(&line).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an unseal answer: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passphrase(p: &str) -> UnsealRequest {
        UnsealRequest {
            passphrase: Some(Zeroizing::new(p.into())),
            ..Default::default()
        }
    }

    fn share(s: &Share) -> UnsealRequest {
        UnsealRequest {
            share: Some(s.to_text()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn shares_or_the_passphrase_open_it_and_mistakes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join(SOCKET_NAME);
        let s2 = socket.clone();
        let waiting = tokio::spawn(async move {
            wait_for_unseal("test", &s2, "127.0.0.1:0".parse().unwrap(), |p| {
                if p.expose() == b"right" {
                    Ok(42)
                } else {
                    Err("wrong passphrase".into())
                }
            })
            .await
        });
        while !socket.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let st = ask(&socket, &UnsealRequest::default()).await.unwrap();
        assert_eq!((st.state.as_str(), st.shares), ("sealed", 0));
        let st = ask(&socket, &passphrase("wrong")).await.unwrap();
        assert!(st.error.unwrap().contains("does not open the key"));

        // Shares of a wrong passphrase: combined, refused, dropped.
        let bad = shamir::split(b"wrong", 2, 3).unwrap();
        let st = ask(&socket, &share(&bad[0])).await.unwrap();
        assert_eq!((st.shares, st.threshold), (1, Some(2)));
        let st = ask(&socket, &share(&bad[0])).await.unwrap();
        assert!(st.error.unwrap().contains("already given"));
        let st = ask(&socket, &share(&bad[2])).await.unwrap();
        assert!(st.error.unwrap().contains("2 shares combined do not open"));
        assert_eq!(st.shares, 0);

        // A share of another split is refused while others are held; reset drops them.
        let good = shamir::split(b"right", 2, 3).unwrap();
        ask(&socket, &share(&bad[1])).await.unwrap();
        let st = ask(&socket, &share(&good[1])).await.unwrap();
        assert!(st.error.unwrap().contains("custos unseal reset"));
        let reset = UnsealRequest {
            reset: true,
            ..Default::default()
        };
        assert_eq!(ask(&socket, &reset).await.unwrap().shares, 0);
        let st = ask(&socket, &share(&good[2])).await.unwrap();
        assert_eq!(st.message, "share accepted: 1 of 2");
        let st = ask(&socket, &share(&good[0])).await.unwrap();
        assert_eq!(st.state, "unsealed");
        assert_eq!(waiting.await.unwrap().unwrap(), 42);
        assert!(!socket.exists(), "the socket goes with the wait");
    }

    #[test]
    fn requests_do_not_print_secrets() {
        let r = passphrase("hunter2");
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
