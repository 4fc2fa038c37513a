//! Enums stored as one lowercase word (in the database, in JSON and on the
//! command line): states and kinds. One macro declares each, so every such
//! enum parses, prints and decodes the same way, and a word this build does
//! not know (written by a newer server during a rolling upgrade) is an
//! error that names it, never a panic.

/// A word that names no variant of the enum it was read as.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {word:?} (written by a newer holdq?)")]
pub struct UnknownWord {
    /// What the word should have named, e.g. "upload state".
    pub what: &'static str,
    pub word: String,
}

/// An enum whose variants are words.
pub trait Word: Copy + Eq + 'static {
    /// What its words name, e.g. "upload state".
    const WHAT: &'static str;
    /// Every variant, in declaration order.
    fn all() -> &'static [Self];
    fn word(self) -> &'static str;
}

/// A state machine over an enum of words: the one place that says which
/// moves are allowed; the database layer refuses the others.
pub trait StateMachine: Word {
    /// Whose states these are, e.g. "an upload".
    const WHOSE: &'static str;

    /// Whether the machine allows going from `self` to `next`.
    fn can_become(self, next: Self) -> bool;

    /// `Ok` when the machine allows going from `self` to `next`, else an
    /// error naming both.
    fn check_move(self, next: Self) -> Result<(), ForbiddenTransition> {
        if self.can_become(next) {
            Ok(())
        } else {
            Err(ForbiddenTransition {
                what: Self::WHOSE,
                from: self.word(),
                to: next.word(),
            })
        }
    }

    /// The states from which the machine allows going to `next`.
    fn sources_of(next: Self) -> impl Iterator<Item = Self> {
        Self::all()
            .iter()
            .copied()
            .filter(move |s| s.can_become(next))
    }
}

/// `word_enum! { "upload state", pub enum UploadState { Queued = "queued", ... } }`
/// declares the enum with `ALL`, `as_str`, `parse`, `Display`, serde as the
macro_rules! word_enum {
    (
        $what:literal,
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $word)] $variant, )+
        }

        impl $name {
            pub const ALL: [$name; [$($word),+].len()] = [$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $word, )+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $( $word => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl $crate::domain::word::Word for $name {
            const WHAT: &'static str = $what;

            fn all() -> &'static [Self] {
                &Self::ALL
            }

            fn word(self) -> &'static str {
                self.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::domain::word::UnknownWord;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s).ok_or($crate::domain::word::UnknownWord { what: $what, word: s })
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::word::UnknownWord;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::try_from(s.to_owned())
            }
        }
    };
}

pub(crate) use word_enum;

/// A state change that a state machine forbids.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} cannot go from {from} to {to}")]
pub struct ForbiddenTransition {
    /// Whose machine, e.g. "an upload".
    pub what: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}
