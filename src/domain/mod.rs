//! Pure rules of holdq: package names, manifests and the holding-queue state
//! machine. Nothing here touches a database, the network or the filesystem.

pub mod check;
pub mod delivery;
#[cfg(test)]
mod fixtures;
pub mod graph;
pub mod integrity;
pub mod manifest;
pub mod metadata;
pub mod name;
pub mod package;
pub mod passmark;
pub mod resolve;
pub mod upload;
pub mod word;

pub use manifest::{Maintainer, Manifest, ManifestError};
pub use name::{InvalidName, PackageName};
pub use package::PackageState;
pub use upload::UploadState;
