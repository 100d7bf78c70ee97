//! The Markdown table: one row per metric, Capstan, containerd + runc, and the ratio.

use serde_json::Value;

/// Renders the JSON results as a Markdown table.
pub fn markdown(results: &Value) -> String {
    let pods = results["pods"].as_u64().unwrap_or(0);
    let ours = &results["capstan"];
    let peer = &results["containerd_runc"];
    let mut rows: Vec<(String, f64, f64, &str)> = Vec::new();
    for (key, title) in [
        (
            "start_sequential",
            format!("pod start, {pods} one after another"),
        ),
        ("start_concurrent", format!("pod start, {pods} at once")),
        (
            "stop_remove",
            format!("pod stop + remove, {pods} one after another"),
        ),
    ] {
        for p in ["p50", "p90", "p99", "max"] {
            let field = format!("{p}_ms");
            rows.push((
                format!("{title}: {p}"),
                number(&ours[key][&field]),
                number(&peer[key][&field]),
                "ms",
            ));
        }
    }
    for (key, title) in [
        ("rss_idle_kib", "RSS, runtime processes, 0 pods".to_string()),
        (
            "rss_loaded_kib",
            format!("RSS, runtime processes, {pods} pods"),
        ),
        ("rss_per_pod_kib", "RSS per running pod".to_string()),
        ("pss_idle_kib", "PSS, runtime processes, 0 pods".to_string()),
        (
            "pss_loaded_kib",
            format!("PSS, runtime processes, {pods} pods"),
        ),
        ("pss_per_pod_kib", "PSS per running pod".to_string()),
    ] {
        rows.push((
            title,
            number(&ours[key]) / 1024.0,
            number(&peer[key]) / 1024.0,
            "MiB",
        ));
    }
    let mut table = format!(
        "Plugins: {} (both runtimes). Latencies over {pods} pods each; memory of daemon + pod \
         monitors (Capstan) or daemon + shims (containerd).\n\n\
         | metric | Capstan | containerd + runc | Capstan / peer |\n|---|---:|---:|---:|\n",
        results["plugins"].as_str().unwrap_or("?")
    );
    for (title, a, b, unit) in rows {
        table.push_str(&format!(
            "| {title} | {a:.2} {unit} | {b:.2} {unit} | {} |\n",
            ratio(a, b)
        ));
    }
    if let Some(cni) = results["cni"].as_object() {
        table.push_str(
            "\nCNI bridge + host-local, fresh network namespaces: Capstan's plugins against the \
             reference plugins\n\n| metric | Capstan | reference | Capstan / reference |\n\
             |---|---:|---:|---:|\n",
        );
        let names = ["ADD p50", "ADD p90", "DEL p50", "DEL p90"];
        for (i, name) in names.iter().enumerate() {
            let a = number(&cni["ours"][i]);
            let b = number(&cni["reference"][i]);
            table.push_str(&format!(
                "| CNI {name} | {a:.2} ms | {b:.2} ms | {} |\n",
                ratio(a, b)
            ));
        }
    }
    if let Some(oci) = results["oci"].as_object() {
        table.push_str(&oci_table(oci));
    }
    table
}

/// The OCI rows: libcontainer as the pod monitor drives it against the runc and crun CLIs.
fn oci_table(oci: &serde_json::Map<String, Value>) -> String {
    let iterations = oci.get("iterations").and_then(Value::as_u64).unwrap_or(0);
    let mut table = format!(
        "\nOCI create + start + wait + delete of one bundle (busybox `true`, new pid, net, ipc, \
         uts, mount and cgroup namespaces), {iterations} cycles each, the runtimes taking turns: \
         libcontainer in-process as Capstan's pod monitor runs it, against the runc and crun \
         command lines\n\n\
         | metric | Capstan (libcontainer) | runc | crun | Capstan / runc | Capstan / crun |\n\
         |---|---:|---:|---:|---:|---:|\n"
    );
    let side = |name: &str| oci.get(name).cloned().unwrap_or(Value::Null);
    let (ours, runc, crun) = (side("capstan_libcontainer"), side("runc"), side("crun"));
    let phases = [
        ("total", "create + start + wait + delete"),
        ("create", "create"),
        ("start", "start"),
        ("wait", "wait for exit"),
        ("delete", "delete"),
    ];
    for (key, title) in phases {
        let percentiles: &[&str] = if key == "total" {
            &["p50", "p90", "p99"]
        } else {
            &["p50"]
        };
        for p in percentiles {
            let field = format!("{p}_ms");
            let (a, b, c) = (
                number(&ours[key][&field]),
                number(&runc[key][&field]),
                number(&crun[key][&field]),
            );
            table.push_str(&format!(
                "| OCI {title}: {p} | {a:.2} ms | {b:.2} ms | {c:.2} ms | {} | {} |\n",
                ratio(a, b),
                ratio(a, c)
            ));
        }
    }
    table
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

#[cfg(test)]
mod tests {
    use super::markdown;
    use serde_json::json;

    #[test]
    fn table_has_a_ratio_per_metric() {
        let side = |ms: f64, kib: u64| {
            let d = json!({"p50_ms": ms, "p90_ms": ms, "p99_ms": ms, "max_ms": ms});
            json!({"start_sequential": d, "start_concurrent": d, "stop_remove": d,
                   "rss_idle_kib": kib, "rss_loaded_kib": kib * 2, "rss_per_pod_kib": kib,
                   "pss_idle_kib": kib, "pss_loaded_kib": kib * 2, "pss_per_pod_kib": 0})
        };
        let results = json!({"pods": 2, "plugins": "capstan", "capstan": side(10.0, 1024),
                             "containerd_runc": side(40.0, 4096), "cni": null});
        let table = markdown(&results);
        assert!(
            table.contains("| pod start, 2 one after another: p50 | 10.00 ms | 40.00 ms | 0.25 |"),
            "{table}"
        );
        assert!(
            table.contains("| RSS, runtime processes, 0 pods | 1.00 MiB | 4.00 MiB | 0.25 |"),
            "{table}"
        );
        assert!(
            table.contains("| PSS per running pod | 0.00 MiB | 0.00 MiB | n/a |"),
            "{table}"
        );
        assert!(!table.contains("CNI ADD"));
        assert!(!table.contains("OCI"));
    }

    #[test]
    fn oci_rows_compare_with_runc_and_crun() {
        let cycle = |ms: f64| {
            let d = json!({"p50_ms": ms, "p90_ms": ms, "p99_ms": ms, "max_ms": ms});
            json!({"total": d, "create": d, "start": d, "wait": d, "delete": d})
        };
        let results = json!({"pods": 1, "plugins": "capstan", "capstan": {}, "containerd_runc": {},
                             "cni": null, "oci": {"iterations": 3, "capstan_libcontainer": cycle(10.0),
                             "runc": cycle(40.0), "crun": cycle(20.0)}});
        let table = markdown(&results);
        assert!(
            table.contains(
                "| OCI create + start + wait + delete: p99 | 10.00 ms | 40.00 ms | 20.00 ms | 0.25 | 0.50 |"
            ),
            "{table}"
        );
    }
}
