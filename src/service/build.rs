//! A check's workspace and its sandboxed runs: the package unpacked in a
//! fresh directory, its resolved dependencies under `$HOLDQ_DEPS/<name>/`
//! with `resolved.toml`, an empty `$HOLDQ_DESTDIR`, a scratch `HOME`, and
//! the platform's limits.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::App;
use crate::config::PlatformConfig;
use crate::domain::integrity::{Closure, Source as BaseSource};
use crate::sandbox::disk::CheckDir;
use crate::sandbox::{RunOutcome, RunSpec};
use crate::storage::unpack;

/// A fresh directory holding one package and its dependencies, on its
/// own filesystem of the platform's `disk` size when the host allows.
pub struct Workspace {
    dir: CheckDir,
    /// The command's `/tmp`, on the same filesystem.
    pub tmp_dir: PathBuf,
    /// Which try of its check this run is (1 first), as `$HOLDQ_TRY`.
    pub try_number: i64,
    pub package_dir: PathBuf,
    pub deps_dir: PathBuf,
    pub dest_dir: PathBuf,
    pub home_dir: PathBuf,
}

/// Where the archive of the package to build comes from.
pub struct Source {
    pub archive: PathBuf,
    /// `NAME-VERSION`, the archive's top directory.
    pub top: String,
}

impl Workspace {
    /// Unpacks `source` and the archives of `closure` (from stable, or from
    /// the pending upload each names; `me` is the upload under check, whose
    /// archive is at hand) into a new directory under the data dir, sized
    /// for `platform`.
    pub async fn prepare(
        app: &App,
        platform: &PlatformConfig,
        source: Source,
        closure: &Closure,
        me: Option<(i64, &Source)>,
    ) -> anyhow::Result<Self> {
        let work_root = app.config.data_dir.join("work");
        let (bytes, loop_disk) = (platform.disk.0, app.sandbox.loop_disk());
        let dir = tokio::task::spawn_blocking(move || CheckDir::new(&work_root, bytes, loop_disk))
            .await??;
        let deps_dir = dir.path().join("deps");
        let dest_dir = dir.path().join("dest");
        let home_dir = dir.path().join("home");
        let tmp_dir = dir.path().join("tmp");
        for d in [&deps_dir, &dest_dir, &home_dir, &tmp_dir] {
            fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let mut deps: Vec<(String, PathBuf, String)> = Vec::new();
        let mut resolved_toml = String::new();
        for (name, pinned) in closure {
            let version = &pinned.version;
            resolved_toml.push_str(&format!("{name} = \"{version}\"\n"));
            let top = format!("{name}-{version}");
            let archive = match (pinned.source, me) {
                (BaseSource::Upload(id), Some((me, src))) if id == me => src.archive.clone(),
                (BaseSource::Upload(id), _) => super::archives::pending_archive(app, id).await?,
                (BaseSource::Stable, _) => {
                    super::archives::stable_archive(app, name.as_str(), &version.to_string())
                        .await?
                }
            };
            deps.push((name.to_string(), archive, top));
        }
        let src_root = dir.path().join("src");
        let package_dir = {
            let deps_dir = deps_dir.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
                for (name, archive, top) in deps {
                    let staging = deps_dir.join(format!(".{name}"));
                    let unpacked = unpack::unpack(&archive, &staging, &top)?;
                    fs::rename(&unpacked, deps_dir.join(&name))?;
                    fs::remove_dir_all(&staging)?;
                }
                fs::write(deps_dir.join("resolved.toml"), resolved_toml)?;
                unpack::unpack(&source.archive, &src_root, &source.top)
            })
            .await??
        };
        Ok(Self {
            dir,
            tmp_dir,
            try_number: 1,
            package_dir,
            deps_dir,
            dest_dir,
            home_dir,
        })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `command` in the package directory under the platform's limits.
    pub async fn run(
        &self,
        app: &App,
        platform: &PlatformConfig,
        command: &str,
        halt: &CancellationToken,
    ) -> anyhow::Result<RunOutcome> {
        // `KEY` passes the worker's value through; `KEY=VALUE` sets one.
        let mut env: Vec<(String, String)> = platform
            .env
            .iter()
            .filter_map(|entry| match entry.split_once('=') {
                Some((key, value)) => Some((key.to_owned(), value.to_owned())),
                None => std::env::var(entry).ok().map(|v| (entry.clone(), v)),
            })
            .collect();
        // Paths as the command sees them: its directory is mounted on /check.
        let path = |p: &Path| {
            crate::sandbox::inside(self.root(), p)
                .to_string_lossy()
                .into_owned()
        };
        env.extend([
            ("HOLDQ_DEPS".to_owned(), path(&self.deps_dir)),
            ("HOLDQ_PLATFORM".to_owned(), platform.name.to_string()),
            ("HOLDQ_DESTDIR".to_owned(), path(&self.dest_dir)),
            ("HOME".to_owned(), path(&self.home_dir)),
            ("HOLDQ_TRY".to_owned(), self.try_number.to_string()),
            ("TMPDIR".to_owned(), "/tmp".to_owned()),
        ]);
        let spec = RunSpec {
            root: self.root().to_owned(),
            tmp: self.tmp_dir.clone(),
            cwd: self.package_dir.clone(),
            command: command.to_owned(),
            env,
            timeout: platform.timeout,
            memory_bytes: platform.memory.0,
            max_processes: app.config.limits.check_processes,
            disk_bytes: platform.disk.0,
            mounts: platform.mounts.clone(),
            output_cap: app.config.limits.check_output.0 as usize,
            state_dir: app.config.data_dir.join("sandbox"),
        };
        app.sandbox.run(&spec, halt).await
    }
}
