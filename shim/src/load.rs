//! Finding, checking and loading `libflowlens.so`, with one-line errors that say what to do.

use crate::Failure;
use abi_stable::library::{LibraryError, RootModule};
use anyhow::anyhow;
use flowlens_abi::{FlowlensModRef, PLUGIN_FILE_NAME};
use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    os::unix::io::AsRawFd,
    path::{Path, PathBuf},
};

/// Where the .deb installs the plugin.
pub const PACKAGED_PLUGIN_DIR: &str = "/usr/lib/flowlens";

/// The plugin path: `--plugin`, else next to the executable, else the packaged directory.
pub fn find_plugin(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(PLUGIN_FILE_NAME)))
        .filter(|p| p.exists())
    {
        return beside;
    }
    Path::new(PACKAGED_PLUGIN_DIR).join(PLUGIN_FILE_NAME)
}

/// Refuses, when running as root, a plugin file that another user could have written: it would
/// run with root's privileges. Checks the opened file itself, so the check and the load see the
/// same inode.
fn check_ownership(path: &Path, file: &File, euid: u32) -> Result<(), Failure> {
    let meta = file
        .metadata()
        .map_err(|e| Failure::other(anyhow!("cannot stat plugin {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Failure::other(anyhow!(
            "plugin {} is not a regular file: pass --plugin with the path of {PLUGIN_FILE_NAME}",
            path.display()
        )));
    }
    if euid == 0 && (meta.uid() != 0 || meta.mode() & 0o022 != 0) {
        return Err(Failure::other(anyhow!(
            "refusing plugin {}: flowlens runs as root, so its plugin must be owned by root and not \
             writable by group or others (owner uid {}, mode {:o}): run `chown root:root` and \
             `chmod go-w` on it",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Turns abi_stable's load error into one line that says what to do.
fn explain(path: &Path, by_fd: &Path, error: LibraryError) -> anyhow::Error {
    let shown = path.display();
    match error {
        LibraryError::OpenError { err, .. } => anyhow!(
            "{shown} is not a loadable shared library ({}): pass --plugin with the path of \
             {PLUGIN_FILE_NAME}",
            err.to_string()
                .replace(&format!("{}: ", by_fd.display()), "")
                .replace(&by_fd.display().to_string(), "the file")
        ),
        LibraryError::GetSymbolError { .. } => anyhow!(
            "{shown} is not a flowlens plugin (it exports no flowlens root module): pass --plugin \
             with the path of {PLUGIN_FILE_NAME}"
        ),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => anyhow!(
            "{shown} is a flowlens plugin of ABI version {actual_version}, but this flowlens needs \
             ABI version {expected_version}: install the {PLUGIN_FILE_NAME} that came with this \
             flowlens"
        ),
        other => anyhow!(
            "{shown} is incompatible with this flowlens ({}): install the {PLUGIN_FILE_NAME} that \
             came with this flowlens",
            other.to_string().lines().next().unwrap_or("unknown error")
        ),
    }
}

/// Opens, checks and loads the plugin, returning its root module.
pub fn load_plugin(path: &Path) -> Result<FlowlensModRef, Failure> {
    let file = File::open(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "not found".to_string()
        } else {
            e.to_string()
        };
        Failure::other(anyhow!(
            "cannot open plugin {}: {what}: build it (`cargo build --release` puts it next to the \
             flowlens executable) or pass --plugin PATH",
            path.display()
        ))
    })?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    check_ownership(path, &file, euid)?;
    // Load the very inode that was checked, not whatever the path names a moment later.
    let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let explained = |e| Failure::other(explain(path, &by_fd, e));
    // The version first: a plugin of another ABI version would also fail the layout check, with a
    // far less helpful message.
    let header = abi_stable::library::lib_header_from_path(&by_fd).map_err(explained)?;
    let wanted = FlowlensModRef::VERSION_STRINGS;
    if let (Ok(found), Ok(wanted_number)) = (header.version_strings().parsed(), wanted.parsed()) {
        if !wanted_number.is_loosely_compatible(found) {
            return Err(explained(LibraryError::IncompatibleVersionNumber {
                library_name: FlowlensModRef::NAME,
                expected_version: wanted_number,
                actual_version: found,
            }));
        }
    }
    let module = FlowlensModRef::load_from_file(&by_fd).map_err(explained)?;
    drop(file);
    Ok(module)
}
