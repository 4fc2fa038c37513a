//! Emails: rendered from templates (minijinja; subject, plain text and HTML
//! on shared base layouts), sent through a transport (SMTP, or `.eml`
//! files when no SMTP server is configured). The templates are compiled
//! into the binary; `mail.templates_dir` overrides any of them by name.

pub mod transport;

use std::path::PathBuf;

use anyhow::Context;
use minijinja::{AutoEscape, Environment};
use serde::Serialize;

pub use transport::{OutgoingEmail, SendError, Transport};

/// The templates compiled in, by name.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "base.txt.j2",
        include_str!("../../templates/email/base.txt.j2"),
    ),
    (
        "base.html.j2",
        include_str!("../../templates/email/base.html.j2"),
    ),
    (
        "upload_accepted/subject.txt.j2",
        include_str!("../../templates/email/upload_accepted/subject.txt.j2"),
    ),
    (
        "upload_accepted/body.txt.j2",
        include_str!("../../templates/email/upload_accepted/body.txt.j2"),
    ),
    (
        "upload_accepted/body.html.j2",
        include_str!("../../templates/email/upload_accepted/body.html.j2"),
    ),
    (
        "upload_rejected/subject.txt.j2",
        include_str!("../../templates/email/upload_rejected/subject.txt.j2"),
    ),
    (
        "upload_rejected/body.txt.j2",
        include_str!("../../templates/email/upload_rejected/body.txt.j2"),
    ),
    (
        "upload_rejected/body.html.j2",
        include_str!("../../templates/email/upload_rejected/body.html.j2"),
    ),
    (
        "dependency_obsoleted/subject.txt.j2",
        include_str!("../../templates/email/dependency_obsoleted/subject.txt.j2"),
    ),
    (
        "dependency_obsoleted/body.txt.j2",
        include_str!("../../templates/email/dependency_obsoleted/body.txt.j2"),
    ),
    (
        "dependency_obsoleted/body.html.j2",
        include_str!("../../templates/email/dependency_obsoleted/body.html.j2"),
    ),
    (
        "dependents_broken/subject.txt.j2",
        include_str!("../../templates/email/dependents_broken/subject.txt.j2"),
    ),
    (
        "dependents_broken/body.txt.j2",
        include_str!("../../templates/email/dependents_broken/body.txt.j2"),
    ),
    (
        "dependents_broken/body.html.j2",
        include_str!("../../templates/email/dependents_broken/body.html.j2"),
    ),
];

/// The kinds of email, each a directory of templates.
pub const KINDS: &[&str] = &[
    "upload_accepted",
    "upload_rejected",
    "dependency_obsoleted",
    "dependents_broken",
];

/// A rendered email: what the outbox stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The template environment.
pub struct Templates {
    env: Environment<'static>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Templates")
    }
}

impl Templates {
    /// The compiled-in templates, overridden by files of the same name
    /// under `override_dir`.
    pub fn new(override_dir: Option<PathBuf>) -> Self {
        let mut env = Environment::new();
        env.set_loader(move |name| {
            if let Some(dir) = &override_dir {
                let path = dir.join(name);
                if path.is_file() {
                    return std::fs::read_to_string(&path).map(Some).map_err(|e| {
                        minijinja::Error::new(
                            minijinja::ErrorKind::TemplateNotFound,
                            format!("{}: {e}", path.display()),
                        )
                    });
                }
            }
            Ok(EMBEDDED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, source)| (*source).to_owned()))
        });
        // HTML bodies escape every value: a description with <script> stays text.
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html.j2") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        Self { env }
    }

    /// Renders the subject, text and HTML of `kind` with `context`.
    pub fn render(&self, kind: &str, context: &impl Serialize) -> anyhow::Result<Rendered> {
        let ctx = minijinja::Value::from(minijinja::value::Serde(context));
        let render = |part: &str| -> anyhow::Result<String> {
            let name = format!("{kind}/{part}");
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&ctx))
                .with_context(|| format!("cannot render the email template {name}"))
        };
        Ok(Rendered {
            subject: render("subject.txt.j2")?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
            text: render("body.txt.j2")?,
            html: render("body.html.j2")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_values_and_text_does_not() {
        let t = Templates::new(None);
        let ctx = serde_json::json!({
            "package": "<script>alert(1)</script>", "version": "1.0.0", "score": 1.0, "threshold": 1.0,
            "checks": [], "pins": [], "upload_url": "http://x/1", "server_url": "http://x",
        });
        let r = t.render("upload_accepted", &ctx).unwrap();
        assert!(r.html.contains("&lt;script&gt;"), "{}", r.html);
        assert!(!r.html.contains("<script>"));
        assert!(r.text.contains("<script>alert(1)</script> 1.0.0 passed"));
    }
}
