//! A TCP proxy on 127.0.0.1 in front of another 127.0.0.1 port, which a test can break:
//! - down, it drops every open connection and closes new ones as soon as they are accepted (as
//!   an unreachable endpoint behind a load balancer does);
//! - hanging, it keeps every connection open and forwards nothing either way (as a server that
//!   accepts connections but never answers does).
//!
//! Lives as long as the test's runtime.

#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Down,
    Hanging,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl FaultProxy {
    /// Forwards 127.0.0.1:<port it picks> to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watch) = watch::channel(Mode::Up);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *watch.borrow() == Mode::Down {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, target, watch.clone()));
            }
        });
        FaultProxy { addr, mode }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the proxy on or off.
    pub fn set_up(&self, up: bool) {
        self.set_mode(if up { Mode::Up } else { Mode::Down });
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Forwards while the proxy is up. Once it hangs, the connection stays open and unanswered
/// until the proxy is up or down again, and is then closed (what was sent meanwhile is lost). A
/// connection accepted while hanging waits, silent, and is forwarded if the proxy comes back up.
async fn forward(mut client: TcpStream, target: u16, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow_and_update() == Mode::Hanging {
        let next = mode.wait_for(|m| *m != Mode::Hanging).await.map(|m| *m);
        if !matches!(next, Ok(Mode::Up)) {
            return;
        }
    }
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = mode.wait_for(|m| *m != Mode::Up) => {}
    }
    drop(server);
    let _ = mode.wait_for(|m| *m != Mode::Hanging).await;
}
