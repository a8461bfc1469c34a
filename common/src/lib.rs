//! Code every Keel binary shares and nothing service-specific: logging set-up,
//! the admin HTTP server (`/metrics`, `/health`, `/ready`), TOML config
//! loading, and waiting for shutdown signals.

pub mod admin;
pub mod config;
pub mod logging;
pub mod net;
pub mod service;
pub mod signal;
