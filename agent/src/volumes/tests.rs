//! Volume tests against real directories and real tmpfs mounts (the tests run as root).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use capstan_proto::{KeyValue, MountPropagation};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use std::sync::Mutex;

use super::*;

fn pod(yaml: &str) -> Pod {
    serde_yaml_ng::from_str(yaml).expect("test pod parses")
}

#[derive(Default)]
struct Objects {
    config_maps: Mutex<BTreeMap<String, ConfigMap>>,
    secrets: BTreeMap<String, Secret>,
}

impl ObjectLookup for Objects {
    fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        self.config_maps
            .lock()
            .unwrap()
            .get(&format!("{ns}/{name}"))
            .cloned()
    }
    fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
        self.secrets.get(&format!("{ns}/{name}")).cloned()
    }
}

fn config_map(data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn objects() -> Objects {
    let o = Objects::default();
    o.config_maps.lock().unwrap().insert(
        "ns/settings".into(),
        config_map(&[("color", "blue"), ("size", "L")]),
    );
    let mut secrets = BTreeMap::new();
    secrets.insert(
        "ns/creds".to_string(),
        Secret {
            data: Some(BTreeMap::from([(
                "password".to_string(),
                ByteString(b"hunter2".to_vec()),
            )])),
            ..Default::default()
        },
    );
    Objects { secrets, ..o }
}

fn info() -> PodRuntimeInfo {
    PodRuntimeInfo {
        pod_ips: vec!["10.1.0.5".parse().unwrap()],
        host_ips: vec![],
        node_allocatable_cpu_millis: 2000,
        node_allocatable_memory_bytes: 1 << 30,
        node_allocatable_ephemeral_storage_bytes: 0,
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn tmpfs_size_kib(path: &Path) -> Option<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    text.lines()
        .find(|l| l.split(' ').nth(4) == Some(&p))
        .and_then(|l| {
            l.split(' ')
                .next_back()
                .and_then(|opts| opts.split(',').find(|o| o.starts_with("size=")))
                .map(|s| s.to_string())
        })
}

/// Tears the pod directory down even when an assertion fails, so no mount outlives a test.
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = teardown(&self.0);
    }
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().ino()
}

fn mounted_below(dir: &Path) -> usize {
    mount_table::mounts_below(dir).unwrap().len()
}

fn container(p: &Pod, i: usize) -> &Container {
    &p.spec.as_ref().unwrap().containers[i]
}

#[test]
fn empty_dirs_on_disk_and_tmpfs_are_gone_after_teardown() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let _guard = Guard(pod_dir.clone());
    let p = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers: [{name: a, image: x, resources: {limits: {memory: 64Mi}}}]
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: fast, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
  - {name: big, emptyDir: {medium: Memory}}
"#);
    let v = prepare(&p, &pod_dir, &objects(), &info()).unwrap();
    let scratch = pod_dir.join("volumes/kubernetes.io~empty-dir/scratch");
    let fast = pod_dir.join("volumes/kubernetes.io~empty-dir/fast");
    let big = pod_dir.join("volumes/kubernetes.io~empty-dir/big");
    assert_eq!(v.get("scratch").unwrap().path, scratch);
    assert_eq!(mode(&scratch), 0o777);
    assert!(!mount_table::is_mount_point(&scratch).unwrap());
    assert!(mount_table::is_mount_point(&fast).unwrap());
    assert_eq!(tmpfs_size_kib(&fast).as_deref(), Some("size=8192k"));
    // Without sizeLimit the pod's memory limit bounds the tmpfs.
    assert_eq!(tmpfs_size_kib(&big).as_deref(), Some("size=65536k"));
    fs::write(fast.join("data"), "x").unwrap();

    // Preparing again (an agent restart) keeps content and does not stack mounts.
    prepare(&p, &pod_dir, &objects(), &info()).unwrap();
    assert_eq!(fs::read_to_string(fast.join("data")).unwrap(), "x");
    assert_eq!(mounted_below(&pod_dir), 2);

    teardown(&pod_dir).unwrap();
    assert_eq!(mounted_below(&pod_dir), 0);
    assert!(!pod_dir.exists());
    teardown(&pod_dir).unwrap();
}

#[test]
fn a_failure_halfway_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let _guard = Guard(pod_dir.clone());
    let p = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers: [{name: a, image: x}]
  volumes:
  - {name: fast, emptyDir: {medium: Memory}}
  - {name: token, secret: {secretName: creds}}
  - {name: cfg, configMap: {name: absent}}
"#);
    let err = prepare(&p, &pod_dir, &objects(), &info()).unwrap_err();
    assert_eq!(err.field, "spec.volumes[2].configMap.name");
    assert_eq!(err.reason, "configmap \"absent\" not found");
    assert_eq!(mounted_below(&pod_dir), 0);
    assert!(!pod_dir.exists());
}

#[test]
fn host_path_types_are_checked_with_the_field_named() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let _guard = Guard(pod_dir.clone());
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    let p = pod(&format!(
        r#"
metadata: {{name: web, namespace: ns}}
spec:
  containers: [{{name: a, image: x}}]
  volumes:
  - {{name: null, hostPath: {{path: /dev/null, type: CharDevice}}}}
  - {{name: data, hostPath: {{path: {}, type: Directory}}}}
"#,
        file.display()
    ));
    let err = prepare(&p, &pod_dir, &objects(), &info()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "spec.volumes[1].hostPath.path: {} is not a directory (type Directory)",
            file.display()
        )
    );
    let ok = pod(&format!(
        r#"
metadata: {{name: web, namespace: ns}}
spec:
  containers: [{{name: a, image: x, volumeMounts: [{{name: made, mountPath: /m}}]}}]
  volumes:
  - {{name: made, hostPath: {{path: {}/made, type: DirectoryOrCreate}}}}
"#,
        tmp.path().display()
    ));
    let v = prepare(&ok, &pod_dir, &objects(), &info()).unwrap();
    assert!(tmp.path().join("made").is_dir());
    let mounts = v.mounts_for(&ok, container(&ok, 0), &[], 0).unwrap();
    assert_eq!(
        mounts[0].host_path,
        tmp.path().join("made").to_string_lossy()
    );
    assert!(!mounts[0].readonly);
    teardown(&pod_dir).unwrap();
    // The host path itself is not the pod's to remove.
    assert!(tmp.path().join("made").is_dir());
}

#[test]
fn config_map_and_secret_files_modes_and_refresh() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let _guard = Guard(pod_dir.clone());
    let p = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - name: a
    image: x
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: one, mountPath: /etc/one}
    - {name: creds, mountPath: /etc/creds}
  volumes:
  - {name: cfg, configMap: {name: settings}}
  - {name: one, configMap: {name: settings, defaultMode: 256, items: [{key: color, path: sub/colour}, {key: size, path: s, mode: 384}]}}
  - {name: creds, secret: {secretName: creds}}
  - {name: opt, configMap: {name: absent, optional: true}}
"#);
    let objects = objects();
    let v = prepare(&p, &pod_dir, &objects, &info()).unwrap();
    let cfg = pod_dir.join("volumes/kubernetes.io~configmap/cfg");
    assert_eq!(fs::read_to_string(cfg.join("color")).unwrap(), "blue");
    assert_eq!(mode(&cfg.join("color")), 0o644);
    assert_eq!(
        fs::read_link(cfg.join("color")).unwrap(),
        PathBuf::from("..data/color")
    );
    assert!(!mount_table::is_mount_point(&cfg).unwrap());

    let one = pod_dir.join("volumes/kubernetes.io~configmap/one");
    assert_eq!(fs::read_to_string(one.join("sub/colour")).unwrap(), "blue");
    assert_eq!(mode(&one.join("sub/colour")), 0o400);
    assert_eq!(mode(&one.join("s")), 0o600);
    assert!(!one.join("color").exists());

    let creds = pod_dir.join("volumes/kubernetes.io~secret/creds");
    assert_eq!(
        fs::read_to_string(creds.join("password")).unwrap(),
        "hunter2"
    );
    assert_eq!(mode(&creds.join("password")), 0o644);
    // Secrets never touch the disk.
    assert!(mount_table::is_mount_point(&creds).unwrap());

    let opt = pod_dir.join("volumes/kubernetes.io~configmap/opt");
    assert!(opt.join(atomic::DATA_DIR).exists());

    let mounts = v.mounts_for(&p, container(&p, 0), &[], 0).unwrap();
    assert!(mounts[..3].iter().all(|m| m.readonly));

    // Nothing changed: nothing rewritten.
    assert!(v.refresh(&p, &objects, &info()).unwrap().is_empty());
    let before = fs::read_link(cfg.join(atomic::DATA_DIR)).unwrap();
    objects.config_maps.lock().unwrap().insert(
        "ns/settings".into(),
        config_map(&[("color", "red"), ("size", "L")]),
    );
    let changed = v.refresh(&p, &objects, &info()).unwrap();
    assert_eq!(changed, vec!["cfg".to_string(), "one".to_string()]);
    assert_eq!(fs::read_to_string(cfg.join("color")).unwrap(), "red");
    assert_ne!(fs::read_link(cfg.join(atomic::DATA_DIR)).unwrap(), before);

    // A listed key that went away is an error naming the item.
    objects
        .config_maps
        .lock()
        .unwrap()
        .insert("ns/settings".into(), config_map(&[("color", "red")]));
    let err = v.refresh(&p, &objects, &info()).unwrap_err();
    assert_eq!(err.field, "spec.volumes[1].configMap.items[1].key");
    assert_eq!(
        err.reason,
        "configmap references non-existent config key: size"
    );

    teardown(&pod_dir).unwrap();
    assert_eq!(mounted_below(&pod_dir), 0);
}

#[test]
fn downward_api_and_projected_volumes() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let _guard = Guard(pod_dir.clone());
    let p = pod(r#"
metadata: {name: web, namespace: ns, labels: {app: web, tier: front}}
spec:
  containers: [{name: a, image: x, resources: {limits: {memory: 64Mi}}}]
  volumes:
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}, mode: 384}
      - {path: mem, resourceFieldRef: {containerName: a, resource: limits.memory, divisor: 1Mi}}
  - name: all
    projected:
      sources:
      - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
      - configMap: {name: settings, items: [{key: color, path: color}]}
      - secret: {name: creds}
"#);
    prepare(&p, &pod_dir, &objects(), &info()).unwrap();
    let dapi = pod_dir.join("volumes/kubernetes.io~downward-api/info");
    assert_eq!(
        fs::read_to_string(dapi.join("labels")).unwrap(),
        "app=\"web\"\ntier=\"front\""
    );
    assert_eq!(fs::read_to_string(dapi.join("name")).unwrap(), "web");
    assert_eq!(mode(&dapi.join("name")), 0o600);
    assert_eq!(fs::read_to_string(dapi.join("mem")).unwrap(), "64");
    let proj = pod_dir.join("volumes/kubernetes.io~projected/all");
    assert_eq!(fs::read_to_string(proj.join("ns")).unwrap(), "ns");
    assert_eq!(fs::read_to_string(proj.join("color")).unwrap(), "blue");
    assert_eq!(
        fs::read_to_string(proj.join("password")).unwrap(),
        "hunter2"
    );
    teardown(&pod_dir).unwrap();
    assert_eq!(mounted_below(&pod_dir), 0);

    let token = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers: [{name: a, image: x}]
  volumes:
  - name: kube-api-access
    projected: {sources: [{serviceAccountToken: {path: token}}]}
"#);
    let err = prepare(&token, &pod_dir, &objects(), &info()).unwrap_err();
    assert_eq!(
        err.field,
        "spec.volumes[0].projected.sources[0].serviceAccountToken"
    );
    assert!(!pod_dir.exists());

    let pvc = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers: [{name: a, image: x}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: c}}]
"#);
    let err = prepare(&pvc, &pod_dir, &objects(), &info()).unwrap_err();
    assert!(err.reason.contains("persistentVolumeClaim"), "{err}");
}

#[test]
fn sub_paths_are_created_inside_and_escapes_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let _guard = Guard(pod_dir.clone());
    let p = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - name: a
    image: x
    terminationMessagePath: /tmp/msg
    securityContext: {privileged: true}
    volumeMounts:
    - {name: scratch, mountPath: /logs, subPath: app/logs, readOnly: true}
    - {name: scratch, mountPath: /per-pod, subPathExpr: "$(POD_NAME)/x", mountPropagation: HostToContainer}
    - {name: scratch, mountPath: /both, mountPropagation: Bidirectional}
  - name: escape
    image: x
    volumeMounts: [{name: scratch, mountPath: /e, subPath: link/etc}]
  - name: dots
    image: x
    volumeMounts: [{name: scratch, mountPath: /e, subPath: ../x}]
  - name: expr
    image: x
    volumeMounts: [{name: scratch, mountPath: /e, subPathExpr: "$(UNSET)"}]
  - name: bidi
    image: x
    volumeMounts: [{name: scratch, mountPath: /e, mountPropagation: Bidirectional}]
  - name: nosuch
    image: x
    volumeMounts: [{name: other, mountPath: /e}]
  volumes:
  - {name: scratch, emptyDir: {}}
"#);
    let v = prepare(&p, &pod_dir, &objects(), &info()).unwrap();
    let scratch = pod_dir.join("volumes/kubernetes.io~empty-dir/scratch");
    let env = [KeyValue {
        key: "POD_NAME".into(),
        value: "web".into(),
    }];
    let mounts = v.mounts_for(&p, container(&p, 0), &env, 3).unwrap();
    assert_eq!(mounts.len(), 4);
    // Sub paths are bind-mounted below volume-subpaths/ from what was checked.
    let sub0 = pod_dir.join("volume-subpaths/scratch/a/0");
    assert_eq!(mounts[0].host_path, sub0.to_string_lossy());
    assert!(mount_table::is_mount_point(&sub0).unwrap());
    assert_eq!(inode(&sub0), inode(&scratch.join("app/logs")));
    assert!(mounts[0].readonly);
    assert_eq!(mode(&scratch.join("app/logs")), 0o777);
    assert_eq!(
        inode(Path::new(&mounts[1].host_path)),
        inode(&scratch.join("web/x"))
    );
    // A restarted container binds again instead of stacking mounts.
    v.mounts_for(&p, container(&p, 0), &env, 4).unwrap();
    assert_eq!(mounted_below(&pod_dir.join("volume-subpaths")), 2);
    assert_eq!(
        mounts[1].propagation,
        MountPropagation::PropagationHostToContainer as i32
    );
    assert_eq!(
        mounts[2].propagation,
        MountPropagation::PropagationBidirectional as i32
    );
    let log = termination_log_path(&pod_dir, "a", 3);
    assert_eq!(mounts[3].container_path, "/tmp/msg");
    assert_eq!(mounts[3].host_path, log.to_string_lossy());
    assert_eq!(mode(&log), 0o666);
    assert_eq!(log, pod_dir.join("containers/a/3"));

    symlink("/", scratch.join("link")).unwrap();
    let err = v.mounts_for(&p, container(&p, 1), &[], 0).unwrap_err();
    assert_eq!(err.field, "spec.containers[1].volumeMounts[0].subPath");
    assert!(err.reason.contains("outside the volume"), "{err}");
    assert!(!Path::new("/etc/etc").exists());

    let err = v.mounts_for(&p, container(&p, 2), &[], 0).unwrap_err();
    assert_eq!(err.field, "spec.containers[2].volumeMounts[0].subPath");
    let err = v.mounts_for(&p, container(&p, 3), &[], 0).unwrap_err();
    assert_eq!(err.field, "spec.containers[3].volumeMounts[0].subPathExpr");
    assert_eq!(err.reason, "missing value for UNSET");
    let err = v.mounts_for(&p, container(&p, 4), &[], 0).unwrap_err();
    assert_eq!(
        err.field,
        "spec.containers[4].volumeMounts[0].mountPropagation"
    );
    let err = v.mounts_for(&p, container(&p, 5), &[], 0).unwrap_err();
    assert_eq!(err.field, "spec.containers[5].volumeMounts[0].name");

    // A symlink that stays inside the volume is fine, and resolved.
    fs::create_dir_all(scratch.join("real")).unwrap();
    symlink("real", scratch.join("alias")).unwrap();
    let inside = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - {name: a, image: x, volumeMounts: [{name: scratch, mountPath: /r, subPath: alias}]}
  volumes: [{name: scratch, emptyDir: {}}]
"#);
    let mounts = v
        .mounts_for(&inside, container(&inside, 0), &[], 0)
        .unwrap();
    assert_eq!(
        inode(Path::new(&mounts[0].host_path)),
        inode(&scratch.join("real"))
    );

    // A file sub path (a ConfigMap key, say) is bound as a file.
    fs::write(scratch.join("real/conf"), "k=v").unwrap();
    let file = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - {name: a, image: x, volumeMounts: [{name: scratch, mountPath: /etc/app.conf, subPath: alias/conf}]}
  volumes: [{name: scratch, emptyDir: {}}]
"#);
    let mounts = v.mounts_for(&file, container(&file, 0), &[], 0).unwrap();
    assert_eq!(fs::read_to_string(&mounts[0].host_path).unwrap(), "k=v");

    // A final symlink swapped in is refused by the no-follow open, not followed.
    let base = fs::canonicalize(&scratch).unwrap();
    let err = super::container_mounts::open_no_follow(&base, &base.join("link")).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");

    teardown(&pod_dir).unwrap();
    assert_eq!(mounted_below(&pod_dir), 0);
    assert!(!pod_dir.exists());
}

#[test]
fn fs_group_owns_volumes() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let pod_dir = tmp.path().join("pod");
    let _guard = Guard(pod_dir.clone());
    let p = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  securityContext: {fsGroup: 4321}
  containers: [{name: a, image: x}]
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: creds, secret: {secretName: creds, defaultMode: 256}}
"#);
    prepare(&p, &pod_dir, &objects(), &info()).unwrap();
    let scratch = pod_dir.join("volumes/kubernetes.io~empty-dir/scratch");
    let meta = fs::metadata(&scratch).unwrap();
    assert_eq!(meta.gid(), 4321);
    assert_eq!(mode(&scratch), 0o2777);
    let password = pod_dir.join("volumes/kubernetes.io~secret/creds/password");
    let meta = fs::metadata(&password).unwrap();
    assert_eq!(meta.gid(), 4321);
    // 0400 gains group read, not write: the volume is read-only.
    assert_eq!(mode(&password), 0o440);
    // Unchanged sources stay unchanged on disk, fsGroup or not.
    let v = prepare(&p, &pod_dir, &objects(), &info()).unwrap();
    assert!(v.refresh(&p, &objects(), &info()).unwrap().is_empty());
    teardown(&pod_dir).unwrap();
}
