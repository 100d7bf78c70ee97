//! The fixtures against real parts: test images pushed to Debian's docker-registry and fetched
//! back with every digest verified, OCI archives read by skopeo, and image content that runs.

use std::path::Path;
use std::process::Command;

use capstan_testkit::digest::sha256;
use capstan_testkit::distribution::ACCEPT_ALL;
use capstan_testkit::images::media::{
    DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
};
use capstan_testkit::images::{
    APP_EXTRA_GROUP, APP_USER, LayoutEntry, ManifestFormat, Platform, WEB_PAGE, WEB_PORT, catalog,
    unpack_plain, write_archive,
};
use capstan_testkit::netns::NetNs;
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;

#[test]
fn oci_image_round_trips_with_verified_digests() {
    let registry = LocalRegistry::start().expect("start registry");
    let client = registry.client();
    let shell = &catalog().expect("catalog").shell;

    let pushed = client
        .push_image("test/shell", "v1", shell, ManifestFormat::Oci)
        .expect("push");
    let (manifest, config) = client.pull_verified("test/shell", "v1").expect("pull back");
    assert_eq!(manifest.digest, pushed);
    assert_eq!(manifest.media_type, OCI_MANIFEST);
    let document = manifest.json().unwrap();
    assert_eq!(document["layers"][0]["mediaType"], OCI_LAYER_GZIP);
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        shell.layers[0].diff_id.as_str()
    );
    assert_eq!(
        config["architecture"],
        Platform::host().architecture.as_str()
    );

    // By digest too, and the registry refuses to hand out a blob it does not have.
    let by_digest = client
        .get_manifest("test/shell", &pushed, ACCEPT_ALL)
        .expect("by digest");
    assert_eq!(by_digest.data, manifest.data);
    let missing = sha256(b"not pushed");
    assert!(client.get_blob("test/shell", &missing).is_err());
}

#[test]
fn docker_schema2_image_round_trips() {
    let registry = LocalRegistry::start().expect("start registry");
    let client = registry.client();
    let web = &catalog().expect("catalog").web;

    let pushed = client
        .push_image("web", "latest", web, ManifestFormat::Docker)
        .expect("push");
    let (manifest, config) = client.pull_verified("web", "latest").expect("pull back");
    assert_eq!(manifest.digest, pushed);
    assert_eq!(manifest.media_type, DOCKER_MANIFEST);
    let document = manifest.json().unwrap();
    assert_eq!(document["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(document["layers"][1]["mediaType"], DOCKER_LAYER_GZIP);
    assert_eq!(
        config["config"]["ExposedPorts"][format!("{WEB_PORT}/tcp")],
        serde_json::json!({})
    );
    // Same content, other format: a different manifest, the same layer blobs.
    let oci = web.manifest(ManifestFormat::Oci);
    assert_ne!(oci.digest, pushed);
    assert_eq!(
        web.layer_blobs(ManifestFormat::Oci)[0].digest,
        document["layers"][0]["digest"].as_str().unwrap()
    );
}

#[test]
fn index_selects_the_host_platform() {
    let registry = LocalRegistry::start().expect("start registry");
    let client = registry.client();
    let images = catalog().expect("catalog");
    let entries = [
        (&images.foreign, ManifestFormat::Oci),
        (&images.shell, ManifestFormat::Oci),
    ];
    let index_digest = client
        .push_index("multi", "latest", &entries)
        .expect("push index");

    let index = client
        .get_manifest("multi", "latest", ACCEPT_ALL)
        .expect("get index");
    assert_eq!(index.digest, index_digest);
    assert_eq!(index.media_type, OCI_INDEX);
    let host = Platform::host();
    let document = index.json().unwrap();
    let chosen = document["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["platform"]["os"] == host.os.as_str()
                && m["platform"]["architecture"] == host.architecture.as_str()
        })
        .expect("an entry for the host platform");
    let digest = chosen["digest"].as_str().unwrap();
    assert_eq!(digest, images.shell.manifest(ManifestFormat::Oci).digest);
    let (_, config) = client
        .pull_verified("multi", digest)
        .expect("pull by digest");
    assert_eq!(config["architecture"], host.architecture.as_str());
    let foreign = images.foreign.manifest(ManifestFormat::Oci).digest;
    let (_, config) = client
        .pull_verified("multi", &foreign)
        .expect("pull foreign");
    assert_eq!(config["architecture"], host.other().architecture.as_str());
}

#[test]
fn oci_archive_is_read_by_skopeo_and_copies_into_a_registry() {
    let images = catalog().expect("catalog");
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("images.tar");
    let entries = [
        LayoutEntry {
            ref_name: "shell:latest",
            image: &images.shell,
            format: ManifestFormat::Oci,
        },
        LayoutEntry {
            ref_name: "entrypoint:latest",
            image: &images.entrypoint,
            format: ManifestFormat::Oci,
        },
    ];
    write_archive(&archive, &entries).expect("write archive");

    let inspect = skopeo(&[
        "inspect",
        "--config",
        &format!("oci-archive:{}:entrypoint:latest", archive.display()),
    ]);
    let config: serde_json::Value = serde_json::from_str(&inspect).expect("skopeo JSON");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/show-args"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/work");

    let registry = LocalRegistry::start().expect("start registry");
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}:shell:latest", archive.display()),
        &format!("docker://{}/imported/shell:latest", registry.host()),
    ]);
    let (manifest, _) = registry
        .client()
        .pull_verified("imported/shell", "latest")
        .expect("pull what skopeo pushed");
    assert_eq!(
        manifest.digest,
        images.shell.manifest(ManifestFormat::Oci).digest,
        "skopeo rewrote the manifest: the archive is not a faithful OCI layout"
    );
}

#[test]
fn web_image_serves_its_page() {
    require_root();
    let web = &catalog().expect("catalog").web;
    let rootfs = tempfile::tempdir().unwrap();
    unpack_plain(&web.layers, rootfs.path()).expect("unpack");
    let ns = NetNs::new("tkweb").expect("netns");
    ns.loopback_up().expect("lo up");

    let config = web.config_json();
    let cmd: Vec<String> = serde_json::from_value(config["config"]["Cmd"].clone()).unwrap();
    let mut server = ns
        .command("chroot")
        .arg(rootfs.path())
        .args(&cmd)
        .spawn()
        .expect("start httpd");
    let url = format!("http://127.0.0.1:{WEB_PORT}/");
    let mut page = String::new();
    for _ in 0..100 {
        let out = ns
            .command("chroot")
            .arg(rootfs.path())
            .args(["wget", "-q", "-O", "-", &url])
            .output()
            .expect("run wget");
        if out.status.success() {
            page = String::from_utf8_lossy(&out.stdout).into_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(page, WEB_PAGE);
}

#[test]
fn user_image_resolves_its_non_root_user() {
    require_root();
    let user = &catalog().expect("catalog").user;
    assert_eq!(user.config_json()["config"]["User"], APP_USER.0);
    let rootfs = tempfile::tempdir().unwrap();
    unpack_plain(&user.layers, rootfs.path()).expect("unpack");
    let id = run_in(rootfs.path(), &["id", APP_USER.0]);
    let (name, uid, gid) = APP_USER;
    let (group, group_id) = APP_EXTRA_GROUP;
    assert_eq!(
        id.trim(),
        format!("uid={uid}({name}) gid={gid}({name}) groups={gid}({name}),{group_id}({group})")
    );
    let home = std::fs::metadata(rootfs.path().join("home/app")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((home.uid(), home.gid()), (uid, gid));
}

#[test]
fn entrypoint_image_merges_entrypoint_cmd_env_and_workdir() {
    require_root();
    let image = &catalog().expect("catalog").entrypoint;
    let config = image.config_json()["config"].clone();
    let rootfs = tempfile::tempdir().unwrap();
    unpack_plain(&image.layers, rootfs.path()).expect("unpack");

    let mut argv: Vec<String> = serde_json::from_value(config["Entrypoint"].clone()).unwrap();
    argv.extend(serde_json::from_value::<Vec<String>>(config["Cmd"].clone()).unwrap());
    let env: Vec<String> = serde_json::from_value(config["Env"].clone()).unwrap();
    let workdir = config["WorkingDir"].as_str().unwrap();
    let script = format!("cd {workdir} && exec \"$@\"");
    let mut command = Command::new("chroot");
    command
        .arg(rootfs.path())
        .args(["/bin/sh", "-c", &script, "sh"]);
    command.args(&argv).env_clear();
    for pair in &env {
        let (k, v) = pair.split_once('=').unwrap();
        command.env(k, v);
    }
    let out = command.output().expect("run entrypoint");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "args: from-cmd second\ngreeting: hello from the image\npwd: /work\n"
    );
}

fn run_in(rootfs: &Path, argv: &[&str]) -> String {
    let out = Command::new("chroot")
        .arg(rootfs)
        .args(argv)
        .output()
        .expect("chroot");
    assert!(out.status.success(), "{argv:?} failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo (install Debian's skopeo; hack/test.sh does)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pause_image_sleeps_until_sigterm_and_exits_cleanly() {
    require_root();
    let pause = &catalog().expect("catalog").pause;
    let rootfs = tempfile::tempdir().unwrap();
    unpack_plain(&pause.layers, rootfs.path()).expect("unpack");
    let entrypoint: Vec<String> =
        serde_json::from_value(pause.config_json()["config"]["Entrypoint"].clone()).unwrap();
    let mut child = Command::new("chroot")
        .arg(rootfs.path())
        .args(&entrypoint)
        .spawn()
        .expect("start pause");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "pause exited on its own"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "pause did not exit 0 on SIGTERM: {status}"
    );
}
