//! The targets, checked against the figures of this run. A target
//! whose figures were not measured (a section left out) is not listed.

use crate::report::{Report, Target};
use crate::stats::Placement;

fn push(
    report: &mut Report,
    goal: &str,
    measured: f64,
    bound: f64,
    at_least: bool,
    detail: String,
) {
    let met = if at_least {
        measured >= bound
    } else {
        measured <= bound
    };
    report.targets.push(Target {
        goal: goal.to_owned(),
        measured,
        bound,
        at_least,
        met,
        detail,
    });
}

/// Adds every target whose figures are in `report`.
pub fn check(report: &mut Report) {
    let mut found = Vec::new();
    if let (Some(r), Some(echo)) = (report.get("retrieve"), report.get("tonic_echo")) {
        for placement in Placement::ALL {
            if let (Some(a), Some(b)) = (r.at(placement), echo.at(placement)) {
                found.push((
                    format!("Retrieve p50 / tonic echo p50, {}", placement.label()),
                    a.p50_us / b.p50_us,
                    1.2,
                    false,
                    format!("{:.1} µs vs {:.1} µs", a.p50_us, b.p50_us),
                ));
            }
        }
        if let (Some(a), Some(b)) = (r.with_clients(32), echo.with_clients(32)) {
            found.push((
                "Retrieve ops/s / tonic echo ops/s, 32 clients".to_owned(),
                a.ops_per_s / b.ops_per_s,
                0.9,
                true,
                format!("{:.0}/s vs {:.0}/s", a.ops_per_s, b.ops_per_s),
            ));
        }
    }
    if let (Some(r), Some(echo)) = (report.get("retrieve_bare"), report.get("tonic_echo_bare"))
        && let (Some(a), Some(b)) = (r.with_clients(32), echo.with_clients(32))
    {
        found.push((
            "Retrieve ops/s / tonic echo ops/s, 32 clients, bare stubs, thread per client"
                .to_owned(),
            a.ops_per_s / b.ops_per_s,
            0.9,
            true,
            format!("{:.0}/s vs {:.0}/s", a.ops_per_s, b.ops_per_s),
        ));
    }
    if let (Some(s), Some(floor)) = (report.get("store"), report.get("sqlite_upsert_fsync")) {
        // The single-writer fsync floor: the best the floor reached at any
        // client count (its writers serialize on the one write lock).
        let best = floor
            .throughput
            .iter()
            .map(|p| p.summary.ops_per_s)
            .fold(0.0, f64::max);
        if let Some(a) = s.with_clients(32)
            && best > 0.0
        {
            found.push((
                "Store ops/s at 32 clients / single-writer fsync floor".to_owned(),
                a.ops_per_s / best,
                2.0,
                true,
                format!("{:.0}/s vs {:.0}/s", a.ops_per_s, best),
            ));
        }
    }
    // Both reads: a well-spread one of 1,000 credentials (each read its own
    // audit row), and an app reading its one credential again and again.
    for (ratio, count, what) in [
        (
            "instructions_retrieve_ratio",
            "instructions_retrieve",
            "well-spread credentials",
        ),
        (
            "instructions_retrieve_same_ratio",
            "instructions_retrieve_same",
            "one credential again and again",
        ),
    ] {
        if let Some(v) = report.scalar(ratio) {
            found.push((
                format!("Retrieve / tonic echo, server instructions (callgrind), {what}"),
                v,
                1.2,
                false,
                format!(
                    "{:.0} vs {:.0} instructions per request",
                    report.scalar(count).unwrap_or(0.0),
                    report.scalar("instructions_tonic_echo").unwrap_or(0.0)
                ),
            ));
        }
    }
    if let Some(v) = report.scalar("cold_start_ms") {
        found.push((
            "cold start, ms".to_owned(),
            v,
            20.0,
            false,
            "exec to first answered Status, existing store".to_owned(),
        ));
    }
    if let Some(v) = report.scalar("idle_rss_mib") {
        found.push((
            "idle RSS, MiB".to_owned(),
            v,
            10.0,
            false,
            "VmRSS after start, 1,000 stores and 2.5 s without a connection".to_owned(),
        ));
    }
    let scales: Vec<(usize, f64)> = report
        .measurements
        .iter()
        .filter_map(|m| {
            let n = m.name.strip_prefix("retrieve_at_")?.parse().ok()?;
            Some((n, m.at(Placement::SameCpu)?.p50_us))
        })
        .collect();
    if let (Some(small), Some(large)) = (
        scales.iter().min_by_key(|(n, _)| *n),
        scales.iter().max_by_key(|(n, _)| *n),
    ) && large.0 > small.0
    {
        found.push((
            format!("Retrieve p50 at {} / at {} credentials", large.0, small.0),
            large.1 / small.1,
            1.2,
            false,
            format!("{:.1} µs vs {:.1} µs", large.1, small.1),
        ));
    }
    for (goal, measured, bound, at_least, detail) in found {
        push(report, &goal, measured, bound, at_least, detail);
    }
}

/// Replaces the measured value of each target with its median over
/// `runs` (the repetitions of the floors and operations), saying the range.
pub fn use_medians(report: &mut Report, runs: &[Report]) {
    if runs.len() < 2 {
        return;
    }
    for t in &mut report.targets {
        let mut values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.targets.iter().find(|x| x.goal == t.goal))
            .map(|x| x.measured)
            .collect();
        if values.len() < 2 {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let median = values[values.len() / 2];
        t.detail = format!(
            "median of {} runs, range {:.2}–{:.2}; last run: {}",
            values.len(),
            values[0],
            values[values.len() - 1],
            t.detail
        );
        t.measured = median;
        t.met = if t.at_least {
            median >= t.bound
        } else {
            median <= t.bound
        };
    }
}

/// Warns when a floor moved between repetitions: a floor that got much
/// slower means something else took the machine, and ratios to it mean
/// little.
pub fn check_floors(report: &mut Report, runs: &[Report]) {
    const MOVED: f64 = 1.5;
    for floor in [
        "raw_echo",
        "tonic_echo",
        "sqlite_upsert_fsync",
        "tonic_echo_bare",
    ] {
        let p50: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get(floor)?.at(Placement::SameCpu).map(|s| s.p50_us))
            .collect();
        let ops: Vec<f64> = runs
            .iter()
            .filter_map(|r| Some(r.get(floor)?.throughput.last()?.summary.ops_per_s))
            .collect();
        for (what, values) in [("p50 latency", p50), ("throughput", ops)] {
            let (min, max) = values
                .iter()
                .fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            if values.len() >= 2 && min > 0.0 && max / min > MOVED {
                report.warn(format!(
                    "the {floor} floor's {what} moved {:.1}x between repetitions ({min:.1} to \
                     {max:.1}): the machine was busy; ratios from this run are unreliable",
                    max / min
                ));
            }
        }
    }
}
