//! Advisory locks on local files and folders (`flock`), for what several mongokeep
//! processes on one machine may touch at once: an export's hidden folder, the metrics file.

use std::fs::File;

/// An exclusive `flock` on `f`, waiting for it or not; released when `f` is closed
/// (including when the process dies).
///
/// # Errors
/// Without waiting, `WouldBlock` when another open file holds it.
pub fn lock(f: &File, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: a descriptor owned by `f`, open for the call.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
