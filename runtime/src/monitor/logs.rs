//! Container logs in the CRI format (`<RFC 3339 nano> <stream> <P|F> <text>`), rotated as they
//! are written so the file never exceeds its size limit.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};

/// Longest line written as one record; longer lines are split into partial (`P`) records.
const MAX_RECORD_TEXT: usize = 16 * 1024;

/// Which output a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's standard output.
    Stdout,
    /// Its standard error.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Limits of one container's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Largest size of the live file, in bytes.
    pub max_size: u64,
    /// Files kept, the live one included (`log`, `log.1`, ...).
    pub max_files: usize,
}

impl Default for Rotation {
    fn default() -> Self {
        // The kubelet's defaults (containerLogMaxSize 10Mi, containerLogMaxFiles 5).
        Rotation {
            max_size: 10 << 20,
            max_files: 5,
        }
    }
}

/// Writes one container's log.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Rotation,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path: path.to_path_buf(),
            file,
            size,
            rotation,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Takes output as it arrives; complete lines become full records, over-long ones partial
    /// records.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let index = stream as usize;
        self.pending[index].extend_from_slice(data);
        loop {
            let buffer = &self.pending[index];
            if let Some(end) = buffer.iter().position(|b| *b == b'\n')
                && end <= MAX_RECORD_TEXT
            {
                let line: Vec<u8> = self.pending[index].drain(..=end).collect();
                self.record(stream, 'F', &line[..line.len() - 1])?;
            } else if buffer.len() > MAX_RECORD_TEXT {
                let chunk: Vec<u8> = self.pending[index].drain(..MAX_RECORD_TEXT).collect();
                self.record(stream, 'P', &chunk)?;
            } else {
                return Ok(());
            }
        }
    }

    /// Writes what is left of an unfinished last line, at the end of the stream.
    pub fn finish(&mut self, stream: Stream) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if rest.is_empty() {
            Ok(())
        } else {
            self.record(stream, 'F', &rest)
        }
    }

    /// Starts a new file (CRI ReopenContainerLog: after the file was moved away).
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = self.file.metadata()?.len();
        Ok(())
    }

    fn record(&mut self, stream: Stream, tag: char, text: &[u8]) -> std::io::Result<()> {
        let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut record = format!("{timestamp} {} {tag} ", stream.name()).into_bytes();
        record.extend_from_slice(text);
        record.push(b'\n');
        let record_len = record.len() as u64;
        if self.size + record_len > self.rotation.max_size {
            self.rotate()?;
        }
        if record_len > self.rotation.max_size {
            // One record larger than the whole file: keep what fits, still one line.
            let keep = self.rotation.max_size.saturating_sub(1) as usize;
            record.truncate(keep);
            record.push(b'\n');
        }
        self.file.write_all(&record)?;
        self.size += record.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        if self.rotation.max_files <= 1 {
            self.file.set_len(0)?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(numbered(self.rotation.max_files - 1));
        for n in (1..self.rotation.max_files - 1).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.reopen()
    }
}

#[cfg(test)]
mod tests {
    use super::{LogWriter, Rotation, Stream};

    fn records(path: &std::path::Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                let mut parts = line.splitn(4, ' ');
                let timestamp = parts.next().unwrap();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
                    "{timestamp}"
                );
                let (stream, tag, text) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap_or(""),
                );
                (stream.to_string(), tag.to_string(), text.to_string())
            })
            .collect()
    }

    #[test]
    fn lines_are_framed_per_stream_and_long_lines_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogWriter::open(&path, Rotation::default()).unwrap();
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"oops\n").unwrap();
        log.write(Stream::Stdout, b"lo\nworld").unwrap();
        log.write(Stream::Stdout, &vec![b'x'; 20_000]).unwrap();
        log.finish(Stream::Stdout).unwrap();
        let got = records(&path);
        assert_eq!(got[0], ("stderr".into(), "F".into(), "oops".into()));
        assert_eq!(got[1], ("stdout".into(), "F".into(), "hello".into()));
        assert_eq!(got[2].1, "P");
        assert_eq!(got[2].2.len(), 16 * 1024);
        assert_eq!(got[3].1, "F");
        assert_eq!(got[2].2.len() + got[3].2.len(), 5 + 20_000);
    }

    #[test]
    fn rotation_never_overshoots_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let rotation = Rotation {
            max_size: 300,
            max_files: 3,
        };
        let mut log = LogWriter::open(&path, rotation).unwrap();
        for i in 0..100 {
            log.write(Stream::Stdout, format!("line number {i:04}\n").as_bytes())
                .unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(size <= 300, "log grew to {size} bytes");
        }
        assert!(dir.path().join("c.log.1").exists() && dir.path().join("c.log.2").exists());
        assert!(
            !dir.path().join("c.log.3").exists(),
            "more files than max_files"
        );
        let last = records(&path).pop().unwrap();
        assert_eq!(last.2, "line number 0099");
        log.write(Stream::Stdout, &vec![b'y'; 1000]).unwrap();
        log.write(Stream::Stdout, b"\n").unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= 300);
    }
}
