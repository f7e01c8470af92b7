//! `run`: the whole benchmark as one table.
//!
//! For every scenario and every server (the gateway, and nchan with `--vs-nchan`)
//! it starts a fresh origin, a fresh server pinned to `--server-cpus`, and load
//! processes pinned to `--load-cpus`; tells the loads when the measured window
//! starts; samples the server's CPU (utime + stime of its process tree) and RSS at
//! the window's edges; and merges the loads' summaries. The floor probe runs at
//! each socket count on the same cores. Everything it starts it kills by pid.
//!
//! The window is shared by wall-clock time (`start <epoch ms> <duration ms>` on
//! each load's stdin), so several load processes (needed above ~9,500 clients:
//! a process may hold 20,000 files) measure the same seconds the runner samples.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::floor::FloorResult;
use crate::load::Summary;
use crate::nchan;
use crate::origin::now_ns;
use crate::procfs;

#[derive(clap::Args, Debug, Clone)]
pub(crate) struct Args {
    /// The gateway binary (a release build).
    #[arg(long, default_value = "target/release/sse-gateway")]
    pub(crate) gateway: PathBuf,
    /// Also run every scenario against nginx + nchan (installs them with apt-get).
    #[arg(long)]
    pub(crate) vs_nchan: bool,
    /// Scenarios, comma-separated: idle, 1k, 10k, sat.
    #[arg(long, default_value = "idle,1k,10k,sat")]
    pub(crate) scenarios: String,
    /// Measured seconds of the 1k and 10k scenarios.
    #[arg(long, default_value_t = 15.0)]
    pub(crate) duration: f64,
    /// Seconds between all clients connected and the window.
    #[arg(long, default_value_t = 3.0)]
    pub(crate) warmup: f64,
    /// Measured seconds of each saturation step.
    #[arg(long, default_value_t = 8.0)]
    pub(crate) sat_duration: f64,
    /// Events per second per client of the saturation steps, in order; stepping
    /// stops after the first step that fails.
    #[arg(long, default_value = "200,400,800,1600,3200")]
    pub(crate) sat_rates: String,
    /// Connections of the idle-memory scenario.
    #[arg(long, default_value_t = 19_000)]
    pub(crate) idle_clients: usize,
    /// Clients per load process (a process may hold 20,000 files).
    #[arg(long, default_value_t = 9_500)]
    pub(crate) clients_per_load: usize,
    #[arg(long, default_value = "0")]
    pub(crate) server_cpus: String,
    #[arg(long, default_value = "1")]
    pub(crate) load_cpus: String,
    /// Skip the floor probe.
    #[arg(long)]
    pub(crate) no_floor: bool,
    /// Run the server, origin, load and floor processes at this nice level, each
    /// in its own session whose autogroup gets the same nice value (with
    /// `sched_autogroup`, plain nice only ranks processes within one session, so
    /// it does nothing against other sessions' work). E.g. -10 on a machine where
    /// other work competes for the same cores; needs root.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) nice: Option<i32>,
    /// Record a `perf` profile (software cpu-clock sampling, user and kernel) of
    /// the server over each measured window into this directory.
    #[arg(long)]
    pub(crate) perf_dir: Option<PathBuf>,
    /// Also write every row as JSON here.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) server: &'static str,
    pub(crate) scenario: String,
    pub(crate) clients: usize,
    pub(crate) rate: f64,
    /// Events the origin produced (or published) per second in the window.
    pub(crate) offered_per_s: f64,
    pub(crate) delivered_per_s: f64,
    pub(crate) server_cpu_s: f64,
    pub(crate) cpu_us_per_delivery: f64,
    pub(crate) floor_ratio: Option<f64>,
    pub(crate) rss_base_bytes: u64,
    pub(crate) rss_bytes: u64,
    pub(crate) rss_per_conn: f64,
    pub(crate) kernel_tcp_per_conn: f64,
    /// Kernel slab growth per socket (each loopback connection is two sockets).
    pub(crate) kernel_slab_per_socket: f64,
    pub(crate) upstream: u64,
    pub(crate) load_cpu_pct: f64,
    /// How busy the server's cores were (all processes, interrupts, softirqs).
    pub(crate) server_core_busy_pct: f64,
    /// CPU of the server cores' ksoftirqd threads (deferred packet processing,
    /// not in the server's own CPU time).
    pub(crate) ksoftirqd_pct: f64,
    pub(crate) pass: Option<bool>,
    pub(crate) load: Summary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gateway,
    Nchan,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gateway => "sse-gateway",
            Kind::Nchan => "nchan",
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if !args.gateway.exists() {
        bail!(
            "{} not found: build it with `cargo build --release` (bench/run.sh does)",
            args.gateway.display()
        );
    }
    if args.vs_nchan {
        nchan::ensure_installed()?;
    }
    let exe = std::env::current_exe()?;
    let scenarios: Vec<&str> = args.scenarios.split(',').map(str::trim).collect();
    let mut kinds = vec![Kind::Gateway];
    if args.vs_nchan {
        kinds.push(Kind::Nchan);
    }
    let mut rows = Vec::new();
    let mut floors: Vec<FloorResult> = Vec::new();
    let started = Instant::now();
    let load_before = loadavg();

    for scenario in &scenarios {
        let plan: Vec<(usize, f64, f64)> = match *scenario {
            "idle" => vec![(args.idle_clients, 0.0, 5.0)],
            "1k" => vec![(1000, 100.0, args.duration)],
            "10k" => vec![(10_000, 10.0, args.duration)],
            "sat" => parse_rates(&args.sat_rates)?
                .into_iter()
                .map(|r| (1000, r, args.sat_duration))
                .collect(),
            other => bail!("unknown scenario {other:?} (idle, 1k, 10k, sat)"),
        };
        if !args.no_floor && *scenario != "idle" && *scenario != "sat" {
            let (clients, rate, _) = plan[0];
            eprintln!("run: floor {clients} sockets x {rate}/s");
            floors.push(floor(&args, &exe, clients, rate)?);
        }
        for &kind in &kinds {
            for &(clients, rate, duration) in &plan {
                eprintln!(
                    "run: {} {scenario}: {clients} clients x {rate}/s",
                    kind.name()
                );
                let mut row = measure(&args, &exe, kind, scenario, clients, rate, duration)
                    .with_context(|| format!("{} {scenario} at {rate}/s", kind.name()))?;
                row.floor_ratio = floor_for(&floors, clients)
                    .filter(|_| row.cpu_us_per_delivery > 0.0)
                    .map(|f| row.cpu_us_per_delivery / f.us_per_write);
                if *scenario == "sat" {
                    let offered = clients as f64 * rate;
                    let pass = row.load.p99_ms < 250.0
                        && row.load.gaps == 0
                        && row.delivered_per_s >= 0.95 * offered;
                    row.pass = Some(pass);
                    eprintln!("{}", line(&row));
                    rows.push(row);
                    if !pass {
                        break;
                    }
                } else {
                    eprintln!("{}", line(&row));
                    rows.push(row);
                }
            }
        }
    }
    let mut versions = format!(
        "{}: {}",
        args.gateway.display(),
        command_output(Command::new(&args.gateway).arg("--version"))
    );
    if args.vs_nchan {
        versions.push_str("; ");
        versions.push_str(&nchan::versions());
    }
    versions.push_str(&format!(
        "; load average before {load_before}, after {}",
        loadavg()
    ));
    let table = render(&rows, &floors, started.elapsed(), &versions);
    #[allow(clippy::print_stdout)]
    {
        print!("{table}");
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "rows": rows, "floor": floors });
        fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

fn parse_rates(text: &str) -> anyhow::Result<Vec<f64>> {
    text.split(',')
        .map(|r| r.trim().parse::<f64>().context("--sat-rates: numbers"))
        .collect()
}

fn floor_for(floors: &[FloorResult], clients: usize) -> Option<&FloorResult> {
    floors
        .iter()
        .min_by_key(|f| f.sockets.abs_diff(clients))
        .filter(|f| f.sockets.abs_diff(clients) * 4 <= clients)
}

// === Processes ===

/// A process tree we started; killed (every pid in it) when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn spawn(name: &'static str, command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self { child, name })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn tree(&self) -> Vec<u32> {
        procfs::tree(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pids: Vec<String> = self.tree().iter().map(u32::to_string).collect();
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        if self.child.wait().is_err() {
            eprintln!("run: could not reap {}", self.name);
        }
    }
}

/// `[nice -n N setsid] taskset -c CPUS program` (each execs the next: the pid is
/// the program's).
fn pinned(args: &Args, cpus: &str, program: &Path) -> Command {
    let mut c = match args.nice {
        Some(n) => {
            let mut c = Command::new("nice");
            c.args(["-n", &n.to_string(), "setsid", "taskset"]);
            c
        }
        None => Command::new("taskset"),
    };
    c.args(["-c", cpus]).arg(program);
    c
}

/// Gives the new session of `pid` (see `pinned`) the `--nice` value, so its
/// processes compete with other sessions at that weight.
fn boost(args: &Args, pid: u32) {
    if let Some(n) = args.nice {
        // setsid execs the program only once it has called setsid(); wait for that.
        for _ in 0..100 {
            let own_session = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    rest.split_whitespace().nth(3)?.parse::<u32>().ok()
                })
                .is_some_and(|sid| sid == pid);
            if own_session {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(error) = fs::write(format!("/proc/{pid}/autogroup"), n.to_string()) {
            eprintln!("run: cannot set the autogroup nice of {pid}: {error}");
        }
    }
}

/// `0`, `0,1` or `0-1` as taskset takes them.
fn cpu_list(spec: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => cpus.extend(part.trim().parse::<usize>().ok()),
        }
    }
    cpus
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `path` until a line satisfies `find`, or gives up after `patience`.
fn wait_for_line<T>(
    path: &Path,
    patience: Duration,
    mut find: impl FnMut(&str) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if let Some(found) = text.lines().find_map(&mut find) {
                return Ok(found);
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no expected line in {} after {patience:?}:\n{}",
                path.display(),
                fs::read_to_string(path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_port(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("{addr} never accepted a connection");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A fresh directory for one server's config and logs.
fn scratch_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "sse-bench-{}-{name}-{}",
        std::process::id(),
        now_ns()
    ));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A started origin (or publisher), the server, and the URL clients subscribe to.
struct Setup {
    // Field order is drop order: the server goes before the origin.
    server: Proc,
    _origin: Proc,
    origin_addr: SocketAddr,
    url: String,
    dir: PathBuf,
}

fn start_origin(
    args: &Args,
    exe: &Path,
    dir: &Path,
    rate: f64,
    publish: Option<&str>,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let log = dir.join("origin.log");
    let mut c = pinned(args, &args.load_cpus, exe);
    c.args([
        "origin",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        &rate.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(fs::File::create(&log)?);
    if let Some(url) = publish {
        c.args(["--publish", url]);
    }
    let origin = Proc::spawn("origin", &mut c)?;
    boost(args, origin.pid());
    let addr = wait_for_line(&log, Duration::from_secs(10), |l| {
        l.strip_prefix("origin listening addr=")?.parse().ok()
    })?;
    Ok((origin, addr))
}

fn start(args: &Args, exe: &Path, kind: Kind, rate: f64) -> anyhow::Result<Setup> {
    let dir = scratch_dir(kind.name())?;
    match kind {
        Kind::Gateway => {
            let (origin, origin_addr) = start_origin(args, exe, &dir, rate, None)?;
            let config = dir.join("gateway.yaml");
            fs::write(
                &config,
                format!("routes:\n  - path: /events\n    upstream: http://{origin_addr}/events\n"),
            )?;
            let log = dir.join("gateway.log");
            let mut c = pinned(args, &args.server_cpus, &args.gateway);
            c.arg("-c")
                .arg(&config)
                .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
                .args(["--log-format", "json"])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log)?);
            let server = Proc::spawn("sse-gateway", &mut c)?;
            boost(args, server.pid());
            let addr: SocketAddr = wait_for_line(&log, Duration::from_secs(10), |l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                let f = v.get("fields")?;
                (f.get("message")?.as_str()? == "listening" && f.get("kind")?.as_str()? == "public")
                    .then(|| f.get("addr")?.as_str()?.parse().ok())?
            })?;
            Ok(Setup {
                server,
                _origin: origin,
                origin_addr,
                url: format!("http://{addr}/events"),
                dir,
            })
        }
        Kind::Nchan => {
            let port = free_port()?;
            let config = dir.join("nginx.conf");
            fs::write(&config, nchan::config(&dir, port)?)?;
            let mut c = pinned(args, &args.server_cpus, Path::new("nginx"));
            c.arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(dir.join("nginx.stderr"))?);
            let server = Proc::spawn("nginx", &mut c)?;
            boost(args, server.pid());
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_for_port(addr)?;
            let (origin, origin_addr) =
                start_origin(args, exe, &dir, rate, Some(&format!("http://{addr}/pub")))?;
            Ok(Setup {
                server,
                _origin: origin,
                origin_addr,
                url: format!("http://{addr}/sub"),
                dir,
            })
        }
    }
}

/// `GET /stats` from the origin.
fn origin_stats(addr: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .context("origin /stats: no body")?;
    Ok(serde_json::from_str(body.trim())?)
}

struct Load {
    proc: Proc,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn start_loads(args: &Args, exe: &Path, url: &str, clients: usize) -> anyhow::Result<Vec<Load>> {
    let per = args.clients_per_load.max(1);
    let mut loads = Vec::new();
    let mut left = clients;
    let mut i = 0u32;
    while left > 0 {
        let n = left.min(per);
        left -= n;
        i += 1;
        let mut c = pinned(args, &args.load_cpus, exe);
        c.args(["load", "--url", url, "--wait-start"])
            .args(["--clients", &n.to_string()])
            // Each process gets its own 127.0.i.x block of 40 source addresses.
            .args(["--src-first", &format!("127.0.{i}.2"), "--src-count", "40"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn("load", &mut c)?;
        boost(args, proc.pid());
        let stdin = proc.child.stdin.take().context("load stdin")?;
        let stdout = BufReader::new(proc.child.stdout.take().context("load stdout")?);
        loads.push(Load {
            proc,
            stdin,
            stdout,
        });
    }
    Ok(loads)
}

fn read_line(load: &mut Load) -> anyhow::Result<String> {
    let mut line = String::new();
    if load.stdout.read_line(&mut line)? == 0 {
        bail!("load process {} ended early", load.proc.pid());
    }
    Ok(line)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    args: &Args,
    exe: &Path,
    kind: Kind,
    scenario: &str,
    clients: usize,
    rate: f64,
    duration: f64,
) -> anyhow::Result<Row> {
    let setup = start(args, exe, kind, rate)?;
    // Let the server settle (nchan's shared memory, our runtime) before the baseline.
    std::thread::sleep(Duration::from_millis(500));
    let server_tree = setup.server.tree();
    let rss_base = procfs::rss_bytes(&server_tree);
    let kernel_base = procfs::kernel_tcp_bytes().unwrap_or(0);
    let slab_base = procfs::kernel_slab_bytes().unwrap_or(0);

    let mut loads = start_loads(args, exe, &setup.url, clients)?;
    for load in &mut loads {
        let line = read_line(load)?;
        if !line.starts_with("ready") {
            bail!("load said {line:?} instead of ready");
        }
    }
    let warmup = if rate == 0.0 { 1.0 } else { args.warmup };
    let at_ms = now_ns() / 1_000_000 + (warmup * 1000.0) as u64;
    let duration_ms = (duration * 1000.0) as u64;
    for load in &mut loads {
        writeln!(load.stdin, "start {at_ms} {duration_ms}")?;
        load.stdin.flush()?;
    }
    let load_pids: Vec<u32> = loads.iter().map(|l| l.proc.pid()).collect();
    std::thread::sleep(Duration::from_millis(
        at_ms.saturating_sub(now_ns() / 1_000_000),
    ));
    let t0 = Instant::now();
    // The server's tree is re-read: nginx may have forked since the baseline.
    let server_tree = setup.server.tree();
    let cpu0 = procfs::cpu_seconds(&server_tree);
    let server_cores = cpu_list(&args.server_cpus);
    let softirqd = procfs::ksoftirqd(&server_cores);
    let softirq0 = procfs::cpu_seconds(&softirqd);
    let busy0 = procfs::cpu_busy_ticks(&server_cores);
    let load_cpu0 = procfs::cpu_seconds(&load_pids);
    let perf = match &args.perf_dir {
        Some(dir) => Some(start_perf(
            dir,
            kind,
            scenario,
            rate,
            &server_tree,
            duration,
        )?),
        None => None,
    };
    let events0 = origin_stats(setup.origin_addr)?["events"]
        .as_u64()
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(duration_ms));
    let cpu1 = procfs::cpu_seconds(&server_tree);
    let softirq1 = procfs::cpu_seconds(&softirqd);
    let busy1 = procfs::cpu_busy_ticks(&server_cores);
    let load_cpu1 = procfs::cpu_seconds(&load_pids);
    let elapsed = t0.elapsed().as_secs_f64();
    let rss = procfs::rss_bytes(&server_tree);
    let kernel = procfs::kernel_tcp_bytes().unwrap_or(0);
    let slab = procfs::kernel_slab_bytes().unwrap_or(0);
    let stats = origin_stats(setup.origin_addr)?;
    let events1 = stats["events"].as_u64().unwrap_or(0);

    if let Some(mut perf) = perf {
        // perf stops by itself when its `sleep` ends; wait so the file is complete.
        let _ = perf.wait();
    }
    let mut summary = Summary::default();
    for load in &mut loads {
        let line = read_line(load)?;
        let one: Summary =
            serde_json::from_str(&line).with_context(|| format!("load summary {line:?}"))?;
        summary.merge(&one)?;
    }
    drop(loads);
    let dir = setup.dir.clone();
    drop(setup);
    // Logs and configs are kept only when something failed (the `?`s above).
    let _ = fs::remove_dir_all(dir);

    let delivered_per_s = summary.events as f64 / summary.duration_s.max(1e-9);
    let server_cpu_s = cpu1 - cpu0;
    Ok(Row {
        server: kind.name(),
        scenario: scenario.to_owned(),
        clients,
        rate,
        offered_per_s: (events1.saturating_sub(events0)) as f64 / elapsed,
        delivered_per_s,
        server_cpu_s,
        cpu_us_per_delivery: if summary.events == 0 {
            0.0
        } else {
            server_cpu_s * 1e6 / summary.events as f64
        },
        floor_ratio: None,
        rss_base_bytes: rss_base,
        rss_bytes: rss,
        rss_per_conn: rss.saturating_sub(rss_base) as f64 / clients.max(1) as f64,
        kernel_tcp_per_conn: kernel.saturating_sub(kernel_base) as f64 / clients.max(1) as f64,
        kernel_slab_per_socket: slab.saturating_sub(slab_base) as f64 / (2 * clients.max(1)) as f64,
        upstream: stats["streams_opened"].as_u64().unwrap_or(0)
            + stats["publish_connections"].as_u64().unwrap_or(0),
        load_cpu_pct: (load_cpu1 - load_cpu0) * 100.0 / elapsed,
        server_core_busy_pct: (busy1.0 - busy0.0) as f64 * 100.0
            / (busy1.1 - busy0.1).max(1) as f64,
        ksoftirqd_pct: (softirq1 - softirq0) * 100.0 / elapsed,
        pass: None,
        load: summary,
    })
}

/// `perf record` of `pids` for `duration` seconds, into `dir`. Not a `Proc`: it
/// must end on its own to write a complete file.
fn start_perf(
    dir: &Path,
    kind: Kind,
    scenario: &str,
    rate: f64,
    pids: &[u32],
    duration: f64,
) -> anyhow::Result<Child> {
    fs::create_dir_all(dir)?;
    let file = dir.join(format!("perf-{}-{scenario}-{rate}.data", kind.name()));
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "997", "-o"])
        .arg(&file)
        .args(["-p", &pids.join(","), "--", "sleep"])
        .arg(format!("{duration}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start perf")
}

fn floor(args: &Args, exe: &Path, sockets: usize, rate: f64) -> anyhow::Result<FloorResult> {
    let mut out = pinned(args, &args.server_cpus, exe);
    let out = out
        .args(["floor", "--sockets", &sockets.to_string()])
        .args(["--rate", &rate.to_string(), "--duration", "10"])
        .args(["--reader-cpu", &args.load_cpus])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    boost(args, out.id());
    let out = out.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "floor probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

// === Output ===

fn line(r: &Row) -> String {
    format!(
        "run: {} {} {}x{}/s: {:.0}/s delivered, p99 {:.1} ms, {:.2} µs/delivery, gaps {}, dups {}, load CPU {:.0}%",
        r.server,
        r.scenario,
        r.clients,
        r.rate,
        r.delivered_per_s,
        r.load.p99_ms,
        r.cpu_us_per_delivery,
        r.load.gaps,
        r.load.dups,
        r.load_cpu_pct
    )
}

/// The 1-minute load average: other work on the machine skews every figure.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

/// A latency cell: a dash where no event was delivered (idle rows).
fn ms(r: &Row, value: f64) -> String {
    if r.load.events == 0 {
        "–".to_owned()
    } else {
        format!("{value:.1}")
    }
}

fn kb(bytes: f64) -> String {
    format!("{:.1} KB", bytes / 1000.0)
}

fn command_output(c: &mut Command) -> String {
    c.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn render(rows: &[Row], floors: &[FloorResult], took: Duration, versions: &str) -> String {
    let mut t = String::new();
    let date = command_output(Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC"));
    let kernel = command_output(Command::new("uname").arg("-r"));
    let _ = writeln!(t, "sse-bench run, {date}, Linux {kernel}; {versions}");
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| server | scenario | clients | ev/s per client | offered ev/s | delivered/s | p50 ms | p99 ms | p99.9 ms | gaps | dups | reconnects | CPU µs/delivery | × floor | RSS/conn | kernel TCP buffers/conn | kernel slab/socket | upstream conns | events/read | load CPU | server core busy | ksoftirqd | pass |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% | {:.0}% | {:.0}% | {} |",
            r.server,
            r.scenario,
            r.clients,
            r.rate,
            r.offered_per_s,
            r.delivered_per_s,
            ms(r, r.load.p50_ms),
            ms(r, r.load.p99_ms),
            ms(r, r.load.p999_ms),
            r.load.gaps,
            r.load.dups,
            r.load.reconnects,
            if r.cpu_us_per_delivery > 0.0 { format!("{:.2}", r.cpu_us_per_delivery) } else { "–".into() },
            r.floor_ratio.map_or("–".into(), |f| format!("{f:.2}")),
            kb(r.rss_per_conn),
            kb(r.kernel_tcp_per_conn),
            kb(r.kernel_slab_per_socket),
            r.upstream,
            if r.load.events == 0 {
                "–".to_owned()
            } else {
                format!("{:.2}", r.load.events_per_read())
            },
            r.load_cpu_pct,
            r.server_core_busy_pct,
            r.ksoftirqd_pct,
            r.pass.map_or("", |p| if p { "yes" } else { "no" }),
        );
    }
    if !floors.is_empty() {
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "| floor: sockets | writes/s per socket | writes/s | CPU µs/write | blocked |"
        );
        let _ = writeln!(t, "|---:|---:|---:|---:|---:|");
        for f in floors {
            let _ = writeln!(
                t,
                "| {} | {} | {:.0} | {:.2} | {} |",
                f.sockets,
                f.rate,
                f.writes as f64 / f.duration_s.max(1e-9),
                f.us_per_write,
                f.blocked
            );
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "(run took {:.0} s; RSS and kernel TCP per connection are deltas from before the clients connected)",
        took.as_secs_f64()
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_like_taskset() {
        assert_eq!(cpu_list("0"), [0]);
        assert_eq!(cpu_list("0,1"), [0, 1]);
        assert_eq!(cpu_list("0-2,5"), [0, 1, 2, 5]);
    }

    #[test]
    fn the_floor_used_is_the_one_at_a_similar_socket_count() {
        let f = |sockets| FloorResult {
            sockets,
            rate: 10.0,
            writes: 1,
            blocked: 0,
            duration_s: 1.0,
            cpu_s: 1.0,
            us_per_write: sockets as f64,
        };
        let floors = [f(1000), f(10_000)];
        assert_eq!(floor_for(&floors, 1000).map(|f| f.sockets), Some(1000));
        assert_eq!(floor_for(&floors, 9_500).map(|f| f.sockets), Some(10_000));
        assert!(floor_for(&floors, 19_000).is_none());
    }
}
