//! Resource arithmetic as the scheduler sees it: quantities parsed into integers (CPU in
//! millicores, everything else in units), a pod's effective requests (containers summed,
//! init containers by the max rule with sidecars kept running, overhead added) and the
//! non-zero requests used for scoring.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The CPU a container without a CPU request counts as when scoring (upstream: 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a container without a memory request counts as when scoring (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// The value of a quantity times 1000, rounded up; `None` when it does not parse.
pub fn parse_milli(quantity: &str) -> Option<i128> {
    let text = quantity.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (negative, digits) = match number.as_bytes().first() {
        Some(b'-') => (true, &number[1..]),
        Some(b'+') => (false, &number[1..]),
        _ => (false, number),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut numerator: i128 = 0;
    for c in whole.chars().chain(fraction.chars()) {
        numerator = numerator
            .checked_mul(10)?
            .checked_add(c.to_digit(10)? as i128)?;
    }
    let mut exponent: i32 = -(fraction.len() as i32);
    let mut multiplier: i128 = 1;
    match suffix {
        "" => {}
        "Ki" => multiplier = 1 << 10,
        "Mi" => multiplier = 1 << 20,
        "Gi" => multiplier = 1 << 30,
        "Ti" => multiplier = 1 << 40,
        "Pi" => multiplier = 1 << 50,
        "Ei" => multiplier = 1 << 60,
        "n" => exponent -= 9,
        "u" => exponent -= 6,
        "m" => exponent -= 3,
        "k" => exponent += 3,
        "M" => exponent += 6,
        "G" => exponent += 9,
        "T" => exponent += 12,
        "P" => exponent += 15,
        "E" => exponent += 18,
        other => {
            let rest = other.strip_prefix(['e', 'E'])?;
            exponent += rest.parse::<i32>().ok()?;
        }
    }
    // Milli-units: one more factor of 10^3.
    exponent += 3;
    let mut value = numerator.checked_mul(multiplier)?;
    if exponent >= 0 {
        value = value.checked_mul(10i128.checked_pow(exponent as u32)?)?;
    } else {
        let divisor = 10i128.checked_pow((-exponent) as u32)?;
        // Rounded up, as resource.Quantity's MilliValue / Value do.
        value = (value + divisor - 1) / divisor;
    }
    Some(if negative { -value } else { value })
}

/// A quantity in the unit the scheduler keeps for `resource`: millicores for CPU, units
/// (rounded up) for the rest; unparsable quantities count as 0.
pub fn amount(resource: &str, quantity: &Quantity) -> i64 {
    let milli = parse_milli(&quantity.0).unwrap_or(0);
    let value = if resource == "cpu" {
        milli
    } else {
        (milli + 999).div_euclid(1000)
    };
    value.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// An amount of each resource: a node's allocatable or requested, or a pod's requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// The pod count a node allows (allocatable only).
    pub allowed_pods: i64,
    /// Extended resources, hugepages and the other scalar resources.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a resource list (`requests`, `allocatable`, `overhead`).
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut resources = Resources::default();
        for (name, quantity) in list {
            resources.set(name, amount(name, quantity));
        }
        resources
    }

    fn set(&mut self, name: &str, value: i64) {
        match name {
            "cpu" => self.milli_cpu = value,
            "memory" => self.memory = value,
            "ephemeral-storage" => self.ephemeral_storage = value,
            "pods" => self.allowed_pods = value,
            _ => {
                self.scalar.insert(name.to_string(), value);
            }
        }
    }

    /// Adds `other` to these amounts.
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.allowed_pods += other.allowed_pods;
        for (name, value) in &other.scalar {
            *self.scalar.entry(name.clone()).or_default() += value;
        }
    }

    /// Subtracts `other` from these amounts.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.allowed_pods -= other.allowed_pods;
        for (name, value) in &other.scalar {
            *self.scalar.entry(name.clone()).or_default() -= value;
        }
    }

    /// Raises each amount to `other`'s where that is larger.
    pub fn max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.allowed_pods = self.allowed_pods.max(other.allowed_pods);
        for (name, value) in &other.scalar {
            let entry = self.scalar.entry(name.clone()).or_default();
            *entry = (*entry).max(*value);
        }
    }

    /// Whether nothing is requested.
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

fn container_requests(container: &Container, non_zero: bool) -> Resources {
    let list = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref());
    let mut resources = list.map(Resources::from_list).unwrap_or_default();
    if non_zero {
        // Missing (not zero) requests count as the defaults, as upstream's
        // NonMissingContainerRequests does.
        let has = |name: &str| list.is_some_and(|l| l.contains_key(name));
        if !has("cpu") {
            resources.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !has("memory") {
            resources.memory = DEFAULT_MEMORY_REQUEST;
        }
    }
    resources
}

/// A pod's effective requests: regular containers and running sidecars summed, each init
/// container's need (plus the sidecars started before it) taken by the max rule, then the
/// overhead. With `non_zero`, missing CPU / memory requests count as the scoring defaults.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut requests = Resources::default();
    for container in &spec.containers {
        requests.add(&container_requests(container, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init = Resources::default();
    for container in spec.init_containers.iter().flatten() {
        let own = container_requests(container, non_zero);
        let need = if container.restart_policy.as_deref() == Some("Always") {
            requests.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut need = own;
            need.add(&sidecars);
            need
        };
        init.max(&need);
    }
    requests.max(&init);
    if let Some(overhead) = spec.overhead.as_ref() {
        requests.add(&Resources::from_list(overhead));
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        match serde_json::from_value(value) {
            Ok(pod) => pod,
            Err(error) => panic!("pod: {error}"),
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("2"), Some(2000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("1Ki"), Some(1_024_000));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("1k"), Some(1_000_000));
        assert_eq!(parse_milli("1n"), Some(1));
        assert_eq!(parse_milli("x"), None);
        assert_eq!(amount("memory", &Quantity("16Gi".into())), 17_179_869_184);
        assert_eq!(amount("cpu", &Quantity("250m".into())), 250);
        assert_eq!(amount("memory", &Quantity("1500m".into())), 2);
    }

    #[test]
    fn init_containers_sidecars_and_overhead() {
        let pod = pod(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "200m"}}},
                ],
                "initContainers": [
                    {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
                    {"name": "big", "resources": {"requests": {"cpu": "1", "example.com/gpu": "2"}}},
                ],
                "overhead": {"cpu": "10m"},
            },
        }));
        let requests = pod_requests(&pod, false);
        // max(100+200+50, 1000+50) + 10
        assert_eq!(requests.milli_cpu, 1060);
        assert_eq!(requests.memory, 100 * 1024 * 1024);
        assert_eq!(requests.scalar.get("example.com/gpu"), Some(&2));
        let non_zero = pod_requests(&pod, true);
        // b and both init containers get the 200Mi default: max(100Mi+200Mi+200Mi, 200Mi+200Mi).
        assert_eq!(non_zero.memory, 500 * 1024 * 1024);
    }
}
