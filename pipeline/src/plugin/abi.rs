//! The struct layouts of each minor version of plugin ABI 1, and what the host
//! lends a plugin of each.
//!
//! A minor version only appends fields, so the layout of an older minor is a
//! prefix of this SDK's: the host fills the full structs and hands a plugin of
//! minor 0 the same pointers, of which it reads only the part it knows. The one
//! place where the host reads a plugin's struct, the decoder vtable, is copied
//! field by field up to the plugin's size, so that an entry the plugin's minor
//! does not have is null instead of bytes past the end of its static.

use std::path::Path;

use spf_plugin::{SpfDecoderVtable, SpfPluginDeclaration};

use super::LoadError;

/// `SpfPluginDeclaration::SIZES` as ABI 1.0 declared them (x86-64 and other
/// LP64 targets): declaration, event view, decoder out, decoder vtable, sink
/// vtable. Pinned: a plugin built against the 1.0 header declares exactly these.
#[cfg(target_pointer_width = "64")]
const SIZES_1_0: [u32; 5] = [72, 120, 24, 56, 40];
#[cfg(target_pointer_width = "32")]
const SIZES_1_0: [u32; 5] = [44, 96, 12, 28, 20];

/// The struct sizes a plugin of ABI 1.`minor` declares, for each minor this host
/// speaks.
pub fn sizes_of_minor(minor: u32) -> Option<[u32; 5]> {
    match minor {
        0 => Some(SIZES_1_0),
        spf_plugin::SPF_ABI_MINOR => Some(SpfPluginDeclaration::SIZES.map(|(_, s)| s)),
        _ => None,
    }
}

/// Checks the sizes a declaration carries against the layout of its minor.
/// `decl.abi_minor` must already be one this host speaks.
pub(crate) fn check_sizes(
    path: &Path,
    decl: &SpfPluginDeclaration,
    name: &str,
    version: &str,
) -> Result<(), LoadError> {
    let want = sizes_of_minor(decl.abi_minor).unwrap_or([0; 5]);
    for (i, ((structure, _), plugin)) in SpfPluginDeclaration::SIZES
        .into_iter()
        .zip(decl.sizes())
        .enumerate()
    {
        if plugin != want[i] {
            return Err(LoadError::Layout {
                path: path.to_path_buf(),
                name: name.to_string(),
                version: version.to_string(),
                structure,
                plugin: plugin.into(),
                host: want[i].into(),
                whose: super::load::LayoutOf::Declared(decl.abi_major, decl.abi_minor),
            });
        }
    }
    Ok(())
}

/// The decoder vtable of a checked declaration, as this SDK's struct: entries
/// past the plugin's minor are null. Leaked, like the library it points into.
///
/// # Safety
/// `decl` passed [`check_sizes`], and `decl.decoder` is null or points to a
/// static of `decl.decoder_vtable_size` bytes.
pub(crate) unsafe fn decoder_vtable(
    decl: &SpfPluginDeclaration,
) -> Option<&'static SpfDecoderVtable> {
    let theirs = decl.decoder;
    if theirs.is_null() {
        return None;
    }
    let size = (decl.decoder_vtable_size as usize).min(size_of::<SpfDecoderVtable>());
    if size == size_of::<SpfDecoderVtable>() {
        // SAFETY: a whole vtable of this layout, static in a library never unloaded.
        return Some(unsafe { &*theirs });
    }
    let mut vt = SpfDecoderVtable {
        init: None,
        decode: None,
        lost: None,
        closed: None,
        finish: None,
        last_error: None,
        destroy: None,
        detect: None,
    };
    // SAFETY: the plugin's static has `size` bytes, a prefix of this layout made
    // of nullable function pointers; the rest of `vt` stays null.
    unsafe {
        std::ptr::copy_nonoverlapping(
            theirs.cast::<u8>(),
            (&raw mut vt).cast::<u8>(),
            size - size % size_of::<usize>(),
        );
    }
    Some(Box::leak(Box::new(vt)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_1_appends_to_minor_0() {
        let now = sizes_of_minor(spf_plugin::SPF_ABI_MINOR).unwrap();
        let old = sizes_of_minor(0).unwrap();
        assert_eq!(now[0], old[0], "the declaration keeps its layout");
        assert_eq!(now[4], old[4], "the sink vtable keeps its layout");
        for i in 1..4 {
            assert!(now[i] > old[i], "struct {i} grew");
        }
        // The 1.0 event view ends where the 1.1 fields begin.
        assert_eq!(
            std::mem::offset_of!(spf_plugin::SpfEventView, side),
            old[1] as usize
        );
        assert_eq!(
            std::mem::offset_of!(spf_plugin::SpfDecoderOut, exchange),
            old[2] as usize
        );
        assert_eq!(
            std::mem::offset_of!(SpfDecoderVtable, detect),
            old[3] as usize
        );
        assert!(sizes_of_minor(spf_plugin::SPF_ABI_MINOR + 1).is_none());
    }
}
