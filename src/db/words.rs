//! The words of the domain's enums (states, kinds) as SQL text columns: a
//! row decodes them straight into the enum, and a word this build does not
//! know is an error naming the column and the word, e.g. `error occurred
//! while decoding column "state": unknown upload state "archived" (written
//! by a newer holdq?)`. (sqlx's `#[sqlx(try_from)]` loses that message.)

use sqlx::any::{Any, AnyTypeInfo, AnyValueRef};
use sqlx::decode::Decode;
use sqlx::error::BoxDynError;
use sqlx::types::Type;

use crate::domain::check::{CheckKind, CheckState};
use crate::domain::delivery::DeliveryState;
use crate::domain::upload::GroupState;
use crate::domain::{PackageState, UploadState};

macro_rules! text_column {
    ($($ty:ty),+ $(,)?) => {$(
        impl Type<Any> for $ty {
            fn type_info() -> AnyTypeInfo {
                <String as Type<Any>>::type_info()
            }

            fn compatible(ty: &AnyTypeInfo) -> bool {
                <String as Type<Any>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Any> for $ty {
            fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
                let word = <String as Decode<'r, Any>>::decode(value)?;
                Ok(<$ty>::try_from(word)?)
            }
        }
    )+};
}

text_column!(
    UploadState,
    CheckState,
    CheckKind,
    GroupState,
    PackageState,
    DeliveryState,
);
