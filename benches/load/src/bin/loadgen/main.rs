//! WebSocket load generator: many connections on one thread and one epoll loop (mio),
//! exactly one message in flight per connection. See `loadgen --help` and `../../run.sh`.

mod args;
mod client;
mod deflate;
mod procfs;

use std::io;
use std::process::exit;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use args::Args;
use client::{Conn, Workload};

/// Opening all connections must finish within this time.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Length of a `/proc/stat` tick: 1 / `USER_HZ`, and `USER_HZ` is 100 on every Linux
/// architecture in use (the kernel scales its internal HZ to it for userspace).
const PROC_TICK: Duration = Duration::from_millis(10);
/// The event loop's one read buffer, shared by every connection.
const READ_BUF: usize = 256 * 1024;

fn main() {
    let args = args::parse().unwrap_or_else(|e| {
        eprintln!("{e}");
        exit(2);
    });
    let result = match args.idle {
        Some(n) => idle(&args, n),
        None => load(&args),
    };
    if let Err(e) = result {
        eprintln!("loadgen: {e}");
        exit(1);
    }
}

/// The open connections and the loop that drives them.
struct Bench {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    rbuf: Vec<u8>,
    workload: Workload,
    rng: XorShift,
    opening: usize,
    open: usize,
}

impl Bench {
    fn new(args: &Args, workload_size: usize) -> io::Result<Self> {
        let mut rng = XorShift::from_entropy();
        let mask = rng.next().to_le_bytes()[..4].try_into().expect("4 bytes");
        Ok(Self {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            conns: Vec::new(),
            rbuf: vec![0; READ_BUF],
            workload: if args.hub {
                Workload::hub(workload_size, mask)
            } else {
                Workload::new(workload_size, args.text, args.payload, args.deflate, mask)?
            },
            rng,
            opening: 0,
            open: 0,
        })
    }

    /// Opens `n` connections, at most `connect_burst` at a time, and waits for every 101
    /// (hub mode: every `subscribed`).
    fn open_all(&mut self, args: &Args, n: usize) -> io::Result<Duration> {
        let start = Instant::now();
        let deadline = start + OPEN_TIMEOUT;
        while self.open < n {
            while self.conns.len() < n && self.opening < args.connect_burst {
                self.connect(args)?;
            }
            let now = Instant::now();
            if now >= deadline {
                let msg =
                    format!("only {} of {n} connections opened in {OPEN_TIMEOUT:?}", self.open);
                return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
            }
            self.turn(Some(deadline - now), |_| {})?;
        }
        Ok(start.elapsed())
    }

    fn connect(&mut self, args: &Args) -> io::Result<()> {
        let mut stream = TcpStream::connect(args.addr)?;
        let token = Token(self.conns.len());
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let key: Vec<u8> =
            [self.rng.next(), self.rng.next()].iter().flat_map(|x| x.to_le_bytes()).collect();
        let key = client::base64(&key);
        let conn = if args.hub {
            // Connection N is user lgN on its own channel chat:lgN.
            let n = self.conns.len();
            let sep = if args.path.contains('?') { '&' } else { '?' };
            let path = format!("{}{sep}token=user:lg{n}", args.path);
            Conn::new(stream, &args.host, &path, &key, Some(format!("chat:lg{n}")), None, 0)
        } else {
            let variant = self.conns.len() % self.workload.variants();
            Conn::new(stream, &args.host, &args.path, &key, None, args.deflate, variant)
        };
        self.conns.push(conn);
        self.opening += 1;
        Ok(())
    }

    /// One wait on epoll and the handling of every event it returned; `on_echoes` gets the
    /// number of echoes completed.
    fn turn(
        &mut self,
        timeout: Option<Duration>,
        mut on_echoes: impl FnMut(u32),
    ) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for event in &self.events {
            let i = event.token().0;
            let progress = self.conns[i]
                .drive(
                    &self.workload,
                    &mut self.rbuf,
                    event.is_readable() || event.is_read_closed() || event.is_error(),
                )
                .map_err(|e| io::Error::new(e.kind(), format!("connection {i}: {e}")))?;
            if progress.opened {
                self.opening -= 1;
                self.open += 1;
            }
            if progress.echoes > 0 {
                on_echoes(progress.echoes);
            }
        }
        Ok(())
    }
}

impl Bench {
    /// Payload bytes of data frames received (as on the wire) and of the messages they
    /// carried, over every connection, since it opened.
    fn rx_bytes(&self) -> (u64, u64) {
        self.conns.iter().map(Conn::rx_bytes).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

/// Load mode: open, warm up, then count echoes per window.
fn load(args: &Args) -> io::Result<()> {
    let mut bench = Bench::new(args, args.size)?;
    let open_time = bench.open_all(args, args.conns)?;
    eprintln!("{} connections open in {open_time:.2?}", args.conns);

    for conn in &mut bench.conns {
        conn.keep_sending = true;
        conn.start_send(&bench.workload)?;
    }
    let warmup_end = Instant::now() + args.warmup;
    loop {
        let now = Instant::now();
        if now >= warmup_end {
            break;
        }
        bench.turn(Some(warmup_end - now), |_| {})?;
    }

    // The measured span: server readings first, then the clock; at the end the reverse,
    // so the /proc reads (a few ms for a thread per connection) fall outside it.
    let server_before = args.server_pid.map(ServerCpu::read);
    let machine_before = procfs::machine_busy_ticks();
    let client_before = procfs::thread_cpu_ns();
    let t0 = Instant::now();
    let end = t0 + args.secs;
    let max_windows = (args.secs.as_nanos() / args.window.as_nanos()) as usize + 2;
    let mut windows: Vec<f64> = Vec::with_capacity(max_windows);
    let (mut total, mut in_window) = (0u64, 0u64);
    let mut window_start = t0;
    let t_end = loop {
        let window_end = (window_start + args.window).min(end);
        let now = Instant::now();
        if now >= window_end {
            // A closing window shorter than half the others would be noise: folded away.
            let span = now - window_start;
            if span * 2 >= args.window {
                windows.push(in_window as f64 / span.as_secs_f64());
            }
            total += in_window;
            in_window = 0;
            window_start = now;
            if now >= end || windows.len() >= max_windows {
                break now;
            }
            continue;
        }
        bench.turn(Some(window_end - now), |n| in_window += u64::from(n))?;
    };
    let client_after = procfs::thread_cpu_ns();
    let machine_after = procfs::machine_busy_ticks();
    let server_after = args.server_pid.map(ServerCpu::read);

    let secs = (t_end - t0).as_secs_f64();
    let rate = total as f64 / secs;
    let min = windows.iter().copied().fold(f64::INFINITY, f64::min);
    let max = windows.iter().copied().fold(0.0, f64::max);
    println!(
        "{} conns x {} B: {rate:.0} msgs/s over {secs:.2} s ({} windows of {:?}: min {min:.0}, max {max:.0})",
        args.conns,
        args.size,
        windows.len(),
        args.window
    );
    let mut result = format!(
        "RESULT mode={} conns={} size={} msgs={total} secs={secs:.4} rate={rate:.1} min={min:.1} max={max:.1} windows={}",
        if args.hub { "hub" } else { "echo" },
        args.conns,
        args.size,
        windows.len()
    );
    if !args.hub {
        result += &format!(
            " payload={} deflate={}",
            args.payload.name(),
            args.deflate.map_or("off", deflate::Mode::name)
        );
        // Bytes on the wire per raw byte: what the load generator sent and what came back.
        if let Some(r) = bench.workload.tx_ratio() {
            result += &format!(" tx_ratio={r:.3}");
        }
        let (wire, raw) = bench.rx_bytes();
        if raw > 0 {
            let r = wire as f64 / raw as f64;
            println!("replies: {r:.3} bytes on the wire per byte of message");
            result += &format!(" rx_ratio={r:.3}");
        }
    }
    let client_ns = client_before.zip(client_after).map(|(a, b)| b.saturating_sub(a));
    if let Some(ns) = client_ns {
        let busy = ns as f64 / 1e9 / secs;
        println!("loadgen CPU: {:.0}% of one core", busy * 100.0);
        result += &format!(" client_cpu={busy:.3}");
    }
    let server_ns = server_before
        .as_ref()
        .zip(server_after.as_ref())
        .and_then(|(a, b)| Some(b.ns?.saturating_sub(a.ns?)));
    if let (Some(a), Some(b)) = (machine_before, machine_after) {
        // Everything else that ran meanwhile: builds, other benchmarks, the hypervisor.
        let busy = (b.saturating_sub(a) as f64) * PROC_TICK.as_secs_f64();
        let ours = (client_ns.unwrap_or(0) + server_ns.unwrap_or(0)) as f64 / 1e9;
        let other = (busy - ours).max(0.0) / secs;
        println!("other CPU load on the machine: {:.0}% of one core", other * 100.0);
        result += &format!(" other_cpu={other:.3}");
    }
    if let (Some(a), Some(b)) = (server_before, server_after) {
        if let (Some(ns0), Some(ns1)) = (a.ns, b.ns) {
            let ns = ns1.saturating_sub(ns0);
            let per_msg = ns as f64 / 1e3 / total.max(1) as f64;
            println!(
                "server CPU: {:.0}% of one core, {per_msg:.2} us per message ({} threads)",
                ns as f64 / 1e9 / secs * 100.0,
                b.threads.unwrap_or(0)
            );
            result += &format!(" server_cpu_ns={ns} server_us_per_msg={per_msg:.3}");
        }
        if let (Some(t0), Some(t1)) = (a.ticks, b.ticks) {
            result += &format!(" server_ticks={}", t1.saturating_sub(t0));
        }
    }
    println!("{result}");
    Ok(())
}

/// Idle mode: open `n` connections, hold them, report the server's memory growth.
fn idle(args: &Args, n: usize) -> io::Result<()> {
    let rss_before = args.server_pid.and_then(procfs::rss_bytes);
    let mut bench = Bench::new(args, if args.prime > 0 { args.size } else { 0 })?;
    let open_time = bench.open_all(args, n)?;
    println!(
        "{n} connections open in {open_time:.2?} ({:.0} handshakes/s)",
        n as f64 / open_time.as_secs_f64()
    );
    // Priming: K echo rounds on every connection, then the client's own zlib states go.
    for _ in 0..args.prime {
        let deadline = Instant::now() + OPEN_TIMEOUT;
        for conn in &mut bench.conns {
            conn.start_send(&bench.workload)?;
        }
        let mut done = 0usize;
        while done < n {
            let now = Instant::now();
            if now >= deadline {
                let msg = format!("priming: only {done} of {n} echoes in {OPEN_TIMEOUT:?}");
                return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
            }
            bench.turn(Some(deadline - now), |k| done += k as usize)?;
        }
    }
    for conn in &mut bench.conns {
        conn.drop_deflate_state();
    }
    // Let the server finish whatever follows the 101 (buffers shrink, tasks park).
    std::thread::sleep(args.settle);
    let mut result = format!(
        "RESULT idle={n} open_secs={:.3} deflate={} prime={}",
        open_time.as_secs_f64(),
        args.deflate.map_or("off", deflate::Mode::name),
        args.prime
    );
    if let Some(pid) = args.server_pid {
        let rss_after = procfs::rss_bytes(pid);
        if let (Some(before), Some(after)) = (rss_before, rss_after) {
            let per_conn = after.saturating_sub(before) as f64 / n as f64;
            println!(
                "server VmRSS {:.1} MiB -> {:.1} MiB: {per_conn:.0} bytes per idle connection",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0
            );
            result +=
                &format!(" rss_before={before} rss_after={after} bytes_per_conn={per_conn:.0}");
        }
        if let Some(t) = procfs::threads(pid) {
            result += &format!(" server_threads={t}");
        }
    }
    println!("{result}");
    Ok(())
}

/// The server's CPU counters at one instant.
struct ServerCpu {
    ns: Option<u64>,
    ticks: Option<u64>,
    threads: Option<u64>,
}

impl ServerCpu {
    fn read(pid: u32) -> Self {
        Self {
            ns: procfs::process_cpu_ns(pid),
            ticks: procfs::process_cpu_ticks(pid),
            threads: procfs::threads(pid),
        }
    }
}

/// xorshift64* for handshake keys and the mask key. A benchmark client needs keys that
/// differ, not unpredictable ones.
struct XorShift(u64);

impl XorShift {
    fn from_entropy() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self((t ^ u64::from(std::process::id()) << 32) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}
