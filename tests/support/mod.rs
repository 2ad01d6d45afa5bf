//! Shared helpers for the integration tests: an in-process xDS server on 127.0.0.1:0, sample
//! snapshots, thin xDS clients over real gRPC, a real Envoy, and HTTP backends.
#![allow(dead_code)]

pub mod backend;
pub mod envoy;
pub mod xds;
