//! Finding, vetting and loading a plugin library, and the handshake.

use std::ffi::c_char;
use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::elf::{self, ElfProblem};

use spf_plugin::{
    SPF_ABI_MAJOR, SPF_ABI_MINOR, SPF_KIND_DECODER, SPF_KIND_SINK, SPF_PLUGIN_MAGIC,
    SpfDecoderVtable, SpfPluginDeclaration, SpfSinkVtable,
};

/// What a plugin provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Decoder,
    Sink,
}

impl Kind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Decoder => "decoder",
            Kind::Sink => "sink",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "decoder" => Some(Kind::Decoder),
            "sink" => Some(Kind::Sink),
            _ => None,
        }
    }

    /// The config section that uses this kind.
    const fn section(self) -> &'static str {
        match self {
            Kind::Decoder => "[decoder]",
            Kind::Sink => "[[sink]]",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the handshake learned about a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub path: PathBuf,
    pub kind: Kind,
    pub name: String,
    pub version: String,
    pub abi_major: u32,
    pub abi_minor: u32,
}

impl PluginInfo {
    /// How messages name the plugin: `plugin `resp` 0.1.0 (/usr/lib/spf/libresp.so)`.
    pub fn label(&self) -> String {
        format!(
            "plugin `{}` {} ({})",
            self.name,
            self.version,
            self.path.display()
        )
    }
}

/// Whose layout a plugin's struct size was compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutOf {
    /// This spf's own structs.
    ThisSpf,
    /// The structs of the ABI version (major, minor) the plugin declares.
    Declared(u32, u32),
}

impl std::fmt::Display for LayoutOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutOf::ThisSpf => f.write_str("in this spf"),
            LayoutOf::Declared(major, minor) => {
                write!(f, "in ABI {major}.{minor}, which the plugin declares")
            }
        }
    }
}

/// Why a plugin was refused. Every message names the file and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error(
        "plugin path `{0}` is not absolute; spf loads plugins only from an absolute path (e.g. /usr/local/lib/spf/libfoo.so)"
    )]
    NotAbsolute(PathBuf),
    #[error("cannot read plugin {path}: {message}")]
    Unreadable { path: PathBuf, message: String },
    #[error("refusing plugin {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("{path} is not a shared library spf can load: {message}")]
    NotLibrary { path: PathBuf, message: String },
    #[error(
        "{path} was built for {found}, but this spf runs on {host}: build the plugin for {host}",
        host = elf::host_arch()
    )]
    WrongArch { path: PathBuf, found: String },
    #[error(
        "{path} is a shared library but not an spf plugin: it exports no `spf_plugin_declaration` (build it with the spf-plugin crate's export_decoder!/export_sink!, or define the declaration from spf_plugin.h)"
    )]
    NoDeclaration { path: PathBuf },
    #[error(
        "{path} exports `spf_plugin_declaration` but it is not an spf plugin declaration (magic {magic:#010x}, expected {expected:#010x})",
        expected = SPF_PLUGIN_MAGIC
    )]
    BadMagic { path: PathBuf, magic: u32 },
    #[error(
        "plugin `{name}` {version} ({path}) was built for plugin ABI {major}.{minor}, but this spf speaks ABI {host_major}.{host_minor}: rebuild the plugin against an spf-plugin SDK with ABI {host_major}.x, or use an spf that speaks ABI {major}",
        host_major = SPF_ABI_MAJOR,
        host_minor = SPF_ABI_MINOR
    )]
    AbiMajor {
        path: PathBuf,
        name: String,
        version: String,
        major: u32,
        minor: u32,
    },
    #[error(
        "plugin `{name}` {version} ({path}) needs plugin ABI {major}.{minor}, but this spf speaks only ABI {host_major}.{host_minor}: upgrade spf, or rebuild the plugin against the spf-plugin SDK of this spf",
        host_major = SPF_ABI_MAJOR,
        host_minor = SPF_ABI_MINOR
    )]
    AbiMinor {
        path: PathBuf,
        name: String,
        version: String,
        major: u32,
        minor: u32,
    },
    #[error(
        "plugin `{name}` {version} ({path}) was built with a different layout of {structure}: {plugin} bytes in the plugin, {host} bytes {whose}; rebuild the plugin against the spf-plugin SDK of this spf"
    )]
    Layout {
        path: PathBuf,
        name: String,
        version: String,
        /// The C name of the struct, e.g. `SpfEventView`.
        structure: &'static str,
        plugin: u64,
        host: u64,
        /// Where `host` comes from: this spf, or the ABI version the plugin
        /// declares (a plugin built with a newer header that declares an
        /// older minor).
        whose: LayoutOf,
    },
    #[error(
        "{path}: malformed spf plugin declaration: {what}; rebuild the plugin with the spf-plugin SDK"
    )]
    Malformed { path: PathBuf, what: String },
    #[error(
        "plugin `{name}` {version} ({path}) is a {found} plugin, not a {wanted} plugin: use it in a {found_section} section, not in {wanted_section}",
        wanted_section = wanted.section(),
        found_section = found.section()
    )]
    WrongKind {
        path: PathBuf,
        name: String,
        version: String,
        found: Kind,
        wanted: Kind,
    },
}

/// A plugin that passed the handshake. Its library stays loaded for the life of
/// the process, so the declaration and vtables are `'static`.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub info: PluginInfo,
    pub(crate) vtable: Vtable,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Vtable {
    Decoder(&'static SpfDecoderVtable),
    Sink(&'static SpfSinkVtable),
}

/// Loads the plugin at `path` and runs the handshake; with `want`, also checks
/// its kind. This is what `spf plugins check` and the config both use.
pub fn check(path: &Path, want: Option<Kind>) -> Result<PluginInfo, LoadError> {
    load(path, want).map(|l| l.info)
}

/// Largest plugin file read. Even a plugin built with full debug information is
/// far smaller.
const MAX_PLUGIN_BYTES: u64 = 1 << 30;

/// Vets the file, checks it as ELF data, loads it (for good: libraries are never
/// unloaded, because a plugin may have started threads or registered destructors
/// that point into it), and reads its declaration before calling anything in it.
///
/// The file is opened once: the checks read it through that descriptor, and the
/// dynamic linker loads it through the same descriptor (`/proc/self/fd/N`), so
/// the file checked is the file loaded even if the path is changed meanwhile. (A
/// consequence: `$ORIGIN` in a plugin's run path names /proc/self/fd.)
pub fn load(path: &Path, want: Option<Kind>) -> Result<Loaded, LoadError> {
    if !path.is_absolute() {
        return Err(LoadError::NotAbsolute(path.to_path_buf()));
    }
    let unreadable = |e: std::io::Error| LoadError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = File::open(path).map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    vet_file(path, &meta, is_root())?;
    let mut data = Vec::new();
    (&file)
        .take(MAX_PLUGIN_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(unreadable)?;
    if data.len() as u64 > MAX_PLUGIN_BYTES {
        return Err(LoadError::NotLibrary {
            path: path.to_path_buf(),
            message: format!("larger than {} MiB", MAX_PLUGIN_BYTES >> 20),
        });
    }
    check_elf(path, &data)?;
    drop(data);

    let through_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
    // SAFETY: loading a library runs its initialisers; that is the point of a
    // plugin, and the file passed the ownership and permission checks and is a
    // well-formed shared library that declares itself a plugin.
    let lib =
        unsafe { libloading::os::unix::Library::open(Some(&through_fd), flags) }.map_err(|e| {
            LoadError::NotLibrary {
                path: path.to_path_buf(),
                message: dl_message(&through_fd, &e),
            }
        })?;
    // The dynamic linker knows the library by that name from now on, and hands
    // back the loaded library for it instead of opening anything: were the
    // number used again, a later plugin would be taken for this one. So the
    // descriptor stays open, like the library, for the life of the process.
    std::mem::forget(file);
    // SAFETY: the symbol is only read as an address here; its contents are checked
    // field by field below, the frozen header first.
    let decl = match unsafe { lib.get::<*const SpfPluginDeclaration>(b"spf_plugin_declaration\0") }
    {
        Ok(sym) => *sym,
        Err(_) => {
            return Err(LoadError::NoDeclaration {
                path: path.to_path_buf(),
            });
        }
    };
    std::mem::forget(lib);
    if decl.is_null() {
        return Err(LoadError::NoDeclaration {
            path: path.to_path_buf(),
        });
    }
    let object_size = symbol_size(decl.cast());
    // SAFETY: the library stays loaded forever, so its static lives as long.
    let decl: &'static SpfPluginDeclaration = unsafe { &*decl };
    handshake(path, decl, object_size, want)
}

/// The ELF check of a whole plugin file, as a load error naming `path`.
pub fn check_elf(path: &Path, data: &[u8]) -> Result<(), LoadError> {
    elf::check(data).map_err(|p| match p {
        ElfProblem::Malformed(m) => LoadError::NotLibrary {
            path: path.to_path_buf(),
            message: format!("{m}; spf loads only complete, well-formed ELF shared libraries"),
        },
        ElfProblem::NotShared(what) => LoadError::NotLibrary {
            path: path.to_path_buf(),
            message: format!(
                "it is {what}, not a shared library (build the plugin as a cdylib, or with -shared)"
            ),
        },
        ElfProblem::WrongArch { found } => LoadError::WrongArch {
            path: path.to_path_buf(),
            found,
        },
        ElfProblem::NoDeclaration => LoadError::NoDeclaration {
            path: path.to_path_buf(),
        },
    })
}

/// The size of the object at `addr` as its library's symbol table records it, when
/// the dynamic linker can tell. A declaration from an SDK that predates a field is
/// shorter than ours; knowing that avoids reading past its end.
#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn symbol_size(addr: *const std::ffi::c_void) -> Option<u64> {
    // <dlfcn.h>: makes dladdr1 return the matching ElfW(Sym).
    const RTLD_DL_SYMENT: libc::c_int = 1;
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let mut sym: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: both out-pointers are valid for writes; addr is only looked up.
    let found = unsafe {
        libc::dladdr1(
            addr,
            info.as_mut_ptr(),
            (&raw mut sym).cast(),
            RTLD_DL_SYMENT,
        )
    };
    if found == 0 || sym.is_null() {
        return None;
    }
    // SAFETY: with RTLD_DL_SYMENT, a non-null result points at the symbol's entry
    // in the loaded library's symbol table.
    let size = unsafe { (*sym.cast::<libc::Elf64_Sym>()).st_size };
    // Hand-written assembly may leave the size unset.
    (size != 0).then_some(size)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
fn symbol_size(_addr: *const std::ffi::c_void) -> Option<u64> {
    None
}

/// Checks a declaration. Split from `load` so that it can be tested on
/// declarations built in memory. `object_size` is the size of the declaration's
/// symbol, when known.
pub(crate) fn handshake(
    path: &Path,
    decl: &'static SpfPluginDeclaration,
    object_size: Option<u64>,
    want: Option<Kind>,
) -> Result<Loaded, LoadError> {
    let path_buf = || path.to_path_buf();
    let malformed = |what: &str| LoadError::Malformed {
        path: path.to_path_buf(),
        what: what.to_string(),
    };
    // The header is read below before anything says which ABI this is: it
    // must lie within the symbol, or spf would read (and follow pointers
    // in) whatever the library placed after it.
    let header = (std::mem::offset_of!(SpfPluginDeclaration, version)
        + std::mem::size_of::<*const std::ffi::c_char>()) as u64;
    if let Some(size) = object_size
        && size < header
    {
        return Err(malformed(&format!(
            "`spf_plugin_declaration` is an object of {size} bytes, too small to be one (its header alone is {header})"
        )));
    }
    if decl.magic != SPF_PLUGIN_MAGIC {
        return Err(LoadError::BadMagic {
            path: path_buf(),
            magic: decl.magic,
        });
    }
    // The header (magic, versions, kind, name, version) has the same layout in
    // every ABI, so name and version can be read even when the majors differ.
    // SAFETY: the magic matched, so these are the declaration's string pointers.
    let name = unsafe { c_string(decl.name) }
        .ok_or_else(|| malformed("name is missing, too long or not UTF-8"))?;
    // SAFETY: as above.
    let version = unsafe { c_string(decl.version) }
        .ok_or_else(|| malformed("version is missing, too long or not UTF-8"))?;
    if decl.abi_major != SPF_ABI_MAJOR {
        return Err(LoadError::AbiMajor {
            path: path_buf(),
            name,
            version,
            major: decl.abi_major,
            minor: decl.abi_minor,
        });
    }
    if decl.abi_minor > SPF_ABI_MINOR {
        return Err(LoadError::AbiMinor {
            path: path_buf(),
            name,
            version,
            major: decl.abi_major,
            minor: decl.abi_minor,
        });
    }
    // Same ABI number, so the declaration's layout is ours up to the sizes, unless
    // its object is too short to hold them (an SDK from before they existed).
    let ours = std::mem::size_of::<SpfPluginDeclaration>() as u64;
    if let Some(size) = object_size
        && size < ours
    {
        return Err(LoadError::Layout {
            path: path_buf(),
            name,
            version,
            structure: "SpfPluginDeclaration",
            plugin: size,
            host: ours,
            whose: LayoutOf::ThisSpf,
        });
    }
    // Before any vtable is read or called: a struct that changed size under the
    // same ABI number would be read past its end on one side or the other.
    super::abi::check_sizes(path, decl, &name, &version)?;
    if !spf_plugin::valid_name_bytes(name.as_bytes()) {
        return Err(malformed(&format!(
            "name `{name}` must be 1 to 64 lowercase letters, digits, `-` or `_`"
        )));
    }
    let (kind, vtable) = match decl.kind {
        SPF_KIND_DECODER => {
            // SAFETY: a decoder declaration points at a static decoder vtable
            // of the size checked above.
            let vt = unsafe { super::abi::decoder_vtable(decl) }
                .ok_or_else(|| malformed("decoder vtable is null"))?;
            required_fns(
                "decoder",
                [
                    ("init", vt.init.is_some()),
                    ("decode", vt.decode.is_some()),
                    ("last_error", vt.last_error.is_some()),
                    ("destroy", vt.destroy.is_some()),
                ],
                &malformed,
            )?;
            (Kind::Decoder, Vtable::Decoder(vt))
        }
        SPF_KIND_SINK => {
            // SAFETY: a sink declaration points at a static sink vtable.
            let vt =
                unsafe { decl.sink.as_ref() }.ok_or_else(|| malformed("sink vtable is null"))?;
            required_fns(
                "sink",
                [
                    ("init", vt.init.is_some()),
                    ("write", vt.write.is_some()),
                    ("last_error", vt.last_error.is_some()),
                    ("destroy", vt.destroy.is_some()),
                ],
                &malformed,
            )?;
            (Kind::Sink, Vtable::Sink(vt))
        }
        other => {
            return Err(malformed(&format!(
                "kind {other} is neither decoder ({SPF_KIND_DECODER}) nor sink ({SPF_KIND_SINK})"
            )));
        }
    };
    if let Some(wanted) = want
        && wanted != kind
    {
        return Err(LoadError::WrongKind {
            path: path_buf(),
            name,
            version,
            found: kind,
            wanted,
        });
    }
    Ok(Loaded {
        info: PluginInfo {
            path: path_buf(),
            kind,
            name,
            version,
            abi_major: decl.abi_major,
            abi_minor: decl.abi_minor,
        },
        vtable,
    })
}

/// Fails, naming the first one, if a function the host calls is missing from
/// a vtable of `kind`.
fn required_fns<const N: usize>(
    kind: &str,
    fns: [(&str, bool); N],
    malformed: &impl Fn(&str) -> LoadError,
) -> Result<(), LoadError> {
    match fns.iter().find(|(_, present)| !present) {
        Some((f, _)) => Err(malformed(&format!("{kind} function `{f}` is null"))),
        None => Ok(()),
    }
}

/// Reads a NUL-terminated string of at most 256 bytes.
///
/// # Safety
/// `p` must be null or point to readable memory up to its NUL or 256 bytes.
unsafe fn c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let p = p.cast::<u8>();
    let mut len = 0;
    // SAFETY: the caller guarantees readability up to the NUL or the cap.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
        if len > 256 {
            return None;
        }
    }
    // SAFETY: the `len` bytes before the NUL were just read.
    let bytes = unsafe { std::slice::from_raw_parts(p, len) };
    let s = std::str::from_utf8(bytes).ok()?;
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The checks that keep a root spf from running code someone else could have put
/// there: a regular file and (as root) owned by root with no group or other write
/// bit, in directories others cannot rewrite either. `meta` is the opened file's.
pub(crate) fn vet_file(path: &Path, meta: &std::fs::Metadata, root: bool) -> Result<(), LoadError> {
    let unreadable = |e: std::io::Error| LoadError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if !meta.is_file() {
        return Err(LoadError::Unreadable {
            path: path.to_path_buf(),
            message: "not a regular file".into(),
        });
    }
    if !root {
        return Ok(());
    }
    let unsafe_ = |reason: String| LoadError::Unsafe {
        path: path.to_path_buf(),
        reason,
    };
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(unsafe_(format!(
            "it is writable by group or others (mode {:04o}) and spf runs as root; run `chmod go-w {}`",
            mode & 0o7777,
            path.display()
        )));
    }
    if meta.uid() != 0 {
        return Err(unsafe_(format!(
            "it is owned by uid {}, not root, and spf runs as root; run `chown root {}` (or run spf as that user)",
            meta.uid(),
            path.display()
        )));
    }
    // Whoever can rename entries in a directory on the way can swap the file.
    let canonical = std::fs::canonicalize(path).map_err(unreadable)?;
    for dir in canonical.ancestors().skip(1) {
        let Ok(m) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = m.permissions().mode();
        let sticky = mode & 0o1000 != 0;
        if mode & 0o022 != 0 && !sticky {
            return Err(unsafe_(format!(
                "its directory {} is writable by group or others (mode {:04o}) and spf runs as root; run `chmod go-w {}` or move the plugin",
                dir.display(),
                mode & 0o7777,
                dir.display()
            )));
        }
        if m.uid() != 0 {
            return Err(unsafe_(format!(
                "its directory {} is owned by uid {}, not root, and spf runs as root; move the plugin to a root-owned directory",
                dir.display(),
                m.uid()
            )));
        }
    }
    Ok(())
}

fn dl_message(path: &Path, e: &libloading::Error) -> String {
    // libloading's own text is just "dlopen failed"; dlerror()'s is the useful
    // part, minus the file name (here the descriptor's) it starts with.
    let text = match std::error::Error::source(e) {
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    };
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix)
        .map_or(text.clone(), str::to_string)
}
