//! `floor`: the physical floor of fan-out on this machine. One thread `write()`s one
//! `--size`-byte message to each of N loopback TCP sockets, `--rate` times a second,
//! and does nothing else; a child process (`floor-reader`, pinned with
//! `--reader-cpu`) drains the other ends. The writer's CPU time (utime + stime from
//! /proc, the same measure the runner applies to a server) divided by its writes
//! is the floor: no server can deliver a separately written event for less. On
//! loopback the sender also pays for the receive side's protocol work, which is why
//! the floor rises with the socket count (cache misses on more socket state).

use std::cell::RefCell;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::LocalSet;

use crate::procfs;

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    #[arg(long, default_value_t = 1000)]
    pub(crate) sockets: usize,
    /// Messages per second per socket.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) rate: f64,
    #[arg(long, default_value_t = 256)]
    pub(crate) size: usize,
    #[arg(long, default_value_t = 2.0)]
    pub(crate) warmup: f64,
    #[arg(long, default_value_t = 10.0)]
    pub(crate) duration: f64,
    /// CPU to pin the reader process to (`taskset -c`); unpinned if absent.
    #[arg(long)]
    pub(crate) reader_cpu: Option<String>,
    #[arg(long, default_value = "127.0.0.2")]
    pub(crate) src_first: Ipv4Addr,
    #[arg(long, default_value_t = 40)]
    pub(crate) src_count: u32,
}

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ReaderArgs {
    #[arg(long)]
    pub(crate) connect: SocketAddr,
    #[arg(long)]
    pub(crate) sockets: usize,
    #[arg(long)]
    pub(crate) src_first: Ipv4Addr,
    #[arg(long)]
    pub(crate) src_count: u32,
}

/// The floor probe's one-line result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FloorResult {
    pub(crate) sockets: usize,
    pub(crate) rate: f64,
    pub(crate) writes: u64,
    /// Writes refused with EAGAIN (the reader fell behind); not counted in `writes`.
    pub(crate) blocked: u64,
    pub(crate) duration_s: f64,
    pub(crate) cpu_s: f64,
    pub(crate) us_per_write: f64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe()?;
    let mut command = match &args.reader_cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut reader = command
        .arg("floor-reader")
        .args(["--connect", &addr.to_string()])
        .args(["--sockets", &args.sockets.to_string()])
        .args(["--src-first", &args.src_first.to_string()])
        .args(["--src-count", &args.src_count.to_string()])
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start floor-reader")?;
    let result = write_all(&args, &listener);
    let _ = reader.kill();
    let _ = reader.wait();
    let result = result?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string(&result)?);
    }
    Ok(())
}

fn write_all(args: &Args, listener: &TcpListener) -> anyhow::Result<FloorResult> {
    let mut sockets = Vec::with_capacity(args.sockets);
    while sockets.len() < args.sockets {
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        sockets.push(s);
    }
    let message = vec![b'x'; args.size];
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let mut tick = start;
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let mut window: Option<(Instant, f64)> = None;
    let (mut writes, mut blocked) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if window.is_none() && now >= measure_from {
            window = Some((now, procfs::self_cpu_seconds()));
            writes = 0;
            blocked = 0;
        }
        for s in &mut sockets {
            match write_once(s, &message) {
                Ok(()) => writes += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked += 1,
                Err(e) => return Err(e.into()),
            }
        }
        tick += period;
        if let Some(wait) = tick.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let (t0, cpu0) = window.context("the measured window never started")?;
    let cpu_s = procfs::self_cpu_seconds() - cpu0;
    Ok(FloorResult {
        sockets: args.sockets,
        rate: args.rate,
        writes,
        blocked,
        duration_s: t0.elapsed().as_secs_f64(),
        cpu_s,
        us_per_write: if writes == 0 {
            0.0
        } else {
            cpu_s * 1e6 / writes as f64
        },
    })
}

fn write_once(s: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let n = s.write(message)?;
    // A short write of a 256-byte message only happens with a full buffer: count it
    // as written (the bytes went) and let the next tick find the buffer full.
    debug_assert!(n > 0);
    Ok(())
}

/// The other end: connects N sockets from spread source addresses and discards
/// everything, on one thread.
pub(crate) fn read(args: ReaderArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&runtime, async move {
        let scratch = Rc::new(RefCell::new(vec![0u8; 64 * 1024]));
        // Below the writer's listen backlog (128), so no handshake is dropped.
        let gate = Rc::new(Semaphore::new(64));
        let first = u32::from(args.src_first);
        let mut tasks = Vec::new();
        for i in 0..args.sockets {
            let src = Ipv4Addr::from(first + (i as u32 % args.src_count.max(1)));
            let scratch = Rc::clone(&scratch);
            let gate = Rc::clone(&gate);
            tasks.push(tokio::task::spawn_local(async move {
                let stream = {
                    let _permit = gate.acquire().await.map_err(io::Error::other)?;
                    let socket = TcpSocket::new_v4()?;
                    socket.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
                    socket.connect(args.connect).await?
                };
                loop {
                    stream.readable().await?;
                    let mut buf = scratch.borrow_mut();
                    match stream.try_read(&mut buf) {
                        Ok(0) => return Ok::<_, io::Error>(()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok(())
    })
}
