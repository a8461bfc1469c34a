//! Multi-process tests: real Keel binaries on loopback, driven from outside
//! through the same gRPC API and client library that Keel's own processes use.

mod broker_clients;
mod broker_delete_records;
mod broker_failover;
mod broker_fetch;
mod broker_idempotence;
mod broker_kcat;
mod broker_objects;
mod broker_produce;
mod broker_restart;
mod broker_sasl;
mod broker_tls;
mod chaos;
mod consumer_groups;
mod controller_admin;
mod controller_bad_input;
mod controller_learner;
mod controller_quorum;
mod controller_sessions;
mod controller_snapshot;
mod deploy_units;
mod gray_failures;
mod internal_auth;
mod keelctl_cli;
mod launcher;
mod metrics_dashboard;
mod tidy;
mod transactions;
mod wal_full_disk;
mod wal_node;
mod wal_recycling;
mod wal_writer;
