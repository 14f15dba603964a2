//! What the benchmark reads from the outside: a `projector run` child
//! process (its peak RSS and CPU time from /proc, its Prometheus metrics)
//! and a consumer group's committed offsets against the end of its topics.
//! The service under test is the real binary in its deployment shape.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::source::consumer::group_lag;

/// A running `projector run` started by the benchmark.
pub struct Service {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Service {
    /// Starts `exe run <read_model>` with the given extra arguments; its
    /// log goes to `log`.
    pub fn start(exe: &Path, read_model: &Path, port: u16, args: &[String], log: PathBuf) -> anyhow::Result<Service> {
        let child = Command::new(exe)
            .arg("run")
            .arg(read_model)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .env("PROJECTOR_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
            .spawn()
            .with_context(|| format!("starting {} run", exe.display()))?;
        Ok(Service { child, port, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            anyhow::bail!(
                "projector exited ({status}) during the benchmark; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    /// Peak resident set size so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .context("no VmHWM in /proc/<pid>/status")?;
        Ok(kb * 1024)
    }

    /// User + system CPU time the process has used, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        process_cpu_seconds(self.pid())
    }

    pub async fn metrics(&self, http: &reqwest::Client) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        Ok(http.get(&url).send().await.with_context(|| format!("GET {url}"))?.text().await?)
    }

    /// SIGTERM, then waits for a clean exit (the service flushes and commits).
    pub fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "projector exited with {status} after SIGTERM; see {}",
                    self.log.display()
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        anyhow::bail!("projector did not stop within 60 s of SIGTERM; see {}", self.log.display())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// utime + stime of a process from /proc/<pid>/stat, in seconds.
pub fn process_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// CPU time of the calling thread, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Records a group has committed on `topics`, and how many it still lags.
pub async fn committed(brokers: &str, group: &str, topics: &[String]) -> anyhow::Result<(i64, i64)> {
    let (b, g, t) = (brokers.to_string(), group.to_string(), topics.to_vec());
    let parts = tokio::task::spawn_blocking(move || group_lag(&b, &g, &t, Duration::from_secs(10))).await??;
    Ok((parts.iter().map(|p| p.committed).sum(), parts.iter().map(|p| p.lag()).sum()))
}

/// How a catch-up ended.
#[derive(Clone, Copy, Debug)]
pub struct CatchUp {
    /// Records committed during the wait.
    pub records: i64,
    pub elapsed: Duration,
    /// False when `limit` ran out first (the figure is then partial).
    pub complete: bool,
}

/// Polls `group` every 200 ms until it has committed everything on
/// `topics`, or `limit` passes. `alive` is checked on each poll.
pub async fn wait_caught_up(
    brokers: &str,
    group: &str,
    topics: &[String],
    limit: Duration,
    mut alive: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<CatchUp> {
    let started = Instant::now();
    let (start_committed, _) = committed(brokers, group, topics).await?;
    loop {
        alive().await?;
        let (done, lag) = committed(brokers, group, topics).await?;
        let records = done - start_committed;
        if lag == 0 && done > 0 {
            return Ok(CatchUp { records, elapsed: started.elapsed(), complete: true });
        }
        if started.elapsed() >= limit {
            return Ok(CatchUp { records, elapsed: started.elapsed(), complete: false });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cumulative buckets `(le, count)` of one Prometheus histogram series
/// whose labels contain every `filter`.
pub fn histogram(text: &str, name: &str, filters: &[&str]) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Bucket counts of `after` minus `before` (the samples recorded between).
pub fn histogram_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after.iter().map(|&(le, n)| (le, n - before.iter().find(|b| b.0 == le).map_or(0.0, |b| b.1))).collect()
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside the
/// bucket it falls in (Prometheus' histogram_quantile). None when empty.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            let frac = if width > 0.0 { (rank - lower.1) / width } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE x histogram\n\
x_bucket{sink=\"a\",le=\"0.01\"} 10\n\
x_bucket{sink=\"a\",le=\"0.1\"} 90\n\
x_bucket{sink=\"a\",le=\"1\"} 100\n\
x_bucket{sink=\"a\",le=\"+Inf\"} 100\n\
x_bucket{sink=\"b\",le=\"0.01\"} 1\n";

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let h = histogram(TEXT, "x", &["sink=\"a\""]);
        assert_eq!(h.len(), 4);
        // p50: rank 50 falls in (0.01, 0.1], 40 of 80 into it.
        assert!((quantile(&h, 0.5).unwrap() - 0.055).abs() < 1e-9);
        // p99: rank 99 in (0.1, 1], 9 of 10 into it.
        assert!((quantile(&h, 0.99).unwrap() - 0.91).abs() < 1e-9);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn deltas_subtract_earlier_samples() {
        let before = vec![(0.1, 5.0), (f64::INFINITY, 6.0)];
        let after = vec![(0.1, 15.0), (f64::INFINITY, 20.0)];
        assert_eq!(histogram_delta(&before, &after), vec![(0.1, 10.0), (f64::INFINITY, 14.0)]);
    }

    #[test]
    fn own_process_cpu_and_thread_cpu_advance() {
        let (p0, t0) = (process_cpu_seconds(std::process::id()).unwrap(), thread_cpu_seconds());
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(thread_cpu_seconds() - t0 > 0.1);
        assert!(process_cpu_seconds(std::process::id()).unwrap() - p0 > 0.05);
    }
}
