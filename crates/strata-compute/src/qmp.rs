//! A minimal QMP (QEMU Machine Protocol) client over a UNIX socket: read the greeting, enter
//! command mode with `qmp_capabilities`, then one command at a time. Asynchronous events that
//! arrive between commands are skipped. QMP is line-delimited JSON.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Talking to QEMU's monitor failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to the QMP socket {path} within {seconds} s")]
    Connect {
        path: String,
        seconds: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP socket i/o")]
    Io(#[from] std::io::Error),
    #[error("QEMU closed the QMP connection")]
    Closed,
    #[error("QMP sent something that is not JSON: {0:?}")]
    BadJson(String),
    #[error("QMP did not greet with a QMP banner: {0}")]
    NoGreeting(String),
    #[error("QMP command {command} failed: {error}")]
    Command { command: String, error: String },
}

/// One QMP session in command mode.
#[derive(Debug)]
pub struct QmpClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QmpClient {
    /// Connects (retrying until `timeout`, since QEMU creates the socket after it starts),
    /// checks the greeting and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(source) if Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        seconds: timeout.as_secs(),
                        source,
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        let mut client = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = client.read_message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::NoGreeting(greeting.to_string()));
        }
        client.execute("qmp_capabilities", None)?;
        Ok(client)
    }

    /// Runs `command` (with optional `arguments`) and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({ "execute": command });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let reply = self.read_message()?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    error: err
                        .get("desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no description")
                        .to_owned(),
                });
            }
            return Err(QmpError::BadJson(reply.to_string()));
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, …).
    pub fn query_status(&mut self) -> Result<String, QmpError> {
        let ret = self.execute("query-status", None)?;
        ret.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QmpError::BadJson(ret.to_string()))
    }

    /// `system_powerdown`: presses the ACPI power button.
    pub fn system_powerdown(&mut self) -> Result<(), QmpError> {
        self.execute("system_powerdown", None).map(|_| ())
    }

    /// `quit`: QEMU exits immediately. The connection may close before the reply arrives.
    pub fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None) {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(QmpError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Closed);
        }
        serde_json::from_str(line.trim()).map_err(|_| QmpError::BadJson(line))
    }
}
