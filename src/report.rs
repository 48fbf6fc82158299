//! Messages to the user about misuse the allocator detects without debug
//! hooks. They go to stderr with `write(2)`, which needs no allocation and
//! no lock, so they are safe from any allocator path.

use core::fmt::{self, Write};

/// A fixed-size formatting buffer on the stack.
pub struct Line {
    bytes: [u8; 512],
    len: usize,
}

impl Line {
    pub fn new() -> Line {
        Line {
            bytes: [0; 512],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Default for Line {
    fn default() -> Self {
        Line::new()
    }
}

impl Write for Line {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Write raw bytes to stderr, retrying short writes.
pub fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writing from a valid buffer to fd 2.
        let written = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if written <= 0 {
            return;
        }
        bytes = &bytes[written as usize..];
    }
}

pub fn message(args: fmt::Arguments<'_>) {
    let mut line = Line::new();
    let _ = line.write_str("pymalloc: ");
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    write_stderr(line.as_bytes());
}

/// A pointer inside our arenas that is not a live block was freed (a
/// double free or a wild pointer into an unused pool). The block is left
/// alone: releasing it again could hand one block to two owners.
pub fn invalid_free(pointer: *mut u8) {
    message(format_args!(
        "free of {pointer:p}, which lies in an unused pool (double free or wild pointer); \
         ignored. Run with PYMALLOC=debug to find the culprit."
    ));
}
