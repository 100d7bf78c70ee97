use std::fs;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::source::{PodConfig, PodSetUpdate};

fn manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: main\n    image: {image}\n"
    )
}

#[test]
fn manifest_names() {
    assert!(is_manifest_name("web.yaml"));
    assert!(is_manifest_name("web.yml"));
    assert!(is_manifest_name("web.json"));
    for skipped in [
        ".web.yaml",
        ".web.yaml.swp",
        "web.yaml~",
        "web.yaml.bak",
        "README",
        "4913",
        "web",
    ] {
        assert!(!is_manifest_name(skipped), "{skipped}");
    }
}

#[test]
fn scan_reads_each_manifest_once_and_reports_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("a-web.yaml"), manifest("web", "nginx:1.27")).unwrap();
    fs::write(
        d.join("b-db.json"),
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"db"},"spec":{"containers":[{"name":"db","image":"postgres:16","imagePulPolicy":"Never"}]}}"#,
    )
    .unwrap();
    fs::write(d.join("c-bad.yaml"), manifest("bad", "''")).unwrap();
    fs::write(d.join("d-web-again.yml"), manifest("web", "nginx:1.28")).unwrap();
    fs::write(d.join(".hidden.yaml"), manifest("hidden", "x")).unwrap();
    fs::write(d.join("notes.txt"), "not a manifest").unwrap();
    fs::create_dir(d.join("sub.yaml")).unwrap();
    let update = FileSource::new(d, "node1").scan().expect("scan");
    let names: Vec<_> = update
        .pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["web-node1", "db-node1"]);
    let warnings: Vec<String> = update.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [format!(
            "{}: spec.containers[0].imagePulPolicy: unknown field; ignored",
            d.join("b-db.json").display()
        )]
    );
    let errors: Vec<String> = update.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            format!(
                "{}: spec.containers[0].image: Required value",
                d.join("c-bad.yaml").display()
            ),
            format!(
                "{}: metadata.name: Duplicate value: \"default/web-node1\": already defined by {}",
                d.join("d-web-again.yml").display(),
                d.join("a-web.yaml").display()
            ),
        ]
    );
}

#[test]
fn a_missing_directory_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let update = FileSource::new(dir.path().join("nope"), "n")
        .scan()
        .expect("no error");
    assert!(update.pods.is_empty() && update.errors.is_empty());
}

/// A file source on `dir` feeding a merger; rescans only every hour, so that every update in
/// these tests comes from inotify.
fn start(dir: &Path, check: Duration) -> mpsc::Receiver<PodSetUpdate> {
    let (tx, rx) = mpsc::channel(16);
    FileSource::new(dir, "node1")
        .check_frequency(check)
        .spawn(tx);
    PodConfig::spawn([SourceName::File], rx)
}

async fn next(out: &mut mpsc::Receiver<PodSetUpdate>) -> PodSetUpdate {
    timeout(Duration::from_secs(5), out.recv())
        .await
        .expect("an update within 5s")
        .expect("the merger runs")
}

async fn nothing_more(out: &mut mpsc::Receiver<PodSetUpdate>) {
    if let Ok(Some(extra)) = timeout(Duration::from_millis(500), out.recv()).await {
        panic!("unexpected update: {:?}", extra.changes);
    }
}

#[tokio::test]
async fn inotify_drives_add_edit_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut out = start(d, Duration::from_secs(3600));
    let first = next(&mut out).await;
    assert!(first.pods.is_empty() && first.sources_ready);

    fs::write(d.join("web.yaml"), manifest("web", "nginx:1.27")).unwrap();
    let added = next(&mut out).await;
    assert_eq!(added.changes.added.len(), 1);
    let old_uid = added.changes.added[0].clone();
    assert_eq!(
        added.pods[&old_uid].pod.metadata.name.as_deref(),
        Some("web-node1")
    );
    nothing_more(&mut out).await;

    fs::write(d.join("web.yaml"), manifest("web", "nginx:1.28")).unwrap();
    let edited = next(&mut out).await;
    assert_eq!(edited.changes.removed, std::slice::from_ref(&old_uid));
    assert_eq!(edited.changes.added.len(), 1);
    assert_ne!(edited.changes.added[0], old_uid);
    let new_uid = edited.changes.added[0].clone();

    // An invalid file beside it: reported with file and field; the valid pod is untouched.
    fs::write(
        d.join("broken.yaml"),
        manifest("broken", "x").replace("image: x", "image: x\n    ports: [{containerPort: 0}]"),
    )
    .unwrap();
    let broken = next(&mut out).await;
    assert!(broken.changes.is_empty(), "{:?}", broken.changes);
    assert_eq!(broken.pods.keys().collect::<Vec<_>>(), [&new_uid]);
    assert_eq!(broken.errors.len(), 1);
    assert_eq!(broken.errors[0].file, d.join("broken.yaml"));
    assert_eq!(
        broken.errors[0].field,
        "spec.containers[0].ports[0].containerPort"
    );
    assert_eq!(
        broken.errors[0].reason,
        "Invalid value: 0: must be between 1 and 65535, inclusive"
    );

    fs::remove_file(d.join("broken.yaml")).unwrap();
    assert!(next(&mut out).await.errors.is_empty());
    fs::remove_file(d.join("web.yaml")).unwrap();
    let removed = next(&mut out).await;
    assert_eq!(removed.changes.removed, [new_uid]);
    assert!(removed.pods.is_empty());
}

#[tokio::test]
async fn an_editors_write_and_rename_is_one_update() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::write(d.join("web.yaml"), manifest("web", "nginx:1.27")).unwrap();
    let mut out = start(d, Duration::from_secs(3600));
    let first = next(&mut out).await;
    let old_uid = first.changes.added[0].clone();

    // What vim and most tools do: write a temporary file, then rename it over the original.
    fs::write(d.join(".web.yaml.swp"), manifest("web", "nginx:1.28")).unwrap();
    fs::rename(d.join(".web.yaml.swp"), d.join("web.yaml")).unwrap();
    let edited = next(&mut out).await;
    assert_eq!(edited.changes.removed, [old_uid]);
    assert_eq!(edited.changes.added.len(), 1);
    nothing_more(&mut out).await;
}

#[tokio::test]
async fn a_directory_created_later_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("manifests");
    let mut out = start(&d, Duration::from_millis(200));
    assert!(next(&mut out).await.pods.is_empty());
    fs::create_dir(&d).unwrap();
    fs::write(d.join("web.yaml"), manifest("web", "nginx:1.27")).unwrap();
    let added = next(&mut out).await;
    assert_eq!(added.changes.added.len(), 1);
    // Once watched, removing and recreating the directory keeps working.
    fs::remove_dir_all(&d).unwrap();
    assert_eq!(next(&mut out).await.changes.removed.len(), 1);
    fs::create_dir(&d).unwrap();
    fs::write(d.join("db.yaml"), manifest("db", "postgres:16")).unwrap();
    let again = next(&mut out).await;
    assert_eq!(again.changes.added.len(), 1);
}

#[tokio::test]
async fn a_half_written_manifest_does_not_drop_its_pod() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let text = manifest("web", "nginx:1.27");
    fs::write(d.join("web.yaml"), &text).unwrap();
    let mut out = start(d, Duration::from_secs(3600));
    let first = next(&mut out).await;
    assert_eq!(first.changes.added.len(), 1);
    // Rewritten in place in two steps, as a tool that truncates and then writes: the scan in
    // between sees a broken file, waits for it to settle, and then finds the same pod.
    fs::write(d.join("web.yaml"), &text[..20]).unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    fs::write(d.join("web.yaml"), &text).unwrap();
    nothing_more(&mut out).await;
    nothing_more(&mut out).await;
}
