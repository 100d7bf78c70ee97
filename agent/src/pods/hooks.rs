//! Container lifecycle hooks (postStart, preStop) as the kubelet runs them: exec in the
//! container, an HTTP GET against it, or a sleep, bounded by a deadline (for preStop, what
//! remains of the termination grace period).

use std::time::Duration;

use k8s_openapi::api::core::v1::{HTTPGetAction, LifecycleHandler};

use crate::cri::Cri;
use crate::probes::{ProbeTarget, http, http_request};

/// The User-Agent of hook requests (kube-lifecycle/<major>.<minor>).
pub const HOOK_USER_AGENT: &str = "kube-lifecycle/1.33";

/// How long an HTTP hook without a deadline may take: the kubelet sets no limit for postStart,
/// but a connection nobody answers must not hold a container for ever.
const NO_DEADLINE_HTTP_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// The two hook points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookEvent {
    /// Right after the container started; the container counts as running only after it.
    PostStart,
    /// Before the container is stopped.
    PreStop,
}

impl HookEvent {
    /// The event reason the kubelet records when the hook fails.
    pub fn failure_reason(self) -> &'static str {
        match self {
            HookEvent::PostStart => "FailedPostStartHook",
            HookEvent::PreStop => "FailedPreStopHook",
        }
    }
}

/// A hook that failed, with the message for the event and the container's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HookError {
    /// Which hook.
    pub event: HookEvent,
    /// What happened, including the handler's output for exec hooks.
    pub message: String,
}

impl HookError {
    /// The event reason: FailedPostStartHook or FailedPreStopHook.
    pub fn reason(&self) -> &'static str {
        self.event.failure_reason()
    }
}

async fn within<T>(
    deadline: Option<Duration>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

/// Runs `handler` for `event` against `target`, giving up after `deadline` (None: no limit).
pub async fn run_hook(
    event: HookEvent,
    handler: &LifecycleHandler,
    target: &ProbeTarget,
    cri: &Cri,
    deadline: Option<Duration>,
) -> Result<(), HookError> {
    let container = &target.container.name;
    let fail = |message: String| HookError { event, message };
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        // The runtime's own timeout, in whole seconds rounded up (0: none).
        let seconds = deadline
            .map(|d| d.as_secs() as i64 + i64::from(d.subsec_nanos() > 0))
            .unwrap_or(0);
        let call = cri.exec_sync(&target.container_id, command.clone(), seconds);
        let describe = |error: String, output: &str| {
            format!(
                "Exec lifecycle hook ({command:?}) for Container {container:?} failed - error: {error}, message: {output:?}"
            )
        };
        return match within(deadline, call).await {
            Some(Ok(out)) if out.exit_code == 0 => Ok(()),
            Some(Ok(out)) => {
                let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&out.stderr));
                Err(fail(describe(
                    format!("command exited with {}", out.exit_code),
                    &output,
                )))
            }
            Some(Err(status)) => Err(fail(describe(status.message().to_string(), ""))),
            None => Err(fail(describe(
                format!("timed out after {:?}", deadline.unwrap_or_default()),
                "",
            ))),
        };
    }
    if let Some(action) = &handler.http_get {
        return http_hook(event, action, target, deadline).await;
    }
    if let Some(sleep) = &handler.sleep {
        return sleep_hook(event, sleep.seconds, container, deadline).await;
    }
    if handler.tcp_socket.is_some() {
        return Err(fail(format!(
            "tcpSocket lifecycle hook for Container {container:?} failed - error: tcpSocket is not supported as a lifecycle handler"
        )));
    }
    Err(fail(format!(
        "lifecycle hook for Container {container:?} failed - error: no handler (exec, httpGet or sleep) set"
    )))
}

/// An httpGet hook. Like the kubelet, only a request that gets no answer fails the hook: the
/// status code of the answer is not judged.
async fn http_hook(
    event: HookEvent,
    action: &HTTPGetAction,
    target: &ProbeTarget,
    deadline: Option<Duration>,
) -> Result<(), HookError> {
    let path = action.path.clone().unwrap_or_default();
    let container = &target.container.name;
    let fail = |error: String| HookError {
        event,
        message: format!(
            "HTTP lifecycle hook ({path}) for Container {container:?} failed - error: {error}"
        ),
    };
    let (url, headers) = http_request(action, target).map_err(fail)?;
    let limit = deadline.unwrap_or(NO_DEADLINE_HTTP_LIMIT);
    http::get(&url, &headers, HOOK_USER_AGENT, limit)
        .await
        .map(|_| ())
        .map_err(fail)
}

/// A sleep hook; a deadline shorter than the sleep cuts it short with an error.
async fn sleep_hook(
    event: HookEvent,
    seconds: i64,
    container: &str,
    deadline: Option<Duration>,
) -> Result<(), HookError> {
    let seconds = u64::try_from(seconds).unwrap_or(0);
    let wanted = Duration::from_secs(seconds);
    match deadline {
        Some(d) if d < wanted => {
            tokio::time::sleep(d).await;
            Err(HookError {
                event,
                message: format!(
                    "Sleep lifecycle hook ({seconds}) for Container {container:?} failed - error: container terminated before sleep hook finished"
                ),
            })
        }
        _ => {
            tokio::time::sleep(wanted).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use k8s_openapi::api::core::v1::Container;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that records each request head and answers `status`.
    async fn server(status: u16) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            }
        });
        (addr, seen)
    }

    fn target() -> ProbeTarget {
        ProbeTarget {
            pod_ip: Some("127.0.0.1".parse().unwrap()),
            host_network: false,
            container_id: "c".into(),
            container: Container {
                name: "app".into(),
                ..Default::default()
            },
        }
    }

    fn action(port: u16) -> HTTPGetAction {
        HTTPGetAction {
            port: IntOrString::Int(port as i32),
            path: Some("/shutdown".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn http_hooks_call_the_container() {
        let (addr, seen) = server(500).await;
        let r = http_hook(HookEvent::PreStop, &action(addr.port()), &target(), None).await;
        // The kubelet does not judge the status code of a hook's answer.
        assert_eq!(r, Ok(()));
        let head = seen.lock().unwrap()[0].clone();
        assert!(head.starts_with("GET /shutdown HTTP/1.1"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("user-agent: kube-lifecycle/1.33")
        );

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = http_hook(HookEvent::PostStart, &action(port), &target(), None)
            .await
            .unwrap_err();
        assert_eq!(e.reason(), "FailedPostStartHook");
        assert!(
            e.message
                .starts_with("HTTP lifecycle hook (/shutdown) for Container \"app\" failed")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_hooks_respect_the_deadline() {
        let start = tokio::time::Instant::now();
        sleep_hook(HookEvent::PreStop, 5, "app", Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(start.elapsed().as_secs(), 5);
        let e = sleep_hook(HookEvent::PreStop, 60, "app", Some(Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed().as_secs(), 15);
        assert_eq!(e.reason(), "FailedPreStopHook");
        assert!(e.message.contains("terminated before sleep hook finished"));
        sleep_hook(HookEvent::PostStart, 0, "app", None)
            .await
            .unwrap();
    }
}
