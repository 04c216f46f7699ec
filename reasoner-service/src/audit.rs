//! The optional audit log: one JSON line per upstream call with its kind and sizes, never its
//! content. Query images and prompts are not written anywhere; this file proves what left.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct AuditRecord<'a> {
    pub kind: &'a str,
    pub model: &'a str,
    /// Size of the JSON body sent, image included.
    pub request_bytes: usize,
    /// Size of the image's data URI within it (0 when there was none).
    pub image_bytes: usize,
    /// Size of the model's reply text.
    pub response_bytes: usize,
    pub attempts: u32,
    pub outcome: &'a str,
    pub duration_ms: f64,
}

/// Appends records to a file. The lock covers one line's write, never an upstream call.
pub struct AuditLog {
    writer: Mutex<BufWriter<File>>,
}

impl AuditLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            writer: Mutex::new(BufWriter::new(file)),
        })
    }

    pub fn record(&self, record: &AuditRecord<'_>) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis() as u64);
        let mut line = serde_json::to_value(record).expect("an audit record serializes");
        line["unix_ms"] = unix_ms.into();
        let mut writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let written = serde_json::to_writer(&mut *writer, &line)
            .map_err(std::io::Error::from)
            .and_then(|()| writer.write_all(b"\n"))
            .and_then(|()| writer.flush());
        if let Err(error) = written {
            tracing::error!(%error, "could not write the audit log");
        }
    }
}
