//! A Unix-domain listener on a private path, so that an unrelated process of
//! the same user can connect (what a Manager or a node uses).

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::UnixChannel;

/// A listening Unix socket at `<tmp>/mproc-<pid>-<n>/sock`: the directory is
/// mode 0700 and the socket 0600, so only this user can connect. Both are
/// removed when the listener is dropped. (A program killed by SIGKILL cannot
/// remove them; the directory name carries the pid to identify leftovers.)
#[derive(Debug)]
pub struct UnixListener {
    inner: std::os::unix::net::UnixListener,
    dir: PathBuf,
    path: PathBuf,
}

impl UnixListener {
    /// Binds a listener on a fresh private path.
    pub fn bind_private() -> io::Result<UnixListener> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "mproc-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let path = dir.join("sock");
        let inner = match std::os::unix::net::UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(e);
            }
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(UnixListener { inner, dir, path })
    }

    /// Where peers connect.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection.
    pub fn accept(&self) -> io::Result<UnixChannel> {
        let (s, _) = self.inner.accept()?;
        Ok(UnixChannel::from_fd(s.into()))
    }

    /// Connects to a listener's path.
    pub fn connect(path: &Path) -> io::Result<UnixChannel> {
        let s = std::os::unix::net::UnixStream::connect(path)?;
        Ok(UnixChannel::from_fd(s.into()))
    }
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}
