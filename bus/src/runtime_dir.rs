//! The runtime directory that holds the bus sockets: private to the user (0700).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::{BusError, BusResult};

/// Creates `dir` (and its parents) with mode 0700, or checks an existing one: it must be a
/// directory owned by this user; its mode is tightened to 0700 if looser.
///
/// # Errors
/// When the directory cannot be created, is not a directory, or belongs to another user.
pub fn ensure_private_dir(dir: &Path) -> BusResult<()> {
    let io = |context: String| move |source| BusError::Io { context, source };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("create runtime dir {}", dir.display())))?;
    let meta = std::fs::metadata(dir).map_err(io(format!("inspect {}", dir.display())))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(BusError::Io {
            context: format!(
                "runtime dir {} belongs to uid {}, not to uid {me}",
                dir.display(),
                meta.uid()
            ),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("make {} private (0700)", dir.display())))?;
    }
    Ok(())
}

/// `ZMQ_IPC_FILTER_UID` from zmq.h (deprecated in libzmq 4.3, not exported by zmq-sys).
const ZMQ_IPC_FILTER_UID: libc::c_int = 59;

/// Restricts the peers of a listening ipc socket to this user, where libzmq supports it
/// (`ZMQ_IPC_FILTER_UID`). Returns whether the filter is in force; the 0700 runtime directory
/// is the guarantee either way.
pub fn restrict_ipc_to_same_user(sock: &mut zmq::Socket) -> bool {
    // SAFETY: getuid cannot fail; zmq_setsockopt reads `size_of::<c_int>()` bytes from a valid
    // pointer to a live c_int on the stack, on a socket we own exclusively (&mut).
    unsafe {
        let uid: libc::c_int = libc::getuid() as libc::c_int;
        zmq_sys::zmq_setsockopt(
            sock.as_mut_ptr(),
            ZMQ_IPC_FILTER_UID,
            (&uid as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_dir_and_tightens_loose_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(ensure_private_dir(&file).is_err());
    }
}
