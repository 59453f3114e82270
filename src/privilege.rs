//! Dropping root after the capture and the outputs are open.
//!
//! Contract: [`drop_to`] switches the whole process to `user`: supplementary groups (the
//! user's), then gid, then uid; sets no-new-privileges; then proves the drop by checking that
//! `setuid(0)` fails and that no capability is left in the effective or permitted set. Any
//! failure is an error: a sensor that was asked to drop root never runs on as root.

use std::ffi::{CStr, CString};
use std::io;

/// A user resolved from the password database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Why dropping privileges failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    #[error("--user {user}: {step} failed: {source}")]
    Call {
        user: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("--user {0}: still able to regain root after dropping privileges")]
    Regained(String),
    #[error("--user {0}: capabilities remain after dropping privileges ({1})")]
    Capabilities(String, String),
}

/// Looks `name` up (a name, or a numeric uid).
pub fn lookup(name: &str) -> Result<User, PrivilegeError> {
    let cname = CString::new(name).map_err(|_| PrivilegeError::UnknownUser(name.into()))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; `buf` outlives the use of `pwd`'s strings.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc == 0 && !result.is_null() {
        // SAFETY: getpwnam_r filled `pwd`, its pw_name points into `buf`.
        let pw_name = unsafe { CStr::from_ptr(pwd.pw_name) }
            .to_string_lossy()
            .into_owned();
        return Ok(User {
            name: pw_name,
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(User {
            name: name.into(),
            uid,
            gid: uid,
        });
    }
    Err(PrivilegeError::UnknownUser(name.into()))
}

fn check(rc: libc::c_int, user: &User, step: &'static str) -> Result<(), PrivilegeError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(PrivilegeError::Call {
            user: user.name.clone(),
            step,
            source: io::Error::last_os_error(),
        })
    }
}

/// Switches the process to `user` (see the module contract).
pub fn drop_to(user: &User) -> Result<(), PrivilegeError> {
    let cname = CString::new(user.name.as_str()).unwrap_or_default();
    // SAFETY: plain libc calls with valid arguments; they affect every thread of the process
    // (glibc's setXid broadcast), which is what we want.
    unsafe {
        if libc::initgroups(cname.as_ptr(), user.gid) != 0 {
            // A numeric uid without a passwd entry: no supplementary groups at all.
            check(libc::setgroups(1, &user.gid), user, "setgroups")?;
        }
        check(libc::setgid(user.gid), user, "setgid")?;
        check(libc::setuid(user.uid), user, "setuid")?;
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            user,
            "prctl(PR_SET_NO_NEW_PRIVS)",
        )?;
        if user.uid != 0 && (libc::setuid(0) == 0 || libc::seteuid(0) == 0) {
            return Err(PrivilegeError::Regained(user.name.clone()));
        }
    }
    if user.uid != 0 {
        if let Some(caps) = remaining_capabilities() {
            return Err(PrivilegeError::Capabilities(user.name.clone(), caps));
        }
    }
    Ok(())
}

/// The non-zero `CapEff`/`CapPrm` lines of /proc/self/status, if any.
pub fn remaining_capabilities() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let held: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("CapEff:") || l.starts_with("CapPrm:"))
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|v| v.bytes().any(|b| b != b'0'))
        })
        .collect();
    (!held.is_empty()).then(|| held.join(", "))
}

/// Gives a file we created as root to `user`, so it can reopen it by path later.
pub fn chown(path: &std::path::Path, user: &User) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
}
