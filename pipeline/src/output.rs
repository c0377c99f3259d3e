//! Opening an output file safely, for every sink that writes one.
//!
//! spf usually runs as root and writes where the command line says, often a shared
//! directory like /tmp. Whoever can write there could plant a symbolic link at the
//! output path (pointing at a file in /etc), a hard link to a root-owned file, a
//! FIFO or device, or a world-readable file of their own that would then receive
//! the capture. So an output path is opened in two steps that decide on the file
//! itself, never on its name twice:
//!
//! 1. `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600: a new file, created by spf. This
//!    fails on anything already at the path, a dangling symbolic link included.
//! 2. Otherwise `O_PATH | O_NOFOLLOW` pins whatever is there without opening it
//!    (opening a device or FIFO can have effects of its own); `fstat` on that
//!    descriptor decides, and only a regular file, with one link, owned by the
//!    effective user, is then reopened for writing through the descriptor itself
//!    (`/proc/self/fd/N` names the very inode that was checked). Its mode is set
//!    to 0600 with `fchmod`, and it is truncated unless appending.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use crate::config::BuildError;

/// Mode of every output file: captures hold whatever the traced processes said,
/// secrets included.
pub const OUTPUT_MODE: u32 = 0o600;

/// Opens `path` for writing as described in the module docs: creates it (mode
/// 0600), or takes over an existing regular file of the effective user (mode set
/// to 0600, truncated unless `append`). Anything else is refused with a message
/// that says why.
pub fn open_output(path: &Path, append: bool) -> Result<File, BuildError> {
    let shown = path.display();
    let mut new = OpenOptions::new();
    new.write(true)
        .create_new(true)
        .append(append)
        .mode(OUTPUT_MODE)
        .custom_flags(libc::O_NOFOLLOW);
    match new.open(path) {
        Ok(file) => {
            // The mode given to open() was narrowed by the umask; make it exact.
            set_mode(&file, path)?;
            return Ok(file);
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(BuildError::new(format!(
                "cannot create `{shown}` for writing: {e}"
            )));
        }
    }

    let pinned = open_path(path)
        .map_err(|e| BuildError::new(format!("cannot open `{shown}` for writing: {e}")))?;
    let meta =
        fstat(&pinned).map_err(|e| BuildError::new(format!("cannot inspect `{shown}`: {e}")))?;
    let refuse = |why: String| BuildError::new(format!("refusing to write `{shown}`: {why}"));
    if let Some(why) = refusal(&meta) {
        return Err(refuse(why));
    }

    let proc_path = format!("/proc/self/fd/{}", pinned.as_raw_fd());
    let file = OpenOptions::new()
        .write(true)
        .append(append)
        .custom_flags(libc::O_NOCTTY)
        .open(&proc_path)
        .map_err(|e| BuildError::new(format!("cannot open `{shown}` for writing: {e}")))?;
    // Reopening through the descriptor cannot change the file; check all the same,
    // since a /proc without magic links would resolve the name anew.
    let reopened =
        fstat_file(&file).map_err(|e| BuildError::new(format!("cannot inspect `{shown}`: {e}")))?;
    if (reopened.dev, reopened.ino) != (meta.dev, meta.ino) {
        return Err(refuse("it changed while it was being opened".into()));
    }
    set_mode(&file, path)?;
    if !append {
        file.set_len(0)
            .map_err(|e| BuildError::new(format!("cannot truncate `{shown}`: {e}")))?;
    }
    Ok(file)
}

/// Checks what is at `path` now by the rules of [`open_output`], without opening
/// or creating anything: for config validation, so that `spf validate` and the
/// config stage report a refused output with its key and line. Nothing is
/// decided here; [`open_output`] decides again on the file it opens.
pub fn check_output_path(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let pinned = match open_path(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot open `{shown}`: {e}")),
    };
    let meta = fstat(&pinned).map_err(|e| format!("cannot inspect `{shown}`: {e}"))?;
    match refusal(&meta) {
        Some(why) => Err(format!("refusing to write `{shown}`: {why}")),
        None => Ok(()),
    }
}

/// Why an existing entry may not be written, if it may not.
fn refusal(meta: &Stat) -> Option<String> {
    let kind = meta.mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Some(
            "it is a symbolic link; spf never follows a link at an output path: remove it or give the path of a regular file".into(),
        );
    }
    if kind != libc::S_IFREG {
        return Some(format!("it is {}, not a regular file", kind_name(kind)));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid != me {
        return Some(format!(
            "it belongs to uid {}, not to uid {me} that spf runs as; remove it or choose another path",
            meta.uid
        ));
    }
    // A second name elsewhere could be a file someone else chose (a hard link to
    // a file of ours in a directory they can write).
    if meta.nlink > 1 {
        return Some(format!(
            "it has {} hard links; remove it or choose another path",
            meta.nlink
        ));
    }
    None
}

/// What `fstat` says about a descriptor, as far as these checks need it.
struct Stat {
    dev: u64,
    ino: u64,
    mode: u32,
    uid: u32,
    nlink: u64,
}

fn open_path(path: &Path) -> std::io::Result<OwnedFd> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: a valid NUL-terminated path; O_PATH opens nothing but the entry.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed over this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<Stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is valid for writes; fstat works on O_PATH descriptors.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded and filled it.
    let st = unsafe { st.assume_init() };
    Ok(Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        uid: st.st_uid,
        nlink: st.st_nlink,
    })
}

fn fstat_file(file: &File) -> std::io::Result<Stat> {
    let m = file.metadata()?;
    Ok(Stat {
        dev: m.dev(),
        ino: m.ino(),
        mode: m.mode(),
        uid: m.uid(),
        nlink: m.nlink(),
    })
}

fn set_mode(file: &File, path: &Path) -> Result<(), BuildError> {
    // SAFETY: fchmod on an open descriptor of ours.
    if unsafe { libc::fchmod(file.as_raw_fd(), OUTPUT_MODE) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(BuildError::new(format!(
            "cannot set the mode of `{}` to {OUTPUT_MODE:04o}: {e}",
            path.display()
        )));
    }
    Ok(())
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a FIFO",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFSOCK => "a socket",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_new_file_is_created_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new.ndjson");
        let mut f = open_output(&p, false).unwrap();
        f.write_all(b"x\n").unwrap();
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"x\n");
    }

    #[test]
    fn an_own_file_is_made_private_and_truncated_or_appended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.ndjson");
        std::fs::write(&p, b"old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut f = open_output(&p, true).unwrap();
        f.write_all(b"more\n").unwrap();
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"old\nmore\n");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut f = open_output(&p, false).unwrap();
        f.write_all(b"new\n").unwrap();
        assert_eq!(mode_of(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"new\n");
    }

    #[test]
    fn a_symbolic_link_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("out.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_output(&link, false).unwrap_err().to_string();
        assert!(
            e.contains("symbolic link") && e.contains("out.ndjson"),
            "{e}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(mode_of(&target), 0o644);
        // A dangling link is not followed to create its target either.
        let dangling = dir.path().join("dangling.ndjson");
        let nowhere = dir.path().join("nowhere");
        std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
        let e = open_output(&dangling, false).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!nowhere.exists());
    }

    #[test]
    fn fifos_directories_and_hard_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Refused without blocking for a reader.
        let e = open_output(&fifo, false).unwrap_err().to_string();
        assert!(e.contains("a FIFO, not a regular file"), "{e}");
        let e = open_output(dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
        let e = open_output(Path::new("/dev/null"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("character device"), "{e}");
        let orig = dir.path().join("orig");
        std::fs::write(&orig, b"keep").unwrap();
        let hard = dir.path().join("hard.ndjson");
        std::fs::hard_link(&orig, &hard).unwrap();
        let e = open_output(&hard, false).unwrap_err().to_string();
        assert!(e.contains("2 hard links"), "{e}");
        assert_eq!(std::fs::read(&orig).unwrap(), b"keep");
    }

    #[test]
    fn the_check_for_validation_applies_the_same_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.ndjson");
        check_output_path(&p).unwrap();
        std::fs::write(&p, b"").unwrap();
        check_output_path(&p).unwrap();
        let link = dir.path().join("link.ndjson");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        let e = check_output_path(&link).unwrap_err();
        assert!(
            e.contains("refusing to write") && e.contains("symbolic link"),
            "{e}"
        );
        let e = check_output_path(dir.path()).unwrap_err();
        assert!(e.contains("a directory"), "{e}");
        // Nothing was created or changed.
        assert!(!dir.path().join("link").exists());
        assert_eq!(std::fs::read(&p).unwrap(), b"");
    }
}
