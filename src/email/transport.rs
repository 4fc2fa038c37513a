//! Delivering one email: SMTP through lettre (STARTTLS or TLS per the URL,
//! credentials from the URL, never logged), or `.eml` files in the outbox
//! directory when no SMTP server is configured.

use std::path::PathBuf;

use anyhow::Context;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::MailConfig;

/// One email ready to go.
#[derive(Clone, Debug)]
pub struct OutgoingEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Stable per event and recipient, so a receiver can drop a duplicate.
    pub message_id: String,
}

/// Why a delivery failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub permanent: bool,
    pub message: String,
}

#[derive(Clone)]
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Smtp(_) => f.write_str("Transport::Smtp"),
            Self::Files(dir) => write!(f, "Transport::Files({})", dir.display()),
        }
    }
}

impl Transport {
    /// SMTP when `mail.smtp_url` is set, else files under `<data_dir>/outbox/`.
    pub fn from_config(mail: &MailConfig, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        match &mail.smtp_url {
            Some(url) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .with_context(|| {
                        format!("invalid mail.smtp_url {}", crate::config::redact_url(url))
                    })?
                    .timeout(Some(std::time::Duration::from_secs(30)))
                    .build();
                Ok(Self::Smtp(transport))
            }
            None => {
                let dir = data_dir.join("outbox");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Ok(Self::Files(dir))
            }
        }
    }

    /// Sends `email` from `from`.
    pub async fn send(&self, from: &str, email: &OutgoingEmail) -> Result<(), SendError> {
        let permanent = |message: String| SendError {
            permanent: true,
            message,
        };
        let from: Mailbox = from
            .parse()
            .map_err(|e| permanent(format!("invalid mail.from: {e}")))?;
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| permanent(format!("invalid recipient: {e}")))?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(&email.subject)
            .message_id(Some(email.message_id.clone()))
            .date_now()
            .multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                email.html.clone(),
            ))
            .map_err(|e| permanent(format!("cannot build the message: {e}")))?;
        match self {
            Self::Smtp(smtp) => smtp.send(message).await.map(|_| ()).map_err(|e| SendError {
                permanent: e.is_permanent(),
                message: e.to_string(),
            }),
            Self::Files(dir) => AsyncFileTransport::<Tokio1Executor>::new(dir)
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| SendError {
                    permanent: false,
                    message: format!("cannot write to {}: {e}", dir.display()),
                }),
        }
    }
}
