//! What the web pages show (SPEC section 8a), as typed views built from the
//! same use cases and the same policy as the API: sign-in sessions, the
//! page of an upload (why it is held), and the package website.

pub mod account;
pub mod packages;
pub mod queue_page;
pub mod sessions;
pub mod status;
pub mod upload_page;
