//! The peer: what apps use today, the Secret Service (gnome-keyring), in a
//! private D-Bus session started for the run.
//!
//! The client is an ordinary one: keyring-core with the zbus Secret
//! Service store, one store (one D-Bus connection and session) created
//! once and shared. zbus finds the bus through `DBUS_SESSION_BUS_ADDRESS`,
//! which this process cannot change safely while it runs, so the client
//! side runs in a child process (`keyhaven-bench serve
//! secret-service-client RESULT`) started with the session's environment;
//! it writes its figures to `RESULT` as JSON.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::report::{Group, Measurement, Placed, Point, Report};
use crate::stats::{Placement, Plan, Summary, latency_blocking};

/// The environment variable carrying the plan to the client process.
const PLAN_VAR: &str = "KEYHAVEN_BENCH_SS_PLAN";
/// The gnome-keyring login password of the private session.
const PASSWORD: &str = "bench horse battery";
/// The service name the bench's entries are filed under.
const SERVICE: &str = "keyhaven-bench";
/// A dummy value, the size of a typical token.
const VALUE: &str = "dummy-bench-value-not-a-secret-0123456789";

/// Runs the Secret Service section, or records why it cannot.
pub fn run(plan: &Plan, report: &mut Report) -> Result<()> {
    if !cfg!(target_os = "linux") {
        report.skip("Secret Service: only measured on Linux".to_owned());
        return Ok(());
    }
    let missing: Vec<&str> = ["dbus-daemon", "gnome-keyring-daemon"]
        .into_iter()
        .filter(|p| which(p).is_none())
        .collect();
    if !missing.is_empty() {
        report.skip(format!(
            "Secret Service: gnome-keyring-daemon/dbus-daemon not installed (apt-get install \
             gnome-keyring dbus); missing: {}",
            missing.join(", ")
        ));
        return Ok(());
    }
    let session = Session::start()?;
    let me = std::env::current_exe().context("where is this binary")?;
    let result = session.root().join("ss-result.json");
    let mut client = session
        .command(&me)
        .arg("serve")
        .arg("secret-service-client")
        .arg(&result)
        .env(PLAN_VAR, encode_plan(plan))
        .stdin(Stdio::null())
        .spawn()
        .context("start the Secret Service client")?;
    // A keyring waiting for a prompt would hang the client: give up.
    let limit = Duration::from_secs(if plan.quick { 120 } else { 900 });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = client.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            let _ = client.kill();
            let _ = client.wait();
            bail!("the Secret Service client did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if !status.success() {
        bail!("the Secret Service client failed: {status}");
    }
    let text =
        std::fs::read_to_string(&result).with_context(|| format!("read {}", result.display()))?;
    let wires: Vec<Wire> = serde_json::from_str(&text).context("the client's result")?;
    for wire in wires {
        let m = wire.into_measurement();
        crate::report::print_line(&m);
        report.measurements.push(m);
    }
    match which("secret-tool") {
        None => report.skip(
            "secret_tool_lookup: secret-tool not installed (apt-get install libsecret-tools)"
                .to_owned(),
        ),
        Some(tool) => {
            let m = secret_tool_lookup(plan, &session, &tool)?;
            crate::report::print_line(&m);
            report.measurements.push(m);
        }
    }
    Ok(())
}

/// The first `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A private session bus with an unlocked gnome-keyring on it, under a
/// temporary HOME; both stopped when dropped.
#[derive(Debug)]
struct Session {
    bus: Child,
    keyring: Option<Child>,
    address: String,
    home: PathBuf,
    runtime: PathBuf,
    dir: tempfile::TempDir,
}

impl Session {
    fn start() -> Result<Self> {
        use std::io::{BufRead, BufReader, Write};
        use std::os::unix::fs::DirBuilderExt;

        let dir = tempfile::tempdir().context("temp dir for the Secret Service")?;
        let home = dir.path().join("home");
        let runtime = dir.path().join("run");
        for d in [&home, &runtime] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .with_context(|| format!("create {}", d.display()))?;
        }
        // No service activation: only the keyring started here serves
        // org.freedesktop.secrets (activation would start one with the
        // wrong HOME).
        let config = dir.path().join("session.conf");
        let socket = runtime.join("bus");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig>\n  <type>session</type>\n  <listen>unix:path={}</listen>\n  \
                 <policy context=\"default\">\n    <allow send_destination=\"*\"/>\n    \
                 <allow receive_sender=\"*\"/>\n    <allow own=\"*\"/>\n  </policy>\n</busconfig>\n",
                socket.display()
            ),
        )
        .with_context(|| format!("write {}", config.display()))?;
        let mut bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .env("HOME", &home)
            .env("XDG_RUNTIME_DIR", &runtime)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start dbus-daemon")?;
        let mut line = String::new();
        let read = bus
            .stdout
            .take()
            .context("dbus-daemon's stdout")
            .and_then(|out| Ok(BufReader::new(out).read_line(&mut line)?));
        let mut session = Self {
            bus,
            keyring: None,
            address: line.trim().to_owned(),
            home,
            runtime,
            dir,
        };
        read.context("read the bus address from dbus-daemon")?;
        if session.address.is_empty() {
            bail!("dbus-daemon printed no address");
        }
        let mut keyring = session
            .command(Path::new("gnome-keyring-daemon"))
            .args(["--foreground", "--components=secrets", "--unlock"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start gnome-keyring-daemon")?;
        let stdin = keyring.stdin.take();
        session.keyring = Some(keyring);
        let mut stdin = stdin.context("gnome-keyring-daemon's stdin")?;
        stdin
            .write_all(PASSWORD.as_bytes())
            .context("unlock gnome-keyring")?;
        drop(stdin);
        Ok(session)
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `program` with the session's environment.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime);
        cmd
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(mut keyring) = self.keyring.take() {
            let _ = keyring.kill();
            let _ = keyring.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// `secret-tool lookup` as a process per lookup, as shell scripts do.
fn secret_tool_lookup(plan: &Plan, session: &Session, tool: &Path) -> Result<Measurement> {
    use std::io::Write;

    let attrs = ["service", SERVICE, "username", "secret-tool"];
    let mut store = session
        .command(tool)
        .args(["store", "--label=keyhaven-bench secret-tool"])
        .args(attrs)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("secret-tool store")?;
    if let Some(mut stdin) = store.stdin.take() {
        stdin.write_all(VALUE.as_bytes())?;
    }
    let status = store.wait()?;
    if !status.success() {
        bail!("secret-tool store failed: {status}");
    }
    let small = Plan {
        warmup: 2,
        latency_iters: if plan.quick { 5 } else { 20 },
        ..plan.clone()
    };
    let summary = latency_blocking(&small, |_| {
        let out = session
            .command(tool)
            .arg("lookup")
            .args(attrs)
            .stdin(Stdio::null())
            .output()
            .context("secret-tool lookup")?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("secret-tool lookup failed: {}", out.status);
        }
        Ok(())
    })?;
    let mut m = Measurement::new(
        "secret_tool_lookup",
        Group::Peer,
        &format!(
            "`secret-tool lookup` as a process per lookup (what shell scripts do), unpinned, {} \
             runs",
            small.latency_iters
        ),
    );
    m.latency.push(Placed {
        placement: Placement::SameCpu,
        summary,
    });
    Ok(m)
}

/// A measurement as the client process hands it over.
#[derive(Debug, Serialize, Deserialize)]
struct Wire {
    name: String,
    what: String,
    latency: Vec<WireSummary>,
    throughput: Vec<(usize, WireSummary)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireSummary {
    p50_us: f64,
    p99_us: f64,
    ops_per_s: f64,
    samples: usize,
}

impl From<Summary> for WireSummary {
    fn from(s: Summary) -> Self {
        Self {
            p50_us: s.p50_us,
            p99_us: s.p99_us,
            ops_per_s: s.ops_per_s,
            samples: s.samples,
        }
    }
}

impl From<WireSummary> for Summary {
    fn from(s: WireSummary) -> Self {
        Self {
            p50_us: s.p50_us,
            p99_us: s.p99_us,
            ops_per_s: s.ops_per_s,
            samples: s.samples,
        }
    }
}

impl Wire {
    fn into_measurement(self) -> Measurement {
        let mut m = Measurement::new(&self.name, Group::Peer, &self.what);
        m.latency = self
            .latency
            .into_iter()
            .map(|s| Placed {
                placement: Placement::SameCpu,
                summary: s.into(),
            })
            .collect();
        m.throughput = self
            .throughput
            .into_iter()
            .map(|(clients, s)| Point::new(clients, s.into()))
            .collect();
        m
    }
}

fn encode_plan(plan: &Plan) -> String {
    let clients: Vec<String> = plan.clients.iter().map(ToString::to_string).collect();
    format!(
        "{} {} {} {} {}",
        plan.quick,
        plan.warmup,
        plan.latency_iters,
        plan.duration.as_millis(),
        clients.join(",")
    )
}

fn decode_plan(text: &str) -> Result<Plan> {
    let f: Vec<&str> = text.split(' ').collect();
    let [quick, warmup, iters, millis, clients] = f.as_slice() else {
        bail!("malformed {PLAN_VAR}: {text:?}");
    };
    let quick: bool = quick.parse()?;
    let base = if quick { Plan::quick() } else { Plan::full() };
    Ok(Plan {
        quick,
        warmup: warmup.parse()?,
        latency_iters: iters.parse()?,
        duration: Duration::from_millis(millis.parse()?),
        clients: clients
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()?,
        ..base
    })
}

/// The client process: measures lookup and store through keyring-core and
/// writes them to `result` as JSON.
#[cfg(target_os = "linux")]
pub fn client(result: &Path) -> Result<()> {
    let plan = decode_plan(&std::env::var(PLAN_VAR).with_context(|| format!("no {PLAN_VAR}"))?)?;
    let wires = client::measure(&plan)?;
    std::fs::write(result, serde_json::to_string(&wires)?)
        .with_context(|| format!("write {}", result.display()))
}

/// The Secret Service is only measured on Linux.
#[cfg(not(target_os = "linux"))]
pub fn client(_result: &Path) -> Result<()> {
    bail!("the Secret Service is only measured on Linux")
}

#[cfg(target_os = "linux")]
mod client {
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use keyring_core::Entry;

    use super::{SERVICE, VALUE, Wire};
    use crate::stats::{Plan, latency_blocking, pin_current_thread, throughput_threads};

    /// How long the client waits for gnome-keyring to take its bus name.
    const WAIT: Duration = Duration::from_secs(20);

    pub(super) fn measure(plan: &Plan) -> Result<Vec<Wire>> {
        connect()?;
        let mut wires = Vec::new();
        // Lookup: one existing entry, read again and again.
        let lookup = Entry::new(SERVICE, "lookup")?;
        lookup.set_password(VALUE)?;
        let get = |e: &mut Entry, _: u64| -> Result<()> {
            let v = e.get_password()?;
            if v.len() != VALUE.len() {
                bail!("the lookup entry changed");
            }
            Ok(())
        };
        wires.push(measure_one(
            plan,
            "secret_service_lookup",
            "get_password of an existing entry through keyring-core + \
             zbus-secret-service-keyring-store (one store, one D-Bus connection, shared: the \
             store serializes calls behind one mutex); client pinned to CPU 0, gnome-keyring \
             and dbus-daemon unpinned",
            |_| Ok(Entry::new(SERVICE, "lookup")?),
            get,
        )?);
        // Store: each client overwrites its own entry.
        let set = |e: &mut Entry, _: u64| -> Result<()> { Ok(e.set_password(VALUE)?) };
        wires.push(measure_one(
            plan,
            "secret_service_store",
            "set_password overwriting the client's own entry (gnome-keyring rewrites its \
             keyring file each time), same client and placement as secret_service_lookup",
            |c| {
                let e = Entry::new(SERVICE, &format!("store-{c}"))?;
                e.set_password(VALUE)?;
                Ok(e)
            },
            set,
        )?);
        Ok(wires)
    }

    /// Creates the shared store once gnome-keyring serves the bus, and
    /// makes it the default store.
    fn connect() -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let attempt = zbus_secret_service_keyring_store::Store::new()
                .map_err(anyhow::Error::from)
                .and_then(|store| {
                    keyring_core::set_default_store(store);
                    Entry::new(SERVICE, "probe")?.set_password(VALUE)?;
                    Ok(())
                });
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("gnome-keyring did not serve the private session");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Latency (client pinned to CPU 0; iterations capped so the run takes
    /// about 10 s, 1 s in quick mode) and throughput at every client count
    /// (threads sharing the store).
    fn measure_one(
        plan: &Plan,
        name: &str,
        what: &str,
        make: impl Fn(usize) -> Result<Entry> + Sync,
        op: impl Fn(&mut Entry, u64) -> Result<()> + Sync + Copy,
    ) -> Result<Wire> {
        let budget = if plan.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        let summary = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    pin_current_thread(Some(0))?;
                    let mut entry = make(0)?;
                    // Size the run from a short probe.
                    let probe = Instant::now();
                    for i in 0..10 {
                        op(&mut entry, i)?;
                    }
                    let each = probe.elapsed() / 10;
                    let fit = (budget.as_secs_f64() / each.as_secs_f64().max(1e-6)) as usize;
                    let capped = Plan {
                        warmup: plan.warmup.min(fit / 10),
                        latency_iters: plan.latency_iters.min(fit).max(20),
                        ..plan.clone()
                    };
                    latency_blocking(&capped, |i| op(&mut entry, i))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the pinned client thread panicked"))?
        })?;
        let mut wire = Wire {
            name: name.to_owned(),
            what: what.to_owned(),
            latency: vec![summary.into()],
            throughput: Vec::new(),
        };
        for &clients in &plan.clients {
            let entries = (0..clients).map(&make).collect::<Result<Vec<_>>>()?;
            let summary = throughput_threads(entries, plan.duration, op)
                .with_context(|| format!("{name} with {clients} clients"))?;
            wire.throughput.push((clients, summary.into()));
        }
        Ok(wire)
    }
}
