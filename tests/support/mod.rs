//! Shared helpers for the integration tests: an in-process xDS server on 127.0.0.1:0, sample
//! snapshots, thin xDS clients over real gRPC, a real Envoy, HTTP backends, moto server, a
//! fake AWS of recorded responses, moto answering DescribeTasks with zones, the daemon's settings
//! file and its admin endpoint's metrics.
#![allow(dead_code)]

pub mod backend;
pub mod daemon;
pub mod deny_proxy;
pub mod envoy;
pub mod events;
pub mod fake_aws;
pub mod fault_proxy;
pub mod grpc;
pub mod http;
pub mod moto;
pub mod netns;
pub mod settings;
pub mod templates;
pub mod xds;
pub mod zoned_ecs;
