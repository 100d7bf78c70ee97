//! What a CronJob should do now, from its spec and status and the clock: nothing, create the
//! Job of a schedule time (replacing the running ones first, or not), or report a missed or
//! forbidden run; and when to look again (the next schedule time, not a polling interval).

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus};

use super::schedule::Schedule;

/// Upstream reports a CronJob that missed more start times than this.
const TOO_MANY_MISSED: usize = 100;

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Create the Job of this schedule time.
    pub run: Option<Timestamp>,
    /// Delete the active Jobs first (concurrencyPolicy Replace).
    pub replace: bool,
    /// An event to record: (type, reason, message).
    pub event: Option<(&'static str, &'static str, String)>,
    /// Sync again after this long.
    pub requeue: Option<Duration>,
}

/// The Job name for a schedule time: the CronJob's name and the minutes since the epoch.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// Decides for the CronJob `name` created at `created`, at `now`.
pub fn plan(
    name: &str,
    spec: &CronJobSpec,
    status: &CronJobStatus,
    created: Timestamp,
    now: Timestamp,
    schedule: &Schedule,
    zone: &TimeZone,
) -> Plan {
    let mut plan = Plan::default();
    if spec.suspend == Some(true) {
        return plan;
    }
    // Upstream requeues 100 ms after the next schedule time, to be past it for sure.
    plan.requeue = schedule.next(now, zone).map(|next| {
        Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO)
            + Duration::from_millis(100)
    });
    let mut earliest = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let from = now - jiff::SignedDuration::from_secs(deadline);
        earliest = earliest.max(from);
    }
    let Some((scheduled, missed)) = most_recent(schedule, zone, earliest, now) else {
        return plan;
    };
    if missed > TOO_MANY_MISSED {
        plan.event = Some((
            "Warning",
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        ));
    }
    if let Some(deadline) = spec.starting_deadline_seconds {
        if scheduled + jiff::SignedDuration::from_secs(deadline) < now {
            let at = scheduled.strftime("%a, %d %b %Y %H:%M:%S %z").to_string();
            plan.event = Some((
                "Warning",
                "MissSchedule",
                format!("Missed scheduled time to start a job: {at}"),
            ));
            return plan;
        }
    }
    let active = status.active.as_deref().unwrap_or_default();
    let wanted = job_name(name, scheduled);
    let done = active.iter().any(|r| r.name.as_deref() == Some(&wanted))
        || status.last_schedule_time.as_ref().map(|t| t.0) == Some(scheduled);
    if done {
        return plan;
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            plan.event = Some((
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            ));
            return plan;
        }
        Some("Replace") => plan.replace = !active.is_empty(),
        _ => {}
    }
    plan.run = Some(scheduled);
    plan
}

/// The latest schedule time in `(earliest, now]` and how many there were (capped: counting
/// stops once the count is past upstream's warning threshold).
fn most_recent(
    schedule: &Schedule,
    zone: &TimeZone,
    earliest: Timestamp,
    now: Timestamp,
) -> Option<(Timestamp, usize)> {
    let mut count = 0;
    let mut latest = None;
    let mut at = earliest;
    while let Some(next) = schedule.next(at, zone) {
        if next > now {
            return latest.map(|t| (t, count));
        }
        count += 1;
        latest = Some(next);
        at = next;
        if count > TOO_MANY_MISSED {
            // Far behind: find the latest from windows ending now, widening until one has it.
            for window in [3_600, 86_400, 32 * 86_400, 367 * 86_400, 5 * 367 * 86_400] {
                let from = (now - jiff::SignedDuration::from_secs(window)).max(at);
                let mut probe = from;
                let mut found = None;
                while let Some(next) = schedule.next(probe, zone) {
                    if next > now {
                        break;
                    }
                    found = Some(next);
                    probe = next;
                }
                if let Some(found) = found {
                    return Some((found, count));
                }
            }
            return latest.map(|t| (t, count));
        }
    }
    latest.map(|t| (t, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cronjob::schedule::parse;
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn spec(policy: &str) -> CronJobSpec {
        CronJobSpec {
            schedule: "*/5 * * * *".into(),
            concurrency_policy: Some(policy.into()),
            ..CronJobSpec::default()
        }
    }

    fn decide(spec: &CronJobSpec, status: &CronJobStatus, now: &str) -> Plan {
        let schedule = parse(&spec.schedule).unwrap_or(Schedule::Every(Duration::ZERO));
        plan(
            "c",
            spec,
            status,
            ts("2026-03-01T10:00:00Z"),
            ts(now),
            &schedule,
            &TimeZone::UTC,
        )
    }

    fn active(name: &str) -> CronJobStatus {
        CronJobStatus {
            active: Some(vec![ObjectReference {
                name: Some(name.into()),
                ..ObjectReference::default()
            }]),
            last_schedule_time: Some(Time(ts("2026-03-01T10:05:00Z"))),
            ..CronJobStatus::default()
        }
    }

    #[test]
    fn runs_the_latest_missed_time_and_requeues_at_the_next() {
        let plan = decide(
            &spec("Allow"),
            &CronJobStatus::default(),
            "2026-03-01T10:11:00Z",
        );
        assert_eq!(plan.run, Some(ts("2026-03-01T10:10:00Z")));
        assert_eq!(plan.requeue, Some(Duration::from_millis(240_100)));
        assert_eq!(job_name("c", ts("2026-03-01T10:10:00Z")), "c-29539330");
        // Before the first schedule time: nothing, requeued at it.
        let plan = decide(
            &spec("Allow"),
            &CronJobStatus::default(),
            "2026-03-01T10:04:00Z",
        );
        assert_eq!(plan.run, None);
        assert_eq!(plan.requeue, Some(Duration::from_millis(60_100)));
        // Already run for that time.
        let plan = decide(
            &spec("Allow"),
            &active("c-29539325"),
            "2026-03-01T10:06:00Z",
        );
        assert_eq!(plan.run, None);
    }

    #[test]
    fn concurrency_policies() {
        let now = "2026-03-01T10:10:30Z";
        let plan = decide(&spec("Allow"), &active("c-29539325"), now);
        assert_eq!((plan.run.is_some(), plan.replace), (true, false));
        let plan = decide(&spec("Forbid"), &active("c-29539325"), now);
        assert_eq!(plan.run, None);
        assert_eq!(plan.event.map(|e| e.1), Some("JobAlreadyActive"));
        let plan = decide(&spec("Replace"), &active("c-29539325"), now);
        assert_eq!((plan.run.is_some(), plan.replace), (true, true));
    }

    #[test]
    fn starting_deadline_and_suspend() {
        let mut late = spec("Allow");
        late.starting_deadline_seconds = Some(10);
        // 10:10 is more than 10 s ago: skipped (the window starts at now - deadline).
        let plan = decide(&late, &CronJobStatus::default(), "2026-03-01T10:10:30Z");
        assert_eq!(plan.run, None);
        assert_eq!(plan.event, None);
        let plan = decide(&late, &CronJobStatus::default(), "2026-03-01T10:10:05Z");
        assert_eq!(plan.run, Some(ts("2026-03-01T10:10:00Z")));
        let mut suspended = spec("Allow");
        suspended.suspend = Some(true);
        assert_eq!(
            decide(
                &suspended,
                &CronJobStatus::default(),
                "2026-03-01T10:11:00Z"
            ),
            Plan::default()
        );
    }

    #[test]
    fn far_behind_still_finds_the_latest_time() {
        let mut every_minute = spec("Allow");
        every_minute.schedule = "* * * * *".into();
        let plan = decide(
            &every_minute,
            &CronJobStatus::default(),
            "2026-03-09T10:10:30Z",
        );
        assert_eq!(plan.run, Some(ts("2026-03-09T10:10:00Z")));
        assert_eq!(plan.event.map(|e| e.1), Some("TooManyMissedTimes"));
    }
}
