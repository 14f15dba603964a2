//! `cargo bench --bench decode_map [-- N]`: decode + map CPU per event for
//! the benchmark's Bookings stream (JSON with the inline Connect schema),
//! on one thread, without Kafka. The number `projector bench` reports as
//! "decode + map", handy under `perf record`.
//!
//! Wall time on a shared machine is noisy, so the bench also counts heap
//! allocations (a counting global allocator, here only, never in the
//! library): allocations and bytes per event are deterministic, and they
//! are what the "≤ 1 allocation per row" goal of issue #7 is about.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting calls and bytes requested.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// side effects only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A growing buffer counts as one more allocation: it is one more
        // trip to malloc, which is the cost being measured.
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counts() -> (u64, u64) {
    (ALLOCATIONS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed))
}

fn main() -> anyhow::Result<()> {
    let n = std::env::args().skip(1).find_map(|a| a.parse::<usize>().ok()).unwrap_or(200_000);
    // Warm up (allocator, caches), then measure.
    projector::bench::decode_and_map_stream("warmup", n.min(20_000), 0)?;
    // Only the timed parts are counted, not generating the records; no
    // document is kept, so each is dropped as a running service drops it.
    let (mut allocations, mut bytes, mut entered) = (0u64, 0u64, (0u64, 0u64));
    let mut meter = |edge: projector::bench::Timed| match edge {
        projector::bench::Timed::Enter => entered = counts(),
        projector::bench::Timed::Leave => {
            let (a, b) = counts();
            allocations += a - entered.0;
            bytes += b - entered.1;
        }
    };
    let (_, us) = projector::bench::decode_and_map_metered("bench", n, 0, &mut meter)?;
    let per_event = |total: u64| total as f64 / n.max(1) as f64;
    println!("| events | decode + map CPU per event | allocations per event | bytes allocated per event |");
    println!("|---:|---:|---:|---:|");
    println!("| {n} | {us:.2} µs | {:.2} | {:.0} |", per_event(allocations), per_event(bytes));
    Ok(())
}
