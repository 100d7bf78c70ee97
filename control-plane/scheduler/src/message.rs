//! The failure message of a pod that fits no node, as upstream's `FitError` writes it: the
//! PreFilter rejection, or else the reasons counted over nodes, sorted as strings; then the
//! preemption outcome.

use std::collections::HashMap;

use crate::filters::Status;

/// `0/N nodes are available: <count> <reason>, ….` (or `0/N nodes are available: <pre_filter>.`
/// when PreFilter rejected the pod) followed by ` <post_filter>` if any.
pub fn fit_error<'a>(
    node_count: usize,
    statuses: impl IntoIterator<Item = &'a Status>,
    pre_filter: Option<&str>,
    post_filter: Option<&str>,
) -> String {
    if let Some(pre_filter) = pre_filter.filter(|p| !p.is_empty()) {
        // Every node carries the PreFilter status; upstream does not count it per node.
        let mut message = format!("0/{node_count} nodes are available: {pre_filter}.");
        if let Some(post) = post_filter.filter(|p| !p.is_empty()) {
            message.push(' ');
            message.push_str(post);
        }
        return message;
    }
    let mut histogram: HashMap<&str, usize> = HashMap::new();
    for status in statuses {
        for reason in &status.reasons {
            *histogram.entry(reason.as_str()).or_default() += 1;
        }
    }
    let mut reasons: Vec<String> = histogram
        .into_iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    // Upstream sorts the formatted strings, counts included ("10 …" before "2 …").
    reasons.sort();
    let mut message = format!("0/{node_count} nodes are available:");
    if !reasons.is_empty() {
        message.push_str(&format!(" {}.", reasons.join(", ")));
    }
    if let Some(post) = post_filter.filter(|p| !p.is_empty()) {
        // The preemption message carries its own full stop.
        message.push(' ');
        message.push_str(post);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::Code;

    #[test]
    fn upstream_form() {
        let cpu = Status::new(Code::UnschedulableAndUnresolvable, "Insufficient cpu");
        let taint = Status::new(
            Code::UnschedulableAndUnresolvable,
            "node(s) had untolerated taint {node.kubernetes.io/not-ready: }",
        );
        let preemption = fit_error(
            3,
            &[
                Status::new(
                    Code::UnschedulableAndUnresolvable,
                    "Preemption is not helpful for scheduling",
                ),
                Status::new(
                    Code::UnschedulableAndUnresolvable,
                    "Preemption is not helpful for scheduling",
                ),
                Status::new(
                    Code::UnschedulableAndUnresolvable,
                    "Preemption is not helpful for scheduling",
                ),
            ],
            None,
            None,
        );
        let message = fit_error(
            3,
            [&cpu, &taint, &taint],
            None,
            Some(&format!("preemption: {preemption}")),
        );
        assert_eq!(
            message,
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint \
             {node.kubernetes.io/not-ready: }. preemption: 0/3 nodes are available: 3 Preemption \
             is not helpful for scheduling."
        );
    }

    #[test]
    fn reasons_sort_as_strings() {
        let mut statuses = vec![Status::new(Code::Unschedulable, "b"); 2];
        statuses.extend(vec![Status::new(Code::Unschedulable, "a"); 10]);
        assert_eq!(
            fit_error(12, &statuses, None, None),
            "0/12 nodes are available: 10 a, 2 b."
        );
        assert_eq!(fit_error(0, &[], None, None), "0/0 nodes are available:");
    }

    #[test]
    fn pre_filter_rejection_replaces_the_counts() {
        let status = Status::new(Code::UnschedulableAndUnresolvable, "ignored");
        assert_eq!(
            fit_error(
                3,
                [&status],
                Some("pod has unbound immediate PersistentVolumeClaims"),
                Some(
                    "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
                ),
            ),
            "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
    }
}
