//! The integration tests: one binary, so it links once. Each test that
//! touches the database runs on SQLite, and on PostgreSQL when
//! `HOLDQ_TEST_POSTGRES_URL` is set.

mod support;

mod authz;
mod bad_inputs;
mod checks;
mod cli;
mod connections;
mod containment;
mod crash;
mod dropbox;
mod faults;
mod faults_disk;
mod fetch;
mod groups;
mod index;
mod integrity;
mod logs;
mod mail;
mod migrations;
mod mirror;
mod obsolescence;
mod operators;
mod queue_rules;
mod scale_out;
mod secrets;
mod testing_channel;
mod toolchains;
mod tus;
mod web;
mod web_browser;
mod workers;
