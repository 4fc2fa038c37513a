//! A real SMTP server on loopback (mailin-embedded) that keeps every
//! message it accepts, and can be told to answer with a temporary error.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mailin_embedded::{Handler, Response, Server, SslConfig, response};

/// One accepted message.
#[derive(Clone, Debug)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl Received {
    /// The decoded value of a header (first occurrence).
    pub fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .lines()
            .take_while(|l| !l.is_empty())
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    }
}

/// What the server received, and its switch for temporary refusals.
#[derive(Clone, Default)]
pub struct Inbox {
    messages: Arc<Mutex<Vec<Received>>>,
    refuse: Arc<AtomicBool>,
}

impl Inbox {
    pub fn messages(&self) -> Vec<Received> {
        self.messages.lock().unwrap().clone()
    }

    /// While set, every message is refused with 451 (try again later).
    pub fn refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Session {
    inbox: Inbox,
    current: Option<(String, Vec<String>)>,
    buf: Vec<u8>,
}

/// Recipients this server refuses for good (550).
pub const UNKNOWN_RECIPIENT: &str = "nobody@example.org";

impl Handler for Session {
    fn rcpt(&mut self, to: &str) -> Response {
        if to.contains(UNKNOWN_RECIPIENT) {
            // As real servers do, the refusal names the address.
            return Response::custom(550, format!("5.1.1 {to}: recipient address rejected"));
        }
        response::OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        if self.inbox.refuse.load(Ordering::SeqCst) {
            return response::INTERNAL_ERROR;
        }
        self.current = Some((from.to_owned(), to.to_vec()));
        self.buf.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if let Some((from, to)) = self.current.take() {
            let data = String::from_utf8_lossy(&self.buf).replace("\r\n", "\n");
            self.inbox
                .messages
                .lock()
                .unwrap()
                .push(Received { from, to, data });
        }
        response::OK
    }
}

/// Starts a server on `listener` (or a free port); returns its inbox and port.
pub fn start(listener: Option<TcpListener>) -> (Inbox, u16) {
    let listener = listener.unwrap_or_else(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let inbox = Inbox::default();
    let mut server = Server::new(Session {
        inbox: inbox.clone(),
        current: None,
        buf: Vec::new(),
    });
    server
        .with_name("smtp.test")
        .with_ssl(SslConfig::None)
        .unwrap()
        .with_tcp_listener(listener);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    (inbox, port)
}
