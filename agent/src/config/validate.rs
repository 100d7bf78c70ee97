//! Checks that involve several fields or the final values, run after the file and the flags, so
//! that whatever set a value, a wrong combination stops the start with the field named.

use std::time::Duration;

use super::duration::format_duration;
use super::{AgentConfig, ConfigError};

/// The first thing wrong with `c`, if any; `origin` names where the values came from.
pub(super) fn validate(c: &AgentConfig, origin: &str) -> Result<(), ConfigError> {
    let invalid = |field: &str, reason: String| Err(ConfigError::invalid(origin, field, reason));
    if let Some(reason) = crate::names::dns1123_subdomain_error(&c.node_name) {
        return invalid(
            "nodeName",
            format!("Invalid value: {:?}: {reason}", c.node_name),
        );
    }
    if c.image_gc_low_threshold_percent >= c.image_gc_high_threshold_percent {
        return invalid(
            "imageGCLowThresholdPercent",
            format!(
                "{} must be below imageGCHighThresholdPercent ({})",
                c.image_gc_low_threshold_percent, c.image_gc_high_threshold_percent
            ),
        );
    }
    if !c.image_maximum_gc_age.is_zero() && c.image_maximum_gc_age <= c.image_minimum_gc_age {
        return invalid(
            "imageMaximumGCAge",
            format!(
                "{} must be above imageMinimumGCAge ({})",
                format_duration(c.image_maximum_gc_age),
                format_duration(c.image_minimum_gc_age)
            ),
        );
    }
    if c.serialize_image_pulls && c.max_parallel_image_pulls.is_some_and(|n| n > 1) {
        return invalid(
            "maxParallelImagePulls",
            format!(
                "{} must be 1 or unset while serializeImagePulls is true",
                c.max_parallel_image_pulls.unwrap_or_default()
            ),
        );
    }
    if c.container_log_max_files < 2 {
        return invalid(
            "containerLogMaxFiles",
            format!("{} must be at least 2", c.container_log_max_files),
        );
    }
    if c.container_log_max_size < 1024 {
        return invalid(
            "containerLogMaxSize",
            format!(
                "{} bytes is below the 1Ki minimum",
                c.container_log_max_size
            ),
        );
    }
    for (field, value) in [
        ("fileCheckFrequency", c.file_check_frequency),
        ("syncFrequency", c.sync_frequency),
        ("runtimeRequestTimeout", c.runtime_request_timeout),
        ("nodeStatusUpdateFrequency", c.node_status_update_frequency),
        ("nodeStatusReportFrequency", c.node_status_report_frequency),
    ] {
        // Intervals that drive loops: zero would spin.
        if value < Duration::from_millis(1) {
            return invalid(field, format!("{} must be above 0", format_duration(value)));
        }
    }
    if c.shutdown_grace_period_critical_pods > c.shutdown_grace_period {
        return invalid(
            "shutdownGracePeriodCriticalPods",
            format!(
                "{} must not exceed shutdownGracePeriod ({})",
                format_duration(c.shutdown_grace_period_critical_pods),
                format_duration(c.shutdown_grace_period)
            ),
        );
    }
    if !(c.memory_throttling_factor > 0.0 && c.memory_throttling_factor <= 1.0) {
        return invalid(
            "memoryThrottlingFactor",
            format!(
                "{} must be above 0 and at most 1",
                c.memory_throttling_factor
            ),
        );
    }
    if c.eviction_max_pod_grace_period < 0 {
        return invalid(
            "evictionMaxPodGracePeriod",
            format!("{} must not be negative", c.eviction_max_pod_grace_period),
        );
    }
    if c.root_dir.is_relative() {
        return invalid(
            "--root-dir",
            format!("{} must be an absolute path", c.root_dir.display()),
        );
    }
    Ok(())
}
