//! User accounts by name, for the user spf switches to after start.
//!
//! Looked up through the C library (so NSS sources such as LDAP count), while the
//! config is read: a user that does not exist is a config error, found before
//! anything runs.

use std::ffi::{CStr, CString};

/// The user spf switches to when started as root and no other is named.
pub const DEFAULT_USER: &str = "nobody";

/// Largest buffer offered to `getpwnam_r`; an entry that needs more is refused
/// rather than chased.
const MAX_BUF: usize = 1 << 20;
/// Most supplementary groups taken over (the kernel's NGROUPS_MAX is 65536).
const MAX_GROUPS: usize = 65_536;

/// A user as spf needs it to switch to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
    /// Every group the user is in, the primary one included.
    pub groups: Vec<u32>,
}

impl Account {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// The account named `name`: `Ok(None)` when there is none, `Err` when the
/// lookup itself failed.
pub fn lookup(name: &str) -> Result<Option<Account>, String> {
    let c_name = CString::new(name).map_err(|_| "a user name holds no NUL byte".to_string())?;
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    let (uid, gid) = loop {
        let mut pw = std::mem::MaybeUninit::<libc::passwd>::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `buf` has `buf.len()` bytes.
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                pw.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUF {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "looking up user `{name}` failed: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: getpwnam_r succeeded and pointed `result` at `pw`.
        let pw = unsafe { &*result };
        break (pw.pw_uid, pw.pw_gid);
    };
    let groups = groups_of(&c_name, gid)?;
    Ok(Some(Account {
        name: name.to_string(),
        uid,
        gid,
        groups,
    }))
}

/// Every group of the user, the primary group first.
fn groups_of(name: &CStr, gid: u32) -> Result<Vec<u32>, String> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at most
        // that many and says how many it needed.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        if n <= groups.len() || n > MAX_GROUPS {
            return Err(format!(
                "the groups of user `{}` cannot be listed",
                name.to_string_lossy()
            ));
        }
        groups.resize(n, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_exists_with_uid_0() {
        let root = lookup("root")
            .unwrap()
            .expect("every Linux system has root");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.is_root());
        assert!(root.groups.contains(&0), "{:?}", root.groups);
    }

    #[test]
    fn a_missing_user_is_none() {
        assert_eq!(lookup("no-such-user-spf-test").unwrap(), None);
        assert!(lookup("a\0b").is_err());
    }
}
