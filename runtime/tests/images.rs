//! Image pulls against a real registry (Debian's docker-registry) with the busybox test images:
//! formats, platforms, compression, mirrors, auth, shared downloads, failures that leave
//! nothing behind, removal with garbage collection, and OCI-archive import.

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;

use capstan_runtime::config::{RegistryConfig, RuntimeConfig};
use capstan_runtime::images::{Credentials, ImageError, ImageManager};
use capstan_testkit::images::{
    LayerCompression, LayoutEntry, ManifestFormat, TestImage, catalog, write_archive,
};
use capstan_testkit::mounts::TempMount;
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use capstan_testkit::token::TokenService;
use tempfile::TempDir;

fn insecure(registry: &LocalRegistry) -> RegistryConfig {
    RegistryConfig {
        insecure: vec![registry.host()],
        ..Default::default()
    }
}

fn open(config: RegistryConfig) -> (TempDir, Arc<ImageManager>) {
    let state = tempfile::tempdir().unwrap();
    let manager = ImageManager::open(&state.path().join("images"), config).expect("open manager");
    (state, Arc::new(manager))
}

fn config_digest(image: &TestImage) -> String {
    capstan_testkit::digest::sha256(&image.config)
}

async fn pull(manager: &Arc<ImageManager>, image: &str) -> String {
    manager
        .pull(image, None)
        .await
        .unwrap_or_else(|e| panic!("pull {image}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_oci_and_docker_images_and_unpacks_their_layers() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    let client = registry.client();
    client
        .push_image("test/shell", "v1", &images.shell, ManifestFormat::Oci)
        .unwrap();
    let web_digest = client
        .push_image("web", "1.0", &images.web, ManifestFormat::Docker)
        .unwrap();
    let (_state, manager) = open(insecure(&registry));

    let shell_ref = format!("{}/test/shell:v1", registry.host());
    let id = pull(&manager, &shell_ref).await;
    assert_eq!(
        id,
        config_digest(&images.shell),
        "the image ID is the config digest"
    );
    let web_id = pull(&manager, &format!("{}/web:1.0", registry.host())).await;
    assert_eq!(web_id, config_digest(&images.web));

    let web = manager
        .resolve(&format!("{}/web:1.0", registry.host()))
        .expect("resolve web");
    assert_eq!(
        web.repo_digests,
        vec![format!("{}/web@{web_digest}", registry.host())]
    );
    assert_eq!(web.layers.len(), 2);
    let dirs = manager.layer_dirs(&web).unwrap();
    assert!(dirs[0].join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_to_string(dirs[1].join("www/index.html")).unwrap(),
        capstan_testkit::images::WEB_PAGE
    );
    // The base layer is shared: one snapshot for both images.
    let shell = manager.resolve(&id).unwrap();
    assert_eq!(manager.layer_dirs(&shell).unwrap()[0], dirs[0]);
    assert_eq!(manager.list().len(), 2);
    // By short ID, by digest reference.
    assert_eq!(
        manager
            .resolve(&id["sha256:".len().."sha256:".len() + 12])
            .map(|r| r.id),
        Some(id.clone())
    );
    let by_digest = format!("{}/web@{web_digest}", registry.host());
    assert_eq!(manager.resolve(&by_digest).map(|r| r.id), Some(web_id));
    assert!(manager.usage().bytes > images.shell.layers[0].compressed.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn index_pull_selects_the_host_platform() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    let entries = [
        (&images.foreign, ManifestFormat::Oci),
        (&images.shell, ManifestFormat::Oci),
    ];
    let index_digest = registry
        .client()
        .push_index("multi", "latest", &entries)
        .unwrap();
    let (_state, manager) = open(insecure(&registry));

    let id = pull(&manager, &format!("{}/multi", registry.host())).await;
    assert_eq!(id, config_digest(&images.shell));
    let record = manager.resolve(&id).unwrap();
    assert_eq!(
        record.repo_digests,
        vec![format!("{}/multi@{index_digest}", registry.host())]
    );
    assert_eq!(
        record.manifest_digest,
        images.shell.manifest(ManifestFormat::Oci).digest
    );
    assert!(
        record.blobs.contains(&index_digest),
        "the index is kept with the image"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_and_uncompressed_layers_unpack_to_the_same_content() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    let zstd = images.entrypoint.recompressed(LayerCompression::Zstd);
    let plain = images.entrypoint.recompressed(LayerCompression::None);
    registry
        .client()
        .push_image("zstd", "1", &zstd, ManifestFormat::Oci)
        .unwrap();
    registry
        .client()
        .push_image("plain", "1", &plain, ManifestFormat::Oci)
        .unwrap();
    let (_state, manager) = open(insecure(&registry));

    let zstd_id = pull(&manager, &format!("{}/zstd:1", registry.host())).await;
    let record = manager.resolve(&zstd_id).unwrap();
    assert!(record.layers[1].media_type.ends_with("+zstd"));
    let script = manager.layer_dirs(&record).unwrap()[1].join("usr/local/bin/show-args");
    assert_eq!(std::fs::metadata(&script).unwrap().mode() & 0o777, 0o755);
    let plain_id = pull(&manager, &format!("{}/plain:1", registry.host())).await;
    assert_eq!(plain_id, zstd_id, "same config, same image");
    let record = manager.resolve(&plain_id).unwrap();
    assert_eq!(
        record.repo_tags.len(),
        2,
        "both names point at the one image: {:?}",
        record.repo_tags
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_and_opaque_directories_hide_lower_content_in_an_overlay() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    registry
        .client()
        .push_image("layered", "1", &images.layered, ManifestFormat::Oci)
        .unwrap();
    let (_state, manager) = open(insecure(&registry));
    let id = pull(&manager, &format!("{}/layered:1", registry.host())).await;
    let record = manager.resolve(&id).unwrap();
    let dirs = manager.layer_dirs(&record).unwrap();

    let whiteout = std::fs::symlink_metadata(dirs[2].join("data/deleted")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "overlay whiteout"
    );
    assert_eq!(
        xattr::get(dirs[2].join("opaque"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );

    let lowers: Vec<&Path> = dirs.iter().rev().map(|d| d.as_path()).collect();
    let merged = TempMount::overlay(&lowers).expect("mount overlay");
    let listing = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(merged.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing("data"), ["added", "kept"]);
    assert_eq!(listing("opaque"), ["visible"]);
    assert!(merged.path().join("bin/busybox").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_serves_another_registry_name() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    registry
        .client()
        .push_image("pause", "3.9", &images.shell, ManifestFormat::Oci)
        .unwrap();
    let config = RuntimeConfig::parse(&format!(
        "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"{}\"]\n",
        registry.url()
    ))
    .unwrap();
    let (_state, manager) = open(config.registry);
    let id = pull(&manager, "registry.k8s.io/pause:3.9").await;
    assert_eq!(id, config_digest(&images.shell));
    assert_eq!(
        manager.resolve(&id).unwrap().repo_tags,
        ["registry.k8s.io/pause:3.9"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_is_refused_without_credentials_and_used_with_them() {
    require_root();
    let registry = LocalRegistry::start_with_basic_auth("puller", "s3cret").unwrap();
    let images = catalog().unwrap();
    registry
        .client()
        .push_image("private", "1", &images.shell, ManifestFormat::Oci)
        .unwrap();
    let (_state, manager) = open(insecure(&registry));
    let name = format!("{}/private:1", registry.host());

    let refused = manager.pull(&name, None).await.unwrap_err();
    assert!(
        matches!(*refused, ImageError::Unauthorized { .. }),
        "{refused}"
    );
    let wrong = Credentials {
        username: "puller".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let refused = manager.pull(&name, Some(wrong)).await.unwrap_err();
    assert!(refused.to_string().contains("refused"), "{refused}");
    assert!(manager.list().is_empty());

    let right = Credentials {
        username: "puller".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let id = manager
        .pull(&name, Some(right))
        .await
        .expect("pull with credentials");
    assert_eq!(id, config_digest(&images.shell));
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_are_fetched_from_the_realm_with_the_credentials() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let tokens = TokenService::start(dir.path(), "puller", "s3cret").unwrap();
    let registry = LocalRegistry::start_with_token_auth(&tokens).unwrap();
    let images = catalog().unwrap();
    registry
        .client()
        .with_bearer_token(&tokens.mint("repository:private:push,pull").unwrap())
        .push_image("private", "1", &images.shell, ManifestFormat::Oci)
        .unwrap_or_else(|e| panic!("push with a token: {e}\n{}", registry.log()));
    let (_state, manager) = open(insecure(&registry));
    let name = format!("{}/private:1", registry.host());

    // Without credentials the token service refuses, and so the pull is unauthorised.
    let refused = manager.pull(&name, None).await.unwrap_err();
    assert!(
        matches!(*refused, ImageError::Unauthorized { .. }),
        "{refused}"
    );
    assert_eq!(tokens.issued(), 0);
    let wrong = Credentials {
        username: "puller".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    assert!(manager.pull(&name, Some(wrong)).await.is_err());
    assert!(manager.list().is_empty());

    let right = Credentials {
        username: "puller".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    let id = manager
        .pull(&name, Some(right))
        .await
        .unwrap_or_else(|e| panic!("pull with a token: {e}\n{}", registry.log()));
    assert_eq!(id, config_digest(&images.shell));
    assert!(tokens.issued() >= 1, "the token came from the realm");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_share_one_download() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    registry
        .client()
        .push_image("web", "1", &images.web, ManifestFormat::Oci)
        .unwrap();
    let (_state, manager) = open(insecure(&registry));
    let name = format!("{}/web:1", registry.host());

    let pulls = (0..8).map(|_| {
        let manager = Arc::clone(&manager);
        let name = name.clone();
        tokio::spawn(async move { manager.pull(&name, None).await })
    });
    let ids: HashSet<String> = futures::future::join_all(pulls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    for layer in images.web.layer_blobs(ManifestFormat::Oci) {
        let path = format!("/v2/web/blobs/{}", layer.digest);
        assert_eq!(
            registry.count_gets(&path),
            1,
            "{path} fetched more than once:\n{}",
            registry.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_that_fails_half_way_leaves_no_image_and_no_debris() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    let client = registry.client();
    client
        .push_image("broken", "1", &images.layered, ManifestFormat::Oci)
        .unwrap();
    let top_layer = images.layered.layer_blobs(ManifestFormat::Oci)[2]
        .digest
        .clone();
    client.delete_blob("broken", &top_layer).unwrap();
    let (state, manager) = open(insecure(&registry));

    let error = manager
        .pull(&format!("{}/broken:1", registry.host()), None)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains(&top_layer),
        "the error names the missing blob: {error}"
    );
    assert!(manager.list().is_empty(), "a half-pulled image is visible");
    let root = state.path().join("images");
    assert_eq!(
        std::fs::read_dir(root.join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
    let temp_snapshots = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp")
        })
        .count();
    assert_eq!(temp_snapshots, 0);
    // What did arrive is garbage now.
    let report = manager.collect_garbage(&HashSet::new()).await.unwrap();
    assert!(!report.blobs.is_empty() && !report.snapshots.is_empty());
    assert!(manager.usage().inodes < 10, "left {:?}", manager.usage());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_references_and_unknown_images_are_named() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let (_state, manager) = open(insecure(&registry));
    let error = manager.pull("Not/Valid", None).await.unwrap_err();
    assert!(matches!(*error, ImageError::InvalidReference(_)), "{error}");
    assert!(error.to_string().contains("lowercase"));
    let error = manager
        .pull(&format!("{}/nothing:here", registry.host()), None)
        .await
        .unwrap_err();
    assert!(
        matches!(*error, ImageError::ManifestUnknown { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("nothing"));
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_images_collects_only_unshared_content() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    registry
        .client()
        .push_image("shell", "1", &images.shell, ManifestFormat::Oci)
        .unwrap();
    registry
        .client()
        .push_image("web", "1", &images.web, ManifestFormat::Oci)
        .unwrap();
    let (_state, manager) = open(insecure(&registry));
    let shell = pull(&manager, &format!("{}/shell:1", registry.host())).await;
    let web = pull(&manager, &format!("{}/web:1", registry.host())).await;
    let web_record = manager.resolve(&web).unwrap();
    let dirs = manager.layer_dirs(&web_record).unwrap();

    let removed = manager
        .remove(&format!("{}/web:1", registry.host()), &HashSet::new())
        .await
        .unwrap();
    assert_eq!(removed.map(|r| r.id), Some(web.clone()));
    assert!(dirs[0].is_dir(), "the shared base layer must stay");
    assert!(!dirs[1].exists(), "web's own layer must go");
    assert!(manager.resolve(&web).is_none());
    // Idempotent.
    assert!(
        manager
            .remove(&web, &HashSet::new())
            .await
            .unwrap()
            .is_none()
    );

    // A snapshot a container still uses survives its image.
    let in_use: HashSet<String> = [web_record.layers[0].diff_id.clone()].into();
    manager.remove(&shell, &in_use).await.unwrap();
    assert!(dirs[0].is_dir());
    let report = manager.collect_garbage(&HashSet::new()).await.unwrap();
    assert_eq!(report.snapshots, vec![web_record.layers[0].diff_id.clone()]);
    assert!(!dirs[0].exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn images_survive_a_restart_and_archives_import() {
    require_root();
    let images = catalog().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("images.tar");
    write_archive(
        &archive,
        &[
            LayoutEntry {
                ref_name: "capstan.test/shell:1",
                image: &images.shell,
                format: ManifestFormat::Oci,
            },
            LayoutEntry {
                ref_name: "capstan.test/user:1",
                image: &images.user,
                format: ManifestFormat::Docker,
            },
        ],
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let root = state.path().join("images");
    {
        let manager = ImageManager::open(&root, RegistryConfig::default()).unwrap();
        let imported = manager.import_archive(&archive).await.expect("import");
        let names: Vec<&str> = imported.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["capstan.test/shell:1", "capstan.test/user:1"]);
    }
    let reopened = ImageManager::open(&root, RegistryConfig::default()).unwrap();
    let user = reopened
        .resolve("capstan.test/user:1")
        .expect("survives a restart");
    assert_eq!(user.id, config_digest(&images.user));
    assert_eq!(user.user, "app");
    let passwd = reopened.layer_dirs(&user).unwrap()[1].join("etc/passwd");
    assert!(
        std::fs::read_to_string(passwd)
            .unwrap()
            .contains("app:x:1000")
    );

    let bogus = dir.path().join("bogus.tar");
    std::fs::write(&bogus, b"not a tar").unwrap();
    let error = reopened.import_archive(&bogus).await.unwrap_err();
    assert!(error.to_string().contains("bogus.tar"), "{error}");
}
