//! What a plugin file must be before the dynamic linker sees it.
//!
//! `dlopen` maps a file and runs its constructors before spf can look for the
//! declaration, and it trusts the file's headers: a file cut short maps pages past
//! its end, and touching them kills spf with SIGBUS. So the file is read and
//! checked first, as data: a well-formed ELF shared object of this machine's
//! architecture, every part the loader maps inside the file, exporting
//! `spf_plugin_declaration` from its dynamic symbol table. A library that is not a
//! plugin is refused before any of its code runs.

use object::Endianness;
use object::elf;
use object::read::elf::{
    Dyn as _, FileHeader as _, ProgramHeader as _, SectionHeader as _, Sym as _,
};

/// The symbol every plugin exports.
pub const DECLARATION_SYMBOL: &str = "spf_plugin_declaration";

#[cfg(target_pointer_width = "64")]
type Header = elf::FileHeader64<Endianness>;
#[cfg(target_pointer_width = "32")]
type Header = elf::FileHeader32<Endianness>;

/// Why a file is not a loadable plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfProblem {
    /// Not ELF, cut short, or with headers that point outside the file.
    Malformed(String),
    /// Built for another machine (or word size, or byte order).
    WrongArch { found: String },
    /// An ELF file, but not a shared library (an executable, an object file).
    NotShared(String),
    /// A shared library without the declaration in its dynamic symbols.
    NoDeclaration,
}

/// Checks that `data`, a whole file, is a shared library spf can load as a plugin.
pub fn check(data: &[u8]) -> Result<(), ElfProblem> {
    let malformed = |what: &str| ElfProblem::Malformed(what.to_string());
    if data.get(..4) != Some(&elf::ELFMAG[..]) {
        return Err(malformed("not an ELF file"));
    }
    let ident = data
        .get(..std::mem::size_of::<elf::Ident>())
        .ok_or_else(|| malformed("the ELF header is cut short"))?;
    let class = ident[4];
    let big = ident[5] == elf::ELFDATA2MSB.0;
    let host_class = if cfg!(target_pointer_width = "64") {
        elf::ELFCLASS64.0
    } else {
        elf::ELFCLASS32.0
    };
    if class != host_class || big != cfg!(target_endian = "big") {
        return Err(ElfProblem::WrongArch {
            found: format!(
                "{}-bit {}-endian",
                if class == elf::ELFCLASS64.0 { 64 } else { 32 },
                if big { "big" } else { "little" }
            ),
        });
    }
    let header =
        Header::parse(data).map_err(|_| malformed("the ELF header is cut short or invalid"))?;
    let endian = header
        .endian()
        .map_err(|_| malformed("unknown byte order"))?;
    let machine = header.e_machine(endian);
    if let Some(host) = HOST_MACHINE
        && machine != host
    {
        return Err(ElfProblem::WrongArch {
            found: machine_name(machine),
        });
    }
    let e_type = header.e_type(endian);
    if e_type != elf::ET_DYN {
        let what = match e_type {
            elf::ET_EXEC => "an executable",
            elf::ET_REL => "an object file (.o), not linked",
            elf::ET_CORE => "a core dump",
            _ => "an ELF file of an unknown type",
        };
        return Err(ElfProblem::NotShared(what.into()));
    }

    // Every byte the loader reads or maps must be in the file.
    let segments = header
        .program_headers(endian, data)
        .map_err(|_| malformed("its program headers lie outside the file"))?;
    let mut dynamic = false;
    for ph in segments {
        if ph.data(endian, data).is_err() {
            return Err(malformed(
                "a segment lies past the end of the file (cut short?)",
            ));
        }
        dynamic |= ph.p_type(endian) == elf::PT_DYNAMIC;
    }
    if !segments.iter().any(|ph| ph.p_type(endian) == elf::PT_LOAD) {
        return Err(ElfProblem::NotShared("a file with nothing to load".into()));
    }
    if !dynamic {
        return Err(ElfProblem::NotShared(
            "a file without dynamic linking information".into(),
        ));
    }
    // A position-independent executable is ET_DYN too, marked as one in its
    // dynamic section (the dynamic linker refuses to load it).
    for ph in segments {
        let entries = ph
            .dynamic(endian, data)
            .map_err(|_| malformed("its dynamic section is invalid"))?
            .unwrap_or(&[]);
        let pie = entries
            .iter()
            .any(|d| d.tag(endian) == elf::DT_FLAGS_1 && d.val(endian) & elf::DF_1_PIE.0 != 0);
        if pie {
            return Err(ElfProblem::NotShared("an executable".into()));
        }
    }
    let sections = header
        .sections(endian, data)
        .map_err(|_| malformed("its section headers lie outside the file (cut short?)"))?;
    for s in sections.iter() {
        if s.sh_type(endian) != elf::SHT_NOBITS && s.data(endian, data).is_err() {
            return Err(malformed(
                "a section lies past the end of the file (cut short?)",
            ));
        }
    }
    let symbols = sections
        .symbols(endian, data, elf::SHT_DYNSYM)
        .map_err(|_| malformed("its dynamic symbol table is invalid"))?;
    let mut named = symbols.iter().filter(|sym| {
        !sym.is_undefined(endian)
            && matches!(
                sym.st_bind(),
                elf::STB_GLOBAL | elf::STB_WEAK | elf::STB_GNU_UNIQUE
            )
            && matches!(sym.st_visibility(), elf::STV_DEFAULT | elf::STV_PROTECTED)
            && symbols.symbol_name(endian, sym).ok() == Some(DECLARATION_SYMBOL.as_bytes())
    });
    match named.next() {
        Some(sym) if sym.st_type() == elf::STT_OBJECT => Ok(()),
        // Exported, but not as data: a function of that name is not the
        // declaration, and reading it as one would read its code.
        Some(_) => Err(malformed(
            "it exports `spf_plugin_declaration`, but not as a data object (a function?): \
             it must be the declaration itself, a static struct",
        )),
        None => Err(ElfProblem::NoDeclaration),
    }
}

/// This machine's `e_machine`, where spf knows it.
const HOST_MACHINE: Option<elf::Machine> = if cfg!(target_arch = "x86_64") {
    Some(elf::EM_X86_64)
} else if cfg!(target_arch = "aarch64") {
    Some(elf::EM_AARCH64)
} else if cfg!(target_arch = "x86") {
    Some(elf::EM_386)
} else if cfg!(target_arch = "arm") {
    Some(elf::EM_ARM)
} else if cfg!(any(target_arch = "riscv64", target_arch = "riscv32")) {
    Some(elf::EM_RISCV)
} else if cfg!(target_arch = "powerpc64") {
    Some(elf::EM_PPC64)
} else if cfg!(target_arch = "s390x") {
    Some(elf::EM_S390)
} else if cfg!(target_arch = "loongarch64") {
    Some(elf::EM_LOONGARCH)
} else {
    None
};

/// The name of this machine, for messages.
pub fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

fn machine_name(m: elf::Machine) -> String {
    let name = match m {
        elf::EM_X86_64 => "x86_64",
        elf::EM_386 => "x86",
        elf::EM_AARCH64 => "aarch64",
        elf::EM_ARM => "arm",
        elf::EM_RISCV => "riscv",
        elf::EM_PPC64 => "powerpc64",
        elf::EM_PPC => "powerpc",
        elf::EM_S390 => "s390x",
        elf::EM_MIPS => "mips",
        elf::EM_LOONGARCH => "loongarch",
        _ => return format!("machine {}", m.0),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_and_cut_headers_are_malformed() {
        for data in [&b""[..], b"\x7fEL", b"not an elf file at all", b"\x7fELF"] {
            assert!(
                matches!(check(data), Err(ElfProblem::Malformed(_))),
                "{data:?}"
            );
        }
        // A complete identification and nothing after it.
        let mut ident = b"\x7fELF".to_vec();
        ident.extend([
            if cfg!(target_pointer_width = "64") {
                2
            } else {
                1
            },
            if cfg!(target_endian = "big") { 2 } else { 1 },
            1,
        ]);
        ident.resize(16, 0);
        assert!(matches!(check(&ident), Err(ElfProblem::Malformed(_))));
        // The other word size or byte order is another architecture.
        let mut other = ident.clone();
        other[4] ^= 3;
        assert!(matches!(check(&other), Err(ElfProblem::WrongArch { .. })));
    }

    #[test]
    fn this_test_program_is_not_a_plugin() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert!(
            matches!(check(&exe), Err(ElfProblem::NotShared(_))),
            "{:?}",
            check(&exe)
        );
        // Cut anywhere, it is refused without touching what is missing.
        for cut in [64, 200, exe.len() / 2, exe.len() - 1] {
            assert!(check(&exe[..cut]).is_err(), "{cut}");
        }
    }
}
