//! `tern bench raw DIR`: what the machine can do on that disk, measured without the engine.
//!
//! * Sequential write bandwidth, **short** run (default 1 GiB per case: mostly a copy into the
//!   page cache) for `pwrite`, io_uring buffered and io_uring `O_DIRECT` at several write sizes.
//!   Each file is pre-sized sparse with `set_len`, as the engine pre-allocates segments; the
//!   final fdatasync is timed separately.
//! * Sequential write bandwidth, **sustained** run (`--sustained-bytes`, several GiB: long enough
//!   to pass the kernel's dirty-page limits, so it shows what the device sustains): 32 KiB
//!   `pwrite` and 128 KiB io_uring `O_DIRECT`, with a throughput timeline.
//! * fdatasync latency after a 4 KiB write into a pre-sized file, the engine's sync-mode pattern
//!   (measured first, before the bandwidth runs leave writeback in flight).
//! * memcpy bandwidth.
//! * With `--mapped`: 1 KiB records copied into a shared memory map of a pre-allocated file,
//!   each sealed with its CRC32C in place (the engine's checksum), while a second thread
//!   pre-faults the pages ahead (`MADV_POPULATE_WRITE`). It bounds a commitlog write path
//!   through a map, as RocketMQ's: one putting thread, no kernel copy.
//!
//! Every scratch file is created under DIR and removed afterwards.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use io_uring::{opcode, types, IoUring};
use serde::Serialize;

use super::hist::{new_histogram, percentile_curve, record, LatencySummary};
use super::Progress;
use crate::units::{fmt_bytes, fmt_rate, parse_bytes};

/// Options of the raw measurements (shared by `bench raw` and the raw pre-run of `bench engine`).
#[derive(Debug, Clone, Args, Serialize)]
pub struct RawOptions {
    /// Write sizes for the short sequential-write runs (comma-separated: 4KiB,32KiB,1MiB).
    #[arg(long, value_delimiter = ',', value_parser = parse_bytes, default_value = "4KiB,32KiB,128KiB,1MiB")]
    pub write_sizes: Vec<u64>,
    /// Bytes written by each short run (per backend and write size).
    #[arg(long, value_parser = parse_bytes, default_value = "1GiB")]
    pub write_bytes: u64,
    /// Bytes written by each sustained run (0 = skip). Use several GiB (e.g. 8GiB) to get past
    /// the page cache's dirty limits and see the device's own speed.
    #[arg(long, value_parser = parse_bytes, default_value = "0")]
    pub sustained_bytes: u64,
    /// io_uring writes kept in flight.
    #[arg(long, default_value_t = 8)]
    pub queue_depth: u32,
    /// Number of 4 KiB write + fdatasync rounds timed.
    #[arg(long, default_value_t = 2000)]
    pub fsync_count: u64,
    /// Bytes copied by the memcpy measurement.
    #[arg(long, value_parser = parse_bytes, default_value = "4GiB")]
    pub memcpy_bytes: u64,
    /// Skip the io_uring measurements (for kernels or sandboxes without io_uring).
    #[arg(long)]
    pub no_io_uring: bool,
    /// Also measure 1 KiB records copied, each with its CRC32C, into a shared memory map of a
    /// pre-allocated file whose pages a second thread pre-faults (`--write-bytes` of them): what
    /// one thread can put through a mapped write path, with no kernel copy.
    #[arg(long)]
    pub mapped: bool,
}

/// How a sequential write reached the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMethod {
    Pwrite,
    IoUring,
    IoUringDirect,
    /// Records copied into a shared memory map (`--mapped`).
    Mapped,
}

impl WriteMethod {
    fn label(self) -> &'static str {
        match self {
            WriteMethod::Pwrite => "pwrite",
            WriteMethod::IoUring => "io_uring buffered",
            WriteMethod::IoUringDirect => "io_uring O_DIRECT",
            WriteMethod::Mapped => "mmap + CRC32C",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WriteResult {
    pub method: WriteMethod,
    pub write_size_bytes: u64,
    pub total_bytes: u64,
    /// Time of the writes alone.
    pub write_s: f64,
    pub bytes_per_s: f64,
    /// Time of the fdatasync after the last write.
    pub sync_s: f64,
    /// Bandwidth counting the final fdatasync.
    pub bytes_per_s_with_sync: f64,
    /// For io_uring: whether buffers and the file were registered.
    pub registered: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SustainedResult {
    pub write: WriteResult,
    /// Bandwidth over the second half of the run (after the page cache filled).
    pub second_half_bytes_per_s: f64,
    /// (seconds since start, bytes/s over the last interval).
    pub timeline: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncLatency {
    pub rounds: u64,
    pub write_size_bytes: u64,
    /// The fdatasync call alone.
    pub fdatasync: LatencySummary,
    /// The 4 KiB pwrite plus the fdatasync.
    pub write_and_fdatasync: LatencySummary,
    /// Percentile curve of the fdatasync call, for plots.
    #[serde(skip)]
    pub fdatasync_curve: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RawReport {
    pub dir: PathBuf,
    pub options: RawOptions,
    pub writes: Vec<WriteResult>,
    pub sustained: Vec<SustainedResult>,
    pub fsync: SyncLatency,
    pub memcpy_bytes_per_s: f64,
    /// Short-run 32 KiB pwrite bandwidth, the engine's throughput reference (if measured).
    pub pwrite_32k_bytes_per_s: Option<f64>,
    /// Why io_uring figures are missing, if they are.
    pub io_uring_error: Option<String>,
    /// The block order of virtio-balloon free page reporting, when it is on (see
    /// [`free_page_reporting`]).
    pub free_page_reporting_order: Option<u32>,
}

/// `/sys` file holding the smallest block order the kernel reports free to the hypervisor.
const PAGE_REPORTING_ORDER: &str = "/sys/module/page_reporting/parameters/page_reporting_order";
/// Devices bound to the virtio balloon driver, each with a `features` bit string.
const BALLOON_DEVICES: &str = "/sys/bus/virtio/drivers/virtio_balloon";
/// Feature bit of free page reporting (`VIRTIO_BALLOON_F_REPORTING`).
const BALLOON_F_REPORTING: usize = 5;
/// The buddy allocator's largest block order on x86-64: a reporting order above it reports
/// nothing.
const MAX_PAGE_ORDER: u32 = 10;

/// Free page reporting: a virtio balloon that hands memory the guest frees back to the host.
/// Page cache freed by one benchmark run (its files removed) then goes back, and the next
/// run's writes fault it in again on the host: on a 2-core VM touching 21 GiB took 60 s the
/// first time and 17 s the second. Write bandwidth then swings with what earlier runs freed.
/// Returns the reporting order when it is on.
fn free_page_reporting() -> Option<u32> {
    let order = std::fs::read_to_string(PAGE_REPORTING_ORDER).ok()?;
    let features: Vec<String> = std::fs::read_dir(BALLOON_DEVICES)
        .ok()?
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("features")).ok())
        .collect();
    reporting_order(&order, features.iter().map(String::as_str))
}

/// The reporting order, if `order` (the module parameter) reports anything and a balloon
/// device offers the feature (`features`: one `0`/`1` character per bit, bit 0 first).
fn reporting_order<'a>(order: &str, mut features: impl Iterator<Item = &'a str>) -> Option<u32> {
    let order: u32 = order.trim().parse().ok()?;
    let offered = features.any(|f| f.as_bytes().get(BALLOON_F_REPORTING) == Some(&b'1'));
    (order <= MAX_PAGE_ORDER && offered).then_some(order)
}

/// A scratch file under the bench directory, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new(dir: &Path, name: &str) -> Scratch {
        Scratch {
            path: dir.join(format!("tern-bench-raw-{}-{name}.tmp", std::process::id())),
        }
    }
    fn open(&self, direct: bool, len: u64) -> anyhow::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let file = options
            .open(&self.path)
            .with_context(|| format!("creating {}", self.path.display()))?;
        file.set_len(len)
            .with_context(|| format!("sizing {}", self.path.display()))?;
        Ok(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a scratch file that cannot be removed is left for the user to see.
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("could not remove {}: {e}", self.path.display());
            }
        }
    }
}

/// A buffer of `len` bytes aligned to 4096 (O_DIRECT needs it), filled with a non-zero pattern.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let mut storage = vec![0u8; len + 4096];
        let start = storage.as_ptr().align_offset(4096);
        for (i, b) in storage[start..start + len].iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        AlignedBuf {
            storage,
            start,
            len,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
    fn as_ptr(&self) -> *const u8 {
        self.bytes().as_ptr()
    }
}

/// Called with bytes written so far; returns nothing.
type OnBytes<'a> = &'a mut dyn FnMut(u64);

/// The final fdatasync of a write run, timed (seconds).
fn timed_fdatasync(file: &File) -> anyhow::Result<f64> {
    let started = Instant::now();
    file.sync_data().context("fdatasync")?;
    Ok(started.elapsed().as_secs_f64())
}

fn pwrite_run(
    file: &File,
    size: u64,
    total: u64,
    on_bytes: OnBytes<'_>,
) -> anyhow::Result<(f64, f64)> {
    let buf = AlignedBuf::new(size as usize);
    let started = Instant::now();
    let mut offset = 0u64;
    while offset < total {
        let n = size.min(total - offset) as usize;
        file.write_all_at(&buf.bytes()[..n], offset)
            .context("pwrite")?;
        offset += n as u64;
        on_bytes(offset);
    }
    let write_s = started.elapsed().as_secs_f64();
    Ok((write_s, timed_fdatasync(file)?))
}

/// Records of `size` bytes copied one after another into a shared map of `file` (pre-sized
/// to `total`), each sealed with its CRC32C over the mapped bytes, as the engine seals a record.
/// A second thread pre-faults the map in 2 MiB pieces, at most 64 MiB ahead of the copying
/// thread, so the copy rarely takes a page fault. Returns (write seconds, sync seconds).
fn mapped_run(
    file: &File,
    size: u64,
    total: u64,
    on_bytes: OnBytes<'_>,
) -> anyhow::Result<(f64, f64)> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const PIECE: usize = 2 << 20;
    const AHEAD: usize = 64 << 20;
    let len = usize::try_from(total).context("--write-bytes does not fit in memory")?;
    let size = usize::try_from(size).context("record size")?.max(8);
    // Reserve the blocks, as the engine's segments are (sparse if the file system cannot).
    let (Ok(flen), fd) = (libc::off_t::try_from(total), file.as_raw_fd()) else {
        anyhow::bail!("--write-bytes is too large");
    };
    // SAFETY: fallocate on a descriptor we own, within the size the file already has.
    let _ = unsafe { libc::fallocate(fd, 0, 0, flen) };
    // SAFETY: the scratch file is ours alone and keeps its length while mapped.
    let mut map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(file) }
        .context("mapping the scratch file")?;
    let base = map.as_mut_ptr() as usize;
    let copied = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let record: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let mut at = 0usize;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut faulted = 0usize;
            while faulted < len && !stop.load(Ordering::Relaxed) {
                if faulted > copied.load(Ordering::Relaxed) + AHEAD {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                    continue;
                }
                let n = PIECE.min(len - faulted);
                // SAFETY: a page-aligned range inside the live map; MADV_POPULATE_WRITE only
                // fills page tables (as a write fault would) and never changes the bytes, so
                // the copying thread's writes to any part of the map are unaffected.
                unsafe {
                    libc::madvise(
                        (base + faulted) as *mut libc::c_void,
                        n,
                        libc::MADV_POPULATE_WRITE,
                    );
                }
                faulted += n;
            }
        });
        while at + size <= len {
            let dst = &mut map[at..at + size];
            dst[4..].copy_from_slice(&record[4..]);
            let crc = tern_engine::format::crc32c(&dst[4..]);
            dst[..4].copy_from_slice(&crc.to_le_bytes());
            at += size;
            if at % (1 << 20) < size {
                copied.store(at, Ordering::Relaxed);
                on_bytes(at as u64);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let write_s = started.elapsed().as_secs_f64();
    on_bytes(at as u64);
    let sync_s = timed_fdatasync(file)?;
    drop(map);
    Ok((write_s, sync_s))
}

/// Sequential writes of `size` with `depth` in flight through io_uring; returns (write seconds,
/// sync seconds, registered).
fn uring_run(
    file: &File,
    size: u64,
    total: u64,
    depth: u32,
    on_bytes: OnBytes<'_>,
) -> anyhow::Result<(f64, f64, bool)> {
    let depth = depth.clamp(1, 256);
    // Declared before the ring so that it is dropped after it.
    let bufs: Vec<AlignedBuf> = (0..depth).map(|_| AlignedBuf::new(size as usize)).collect();
    let mut ring = IoUring::new(depth.next_power_of_two()).context("creating an io_uring")?;
    let iovecs: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len,
        })
        .collect();
    // SAFETY: the registered memory is the heap storage of `bufs`, which is never resized or
    // moved and is dropped only after the ring (declared after it, so dropped before it); every
    // path out of this function waits for the operations it submitted first.
    let registered = unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok()
        && ring.submitter().register_files(&[file.as_raw_fd()]).is_ok();
    let fd = types::Fd(file.as_raw_fd());
    let started = Instant::now();
    let mut next_offset = 0u64;
    let mut done = 0u64;
    let mut in_flight = 0u32;
    // Which buffer each in-flight write uses, by user_data; free buffers in a stack.
    let mut free: Vec<u16> = (0..depth as u16).collect();
    let mut lens = vec![0u32; depth as usize];
    while done < total {
        while in_flight < depth && next_offset < total {
            let Some(i) = free.pop() else { break };
            let n = size.min(total - next_offset) as u32;
            lens[i as usize] = n;
            let ptr = bufs[i as usize].as_ptr();
            let entry = if registered {
                opcode::WriteFixed::new(types::Fixed(0), ptr, n, i)
                    .offset(next_offset)
                    .build()
            } else {
                opcode::Write::new(fd, ptr, n).offset(next_offset).build()
            }
            .user_data(u64::from(i) | (next_offset << 16));
            // SAFETY: buffer `i` is not used by any other in-flight operation (it came off the
            // free stack) and outlives the operation: we wait for every completion before
            // returning.
            unsafe {
                ring.submission()
                    .push(&entry)
                    .map_err(|_| anyhow::anyhow!("io_uring submission queue full"))?;
            }
            in_flight += 1;
            next_offset += u64::from(n);
        }
        ring.submit_and_wait(1).context("io_uring submit")?;
        let completions: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, res) in completions {
            in_flight -= 1;
            let i = (data & 0xffff) as u16;
            if res < 0 {
                // Drain what is still in flight before the buffers go away.
                while in_flight > 0 {
                    ring.submit_and_wait(1).context("io_uring drain")?;
                    in_flight -= ring.completion().count() as u32;
                }
                return Err(std::io::Error::from_raw_os_error(-res)).context("io_uring write");
            }
            if res as u32 != lens[i as usize] {
                while in_flight > 0 {
                    ring.submit_and_wait(1).context("io_uring drain")?;
                    in_flight -= ring.completion().count() as u32;
                }
                anyhow::bail!(
                    "io_uring short write: {res} of {} bytes at offset {}",
                    lens[i as usize],
                    data >> 16
                );
            }
            done += u64::from(lens[i as usize]);
            free.push(i);
        }
        on_bytes(done);
    }
    let write_s = started.elapsed().as_secs_f64();
    if registered {
        // Failure only leaks the registration until the ring is dropped a moment later.
        let _unregistered = ring.submitter().unregister_buffers();
    }
    drop(ring);
    Ok((write_s, timed_fdatasync(file)?, registered))
}

fn write_case(
    dir: &Path,
    method: WriteMethod,
    size: u64,
    total: u64,
    depth: u32,
    on_bytes: OnBytes<'_>,
) -> anyhow::Result<WriteResult> {
    let scratch = Scratch::new(dir, "write");
    let direct = method == WriteMethod::IoUringDirect;
    let file = scratch.open(direct, total)?;
    let (write_s, sync_s, registered) = match method {
        WriteMethod::Pwrite => {
            let (w, s) = pwrite_run(&file, size, total, on_bytes)?;
            (w, s, false)
        }
        WriteMethod::IoUring | WriteMethod::IoUringDirect => {
            uring_run(&file, size, total, depth, on_bytes)?
        }
        WriteMethod::Mapped => {
            let (w, s) = mapped_run(&file, size, total, on_bytes)?;
            (w, s, false)
        }
    };
    Ok(WriteResult {
        method,
        write_size_bytes: size,
        total_bytes: total,
        write_s,
        bytes_per_s: total as f64 / write_s.max(1e-9),
        sync_s,
        bytes_per_s_with_sync: total as f64 / (write_s + sync_s).max(1e-9),
        registered,
    })
}

fn sustained_case(
    dir: &Path,
    method: WriteMethod,
    size: u64,
    total: u64,
    depth: u32,
    progress: &Progress,
) -> anyhow::Result<SustainedResult> {
    let started = Instant::now();
    let mut timeline = Vec::new();
    let mut last = (0.0f64, 0u64);
    let mut half_mark: Option<(f64, u64)> = None;
    let mut on_bytes = |done: u64| {
        progress.set(done);
        let t = started.elapsed().as_secs_f64();
        if t - last.0 >= 0.25 {
            timeline.push((t, (done - last.1) as f64 / (t - last.0)));
            last = (t, done);
        }
        if half_mark.is_none() && done >= total / 2 {
            half_mark = Some((t, done));
        }
    };
    let write = write_case(dir, method, size, total, depth, &mut on_bytes)?;
    let (half_t, half_bytes) = half_mark.unwrap_or((0.0, 0));
    let second_half = (total - half_bytes) as f64 / (write.write_s - half_t).max(1e-9);
    Ok(SustainedResult {
        write,
        second_half_bytes_per_s: second_half,
        timeline,
    })
}

fn fsync_latency(dir: &Path, rounds: u64, progress: &Progress) -> anyhow::Result<SyncLatency> {
    const WRITE: u64 = 4096;
    let scratch = Scratch::new(dir, "fsync");
    let file = scratch.open(false, rounds.max(1) * WRITE)?;
    let buf = AlignedBuf::new(WRITE as usize);
    let mut sync_h = new_histogram();
    let mut both_h = new_histogram();
    for i in 0..rounds {
        let t0 = Instant::now();
        file.write_all_at(buf.bytes(), i * WRITE)
            .context("pwrite")?;
        let t1 = Instant::now();
        file.sync_data().context("fdatasync")?;
        let t2 = Instant::now();
        record(&mut sync_h, (t2 - t1).as_nanos() as u64, 1);
        record(&mut both_h, (t2 - t0).as_nanos() as u64, 1);
        progress.set(i + 1);
    }
    Ok(SyncLatency {
        rounds,
        write_size_bytes: WRITE,
        fdatasync: LatencySummary::of(&sync_h),
        write_and_fdatasync: LatencySummary::of(&both_h),
        fdatasync_curve: percentile_curve(&sync_h),
    })
}

fn memcpy_bandwidth(total: u64, progress: &Progress) -> f64 {
    const BUF: usize = 64 << 20;
    let len = (total as usize).clamp(1 << 20, BUF);
    let src = vec![0x5au8; len];
    let mut dst = vec![0u8; len];
    // Fault the destination in before timing.
    dst.copy_from_slice(&src);
    let rounds = (total / len as u64).max(1);
    let started = Instant::now();
    for i in 0..rounds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        progress.set((i + 1) * len as u64);
    }
    (rounds * len as u64) as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

/// The one raw figure a paired round of `bench engine --rounds` compares the engine with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Sequential 32 KiB pwrite bandwidth (bytes/s), `write_bytes` long.
    Pwrite32k,
    /// p99 of fdatasync after a 4 KiB write (µs), `fsync_count` rounds.
    FdatasyncP99,
}

/// Measure one raw figure again (see [`Probe`]), as the full run measures it.
pub fn probe(
    dir: &Path,
    opts: &RawOptions,
    which: Probe,
    progress: &Progress,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match which {
        Probe::Pwrite32k => {
            progress.phase("raw pwrite 32 KiB", opts.write_bytes);
            let w = write_case(
                dir,
                WriteMethod::Pwrite,
                32 << 10,
                opts.write_bytes,
                opts.queue_depth,
                &mut |d| progress.set(d),
            )?;
            Ok(w.bytes_per_s)
        }
        Probe::FdatasyncP99 => {
            progress.phase("raw fdatasync after 4 KiB", opts.fsync_count);
            Ok(fsync_latency(dir, opts.fsync_count, progress)?
                .fdatasync
                .p99_us)
        }
    }
}

/// Run every raw measurement in `dir`.
pub fn run_raw(dir: &Path, opts: &RawOptions, progress: &Progress) -> anyhow::Result<RawReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Latency first, while no writeback from the bandwidth runs is in flight.
    progress.phase("fdatasync after 4 KiB", opts.fsync_count);
    let fsync = fsync_latency(dir, opts.fsync_count, progress)?;
    progress.phase("memcpy", opts.memcpy_bytes);
    let memcpy_bytes_per_s = memcpy_bandwidth(opts.memcpy_bytes, progress);
    let mut writes = Vec::new();
    let mut io_uring_error = None;
    let mut methods = vec![WriteMethod::Pwrite];
    if !opts.no_io_uring {
        match IoUring::new(8) {
            Ok(_) => methods.extend([WriteMethod::IoUring, WriteMethod::IoUringDirect]),
            Err(e) => io_uring_error = Some(format!("io_uring unavailable: {e}")),
        }
    }
    for &method in &methods {
        for &size in &opts.write_sizes {
            if size == 0 || size > 64 << 20 {
                anyhow::bail!("write size {size} is out of range (1 byte ..= 64 MiB)");
            }
            if method == WriteMethod::IoUringDirect && size % 4096 != 0 {
                continue;
            }
            progress.phase(
                &format!("{} {}", method.label(), fmt_bytes(size)),
                opts.write_bytes,
            );
            match write_case(
                dir,
                method,
                size,
                opts.write_bytes,
                opts.queue_depth,
                &mut |d| progress.set(d),
            ) {
                Ok(r) => writes.push(r),
                Err(e) if method != WriteMethod::Pwrite => {
                    io_uring_error.get_or_insert(format!("{}: {e:#}", method.label()));
                }
                Err(e) => return Err(e),
            }
        }
    }
    if opts.mapped {
        const RECORD: u64 = 1024;
        if opts.write_bytes < RECORD {
            anyhow::bail!("--mapped needs --write-bytes of at least 1 KiB (one record)");
        }
        progress.phase("mmap + CRC32C, 1 KiB records", opts.write_bytes);
        writes.push(write_case(
            dir,
            WriteMethod::Mapped,
            RECORD,
            opts.write_bytes - opts.write_bytes % RECORD,
            opts.queue_depth,
            &mut |d| progress.set(d),
        )?);
    }
    let mut sustained = Vec::new();
    if opts.sustained_bytes > 0 {
        let mut cases = vec![(WriteMethod::Pwrite, 32 << 10)];
        if methods.contains(&WriteMethod::IoUringDirect) {
            cases.push((WriteMethod::IoUringDirect, 128 << 10));
        }
        for (method, size) in cases {
            progress.phase(
                &format!("sustained {} {}", method.label(), fmt_bytes(size)),
                opts.sustained_bytes,
            );
            sustained.push(sustained_case(
                dir,
                method,
                size,
                opts.sustained_bytes,
                opts.queue_depth,
                progress,
            )?);
        }
    }
    let pwrite_32k_bytes_per_s = writes
        .iter()
        .find(|w| w.method == WriteMethod::Pwrite && w.write_size_bytes == 32 << 10)
        .map(|w| w.bytes_per_s);
    Ok(RawReport {
        dir: dir.to_owned(),
        options: opts.clone(),
        writes,
        sustained,
        fsync,
        memcpy_bytes_per_s,
        pwrite_32k_bytes_per_s,
        io_uring_error,
        free_page_reporting_order: free_page_reporting(),
    })
}

/// Print the raw figures as a table.
pub fn print_raw(out: &mut impl std::io::Write, r: &RawReport) -> std::io::Result<()> {
    writeln!(out, "raw limits of {}", r.dir.display())?;
    writeln!(
        out,
        "  sequential writes, short run ({} each; mostly the page cache):",
        fmt_bytes(r.options.write_bytes)
    )?;
    for w in &r.writes {
        writeln!(
            out,
            "    {:<18} {:>9}  {:>11}  (with final fdatasync {:>11}){}",
            w.method.label(),
            fmt_bytes(w.write_size_bytes),
            fmt_rate(w.bytes_per_s),
            fmt_rate(w.bytes_per_s_with_sync),
            if w.registered {
                "  registered buffers"
            } else {
                ""
            }
        )?;
    }
    for s in &r.sustained {
        writeln!(
            out,
            "  sustained {:<18} {:>9} over {}: {} overall, {} in the second half",
            s.write.method.label(),
            fmt_bytes(s.write.write_size_bytes),
            fmt_bytes(s.write.total_bytes),
            fmt_rate(s.write.bytes_per_s_with_sync),
            fmt_rate(s.second_half_bytes_per_s)
        )?;
    }
    if let Some(e) = &r.io_uring_error {
        writeln!(out, "  io_uring: {e}")?;
    }
    writeln!(
        out,
        "  fdatasync after a 4 KiB write ({} rounds): {}",
        r.fsync.rounds,
        r.fsync.fdatasync.line()
    )?;
    writeln!(
        out,
        "  write + fdatasync:                    {}",
        r.fsync.write_and_fdatasync.line()
    )?;
    writeln!(out, "  memcpy: {}", fmt_rate(r.memcpy_bytes_per_s))?;
    if let Some(order) = r.free_page_reporting_order {
        writeln!(
            out,
            "  note: free page reporting is on (virtio balloon, order {order}): page cache that one \
             run frees goes back to the host, and the next run's writes fault it in there again, \
             so write figures swing between runs. As root, `echo {} > {PAGE_REPORTING_ORDER}` \
             stops it until the next boot.",
            MAX_PAGE_ORDER + 1
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the balloon of the 2-core benchmark VM offers: bits 1, 2, 5 (reporting), 7 and 32.
    const REPORTING: &str = "0110010100000000000000000000000010000000";

    #[test]
    fn free_page_reporting_needs_the_feature_and_an_order_that_reports() {
        assert_eq!(reporting_order("9\n", [REPORTING].into_iter()), Some(9));
        // Order 11 is above every block the allocator frees: nothing is reported.
        assert_eq!(reporting_order("11\n", [REPORTING].into_iter()), None);
        // A balloon without bit 5, or none at all.
        assert_eq!(reporting_order("9", ["0110000100000000"].into_iter()), None);
        assert_eq!(reporting_order("9", std::iter::empty()), None);
        // Any of several balloons; short or garbled files never panic.
        assert_eq!(
            reporting_order("9", ["01", "", REPORTING].into_iter()),
            Some(9)
        );
        assert_eq!(reporting_order("nine", [REPORTING].into_iter()), None);
    }
}
