//! Uploads in flight per user: each holds a slot until its request ends,
//! so one account cannot hold the server's connections and disk with
//! uploads that never finish (`[server] uploads_per_user`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use super::ApiError;

/// The slots of every user, shared by all requests of one server.
#[derive(Clone, Debug)]
pub struct UploadSlots {
    limit: u32,
    taken: Arc<Mutex<HashMap<i64, u32>>>,
}

/// One upload in flight; the slot is freed when it drops.
#[derive(Debug)]
pub struct UploadSlot {
    user: i64,
    taken: Arc<Mutex<HashMap<i64, u32>>>,
}

impl UploadSlots {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            taken: Arc::default(),
        }
    }

    /// A slot for `user`, or `429 too_many_uploads` naming the limit.
    pub fn take(&self, user: i64) -> Result<UploadSlot, ApiError> {
        let mut taken = self.taken.lock().expect("slot counts are never poisoned");
        let mine = taken.entry(user).or_default();
        if *mine >= self.limit {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_uploads",
                format!(
                    "you already have {} uploads in progress, the most this server takes at once from one user; wait for one to finish",
                    self.limit
                ),
            ));
        }
        *mine += 1;
        Ok(UploadSlot {
            user,
            taken: self.taken.clone(),
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut taken = self.taken.lock().expect("slot counts are never poisoned");
        if let Some(n) = taken.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                taken.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_limit_slots_and_one_more_once_one_is_freed() {
        let slots = UploadSlots::new(2);
        let a = slots.take(1).unwrap();
        let _b = slots.take(1).unwrap();
        let refused = slots.take(1).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.message.contains('2'), "{}", refused.message);
        assert!(slots.take(2).is_ok(), "another user has slots of their own");
        drop(a);
        assert!(slots.take(1).is_ok());
    }
}
