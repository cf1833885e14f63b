//! The memory allocator's settings. With the `jemalloc` feature (the default) the binary's
//! global allocator is jemalloc, chosen by measurement (README, "Measurements"): it returns the
//! memory of closed connections to the system within seconds, where glibc's malloc keeps a
//! process at its peak after a burst. Freed pages go back after [`DIRTY_DECAY_MS`], purged by
//! jemalloc's own background thread, so an idle gateway shrinks without any traffic to drive it.

/// How long freed pages stay with the process before they are returned (jemalloc's default is
/// 10 s). Shorter returns memory sooner; pages that are reused within it cost nothing.
#[cfg(feature = "jemalloc")]
const DIRTY_DECAY_MS: isize = 2_000;

/// Apply the settings; call once, first thing in `main`. A failure is logged, never fatal.
pub fn configure() {
    #[cfg(feature = "jemalloc")]
    if let Err(e) = jemalloc::configure() {
        eprintln!("portcullis: jemalloc settings not applied ({e}); memory is returned later");
    }
}

#[cfg(feature = "jemalloc")]
mod jemalloc {
    use tikv_jemalloc_ctl::{arenas, background_thread, Access, AsName, Result};

    pub(super) fn configure() -> Result<()> {
        // The default for arenas created from now on (jemalloc makes one per thread that
        // allocates, up to `arenas.narenas`)...
        b"arenas.dirty_decay_ms\0"
            .name()
            .write(super::DIRTY_DECAY_MS)?;
        // ...and the ones that exist already (the main thread's). One not yet created refuses
        // and takes the default above when it is.
        for i in 0..arenas::narenas::read()? {
            let key = format!("arena.{i}.dirty_decay_ms\0");
            let _ = key.as_bytes().name().write(super::DIRTY_DECAY_MS);
        }
        background_thread::write(true)?;
        Ok(())
    }
}

/// The allocator in use, for the startup log line.
pub fn name() -> &'static str {
    if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else {
        "system malloc"
    }
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use super::*;
    use tikv_jemalloc_ctl::{background_thread, Access, AsName};

    #[test]
    fn settings_apply() {
        jemalloc::configure().unwrap();
        assert!(background_thread::read().unwrap());
        let decay: isize = b"arenas.dirty_decay_ms\0".name().read().unwrap();
        assert_eq!(decay, DIRTY_DECAY_MS);
        let arena0: isize = b"arena.0.dirty_decay_ms\0".name().read().unwrap();
        assert_eq!(arena0, DIRTY_DECAY_MS);
    }
}
