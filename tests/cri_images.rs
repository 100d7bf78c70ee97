//! `capstan runtime` as crictl meets it: CRI v1 over its unix socket, images pulled from a real
//! registry, honest answers for what is not built, and state that survives a SIGKILL.

mod common;

use std::os::unix::fs::PermissionsExt;

use capstan_proto::{
    CheckpointContainerRequest, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest,
    ListImagesRequest, PullImageRequest, RemoveImageRequest, RuntimeConfigRequest, StatusRequest,
    VersionRequest,
};
use capstan_testkit::images::{LayoutEntry, ManifestFormat, catalog, write_archive};
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use common::RuntimeProcess;
use tonic::Code;

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_version_status_and_images_over_its_socket() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    registry
        .client()
        .push_image("web", "1", &images.web, ManifestFormat::Docker)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = RuntimeProcess::start(
        dir.path(),
        &format!("[registry]\ninsecure = [\"{}\"]\n", registry.host()),
    );
    let mut cri = runtime.client().await;

    let mode = std::fs::metadata(runtime.socket().parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the socket directory must be private");

    let version = cri
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            version.runtime_name.as_str(),
            version.runtime_api_version.as_str()
        ),
        ("capstan", "v1")
    );
    let status = cri
        .runtime
        .status(StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    let ready = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap();
    assert!(
        ready.status,
        "the runtime must report ready: {}",
        ready.message
    );
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(
        !network.status && network.message.contains("CNI"),
        "no CNI config, no network: {network:?}"
    );
    let config = cri
        .runtime
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(config.linux.is_some());

    let name = format!("{}/web:1", registry.host());
    let pulled = cri
        .images
        .pull_image(PullImageRequest {
            image: spec(&name),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let expected_id = capstan_testkit::digest::sha256(&images.web.config);
    assert_eq!(pulled.image_ref, expected_id);

    let listed = cri
        .images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].repo_tags, vec![name.clone()]);
    assert!(listed[0].size > images.web.layers[0].compressed.len() as u64);
    let filtered = cri
        .images
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec("nothing:here"),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(filtered.is_empty());

    let status = cri
        .images
        .image_status(ImageStatusRequest {
            image: spec(&name),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.image.unwrap().id, expected_id);
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    assert_eq!(
        info["imageSpec"]["config"]["ExposedPorts"]["8080/tcp"],
        serde_json::json!({})
    );

    let fs = cri
        .images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(
        used >= images.web.layers[0].compressed.len() as u64,
        "used {used}"
    );

    cri.images
        .remove_image(RemoveImageRequest { image: spec(&name) })
        .await
        .unwrap();
    let gone = cri
        .images
        .image_status(ImageStatusRequest {
            image: spec(&name),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(gone.image.is_none());
    // RemoveImage is idempotent.
    cri.images
        .remove_image(RemoveImageRequest { image: spec(&name) })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_and_unbuilt_rpcs_get_clear_codes() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let runtime = RuntimeProcess::start(dir.path(), "");
    let mut cri = runtime.client().await;

    let error = cri
        .images
        .pull_image(PullImageRequest {
            image: spec("Bad/Name"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("Bad/Name"), "{}", error.message());

    let error = cri
        .images
        .pull_image(PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("image.image"),
        "{}",
        error.message()
    );

    let error = cri
        .runtime
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unimplemented);
    assert!(
        error.message().contains("CheckpointContainer"),
        "{}",
        error.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_survive_sigkill_and_cli_imports_reach_the_running_daemon() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    registry
        .client()
        .push_image("shell", "1", &images.shell, ManifestFormat::Oci)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[registry]\ninsecure = [\"{}\"]\n", registry.host());
    let mut runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    let name = format!("{}/shell:1", registry.host());
    cri.images
        .pull_image(PullImageRequest {
            image: spec(&name),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(cri);
    assert!(!runtime.stop_with("KILL").success());

    // A SIGKILLed daemon leaves its socket behind; the next one replaces it.
    let runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    let listed = cri
        .images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(
        listed
            .iter()
            .flat_map(|i| i.repo_tags.clone())
            .collect::<Vec<_>>(),
        [name]
    );

    let archive = dir.path().join("user.tar");
    write_archive(
        &archive,
        &[LayoutEntry {
            ref_name: "capstan.test/user:1",
            image: &images.user,
            format: ManifestFormat::Oci,
        }],
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["images", "import"])
        .arg(&archive)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("capstan.test/user:1"));

    let status = cri
        .images
        .image_status(ImageStatusRequest {
            image: spec("capstan.test/user:1"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    let image = status
        .image
        .expect("the running daemon sees the imported image");
    assert_eq!(image.username, "app");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["images", "ls", "--state-dir"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("IMAGE"), "{table}");
    assert!(
        table.contains("capstan.test/user")
            && table.contains(&format!("{}/shell", registry.host())),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_cleanly_and_removes_the_socket() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut runtime = RuntimeProcess::start(dir.path(), "");
    let _ = runtime.client().await;
    let status = runtime.stop_with("TERM");
    assert!(status.success(), "exit {status}:\n{}", runtime.log());
    assert!(!runtime.socket().exists());

    let mut refused = RuntimeProcess::start(dir.path(), "[registry]\nbogus = 1\n");
    let status = refused
        .wait_exit(std::time::Duration::from_secs(20))
        .expect("a bad config stops the start");
    assert!(!status.success());
    let log = refused.log();
    assert!(
        log.contains("bogus"),
        "the bad config field must be named:\n{log}"
    );
}
