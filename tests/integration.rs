//! The integration tests, in one binary: one link and one build of `support` instead of one
//! per file, which keeps CI's disk and time down (each test binary links the whole AWS SDK).
//! Each module is one area, named as the files were; run one with
//! `cargo test --test integration backends::`. `discover_once` stays its own binary because
//! it sets process environment variables.

mod support;

mod admin_e2e;
mod backends;
mod cli_discover;
mod cli_render;
mod cli_validate;
mod daemon_e2e;
mod daemon_lifecycle;
mod discover_events;
mod discover_moto;
mod discover_recorded;
mod envoy_e2e;
mod events_e2e;
mod failover;
mod grpc_clients;
mod grpc_servers;
mod identity_e2e;
mod interception;
mod mtls_e2e;
mod multi_account;
mod push_e2e;
mod push_shared;
mod replicas;
mod rest_e2e;
mod traffic_policy;
mod ui_e2e;
mod xds_delta;
mod xds_rest;
mod xds_sotw;
