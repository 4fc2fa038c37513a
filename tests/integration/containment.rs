//! Hostile builds (SPEC section 4, "Containment"; issue 13). Each probe is
//! its own test, against a server whose data directory, config file and a
//! fake home holding a token live outside `/tmp` (under `/srv`) and are
//! made world-readable, so that only the allow-list and the identity
//! protect them. Each probe fails to do what it tries, its check's result
//! is recorded, and the server keeps serving.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use holdq::config::{Config, Overrides, PlatformConfig};
use serde_json::Value;
use tempfile::TempDir;

use crate::on_both_databases;
use crate::support::archives::package_building;
use crate::support::{TestApp, TestDb, wait_until};

on_both_databases!(
    a_check_cannot_read_the_database,
    a_check_cannot_read_another_uploads_blob,
    a_check_cannot_list_the_stable_archives,
    a_check_cannot_read_the_config_file,
    a_check_cannot_read_a_token_file,
    a_check_cannot_list_a_home_directory,
    a_check_cannot_read_etc_shadow,
    a_check_cannot_list_var_lib,
    a_check_cannot_read_another_running_checks_workspace,
    a_check_cannot_connect_to_a_host_socket_in_a_mount,
    a_check_cannot_connect_to_the_server_over_loopback,
    a_check_cannot_read_a_private_file_of_the_server_in_a_mount,
    a_check_cannot_write_past_its_disk_limit_in_its_directory,
    a_check_cannot_write_past_its_disk_limit_in_tmp,
    a_check_cannot_fallocate_four_times_its_disk_limit,
    a_check_cannot_write_into_a_read_only_mount,
    a_check_cannot_signal_or_trace_a_host_process,
    a_check_runs_as_an_identity_that_owns_nothing,
    a_checks_environment_is_not_on_any_command_line,
    a_mount_holding_the_data_directory_is_refused_at_start_up,
    what_a_killed_worker_left_is_swept_at_start,
);

const SMTP_PASSWORD: &str = "hunter2-smtp-password";
const CLIENT_TOKEN: &str = "hq_client_token_of_the_servers_account";
const PRIVATE: &str = "private-0600-of-the-server";
const PUBLIC: &str = "public-0644-of-the-tool";
const DISK: &str = "64MiB";

/// A server laid out as a new user lays one out, made world-readable.
struct Hostile {
    app: TestApp,
    /// `/srv/holdq-hostile-*`: `holdq.toml`, `data/`, `home/`.
    base: PathBuf,
    /// `/opt/holdq-hostile-*`: `tool/` and `sock/`, both platform mounts.
    outside: TempDir,
    ada: String,
    _socket: std::os::unix::net::UnixListener,
}

impl Hostile {
    async fn spawn(db: TestDb) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    async fn spawn_with(db: TestDb, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("holdq-hostile-")
            .tempdir_in(srv())
            .unwrap();
        let outside = tempfile::Builder::new()
            .prefix("holdq-hostile-")
            .tempdir_in("/opt")
            .unwrap();
        let base = dir.path().to_owned();
        let (tool, sock) = (outside.path().join("tool"), outside.path().join("sock"));
        std::fs::create_dir_all(&tool).unwrap();
        std::fs::create_dir_all(&sock).unwrap();
        std::fs::write(tool.join("public.txt"), PUBLIC).unwrap();
        std::fs::write(tool.join("private.txt"), PRIVATE).unwrap();
        let socket = std::os::unix::net::UnixListener::bind(sock.join("service.sock")).unwrap();
        socket.set_nonblocking(true).unwrap();
        let home = base.join("home");
        std::fs::create_dir_all(home.join(".config/holdq")).unwrap();
        std::fs::write(
            home.join(".config/holdq/client.toml"),
            format!("server = \"http://127.0.0.1:8080\"\ntoken = \"{CLIENT_TOKEN}\"\n"),
        )
        .unwrap();
        std::fs::write(
            home.join(".bash_history"),
            "holdq user add root@example.org\n",
        )
        .unwrap();
        let file = base.join("holdq.toml");
        std::fs::write(
            &file,
            format!(
                "data_dir = \"{data}\"\n# SMTP password: {SMTP_PASSWORD}\n\
                 [mail]\nfrom = \"holdq <holdq@example.org>\"\n\
                 [[platform]]\nname = \"{platform}\"\ntimeout = \"60s\"\ndisk = \"{DISK}\"\n\
                 mounts = [\"{tool}\", \"{sock}\"]\n",
                data = base.join("data").display(),
                platform = PlatformConfig::host().name,
                tool = tool.display(),
                sock = sock.display(),
            ),
        )
        .unwrap();
        let app = TestApp::spawn_in(db, dir, |c| {
            let mut loaded = Config::load(Some(&file), |_| None, &Overrides::default()).unwrap();
            if !c.database_url.starts_with("sqlite") {
                loaded.database_url = c.database_url.clone();
            }
            loaded.listen = c.listen;
            *c = loaded;
            tweak(c);
        })
        .await;
        let ada = app.user("ada@example.org").await;
        let hostile = Self {
            app,
            base,
            outside,
            ada,
            _socket: socket,
        };
        hostile.expose();
        hostile
    }

    fn data(&self) -> PathBuf {
        self.app.app.config.data_dir.clone()
    }

    fn tool(&self) -> PathBuf {
        self.outside.path().join("tool")
    }

    /// Makes everything readable and writable by all (the socket too), but
    /// `tool/private.txt`, 0600.
    fn expose(&self) {
        for root in [self.base.as_path(), self.outside.path()] {
            for entry in walk(root) {
                // Sockets too: 0777 lets any uid connect.
                let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o777));
            }
        }
        std::fs::set_permissions(
            self.tool().join("private.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }

    /// Uploads a package whose build runs `script`, runs its checks and
    /// returns its build check.
    async fn probe(&self, name: &str, script: &str) -> Value {
        let id = self.upload(name, script).await;
        self.expose();
        self.app.drain().await;
        self.build_check(id).await
    }

    async fn upload(&self, name: &str, script: &str) -> i64 {
        self.app
            .upload_ok(
                &self.ada,
                package_building(name, "1.0.0", &[], script, None),
            )
            .await
    }

    async fn build_check(&self, id: i64) -> Value {
        let view = self.app.upload_view(id).await;
        let label = format!("build@{}", PlatformConfig::host().name);
        view["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                format!(
                    "{}@{}",
                    c["kind"].as_str().unwrap(),
                    c["platform"].as_str().unwrap()
                ) == label
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {label} in {view:#}"))
    }
}

/// `/srv`, made when missing.
fn srv() -> &'static Path {
    std::fs::create_dir_all("/srv").unwrap();
    Path::new("/srv")
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir()
            && !out[i].is_symlink()
            && let Ok(entries) = std::fs::read_dir(&out[i])
        {
            out.extend(entries.flatten().map(|e| e.path()));
        }
        i += 1;
    }
    out
}

fn log(check: &Value) -> &str {
    check["log"].as_str().unwrap_or_default()
}

/// The check failed, its result recorded with its log; the log holds none
/// of `secrets` and one of `reasons`; the server still serves.
async fn assert_contained(h: &Hostile, check: &Value, secrets: &[&str], reasons: &[&str]) {
    assert_eq!(check["state"], "failed", "{check:#}");
    let log = log(check);
    for secret in secrets {
        assert!(!log.contains(secret), "the check saw {secret:?}:\n{log}");
    }
    assert!(
        reasons.iter().any(|r| log.contains(r)),
        "none of {reasons:?} in the log:\n{log}"
    );
    h.app.assert_serving().await;
}

const NOT_THERE: &[&str] = &["No such file or directory", "cannot access"];

async fn a_check_cannot_read_the_database(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let data = h.data();
    let check = h
        .probe(
            "dbreader",
            &format!(
                "cat {0}/holdq.db {0}/holdq.db-wal; ls {0}; strings /check/../{0}/holdq.db; exit 1",
                data.display()
            ),
        )
        .await;
    assert_contained(
        &h,
        &check,
        &["SQLite format 3", "ada@example.org"],
        NOT_THERE,
    )
    .await;
}

async fn a_check_cannot_read_another_uploads_blob(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let blobs = h.app.app.storage.root().join("blobs/sha256");
    let bob = h.app.user("bob@example.org").await;
    // The thief is first in the queue; bob's upload waits behind it.
    let thief = h
        .upload(
            "thief",
            &format!(
                "for f in {}/*; do tar -xzOf \"$f\"; done; exit 1",
                blobs.display()
            ),
        )
        .await;
    let marker = "bobs-unreleased-secret-sauce";
    h.app
        .upload_ok(
            &bob,
            package_building("sauce", "1.0.0", &[], &format!("echo {marker}"), None),
        )
        .await;
    h.expose();
    assert!(
        walk(&blobs).len() > 2,
        "bob's blob is on disk, world-readable"
    );
    h.app.drain().await;
    let check = h.build_check(thief).await;
    assert_contained(&h, &check, &[marker], &["No such file", "Cannot open"]).await;
}

async fn a_check_cannot_list_the_stable_archives(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let stable = h.probe("stablething", "true").await;
    assert_eq!(stable["state"], "passed", "{stable:#}");
    let archives = h.data().join("stable");
    assert!(
        walk(&archives)
            .iter()
            .any(|p| p.to_string_lossy().contains("stablething"))
    );
    let check = h
        .probe(
            "lister",
            &format!("ls -R {0}; cat {0}/index.json; exit 1", archives.display()),
        )
        .await;
    assert_contained(&h, &check, &["stablething"], NOT_THERE).await;
}

async fn a_check_cannot_read_the_config_file(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let file = h.base.join("holdq.toml");
    let check = h
        .probe(
            "configreader",
            &format!(
                "cat {}; grep -r hunter2 /etc /usr/local 2>/dev/null; exit 1",
                file.display()
            ),
        )
        .await;
    assert_contained(&h, &check, &[SMTP_PASSWORD], NOT_THERE).await;
}

async fn a_check_cannot_read_a_token_file(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let token = h.base.join("home/.config/holdq/client.toml");
    let check = h
        .probe(
            "tokenreader",
            &format!(
                "cat {} ~/.config/holdq/client.toml /root/.config/holdq/client.toml; exit 1",
                token.display()
            ),
        )
        .await;
    assert_contained(&h, &check, &[CLIENT_TOKEN], NOT_THERE).await;
}

async fn a_check_cannot_list_a_home_directory(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let home = h.base.join("home");
    let check = h
        .probe(
            "homelister",
            &format!("ls -a {} /root /home; exit 1", home.display()),
        )
        .await;
    assert_contained(
        &h,
        &check,
        &[".bash_history", ".rustup", ".bashrc"],
        NOT_THERE,
    )
    .await;
}

async fn a_check_cannot_read_etc_shadow(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let check = h
        .probe(
            "shadowreader",
            "cat /etc/shadow /etc/gshadow; ls /etc/ssh; exit 1",
        )
        .await;
    assert_contained(&h, &check, &["root:"], NOT_THERE).await;
    // The rest of /etc is there: programs still find users and libraries.
    let ok = h
        .probe(
            "etcreader",
            "grep -q '^root:' /etc/passwd && test -e /etc/ld.so.cache",
        )
        .await;
    assert_eq!(ok["state"], "passed", "{ok:#}");
}

async fn a_check_cannot_list_var_lib(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let check = h
        .probe(
            "varlib",
            "ls /var/lib /var/lib/postgresql /srv /run /var/run; exit 1",
        )
        .await;
    assert_contained(&h, &check, &["dpkg", "postgresql/"], NOT_THERE).await;
}

async fn a_check_cannot_read_another_running_checks_workspace(db: TestDb) {
    let h = Hostile::spawn_with(db, |c| c.platforms[0].local_workers = 2).await;
    h.app.start_workers().await;
    let work = h.data().join("work");
    // The victim writes a secret into its directory, then waits for the
    // test to release it.
    let victim = h
        .upload(
            "victim",
            "echo victims-workspace-secret > secret.txt; until [ -e release ]; do sleep 0.05; done",
        )
        .await;
    let secret = wait_until(
        async || {
            walk(&work)
                .into_iter()
                .find(|p| p.ends_with("victim-1.0.0/secret.txt"))
        },
        std::time::Duration::from_secs(60),
    )
    .await
    .expect("the workspace file appears");
    let snoop = h
        .upload(
            "snoop",
            &format!(
                "cat {}/*/src/*/secret.txt; find / -name secret.txt 2>/dev/null | xargs -r cat; ls /check/..; exit 1",
                work.display()
            ),
        )
        .await;
    let view = h.app.wait_for_verdict(snoop).await;
    assert!(!view["verdict"].is_null(), "{view:#}");
    // Both ran at once: the victim was still running when the snoop ended.
    let running = h.build_check(victim).await;
    assert_eq!(running["state"], "running", "{running:#}");
    assert!(secret.exists());
    let check = h.build_check(snoop).await;
    assert_contained(&h, &check, &["victims-workspace-secret"], NOT_THERE).await;
    std::fs::write(secret.with_file_name("release"), "").unwrap();
    let done = h.app.wait_for_verdict(victim).await;
    assert_eq!(done["state"], "accepted", "{done:#}");
}

async fn a_check_cannot_connect_to_a_host_socket_in_a_mount(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let socket = h.outside.path().join("sock/service.sock");
    // Reported at start-up, and left out of the check's view.
    let containment = h.app.app.sandbox.containment();
    assert!(containment.sockets.contains(&socket), "{containment:?}");
    assert!(
        containment
            .warnings
            .iter()
            .any(|w| w.contains(&*socket.to_string_lossy())),
        "{containment:?}"
    );
    let check = h
        .probe(
            "sockets",
            &format!(
                "ls {dir}; python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.connect('{sock}'); print('CONNECTED')\"",
                dir = socket.parent().unwrap().display(),
                sock = socket.display()
            ),
        )
        .await;
    assert_contained(
        &h,
        &check,
        &["CONNECTED"],
        &["FileNotFoundError", "No such file"],
    )
    .await;
    assert!(
        h._socket.accept().is_err(),
        "nothing connected to the host's socket"
    );
}

async fn a_check_cannot_connect_to_the_server_over_loopback(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let port = h.app.base.rsplit(':').next().unwrap().to_owned();
    let check = h
        .probe(
            "loopback",
            &format!(
                "python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 2); print('CONNECTED')\""
            ),
        )
        .await;
    assert_contained(
        &h,
        &check,
        &["CONNECTED"],
        &["unreachable", "refused", "Errno"],
    )
    .await;
}

async fn a_check_cannot_read_a_private_file_of_the_server_in_a_mount(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let tool = h.tool();
    let check = h
        .probe(
            "private",
            &format!(
                "cat {0}/public.txt; cat {0}/private.txt; exit 1",
                tool.display()
            ),
        )
        .await;
    assert_contained(&h, &check, &[PRIVATE], &["Permission denied"]).await;
    assert!(
        log(&check).contains(PUBLIC),
        "the mount itself is there: {check:#}"
    );
}

/// The check failed at its disk limit, which the summary names.
async fn assert_disk_limit(h: &Hostile, check: &Value) {
    assert_eq!(check["state"], "failed", "{check:#}");
    let summary = check["summary"].as_str().unwrap();
    assert!(summary.contains("disk limit (64 MiB) reached"), "{check:#}");
    assert!(
        !h.app.app.sandbox.loop_disk() || log(check).contains("No space left on device"),
        "{check:#}"
    );
    assert_no_leftovers(h);
    h.app.assert_serving().await;
}

/// No check directory, image or mount is left once checks are done.
fn assert_no_leftovers(h: &Hostile) {
    let work = h.data().join("work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*work.to_string_lossy()), "{mounts}");
}

async fn a_check_cannot_write_past_its_disk_limit_in_its_directory(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let check = h
        .probe(
            "filler",
            "dd if=/dev/zero of=big bs=1M count=256 status=none",
        )
        .await;
    assert_disk_limit(&h, &check).await;
}

async fn a_check_cannot_write_past_its_disk_limit_in_tmp(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let check = h
        .probe(
            "tmpfiller",
            "dd if=/dev/zero of=/tmp/big bs=1M count=256 status=none",
        )
        .await;
    assert_disk_limit(&h, &check).await;
}

async fn a_check_cannot_fallocate_four_times_its_disk_limit(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let check = h
        .probe("fallocator", "fallocate -l 256MiB big && ls -ls big")
        .await;
    assert_eq!(check["state"], "failed", "{check:#}");
    if h.app.app.sandbox.loop_disk() {
        assert!(log(&check).contains("No space left on device"), "{check:#}");
    } else {
        assert!(
            check["summary"].as_str().unwrap().contains("disk limit"),
            "{check:#}"
        );
    }
    assert_no_leftovers(&h);
    h.app.assert_serving().await;
}

async fn a_check_cannot_write_into_a_read_only_mount(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let tool = h.tool();
    let check = h
        .probe(
            "rowriter",
            &format!(
                "touch {0}/planted; echo x >> {0}/public.txt; exit 1",
                tool.display()
            ),
        )
        .await;
    assert_contained(&h, &check, &[], &["Read-only file system"]).await;
    assert!(!tool.join("planted").exists());
    assert_eq!(
        std::fs::read_to_string(tool.join("public.txt")).unwrap(),
        PUBLIC
    );
}

async fn a_check_cannot_signal_or_trace_a_host_process(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let mut victim = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pid = victim.id();
    let check = h
        .probe(
            "signaller",
            &format!(
                "kill -9 {pid} {me}; python3 -c \"import ctypes; libc = ctypes.CDLL(None, use_errno=True); print('ptrace', libc.ptrace(16, {pid}, 0, 0), ctypes.get_errno())\"; exit 1",
                me = std::process::id()
            ),
        )
        .await;
    assert_contained(&h, &check, &[], &["No such process"]).await;
    // ESRCH (3): the host's processes do not exist in the check's world.
    assert!(log(&check).contains("ptrace -1 3"), "{check:#}");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the host process lives"
    );
    victim.kill().unwrap();
    let _ = victim.wait();
}

async fn a_check_runs_as_an_identity_that_owns_nothing(db: TestDb) {
    let h = Hostile::spawn(db).await;
    let check = h
        .probe(
            "whoami",
            "id; grep -E '^(CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs)' /proc/self/status; \
             echo owned: $(find / -user $(id -u) -not -path '/check*' -not -path '/tmp*' -not -path '/proc*' -not -path '/dev*' 2>/dev/null | wc -l); \
             mkdir -p sub/deeper && chmod 0500 sub && echo left > sub/deeper/file; chmod 0500 sub/deeper",
        )
        .await;
    assert_eq!(check["state"], "passed", "{check:#}");
    let log = log(&check);
    let uid: u64 = log
        .split("uid=")
        .nth(1)
        .and_then(|s| s.split('(').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no uid in {log}"));
    assert_ne!(uid, 0, "{log}");
    assert_ne!(uid, u64::from(nix::unistd::getuid().as_raw()), "{log}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert!(
            log.contains(&format!("{set}:\t0000000000000000")),
            "{set}: {log}"
        );
    }
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("owned: 0"), "{log}");
    // What it left under its uid, read-only directories included, is gone.
    assert_no_leftovers(&h);
}

async fn a_checks_environment_is_not_on_any_command_line(db: TestDb) {
    let h = Hostile::spawn_with(db, |c| {
        c.platforms[0]
            .env
            .push("HOLDQ_PROBE_SECRET=env-value-not-for-ps".into());
    })
    .await;
    h.app.start_workers().await;
    let id = h
        .upload(
            "envprobe",
            "echo \"seen: $HOLDQ_PROBE_SECRET\" > seen.txt; until [ -e release ]; do sleep 0.05; done",
        )
        .await;
    let work = h.data().join("work");
    let seen = wait_until(
        async || {
            walk(&work)
                .into_iter()
                .find(|p| p.ends_with("envprobe-1.0.0/seen.txt"))
        },
        std::time::Duration::from_secs(60),
    )
    .await
    .expect("the workspace file appears");
    let mut sandboxes = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("__sandbox") {
            sandboxes += 1;
        }
        assert!(
            !cmdline.contains("env-value-not-for-ps"),
            "on a command line: {cmdline}"
        );
    }
    assert!(sandboxes > 0, "the sandbox was running");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "seen: env-value-not-for-ps\n",
        "the value reached the command"
    );
    std::fs::write(seen.with_file_name("release"), "").unwrap();
    let done = h.app.wait_for_verdict(id).await;
    assert_eq!(done["state"], "accepted", "{done:#}");
}

async fn a_mount_holding_the_data_directory_is_refused_at_start_up(db: TestDb) {
    for mount in ["", "/data", "/data/blobs"] {
        let dir = tempfile::Builder::new()
            .prefix("holdq-hostile-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("blobs")).unwrap();
        let path = PathBuf::from(format!("{}{mount}", dir.path().display()));
        let refused = TestApp::try_spawn_in(db.clone(), dir, |c| {
            c.platforms[0].mounts = vec![path.clone()];
        })
        .await;
        let Err(e) = refused else {
            panic!("a mount of {} was accepted", path.display());
        };
        let message = format!("{e:#}");
        assert!(
            message.contains("mounts") && message.contains("no check may see"),
            "{message}"
        );
    }
}

async fn what_a_killed_worker_left_is_swept_at_start(db: TestDb) {
    let dir = tempfile::Builder::new()
        .prefix("holdq-sweep-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let data = dir.path().join("data");
    // A pid above pid_max: the process that made these is surely dead.
    let dead = "999999999";
    let work = data.join("work");
    let check = work.join(format!("check-{dead}-left"));
    let run = data.join(format!("sandbox/run-{dead}"));
    std::fs::create_dir_all(&check).unwrap();
    std::fs::create_dir_all(run.join("usr")).unwrap();
    let loop_disk = nix::unistd::geteuid().is_root() && Path::new("/dev/loop-control").exists();
    if loop_disk {
        // Mounted, as a killed worker leaves it.
        std::mem::forget(holdq::sandbox::disk::LoopDisk::mount(&check, 16 << 20).unwrap());
        std::fs::write(check.join("partial-build-output"), "x").unwrap();
    }
    let cgroup = Path::new("/sys/fs/cgroup/pids").join(format!("holdq-{dead}"));
    let made_cgroup = std::fs::create_dir(&cgroup).is_ok();
    let live = work.join(format!("check-{}-mine", std::process::id()));
    std::fs::create_dir_all(&live).unwrap();

    let app = TestApp::spawn_in(db, dir, |_| {}).await;
    assert!(!check.exists(), "the dead worker's check directory is gone");
    assert!(!check.with_extension("img").exists(), "its image is gone");
    assert!(!run.exists(), "its sandbox root is gone");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*check.to_string_lossy()),
        "its mount is gone"
    );
    if made_cgroup {
        assert!(!cgroup.exists(), "its cgroup is gone");
    }
    assert!(live.exists(), "a live process's directory stays");
    app.assert_serving().await;
}
