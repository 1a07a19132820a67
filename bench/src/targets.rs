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
            "VmRSS after start and 1,000 stores".to_owned(),
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
