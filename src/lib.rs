//! holdq: a package repository server whose stable repository cannot be
//! broken by an upload. Uploads wait in an integrity holding queue until
//! their checks pass; see `SPEC.md` for the contract.
//!
//! Layers, each using only those above it: [`domain`] (pure rules);
//! [`service`] (one function per use case); [`db`] and [`storage`] (the
//! outside world); [`http`] and [`cli`] (thin edges).

pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod email;
pub mod http;
pub mod jobs;
pub mod sandbox;
pub mod service;
pub mod storage;
