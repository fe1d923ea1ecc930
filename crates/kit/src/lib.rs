//! The shared runtime of every oba service.
//!
//! A service crate brings its domain, storage and gRPC adapters; everything that is the
//! same for all services lives here once: reading configuration, logging, serving gRPC and
//! HTTP on one port with health and metrics, shutting down, connecting and migrating the
//! database, verifying tokens and mapping errors to one set of codes.

pub mod auth;
pub mod backends;
pub mod bus;
pub mod config;
pub mod consumer;
pub mod db;
pub mod error;
pub mod limit;
pub mod metrics;
pub mod outbox;
pub mod page;
pub mod peer;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod trace;

pub use error::{ErrorCode, ServiceError};
