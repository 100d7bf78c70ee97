//! The container's argv, environment and working directory, merged from the CRI request and the
//! image config the way Docker and kubelet users expect.

use std::path::PathBuf;

use capstan_proto::ContainerConfig;
use oci_spec::image::Config as ImageConfig;

use super::SpecError;

/// containerd's default PATH, kept when the image sets none so that `sh` still resolves.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes semantics: `command` replaces ENTRYPOINT and then CMD is dropped too (it was
/// written for the replaced entrypoint); `args` replaces CMD.
pub(super) fn argv(
    config: &ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<Vec<String>, SpecError> {
    let argv: Vec<String> = if !config.command.is_empty() {
        config
            .command
            .iter()
            .chain(config.args.iter())
            .cloned()
            .collect()
    } else {
        let entrypoint = image
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default();
        let cmd = if config.args.is_empty() {
            image.and_then(|c| c.cmd().clone()).unwrap_or_default()
        } else {
            config.args.clone()
        };
        entrypoint.into_iter().chain(cmd).collect()
    };
    if argv.is_empty() {
        return Err(SpecError::invalid(
            "command",
            "no command to run: the request sets neither command nor args and the image has no \
             ENTRYPOINT or CMD",
        ));
    }
    if argv[0].is_empty() {
        return Err(SpecError::invalid("command", "the program name is empty"));
    }
    Ok(argv)
}

/// Image env first, then HOSTNAME (and TERM for a TTY), then the request's envs; a later value
/// replaces an earlier one of the same name in place, so the order people wrote is kept.
pub(super) fn env(
    config: &ContainerConfig,
    image: Option<&ImageConfig>,
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = Env::default();
    env.set_entry(DEFAULT_PATH);
    for entry in image.and_then(|c| c.env().as_ref()).into_iter().flatten() {
        // Docker accepts "NAME" without "=" in images and means "unset"; it has no effect here.
        if entry.contains('=') {
            env.set_entry(entry);
        }
    }
    if !hostname.is_empty() {
        env.set("HOSTNAME", hostname);
    }
    if config.tty {
        env.set("TERM", "xterm");
    }
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(SpecError::invalid(
                format!("envs[{i}].key"),
                format!("{:?} is not a valid variable name", kv.key),
            ));
        }
        if kv.value.contains('\0') {
            return Err(SpecError::invalid(
                format!("envs[{i}].value"),
                "contains a NUL byte",
            ));
        }
        env.set(&kv.key, &kv.value);
    }
    Ok(env.0)
}

/// CRI `working_dir`, else the image's WorkingDir, else `/`.
pub(super) fn cwd(
    config: &ContainerConfig,
    image: Option<&ImageConfig>,
) -> Result<PathBuf, SpecError> {
    let (field, dir) = if !config.working_dir.is_empty() {
        ("working_dir", config.working_dir.as_str())
    } else {
        match image.and_then(|c| c.working_dir().as_deref()) {
            Some(d) if !d.is_empty() => ("image config WorkingDir", d),
            _ => return Ok(PathBuf::from("/")),
        }
    };
    if !dir.starts_with('/') {
        return Err(SpecError::invalid(
            field,
            format!("{dir:?} is not an absolute path"),
        ));
    }
    Ok(PathBuf::from(dir))
}

/// An ordered environment with replace-by-name.
#[derive(Default)]
struct Env(Vec<String>);

impl Env {
    fn set(&mut self, key: &str, value: &str) {
        self.put(key, format!("{key}={value}"));
    }

    fn set_entry(&mut self, entry: &str) {
        let key = entry.split_once('=').map_or(entry, |(k, _)| k);
        self.put(key, entry.to_string());
    }

    fn put(&mut self, key: &str, entry: String) {
        let existing = self
            .0
            .iter_mut()
            .find(|e| e.split_once('=').is_some_and(|(k, _)| k == key));
        match existing {
            Some(slot) => *slot = entry,
            None => self.0.push(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::KeyValue;
    use oci_spec::image::ConfigBuilder;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let mut b = ConfigBuilder::default();
        if !entrypoint.is_empty() {
            b = b.entrypoint(entrypoint.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        if !cmd.is_empty() {
            b = b.cmd(cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        b.build().expect("image config")
    }

    fn cfg(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn image_entrypoint_and_cmd_when_request_is_silent() {
        let img = image(&["/entry"], &["--flag"]);
        assert_eq!(
            argv(&cfg(&[], &[]), Some(&img)).unwrap(),
            ["/entry", "--flag"]
        );
    }

    #[test]
    fn args_replace_cmd_but_keep_entrypoint() {
        let img = image(&["/entry"], &["--flag"]);
        assert_eq!(
            argv(&cfg(&[], &["x"]), Some(&img)).unwrap(),
            ["/entry", "x"]
        );
    }

    #[test]
    fn command_replaces_entrypoint_and_drops_cmd() {
        let img = image(&["/entry"], &["--flag"]);
        assert_eq!(
            argv(&cfg(&["/bin/sh"], &[]), Some(&img)).unwrap(),
            ["/bin/sh"]
        );
        assert_eq!(
            argv(&cfg(&["/bin/sh"], &["-c", "true"]), Some(&img)).unwrap(),
            ["/bin/sh", "-c", "true"]
        );
    }

    #[test]
    fn cmd_only_image() {
        let img = image(&[], &["/bin/sh"]);
        assert_eq!(argv(&cfg(&[], &[]), Some(&img)).unwrap(), ["/bin/sh"]);
        assert_eq!(
            argv(&cfg(&[], &["/bin/date"]), Some(&img)).unwrap(),
            ["/bin/date"]
        );
    }

    #[test]
    fn nothing_to_run_names_command() {
        let err = argv(&cfg(&[], &[]), Some(&image(&[], &[]))).unwrap_err();
        assert!(err.to_string().starts_with("command: "), "{err}");
        assert!(argv(&cfg(&[], &[]), None).is_err());
        assert!(argv(&cfg(&[""], &[]), None).is_err());
    }

    #[test]
    fn request_env_overrides_image_env_in_place() {
        let img = ConfigBuilder::default()
            .env(vec![
                "A=1".to_string(),
                "PATH=/img".to_string(),
                "B=2".to_string(),
            ])
            .build()
            .unwrap();
        let mut c = cfg(&["x"], &[]);
        c.envs = vec![
            KeyValue {
                key: "A".into(),
                value: "override".into(),
            },
            KeyValue {
                key: "C".into(),
                value: "3=three".into(),
            },
        ];
        let got = env(&c, Some(&img), "pod-a").unwrap();
        assert_eq!(
            got,
            [
                "PATH=/img",
                "A=override",
                "B=2",
                "HOSTNAME=pod-a",
                "C=3=three"
            ]
        );
    }

    #[test]
    fn default_path_and_tty_term() {
        let mut c = cfg(&["x"], &[]);
        c.tty = true;
        let got = env(&c, None, "").unwrap();
        assert_eq!(got, [DEFAULT_PATH, "TERM=xterm"]);
    }

    #[test]
    fn request_can_override_hostname_and_term() {
        let mut c = cfg(&["x"], &[]);
        c.tty = true;
        c.envs = vec![KeyValue {
            key: "TERM".into(),
            value: "dumb".into(),
        }];
        let got = env(&c, None, "h").unwrap();
        assert_eq!(got, [DEFAULT_PATH, "HOSTNAME=h", "TERM=dumb"]);
    }

    #[test]
    fn bad_env_name_is_named() {
        let mut c = cfg(&["x"], &[]);
        c.envs = vec![
            KeyValue {
                key: "OK".into(),
                value: "1".into(),
            },
            KeyValue {
                key: "A=B".into(),
                value: "1".into(),
            },
        ];
        let err = env(&c, None, "").unwrap_err();
        assert!(err.to_string().starts_with("envs[1].key: "), "{err}");
    }

    #[test]
    fn working_dir_precedence() {
        let img = ConfigBuilder::default()
            .working_dir("/img")
            .build()
            .unwrap();
        let mut c = cfg(&["x"], &[]);
        assert_eq!(cwd(&c, None).unwrap(), PathBuf::from("/"));
        assert_eq!(cwd(&c, Some(&img)).unwrap(), PathBuf::from("/img"));
        c.working_dir = "/req".into();
        assert_eq!(cwd(&c, Some(&img)).unwrap(), PathBuf::from("/req"));
        c.working_dir = "rel".into();
        let err = cwd(&c, Some(&img)).unwrap_err();
        assert!(err.to_string().starts_with("working_dir: "), "{err}");
    }
}
