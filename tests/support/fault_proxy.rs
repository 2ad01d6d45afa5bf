//! A TCP proxy on 127.0.0.1 in front of another 127.0.0.1 port, which a test can switch off:
//! off, it drops every open connection and closes new ones as soon as they are accepted (as an
//! unreachable endpoint behind a load balancer does). Lives as long as the test's runtime.

#![allow(dead_code)]

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct FaultProxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl FaultProxy {
    /// Forwards 127.0.0.1:<port it picks> to 127.0.0.1:`target`.
    pub async fn start(target: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, watch) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*watch.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(forward(client, target, watch.clone()));
            }
        });
        FaultProxy { addr, up }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the proxy on or off.
    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

async fn forward(mut client: TcpStream, target: u16, mut up: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = up.wait_for(|up| !*up) => {}
    }
}
