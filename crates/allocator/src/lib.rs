//! The binaries' global allocator. Under load glibc's malloc and free were 10-15% of each
//! service's CPU; mimalloc cut the whole stack's CPU per request. Its default of committing
//! arena memory eagerly raised peak RSS by 15-25 MB per process, so [`install!`] also turns
//! that off, before `main` runs and anything is allocated.
//!
//! ```ignore
//! allocator::install!(); // at the top level of a binary's main.rs
//! ```

pub use mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` (position 4 of `mi_option_e` in both mimalloc v2 and v3).
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Sets mimalloc as the binary's global allocator, tuned by [`tune`] before `main`.
#[macro_export]
macro_rules! install {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::MiMalloc = $crate::MiMalloc;

        // A constructor: runs before the Rust runtime's first allocation reserves an arena.
        #[cfg(target_os = "linux")]
        #[used]
        #[unsafe(link_section = ".init_array")]
        static TUNE_ALLOCATOR: extern "C" fn() = $crate::tune;
    };
}

/// Commits arena memory on demand instead of eagerly. Applies to arenas reserved afterwards,
/// so [`install!`] calls it before `main`.
pub extern "C" fn tune() {
    // SAFETY: mi_option_set only stores an integer option; any option id and value is valid.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
}

#[cfg(test)]
mod tests {
    use super::ARENA_EAGER_COMMIT;

    fn get() -> std::os::raw::c_long {
        // SAFETY: reading an option is always valid.
        unsafe { libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT) }
    }

    /// Run in a child process with `MIMALLOC_ARENA_EAGER_COMMIT` set: if position 4 were
    /// another option, the child would not read back the value mimalloc took from that name.
    #[test]
    fn position_4_is_the_arena_eager_commit_option() {
        if std::env::var_os("ALLOCATOR_PROBE").is_some() {
            println!("probe={}", get());
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::position_4_is_the_arena_eager_commit_option",
                "--nocapture",
            ])
            .env("ALLOCATOR_PROBE", "1")
            .env("MIMALLOC_ARENA_EAGER_COMMIT", "7")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("probe=7"), "{stdout}");
    }

    #[test]
    fn tune_turns_eager_commit_off() {
        super::tune();
        assert_eq!(get(), 0);
    }
}
