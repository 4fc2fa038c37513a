//! The delivery of an email in the outbox: `pending` until the SMTP server
//! takes it (`sent`) or the retries are spent (`failed`).

use super::word::word_enum;

word_enum! {
    "email delivery state",
    /// Where an email of the outbox stands.
    pub enum DeliveryState {
        Pending = "pending",
        Sent = "sent",
        Failed = "failed",
    }
}
