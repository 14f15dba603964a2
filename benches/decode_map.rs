//! `cargo bench --bench decode_map [-- N]`: decode + map CPU per event for
//! the benchmark's Bookings stream (JSON with the inline Connect schema),
//! on one thread, without Kafka. The number `projector bench` reports as
//! "decode + map", handy under `perf record`.

fn main() -> anyhow::Result<()> {
    let n = std::env::args().skip(1).find_map(|a| a.parse::<usize>().ok()).unwrap_or(200_000);
    // Warm up (allocator, caches), then measure.
    projector::bench::decode_and_map_stream("warmup", n.min(20_000), 0)?;
    let (docs, us) = projector::bench::decode_and_map_stream("bench", n, usize::MAX)?;
    println!("| events | documents | decode + map CPU per event |");
    println!("|---:|---:|---:|");
    println!("| {n} | {} | {us:.2} µs |", docs.len());
    Ok(())
}
