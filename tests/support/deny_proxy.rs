//! `deny_proxy.py` for one test: an HTTP proxy in front of moto that refuses a removed role
//! (its AssumeRole, and every call signed with credentials it was given), which moto cannot;
//! and, for measurements, adds AWS's round trip to each answer.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use super::moto::{repo_root, venv_python, Moto};

pub struct DenyProxy {
    child: Child,
    pub port: u16,
    pub endpoint: String,
}

impl DenyProxy {
    pub fn start(moto: &Moto) -> DenyProxy {
        DenyProxy::with_delay(moto, 0)
    }

    /// A proxy that also holds every answer `delay_ms` (AWS's round trip, which moto lacks).
    pub fn with_delay(moto: &Moto, delay_ms: u64) -> DenyProxy {
        let script = repo_root().join("tests/support/deny_proxy.py");
        let mut child = Command::new("timeout")
            .args(["600"])
            .arg(venv_python())
            .arg(script)
            .arg(moto.port.to_string())
            .arg(delay_ms.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start deny_proxy.py");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().expect("deny_proxy.py prints its port");
        DenyProxy {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// From now on, `role_arn` is refused, as if removed.
    pub fn deny(&self, role_arn: &str) {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let request = format!(
            "POST /__deny HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{role_arn}",
            role_arn.len()
        );
        conn.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        BufReader::new(conn).read_line(&mut answer).unwrap();
        assert!(answer.contains("200"), "{answer}");
    }
}

impl Drop for DenyProxy {
    fn drop(&mut self) {
        // SIGTERM to `timeout` is forwarded to the proxy; SIGKILL would orphan it.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }
}
