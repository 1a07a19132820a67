//! Server-side instructions per request, counted by callgrind. Unlike a
//! time, an instruction count does not move with the machine, its load or
//! its CPU frequency, so it is the figure that must hold from one machine
//! to another (time is reported beside it by the other sections).
//!
//! Method: the server (keyhavend, or the tonic echo floor) runs under
//! `valgrind --tool=callgrind`. One client on one connection warms it up,
//! then callgrind is told to dump (zeroing its counters), the client makes
//! N requests, waits for the daemon's deferred work of those requests (the
//! audit log's batch lingers up to 100 ms) and callgrind dumps again. The
//! second dump holds the server's instructions for exactly those N
//! requests, everything they caused included; divided by N, that is the
//! figure. Client instructions are not counted: the client is this
//! process, not under valgrind.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keyhaven::{Client, StoreOptions};

use crate::floors::Server;
use crate::keyhaven::{Home, client_runtime, key, seed};
use crate::report::Report;
use crate::stats::Plan;

/// Requests before counting (connection set-up, caches, statement cache).
const WARMUP: usize = 200;
/// Credentials stored before the Retrieves, as in the `ops` section.
const SEEDED: usize = 1_000;
/// Long enough for the audit log's 100 ms batch to be written.
const SETTLE: Duration = Duration::from_millis(400);

/// The callgrind options; `out` is the dump file's name.
fn callgrind(out: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["valgrind", "--tool=callgrind", "--quiet"]
        .into_iter()
        .map(OsString::from)
        .collect();
    let mut file = OsString::from("--callgrind-out-file=");
    file.push(out);
    args.push(file);
    args
}

fn have_valgrind() -> bool {
    ["valgrind", "callgrind_control"].into_iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// With `KEYHAVEN_BENCH_CALLGRIND_DIR` set, where each counted dump is
/// copied (as `<what>.callgrind`) for `callgrind_annotate`.
const KEEP_ENV: &str = "KEYHAVEN_BENCH_CALLGRIND_DIR";

/// Copies the newest dump of `out` to the directory `KEEP_ENV` names.
fn keep(out: &Path, what: &str) -> Result<()> {
    let Some(dir) = std::env::var_os(KEEP_ENV) else {
        return Ok(());
    };
    let newest = dumps(out)?
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    if let Some(newest) = newest {
        let to = Path::new(&dir).join(format!("{what}.callgrind"));
        std::fs::copy(&newest, &to).with_context(|| format!("copy to {}", to.display()))?;
        println!("  {what}: callgrind dump kept as {}", to.display());
    }
    Ok(())
}

/// Asks callgrind in process `pid` to dump (and zero) its counters, and
/// returns the total instructions of that dump.
fn dump(pid: u32, out: &Path) -> Result<u64> {
    let before = dumps(out)?;
    let status = Command::new("callgrind_control")
        .arg("-d")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run callgrind_control")?;
    if !status.success() {
        bail!("callgrind_control -d {pid} failed: {status}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = dumps(out)?;
        if let Some(new) = now.iter().find(|p| !before.contains(p)) {
            // The file is complete once its totals line is written.
            if let Some(total) = totals(new)? {
                return Ok(total);
            }
        }
        if Instant::now() > deadline {
            bail!("callgrind did not dump within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The dump files written so far (`out.1`, `out.2`, ...).
fn dumps(out: &Path) -> Result<Vec<PathBuf>> {
    let dir = out.parent().context("dump directory")?;
    let name = out.file_name().context("dump name")?.to_string_lossy();
    let prefix = format!("{name}.");
    Ok(std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect())
}

fn totals(file: &Path) -> Result<Option<u64>> {
    let text = std::fs::read_to_string(file)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok()))
}

/// How long a server under valgrind may take to start.
const PATIENCE: Duration = Duration::from_secs(120);

/// The server `pid` under callgrind (dumping to `out`) is warmed up by
/// `requests(0, WARMUP)`, then counted over `requests(WARMUP, n)`: the
/// instructions per request, its deferred work included.
fn per_request(
    pid: u32,
    out: &Path,
    what: &str,
    n: usize,
    mut requests: impl FnMut(usize, usize) -> Result<()>,
) -> Result<f64> {
    requests(0, WARMUP)?;
    std::thread::sleep(SETTLE);
    dump(pid, out)?;
    requests(WARMUP, n)?;
    std::thread::sleep(SETTLE);
    let counted = dump(pid, out)?;
    keep(out, what)?;
    Ok(counted as f64 / n as f64)
}

/// keyhavend under callgrind with one client: `seeded` credentials
/// stored and each read once (the read cache as warm as in a daemon that
/// has served its apps for a while), then the server's instructions per
/// `op(client, i)`, counted by [`per_request`].
fn daemon_per_request(
    daemon_exe: &Path,
    what: &str,
    n: usize,
    seeded: usize,
    op: impl AsyncFn(&Client, usize) -> Result<(), keyhaven::Error>,
) -> Result<f64> {
    let home = Home::new()?;
    let out = home.path().join("callgrind.out");
    let (daemon, _) = home.start_under(&callgrind(&out), daemon_exe, None, PATIENCE)?;
    let rt = client_runtime()?;
    let client = rt.block_on(async {
        if seeded > 0 {
            seed(&home.socket(), seeded, 4).await?;
        }
        let client = Client::connect_to(home.socket()).await?;
        for i in 0..seeded {
            client.retrieve(&key(i)).await?;
        }
        Ok::<_, anyhow::Error>(client)
    })?;
    let per = per_request(daemon.pid(), &out, what, n, |from, count| {
        rt.block_on(async {
            for i in from..from + count {
                op(&client, i).await?;
            }
            Ok::<_, keyhaven::Error>(())
        })?;
        Ok(())
    })?;
    drop(client);
    daemon.stop()?;
    Ok(per)
}

/// Server instructions per Retrieve, [`SEEDED`] credentials stored. With
/// `spread`, each read is of a well-spread one of them (so each read is
/// its own audit record); without, the first one is read `n` times (so the
/// audit log folds the reads of a batch into one record).
fn retrieve(daemon_exe: &Path, n: usize, spread: bool) -> Result<f64> {
    let what = if spread { "retrieve" } else { "retrieve_same" };
    daemon_per_request(daemon_exe, what, n, SEEDED, async |client, i| {
        let which = if spread {
            crate::keyhaven::spread(0, i as u64, SEEDED)
        } else {
            0
        };
        client.retrieve(&key(which)).await.map(drop)
    })
}

/// Server instructions per Store, each Store alone (one client, so no
/// group commit).
fn store(daemon_exe: &Path, n: usize) -> Result<f64> {
    daemon_per_request(daemon_exe, "store", n, 0, async |client, i| {
        let secret = keyhaven::Secret::from(format!("token-{i:020}"));
        client
            .store(&key(i % 64), secret, StoreOptions::default())
            .await
            .map(drop)
    })
}

/// Server instructions per tonic Echo (the floor), measured the same way.
fn echo(me: &Path, n: usize) -> Result<f64> {
    let dir = tempfile::Builder::new().prefix("kh-bench-ir").tempdir()?;
    let socket = dir.path().join("echo.sock");
    let out = dir.path().join("callgrind.out");
    let server = Server::start_under(&callgrind(&out), me, "tonic-echo", &socket, None, PATIENCE)?;
    let rt = client_runtime()?;
    let channel = rt.block_on(crate::floors::echo_channel(&socket))?;
    per_request(server.pid(), &out, "tonic_echo", n, |_, count| {
        rt.block_on(async {
            for _ in 0..count {
                crate::floors::echo_once(channel.clone()).await?;
            }
            Ok::<_, anyhow::Error>(())
        })
    })
}

/// Instructions per Echo, Retrieve and Store, and the Retrieve ratio.
pub fn run(plan: &Plan, me: &Path, daemon: &Path, report: &mut Report) -> Result<()> {
    if !have_valgrind() {
        report.skip(
            "instructions: valgrind (with callgrind_control) is not installed; \
             apt-get install valgrind"
                .to_owned(),
        );
        return Ok(());
    }
    let n = if plan.quick { 50 } else { 2000 };
    let echo = echo(me, n)?;
    report.add_scalar(
        "instructions_tonic_echo",
        echo,
        "instructions/op",
        "server side, callgrind: a tonic Echo of 100 bytes on one connection",
    );
    let spread = retrieve(daemon, n, true)?;
    report.add_scalar(
        "instructions_retrieve",
        spread,
        "instructions/op",
        "server side, callgrind: a Retrieve of a well-spread one of 1,000 credentials on one \
         connection, its own audit record included",
    );
    let same = retrieve(daemon, n, false)?;
    report.add_scalar(
        "instructions_retrieve_same",
        same,
        "instructions/op",
        "server side, callgrind: a Retrieve of one credential again and again on one \
         connection (the audit log folds the reads of a batch into one record)",
    );
    report.add_scalar(
        "instructions_retrieve_ratio",
        spread / echo,
        "x",
        "Retrieve instructions / tonic Echo instructions, server side (well-spread credentials)",
    );
    report.add_scalar(
        "instructions_retrieve_same_ratio",
        same / echo,
        "x",
        "Retrieve instructions / tonic Echo instructions, server side (one credential again and \
         again)",
    );
    let store = store(daemon, n.min(500))?;
    report.add_scalar(
        "instructions_store",
        store,
        "instructions/op",
        "server side, callgrind: a Store alone on one connection (its own commit)",
    );
    Ok(())
}
