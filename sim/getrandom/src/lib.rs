//! A getrandom 0.2 stand-in that always calls libc's `getrandom(3)` symbol.
//!
//! getrandom 0.2 reads Linux entropy with a raw `syscall(SYS_getrandom)`, which madsim cannot
//! intercept, so `rand::thread_rng()` (and raft-rs's randomized election timeout, drawn from it)
//! would differ between two runs of the same seed. madsim defines the `getrandom` symbol itself:
//! inside a simulation it fills the buffer from the seeded simulation RNG, outside it forwards to
//! the real libc. Going through that symbol makes every `thread_rng()` in a simulation
//! deterministic. Only Unix is supported, as by madsim.

use core::fmt;
use core::num::NonZeroU32;

/// getrandom 0.2's error: an OS errno, or a code at or above `INTERNAL_START`.
#[derive(Copy, Clone, Eq, PartialEq)]
pub struct Error(NonZeroU32);

impl Error {
    /// The platform is not supported.
    pub const UNSUPPORTED: Error = Error::internal(0);
    /// The OS returned an errno that was not positive.
    pub const ERRNO_NOT_POSITIVE: Error = Error::internal(1);
    /// Codes below this are OS errnos.
    pub const INTERNAL_START: u32 = 1 << 31;
    /// Codes at or above this are for custom handlers.
    pub const CUSTOM_START: u32 = (1 << 31) + (1 << 30);

    const fn internal(n: u16) -> Error {
        match NonZeroU32::new(Self::INTERNAL_START + n as u32) {
            Some(code) => Error(code),
            None => panic!("internal error codes are non-zero"),
        }
    }

    /// The errno, if this error came from the OS.
    pub fn raw_os_error(self) -> Option<i32> {
        if self.0.get() < Self::INTERNAL_START {
            Some(self.0.get() as i32)
        } else {
            None
        }
    }

    pub const fn code(self) -> NonZeroU32 {
        self.0
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.raw_os_error() {
            Some(errno) => write!(f, "Error {{ os_error: {errno} }}"),
            None => write!(f, "Error {{ internal_code: {} }}", self.0.get()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.raw_os_error() {
            Some(errno) => write!(f, "getrandom: OS error {errno}"),
            None => write!(f, "getrandom: internal error {}", self.0.get()),
        }
    }
}

impl From<NonZeroU32> for Error {
    fn from(code: NonZeroU32) -> Self {
        Error(code)
    }
}

impl std::error::Error for Error {}

/// Fills `dest` with random bytes from `getrandom(3)`.
pub fn getrandom(dest: &mut [u8]) -> Result<(), Error> {
    let mut filled = 0;
    while filled < dest.len() {
        let rest = &mut dest[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno == libc::EINTR {
                continue;
            }
            return Err(match u32::try_from(errno).ok().and_then(NonZeroU32::new) {
                Some(code) => Error(code),
                None => Error::ERRNO_NOT_POSITIVE,
            });
        }
        filled += n as usize;
    }
    Ok(())
}

/// Fills possibly uninitialised memory, as getrandom 0.2 offers.
pub fn getrandom_uninit(
    dest: &mut [core::mem::MaybeUninit<u8>],
) -> Result<&mut [u8], Error> {
    for byte in dest.iter_mut() {
        byte.write(0);
    }
    // SAFETY: every byte was just initialised.
    let bytes = unsafe { &mut *(dest as *mut [core::mem::MaybeUninit<u8>] as *mut [u8]) };
    getrandom(bytes)?;
    Ok(bytes)
}
