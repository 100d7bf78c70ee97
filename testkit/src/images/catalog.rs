//! The test images, assembled from the host's `busybox-static`: every image shares one base
//! layer (busybox, its applet links, a minimal /etc) and adds a layer of its own.

use std::sync::OnceLock;

use serde_json::json;

use super::image::{Platform, TestImage};
use super::layer::{Layer, LayerBuilder};
use crate::error::{Error, Result};

/// Where Debian's `busybox-static` installs the static binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// The port the web image's httpd listens on.
pub const WEB_PORT: u16 = 8080;

/// The page the web image serves at `/`.
pub const WEB_PAGE: &str = "<h1>capstan test page</h1>\n";

/// Name, uid and gid of the non-root user of the user image.
pub const APP_USER: (&str, u32, u32) = ("app", 1000, 1000);

/// A supplementary group the app user belongs to in the user image.
pub const APP_EXTRA_GROUP: (&str, u32) = ("audio", 29);

/// Every test image, built once per test process.
#[derive(Debug)]
pub struct Catalog {
    /// `sh` by default; the basis of most runtime tests.
    pub shell: TestImage,
    /// busybox httpd serving [`WEB_PAGE`] on [`WEB_PORT`].
    pub web: TestImage,
    /// USER is `app` (uid 1000), resolved through the image's /etc/passwd and /etc/group.
    pub user: TestImage,
    /// ENTRYPOINT + CMD + ENV + WORKDIR, with a script that prints what it received.
    pub entrypoint: TestImage,
    /// Three layers with a whiteout and an opaque directory, to test layer application.
    pub layered: TestImage,
    /// A sandbox ("pause") image for runtimes that need one (containerd): sleeps until
    /// SIGTERM or SIGINT, then exits 0.
    pub pause: TestImage,
    /// The shell image for the platform that is not this host's: only for platform selection
    /// from an index (it carries `/etc/platform` naming its platform; its binary is the host's).
    pub foreign: TestImage,
}

/// The catalog, building it on first use (reads [`BUSYBOX`]).
pub fn catalog() -> Result<&'static Catalog> {
    static CATALOG: OnceLock<std::result::Result<Catalog, String>> = OnceLock::new();
    CATALOG
        .get_or_init(|| build().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| Error::Image(e.clone()))
}

fn build() -> Result<Catalog> {
    let base = base_layer()?;
    let host = Platform::host();
    let image = |name: &str, layers: Vec<Layer>, config: serde_json::Value| {
        TestImage::new(name, host.clone(), layers, config)
    };
    let path_env = "PATH=/usr/local/bin:/usr/bin:/bin:/sbin";

    let shell = image(
        "shell",
        vec![base.clone()],
        json!({ "Env": [path_env], "Cmd": ["sh"] }),
    )?;

    let mut web_layer = LayerBuilder::new();
    web_layer.dir("www", 0o755, (0, 0))?.file(
        "www/index.html",
        WEB_PAGE.as_bytes(),
        0o644,
        (0, 0),
    )?;
    let web = image(
        "web",
        vec![base.clone(), web_layer.finish()?],
        json!({
            "Env": [path_env],
            "Cmd": ["httpd", "-f", "-v", "-p", WEB_PORT.to_string(), "-h", "/www"],
            "ExposedPorts": { format!("{WEB_PORT}/tcp"): {} },
        }),
    )?;

    let (user, uid, gid) = APP_USER;
    let (extra, extra_gid) = APP_EXTRA_GROUP;
    let mut user_layer = LayerBuilder::new();
    user_layer
        .dir("etc", 0o755, (0, 0))?
        .file(
            "etc/passwd",
            format!(
                "{}{user}:x:{uid}:{gid}:{user}:/home/{user}:/bin/sh\n",
                base_passwd()
            )
            .as_bytes(),
            0o644,
            (0, 0),
        )?
        .file(
            "etc/group",
            format!(
                "{}{extra}:x:{extra_gid}:{user}\n{user}:x:{gid}:\n",
                base_group()
            )
            .as_bytes(),
            0o644,
            (0, 0),
        )?
        .dir("home", 0o755, (0, 0))?
        .dir(&format!("home/{user}"), 0o750, (uid.into(), gid.into()))?;
    let user_image = image(
        "user",
        vec![base.clone(), user_layer.finish()?],
        json!({ "Env": [path_env], "User": user, "Cmd": ["id"] }),
    )?;

    let mut entry_layer = LayerBuilder::new();
    entry_layer
        .dir("usr", 0o755, (0, 0))?
        .dir("usr/local", 0o755, (0, 0))?
        .dir("usr/local/bin", 0o755, (0, 0))?
        .file(
            "usr/local/bin/show-args",
            b"#!/bin/sh\necho \"args: $*\"\necho \"greeting: $GREETING\"\necho \"pwd: $(pwd)\"\n",
            0o755,
            (0, 0),
        )?
        .dir("work", 0o755, (0, 0))?;
    let entrypoint = image(
        "entrypoint",
        vec![base.clone(), entry_layer.finish()?],
        json!({
            "Env": [path_env, "GREETING=hello from the image"],
            "Entrypoint": ["/usr/local/bin/show-args"],
            "Cmd": ["from-cmd", "second"],
            "WorkingDir": "/work",
        }),
    )?;

    let mut lower = LayerBuilder::new();
    lower
        .dir("data", 0o755, (0, 0))?
        .file("data/kept", b"kept\n", 0o644, (0, 0))?
        .file("data/deleted", b"deleted\n", 0o644, (0, 0))?
        .dir("opaque", 0o755, (0, 0))?
        .file("opaque/hidden", b"hidden\n", 0o644, (0, 0))?;
    let mut upper = LayerBuilder::new();
    upper
        .dir("data", 0o755, (0, 0))?
        .whiteout("data/deleted")?
        .file("data/added", b"added\n", 0o644, (0, 0))?
        .dir("opaque", 0o755, (0, 0))?
        .opaque("opaque")?
        .file("opaque/visible", b"visible\n", 0o644, (0, 0))?;
    let layered = image(
        "layered",
        vec![base.clone(), lower.finish()?, upper.finish()?],
        json!({ "Env": [path_env], "Cmd": ["ls", "-a", "/data", "/opaque"] }),
    )?;

    let pause = image(
        "pause",
        vec![base.clone()],
        json!({
            "Env": [path_env],
            "Entrypoint": ["/bin/sh", "-c", "trap 'kill $sleeper; exit 0' TERM INT; while :; do sleep 3600 & sleeper=$!; wait $sleeper; done"],
        }),
    )?;

    let foreign_platform = host.other();
    let mut marker = LayerBuilder::new();
    marker.dir("etc", 0o755, (0, 0))?.file(
        "etc/platform",
        format!("{}\n", foreign_platform.name()).as_bytes(),
        0o644,
        (0, 0),
    )?;
    let foreign = TestImage::new(
        "shell",
        foreign_platform,
        vec![base, marker.finish()?],
        json!({ "Env": [path_env], "Cmd": ["cat", "/etc/platform"] }),
    )?;

    Ok(Catalog {
        shell,
        web,
        user: user_image,
        entrypoint,
        layered,
        pause,
        foreign,
    })
}

fn base_passwd() -> &'static str {
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
}

fn base_group() -> &'static str {
    "root:x:0:\nnogroup:x:65534:\n"
}

/// busybox, a link per applet in /bin, and the directories and files a container expects.
fn base_layer() -> Result<Layer> {
    let busybox = std::fs::read(BUSYBOX).map_err(|e| {
        Error::Image(format!(
            "read {BUSYBOX}: {e} (install Debian's busybox-static; hack/test.sh does)"
        ))
    })?;
    let applets = std::process::Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .map_err(|e| Error::Image(format!("run {BUSYBOX} --list: {e}")))?;
    let applets = String::from_utf8_lossy(&applets.stdout).into_owned();

    let mut layer = LayerBuilder::new();
    for dir in [
        "bin", "dev", "etc", "proc", "root", "sys", "usr", "usr/bin", "var",
    ] {
        layer.dir(dir, 0o755, (0, 0))?;
    }
    layer.dir("tmp", 0o1777, (0, 0))?;
    layer.file("bin/busybox", &busybox, 0o755, (0, 0))?;
    for applet in applets.lines().map(str::trim) {
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        layer.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    layer
        .file("etc/passwd", base_passwd().as_bytes(), 0o644, (0, 0))?
        .file("etc/group", base_group().as_bytes(), 0o644, (0, 0))?
        .file("etc/hostname", b"capstan-test\n", 0o644, (0, 0))?;
    layer.finish()
}
