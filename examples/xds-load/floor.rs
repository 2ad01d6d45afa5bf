//! The floor for one push: the update encoded once, then written to N loopback sockets whose
//! other ends are read by another process, the least any server could do.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::util::pack_any;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::server::load_snapshot;
use super::{Args, Child};
use ecs_xds::snapshot::ResourceType;

pub struct Floor {
    pub bytes: usize,
    pub encode: Duration,
    pub total: Duration,
}

/// Measures the floor for a response like the measured EDS update.
pub async fn measure(args: &Args) -> Floor {
    let mut sink = Child::spawn("--sink", args).await;
    let addr: std::net::SocketAddr = sink.line().await.parse().unwrap();
    let mut sockets = Vec::with_capacity(args.streams);
    for _ in 0..args.streams {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        sockets.push(s);
    }
    assert_eq!(sink.line().await, "accepted");
    // The update: the changed ClusterLoadAssignment, in a response like the server's.
    let snapshot = load_snapshot(args.clusters, args.endpoints, 1);
    let cla: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment = snapshot
        .of(ResourceType::Endpoint)
        .resources()
        .values()
        .next()
        .unwrap()
        .decode()
        .unwrap();
    let t0 = Instant::now();
    let response = DiscoveryResponse {
        version_info: "0123456789abcdef".into(),
        resources: vec![pack_any(cla)],
        type_url: ResourceType::Endpoint.type_url().into(),
        nonce: "1".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let encode = t0.elapsed();
    sink.say(&response.len().to_string()).await;
    assert_eq!(sink.line().await, "ready");
    let t1 = Instant::now();
    for socket in &mut sockets {
        socket.write_all(&response).await.unwrap();
    }
    assert_eq!(sink.line().await, "done");
    Floor {
        bytes: response.len(),
        encode,
        total: encode + t1.elapsed(),
    }
}

/// The sink child: accepts N connections, then reads the announced number of bytes from each.
pub async fn sink(n: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(listener.accept().await.unwrap().0);
    }
    println!("accepted");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let len: usize = line.trim().parse().unwrap();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; len];
                c.read_exact(&mut buf).await.unwrap();
            })
        })
        .collect();
    println!("ready");
    for t in tasks {
        t.await.unwrap();
    }
    println!("done");
}
