//! The harness's one error type: a sentence that says what failed, on what, the
//! OS error or the tail of the log, and the usual fix.

use std::fmt;

/// A harness failure (preparation, a host tool, QEMU not starting). A guest whose
/// program fails is not an error: that is an [`crate::Outcome`] with its status.
#[derive(Debug)]
pub struct Error {
    message: String,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Error>;
