//! Shared helpers for the integration tests: an in-process xDS server on 127.0.0.1:0, sample
//! snapshots, and thin xDS clients over real gRPC.
#![allow(dead_code)]

pub mod xds;
