//! The state of a package in the stable repository (SPEC section 5):
//! `active`, `obsolete` (its dependents pinned, no new uploads), or
//! `removed` (nothing depended on it any more; its versions are gone).

use super::word::word_enum;

word_enum! {
    "package state",
    /// Where a package stands in the stable repository.
    pub enum PackageState {
        Active = "active",
        Obsolete = "obsolete",
        Removed = "removed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_an_unknown_one_is_named() {
        for s in PackageState::ALL {
            assert_eq!(PackageState::try_from(s.to_string()), Ok(s));
        }
        let err = PackageState::try_from("archived".to_owned()).unwrap_err();
        assert!(err.to_string().contains("\"archived\""), "{err}");
    }
}
