//! glibc's malloc set for training: memory freed by one step kept for the next.
//!
//! A training step allocates and frees the same few hundred megabytes every time (activations,
//! gradients, im2col columns). With glibc's defaults, a block above the mmap threshold (128 KiB,
//! rising only as far as the largest block freed) is mapped for each allocation and unmapped when
//! freed, and free memory at the top of the heap is given back beyond the trim threshold; so each
//! step page-faults its memory in and the kernel zeroes it again. [`keep_freed_memory`] raises
//! both thresholds, as `MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647
//! MALLOC_TOP_PAD_=268435456` would. Measured (docs/performance.md): 5–6 % less time on the
//! ResNet-18 and ChipNet-R18 training steps, 10–20 % on the CPU preset's epochs. The process then keeps its peak heap until it
//! exits rather than returning it between steps; blocks of 32 MiB and more are still mapped and
//! unmapped each time. The `agc` command sets it for the commands that train only: in the crop
//! step and `agc predict`, which decode photographs on every thread, it raised the peak by
//! 150–220 MiB at 1 000 photographs and saved no time. (Setting any of these thresholds, by
//! `mallopt` or by one of those variables, also stops glibc from raising its mmap threshold as
//! blocks are freed: setting only `MALLOC_TOP_PAD_` leaves every block of 128 KiB and more
//! mapped and unmapped each time.)

/// Blocks below this many bytes come from the heap (glibc's default ceiling for its dynamic
/// threshold on 64 bits).
pub const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of the heap is given back to the system only beyond this.
pub const TRIM_THRESHOLD: i32 = i32::MAX;
/// Extra bytes asked of the system each time the heap grows.
pub const TOP_PAD: i32 = 256 << 20;

/// The variables with which a user sets the same thresholds: when any is set, theirs are kept.
pub const USER_VARIABLES: [&str; 3] = [
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
];

/// Set to `system` (`AGC_MALLOC=system`), it leaves glibc's malloc as it is.
pub const OPT_OUT: &str = "AGC_MALLOC";

/// Sets glibc's malloc as the module's doc says, unless the user has set any of
/// [`USER_VARIABLES`] or [`OPT_OUT`] to `system`. Call it at the start of `main`, before other
/// threads allocate. Returns whether all three settings were taken; always `false` off glibc,
/// where it does nothing.
pub fn keep_freed_memory() -> bool {
    let user_set = USER_VARIABLES.iter().any(|v| std::env::var_os(v).is_some());
    if user_set || std::env::var(OPT_OUT).is_ok_and(|v| v == "system") {
        return false;
    }
    set_thresholds()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() -> bool {
    [
        (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (libc::M_TOP_PAD, TOP_PAD),
    ]
    .into_iter()
    // SAFETY: `mallopt` takes two integers and only changes malloc's parameters; glibc
    // serialises it with the allocator's own lock. It returns 1 when the value is taken.
    .all(|(param, value)| unsafe { libc::mallopt(param, value) } == 1)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}
