//! cpu.shares → cpu.weight: the corrected conversion both the runtime and the agent use.

/// Smallest `cpu.shares` the kernel accepts on cgroup v1.
const MIN_SHARES: u64 = 2;
/// Largest `cpu.shares` the kernel accepts on cgroup v1.
const MAX_SHARES: u64 = 262_144;
/// Largest `cpu.weight` on cgroup v2 (the smallest is 1).
const MAX_WEIGHT: u64 = 10_000;

/// Converts cgroup v1 `cpu.shares` into cgroup v2 `cpu.weight` with the corrected mapping of
/// runc #4785.
///
/// The old linear mapping sent the default 1024 shares to weight 39 instead of the kernel's
/// default 100, so a container asking for "one CPU" ran at a disadvantage against everything
/// else on the host. The corrected mapping is a quadratic in log2 space that sends the three
/// anchors to their counterparts exactly: 2 → 1, 1024 → 100, 262144 → 10000. `0` means "unset"
/// and stays `0`; values outside the v1 range are clamped to the v2 range.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    if shares <= MIN_SHARES {
        return 1;
    }
    if shares >= MAX_SHARES {
        return MAX_WEIGHT;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    // Rounding up keeps every non-zero share count at weight ≥ 1 and keeps 1024 at exactly 100
    // even if pow() lands a hair above the integer.
    let weight = 10f64.powf(exponent).ceil() as u64;
    weight.clamp(1, MAX_WEIGHT)
}

#[cfg(test)]
mod tests {
    use super::cpu_shares_to_weight;

    #[test]
    fn unset_stays_unset() {
        assert_eq!(cpu_shares_to_weight(0), 0);
    }

    #[test]
    fn anchors_map_exactly() {
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 100);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn below_and_above_the_v1_range_clamp() {
        assert_eq!(cpu_shares_to_weight(1), 1);
        assert_eq!(cpu_shares_to_weight(262_145), 10_000);
        assert_eq!(cpu_shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn just_inside_the_range() {
        // 3 shares is the first value past the floor; it must not round down to 0 or up past 1.
        assert_eq!(cpu_shares_to_weight(3), 2);
        assert_eq!(cpu_shares_to_weight(262_143), 10_000);
    }

    #[test]
    fn common_kubernetes_values() {
        // 100m CPU → 102 shares; 500m → 512; 2 CPUs → 2048.
        assert_eq!(cpu_shares_to_weight(102), 17);
        assert_eq!(cpu_shares_to_weight(512), 59);
        assert_eq!(cpu_shares_to_weight(2048), 174);
    }

    #[test]
    fn monotonic_over_the_whole_range() {
        let mut last = 0;
        for shares in 2..=262_144u64 {
            let w = cpu_shares_to_weight(shares);
            assert!(w >= last, "weight fell at {shares}: {w} < {last}");
            assert!((1..=10_000).contains(&w));
            last = w;
        }
    }
}
