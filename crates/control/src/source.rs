//! Where the mesh configuration comes from: a folder of Istio YAML (maybe
//! a git work tree) and an optional MeshConfig file, loaded and validated
//! as one set.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weft_api::{Loaded, Resource};
use weft_model::Mesh;

/// A folder of Istio YAML and the MeshConfig beside it.
#[derive(Debug, Clone)]
pub struct Folder {
    pub dir: PathBuf,
    pub mesh_config: Option<PathBuf>,
}

/// One valid load of a folder.
#[derive(Debug, Clone)]
pub struct ConfigSet {
    pub resources: std::sync::Arc<Vec<Resource>>,
    pub mesh: Mesh,
}

/// What a folder holds: a hash of its files' names and contents, and the
/// git commit it is at when it is a git work tree. Equal states need no
/// reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderState {
    pub version: String,
    pub commit: Option<String>,
}

impl Folder {
    /// Loads and validates every file; any error refuses the whole set,
    /// and the error lists every finding with its file and line.
    pub fn load(&self, trust_domain: &str) -> Result<ConfigSet, String> {
        let mut loaded = Loaded::from_paths(&[&self.dir]).map_err(|e| e.to_string())?;
        if let Some(file) = &self.mesh_config {
            loaded
                .set_mesh_config_file(file)
                .map_err(|e| e.to_string())?;
        }
        loaded.validate();
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        let mesh = Mesh::from_config(trust_domain, loaded.mesh.as_ref().map(|m| &m.config));
        // Gateway API resources are served as the Istio resources they
        // translate to.
        let mut resources = loaded.resources;
        let gateway_api = weft_model::gateway_api::translate(&resources);
        for w in &gateway_api.warnings {
            tracing::warn!("{w}");
        }
        resources.extend(gateway_api.resources);
        Ok(ConfigSet {
            resources: std::sync::Arc::new(resources),
            mesh,
        })
    }

    /// The files a load reads.
    fn files(&self) -> Vec<PathBuf> {
        weft_api::load::walk(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .chain(self.mesh_config.clone())
            .collect()
    }

    /// The content and commit a load would see, to tell real changes
    /// from repeated events.
    pub fn state(&self) -> FolderState {
        let mut parts = Vec::new();
        for f in self.files() {
            parts.push(f.to_string_lossy().into_owned().into_bytes());
            parts.push(std::fs::read(&f).unwrap_or_default());
        }
        FolderState {
            version: weft_model::sections::content_hash(parts.iter().map(Vec::as_slice)),
            commit: git_commit(&self.dir),
        }
    }

    /// What a change would alter: each file's name, size and modification
    /// time. Cheap enough to poll where file events do not arrive.
    pub fn fingerprint(&self) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
        self.files()
            .into_iter()
            .filter_map(|p| {
                let m = std::fs::metadata(&p).ok()?;
                Some((p, m.len(), m.modified().ok()))
            })
            .collect()
    }

    /// Calls `changed` after each burst of changes in the folder or the
    /// mesh config file settles (`quiet` without a new event). Reads are
    /// not changes: a load reading the files must not set off another. The
    /// returned watcher stops when dropped.
    pub fn watch(
        &self,
        quiet: Duration,
        changed: impl Fn() + Send + 'static,
    ) -> Result<Watcher, notify::Error> {
        use notify::{EventKind, RecursiveMode, Watcher as _};
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !matches!(e.kind, EventKind::Access(_))) {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        if let Some(file) = &self.mesh_config {
            // The file's folder: editors replace files rather than write
            // them, which a watch on the file itself would lose.
            let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
            watcher.watch(
                parent.unwrap_or(Path::new(".")),
                RecursiveMode::NonRecursive,
            )?;
        }
        // One thread debounces: the first event opens a burst, which ends
        // after `quiet` without another; the watcher's end ends it.
        std::thread::spawn(move || {
            while rx.recv().is_ok() {
                loop {
                    match rx.recv_timeout(quiet) {
                        Ok(()) => continue,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                changed();
            }
        });
        Ok(watcher)
    }
}

/// A running watch; dropping it stops it.
pub type Watcher = notify::RecommendedWatcher;

/// The commit `HEAD` names in the git work tree at or above `dir`, read
/// from `.git` without running git.
pub fn git_commit(dir: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let git = dir
        .ancestors()
        .map(|d| d.join(".git"))
        .find(|g| g.exists())?;
    // A worktree or submodule has a `.git` file pointing at the real one.
    let git = match std::fs::read_to_string(&git) {
        Ok(link) => {
            let target = link.trim().strip_prefix("gitdir:")?.trim();
            git.parent()?.join(target)
        }
        Err(_) => git,
    };
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(name) = head.strip_prefix("ref:").map(str::trim) else {
        return is_hash(head).then(|| head.to_string());
    };
    let common = std::fs::read_to_string(git.join("commondir"))
        .map(|c| git.join(c.trim()))
        .unwrap_or_else(|_| git.clone());
    let loose = [&git, &common]
        .iter()
        .find_map(|g| std::fs::read_to_string(g.join(name)).ok());
    if let Some(hash) = loose {
        let hash = hash.trim();
        return is_hash(hash).then(|| hash.to_string());
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (hash, r) = line.split_once(' ')?;
        (r == name && is_hash(hash)).then(|| hash.to_string())
    })
}

fn is_hash(s: &str) -> bool {
    s.len() >= 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
