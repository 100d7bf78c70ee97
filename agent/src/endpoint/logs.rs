//! `/containerLogs/{namespace}/{pod}/{container}`: a container's log as the kubelet serves it
//! (what `kubectl logs` shows), read back from the CRI log files the runtime writes
//! (`TIMESTAMP STREAM P|F TEXT` per record), with the kubelet's options: `follow`, `previous`,
//! `tailLines`, `sinceSeconds` / `sinceTime`, `timestamps` and `limitBytes`.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hyper::body::Bytes;
use hyper::body::Frame;
use k8s_openapi::api::core::v1::ContainerStatus;
use tokio::sync::mpsc;

use crate::pods::{NodeContext, sandbox_config};

/// How often a followed log is checked for more records (and for rotation).
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The kubelet's log options, from the query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Keep streaming while the container runs.
    pub follow: bool,
    /// The previous instance's log.
    pub previous: bool,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<usize>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// Parses Go's `strconv.ParseBool` spellings, as the kubelet's query decoder does.
fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{name}: invalid value {value:?}: not a boolean")),
    }
}

fn parse_number(name: &str, value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .map_err(|_| format!("{name}: invalid value {value:?}: not an integer"))
}

impl LogOptions {
    /// The options of a query (its decoded pairs), refusing what the API server's validation
    /// refuses, in its words.
    pub fn from_query(pairs: &[(String, String)], now: DateTime<Utc>) -> Result<Self, String> {
        let mut options = LogOptions::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (name, value) in pairs {
            match name.as_str() {
                "follow" => options.follow = parse_bool(name, value)?,
                "previous" => options.previous = parse_bool(name, value)?,
                "timestamps" => options.timestamps = parse_bool(name, value)?,
                "tailLines" => {
                    let n = parse_number(name, value)?;
                    if n < 0 {
                        return Err(
                            "tailLines: Invalid value: must be greater than or equal to 0".into(),
                        );
                    }
                    options.tail_lines = usize::try_from(n).ok();
                }
                "limitBytes" => {
                    let n = parse_number(name, value)?;
                    if n < 1 {
                        return Err("limitBytes: Invalid value: must be greater than 0".into());
                    }
                    options.limit_bytes = u64::try_from(n).ok();
                }
                "sinceSeconds" => {
                    let n = parse_number(name, value)?;
                    if n < 1 {
                        return Err("sinceSeconds: Invalid value: must be greater than 0".into());
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let at = DateTime::parse_from_rfc3339(value).map_err(|_| {
                        format!("sinceTime: invalid value {value:?}: not an RFC 3339 time")
                    })?;
                    since_time = Some(at.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        options.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
            }
            (Some(seconds), None) => Some(now - chrono::Duration::seconds(seconds)),
            (None, at) => at,
        };
        Ok(options)
    }
}

/// Why a log cannot be served: the status and the kubelet's message.
#[derive(Debug, Clone, PartialEq)]
pub struct LogError {
    /// 400 or 404.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl LogError {
    fn bad_request(message: String) -> Self {
        LogError {
            status: 400,
            message,
        }
    }

    fn not_found(message: String) -> Self {
        LogError {
            status: 404,
            message,
        }
    }
}

/// The log file of one container instance and whether that instance still runs.
#[derive(Debug, Clone)]
pub struct LogSource {
    /// The CRI log file.
    pub file: PathBuf,
    /// The instance's container ID (without the runtime prefix), to tell when it stops.
    pub container_id: String,
    uid: String,
    container: String,
}

/// Finds the log of `container` in pod `namespace/name`, as the kubelet's checks have it: the
/// pod must be known, the container must have started, and `previous` needs a restart.
pub fn locate(
    ctx: &NodeContext,
    namespace: &str,
    name: &str,
    container: &str,
    previous: bool,
) -> Result<LogSource, LogError> {
    let Some(record) = ctx.store.find(namespace, name) else {
        return Err(LogError::not_found(format!(
            "pod {namespace}/{name} not found"
        )));
    };
    let status = find_status(&record.status, container).ok_or_else(|| {
        LogError::bad_request(format!("container {container} is not valid for pod {name}"))
    })?;
    let attempt = if previous {
        let last = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref());
        if status.restart_count == 0 || last.is_none() {
            return Err(LogError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        status.restart_count - 1
    } else {
        if status.container_id.as_deref().unwrap_or("").is_empty() {
            let reason = status
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone())
                .unwrap_or_else(|| "ContainerCreating".into());
            return Err(LogError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
            )));
        }
        status.restart_count
    };
    let container_id = if previous {
        status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.container_id.clone())
    } else {
        status.container_id.clone()
    }
    .unwrap_or_default();
    let dir = sandbox_config::log_directory(&ctx.settings.pod_logs_dir, &record.pod);
    Ok(LogSource {
        file: dir.join(container).join(format!("{attempt}.log")),
        container_id: crate::pods::status::runtime_container_id(&container_id).to_string(),
        uid: record.pod.metadata.uid.clone().unwrap_or_default(),
        container: container.to_string(),
    })
}

fn find_status<'a>(
    status: &'a k8s_openapi::api::core::v1::PodStatus,
    container: &str,
) -> Option<&'a ContainerStatus> {
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .chain(status.ephemeral_container_statuses.iter().flatten())
        .find(|s| s.name == container)
}

/// Whether the instance `source` names still runs, by the agent's last status.
fn still_running(ctx: &NodeContext, source: &LogSource) -> bool {
    ctx.store.list().into_iter().any(|record| {
        record.pod.metadata.uid.as_deref() == Some(source.uid.as_str())
            && find_status(&record.status, &source.container).is_some_and(|s| {
                crate::pods::status::runtime_container_id(s.container_id.as_deref().unwrap_or(""))
                    == source.container_id
                    && s.state.as_ref().is_some_and(|st| st.running.is_some())
            })
    })
}

/// Turns CRI records back into the container's output, a line at a time; a record tagged
/// `P` (partial) continues on the next one.
#[derive(Debug)]
struct Decoder {
    timestamps: bool,
    since: Option<DateTime<Utc>>,
    at_line_start: bool,
}

impl Decoder {
    /// Appends the output of one record line to `out`.
    fn record(&mut self, line: &str, out: &mut Vec<u8>) {
        let mut fields = line.splitn(4, ' ');
        let (Some(ts), Some(_stream), Some(tag)) = (fields.next(), fields.next(), fields.next())
        else {
            return;
        };
        if let Some(since) = self.since {
            let at = DateTime::parse_from_rfc3339(ts).map(|t| t.with_timezone(&Utc));
            if at.is_ok_and(|at| at < since) {
                return;
            }
        }
        if self.at_line_start && self.timestamps {
            out.extend_from_slice(ts.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(fields.next().unwrap_or_default().as_bytes());
        self.at_line_start = tag != "P";
        if self.at_line_start {
            out.push(b'\n');
        }
    }
}

/// The output of whole record lines in `text`, limited to the last `tail` output lines;
/// returns it and how many bytes of `text` were consumed (a trailing unfinished record is
/// left for later).
fn decode(decoder: &mut Decoder, text: &[u8], tail: Option<usize>) -> (Vec<u8>, usize) {
    let consumed = text
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |end| end + 1);
    let mut out = Vec::new();
    for line in text[..consumed].split(|b| *b == b'\n') {
        if !line.is_empty() {
            decoder.record(&String::from_utf8_lossy(line), &mut out);
        }
    }
    if let Some(tail) = tail {
        let mut newlines = 0;
        let mut start = 0;
        // Counts back from the end: the last line may be unfinished (a partial record).
        let body = out.strip_suffix(b"\n").unwrap_or(&out);
        for (i, byte) in body.iter().enumerate().rev() {
            if *byte == b'\n' {
                newlines += 1;
                if newlines == tail {
                    start = i + 1;
                    break;
                }
            }
        }
        if tail == 0 {
            start = out.len();
        }
        out.drain(..start);
    }
    (out, consumed)
}

/// The whole log as it is now, under `options` (follow aside).
pub fn read_all(source: &LogSource, options: &LogOptions) -> std::io::Result<Vec<u8>> {
    let text = std::fs::read(&source.file)?;
    let mut decoder = Decoder {
        timestamps: options.timestamps,
        since: options.since,
        at_line_start: true,
    };
    let (mut out, _) = decode(&mut decoder, &text, options.tail_lines);
    if let Some(limit) = options.limit_bytes {
        out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(out)
}

/// A frame of a log body.
pub type LogFrame = Result<Frame<Bytes>, std::io::Error>;

/// Streams the log into `sink`: what is there now (under `tailLines`), then new records as
/// they are written, across rotation, until the container stops, the byte limit is reached or
/// the client goes away.
pub async fn follow(
    ctx: std::sync::Arc<NodeContext>,
    source: LogSource,
    options: LogOptions,
    sink: mpsc::Sender<LogFrame>,
) {
    let mut decoder = Decoder {
        timestamps: options.timestamps,
        since: options.since,
        at_line_start: true,
    };
    let mut budget = options.limit_bytes.unwrap_or(u64::MAX);
    let mut tail = options.tail_lines;
    let mut reader = match Reader::open(&source.file) {
        Ok(reader) => reader,
        Err(error) => {
            let _ = sink.send(Err(error)).await;
            return;
        }
    };
    loop {
        let chunk = match reader.read_new() {
            Ok(chunk) => chunk,
            Err(error) => {
                let _ = sink.send(Err(error)).await;
                return;
            }
        };
        let (mut out, consumed) = decode(&mut decoder, &chunk, tail.take());
        reader.unread(chunk.len() - consumed);
        if !out.is_empty() {
            let allowed = usize::try_from(budget).unwrap_or(usize::MAX);
            out.truncate(allowed);
            budget -= out.len() as u64;
            if sink.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                return;
            }
            if budget == 0 {
                return;
            }
            continue;
        }
        if sink.is_closed() {
            return;
        }
        match reader.rotated() {
            Ok(true) => {
                // Whatever was left in the old file is read above before this; the new one
                // starts from its beginning.
                match Reader::open(&source.file) {
                    Ok(next) => reader = next,
                    Err(error) => {
                        let _ = sink.send(Err(error)).await;
                        return;
                    }
                }
                continue;
            }
            Ok(false) => {}
            Err(_) => {}
        }
        if !still_running(&ctx, &source) {
            // One last read: records written just before the exit.
            if let Ok(chunk) = reader.read_new() {
                let (out, _) = decode(&mut decoder, &chunk, None);
                if !out.is_empty() {
                    let _ = sink.send(Ok(Frame::data(Bytes::from(out)))).await;
                }
            }
            return;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// An open log file read incrementally.
struct Reader {
    path: PathBuf,
    file: std::fs::File,
    inode: u64,
}

impl Reader {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let inode = file.metadata()?.ino();
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            inode,
        })
    }

    /// What was written since the last read (and what [`Reader::unread`] gave back).
    fn read_new(&mut self) -> std::io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.file.read_to_end(&mut data)?;
        Ok(data)
    }

    /// Gives the last `n` bytes read (an unfinished record) back to the next read.
    fn unread(&mut self, n: usize) {
        if n > 0 {
            let _ = self.file.seek(SeekFrom::Current(-(n as i64)));
        }
    }

    /// Whether the path now names another file: the runtime rotated the log.
    fn rotated(&self) -> std::io::Result<bool> {
        match std::fs::metadata(&self.path) {
            Ok(meta) => Ok(meta.ino() != self.inode),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(timestamps: bool) -> Decoder {
        Decoder {
            timestamps,
            since: None,
            at_line_start: true,
        }
    }

    const LOG: &str = "2026-01-01T00:00:00.1Z stdout F one\n2026-01-01T00:00:00.2Z stderr P tw\n2026-01-01T00:00:00.3Z stderr F o\n2026-01-01T00:00:00.4Z stdout F three\n";

    #[test]
    fn records_are_joined_and_tailed() {
        let (out, used) = decode(&mut decoder(false), LOG.as_bytes(), None);
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(used, LOG.len());
        let (out, _) = decode(&mut decoder(false), LOG.as_bytes(), Some(2));
        assert_eq!(String::from_utf8(out).unwrap(), "two\nthree\n");
        let (out, _) = decode(&mut decoder(true), LOG.as_bytes(), Some(1));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-01-01T00:00:00.4Z three\n"
        );
        let (out, _) = decode(&mut decoder(false), LOG.as_bytes(), Some(0));
        assert!(out.is_empty());
    }

    #[test]
    fn an_unfinished_record_waits_for_its_end() {
        let text = b"2026-01-01T00:00:00.1Z stdout F one\n2026-01-01T00:00:00.2Z std";
        let (out, used) = decode(&mut decoder(false), text, None);
        assert_eq!(out, b"one\n");
        assert_eq!(used, 36);
    }

    #[test]
    fn since_drops_older_records() {
        let mut d = decoder(false);
        d.since = Some("2026-01-01T00:00:00.35Z".parse().unwrap());
        let (out, _) = decode(&mut d, LOG.as_bytes(), None);
        assert_eq!(String::from_utf8(out).unwrap(), "three\n");
    }

    #[test]
    fn options_are_validated_as_the_api_server_does() {
        let now: DateTime<Utc> = "2026-01-01T00:01:00Z".parse().unwrap();
        let q = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LogOptions::from_query(&pairs, now)
        };
        let o = q(&[
            ("follow", "true"),
            ("tailLines", "3"),
            ("sinceSeconds", "60"),
        ])
        .unwrap();
        assert!(o.follow);
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.since, Some("2026-01-01T00:00:00Z".parse().unwrap()));
        assert!(
            q(&[("limitBytes", "0")])
                .unwrap_err()
                .contains("limitBytes")
        );
        assert!(q(&[("tailLines", "-1")]).unwrap_err().contains("tailLines"));
        assert!(
            q(&[("sinceSeconds", "5"), ("sinceTime", "2026-01-01T00:00:00Z")])
                .unwrap_err()
                .contains("at most one")
        );
        assert!(q(&[("follow", "maybe")]).unwrap_err().contains("follow"));
    }
}
