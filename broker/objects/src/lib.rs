//! The S3 tier's storage: the `ObjectStore` trait with its S3 and
//! local-directory backends, and the multi-stream object format. Kept out of
//! the broker crate so that aws-sdk-s3 is built once, not on every broker edit.

pub mod format;
pub mod local;
#[cfg(feature = "s3")]
pub mod s3;
pub mod store;

pub use local::LocalDirStore;
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3Store};
pub use store::{ObjectStore, StoreError};
