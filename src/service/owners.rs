//! Co-owners of a package: added and removed by an operator on the
//! server's machine (`holdq owner`).

use crate::db::{self, Db};

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("no package {0:?}")]
    NoSuchPackage(String),
    #[error("no user {0:?}; add them first with `holdq user add`")]
    NoSuchUser(String),
    #[error("{email:?} already owns {package:?}")]
    AlreadyOwner { package: String, email: String },
    #[error("{email:?} does not own {package:?}")]
    NotOwner { package: String, email: String },
    #[error("{email:?} is the last owner of {package:?}; add another owner first")]
    LastOwner { package: String, email: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Makes `email` an owner of `package`.
pub async fn add_owner(db: &Db, package: &str, email: &str) -> Result<(), OwnerError> {
    let mut tx = db.begin_write().await?;
    let (package_id, user_id) = find(&mut tx, package, email).await?;
    if !db::packages::add_owner(&mut tx, package_id, user_id).await? {
        return Err(OwnerError::AlreadyOwner {
            package: package.into(),
            email: email.into(),
        });
    }
    record(&mut tx, "owner.added", package_id, user_id).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes `email` from the owners of `package`, never the last one.
pub async fn remove_owner(db: &Db, package: &str, email: &str) -> Result<(), OwnerError> {
    let mut tx = db.begin_write().await?;
    let (package_id, user_id) = find(&mut tx, package, email).await?;
    let owners = db::packages::owner_emails(&mut tx, package_id).await?;
    if owners.len() == 1 && owners[0] == email {
        return Err(OwnerError::LastOwner {
            package: package.into(),
            email: email.into(),
        });
    }
    if !db::packages::remove_owner(&mut tx, package_id, user_id).await? {
        return Err(OwnerError::NotOwner {
            package: package.into(),
            email: email.into(),
        });
    }
    record(&mut tx, "owner.removed", package_id, user_id).await?;
    tx.commit().await?;
    Ok(())
}

async fn find(tx: &mut db::Tx, package: &str, email: &str) -> Result<(i64, i64), OwnerError> {
    let pkg = db::packages::find_by_name(tx, package)
        .await?
        .ok_or_else(|| OwnerError::NoSuchPackage(package.into()))?;
    let user = db::users::find_by_email(tx, email)
        .await?
        .ok_or_else(|| OwnerError::NoSuchUser(email.into()))?;
    Ok((pkg.id, user.id))
}

async fn record(tx: &mut db::Tx, kind: &str, package_id: i64, user_id: i64) -> sqlx::Result<()> {
    db::events::record(
        tx,
        db::events::NewEvent {
            kind,
            package_id: Some(package_id),
            upload_id: None,
            actor_id: None,
            detail: serde_json::json!({ "user_id": user_id }),
        },
    )
    .await
}
