//! The process's uid, gid and supplemental groups, resolved through the image's own
//! `/etc/passwd` and `/etc/group` (never the host's: names mean what the image says they mean).

use capstan_proto::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use oci_spec::runtime::{User, UserBuilder};

use super::SpecError;

const SC: &str = "linux.security_context";

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Lines that do not parse are skipped, as libc does: one bad line must not hide every user.
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        (!name.is_empty() && !name.starts_with('#')).then_some(PasswdEntry { name, uid, gid })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        (!name.is_empty() && !name.starts_with('#')).then_some(GroupEntry { name, gid, members })
    })
}

/// Who the process runs as before supplemental groups are added.
struct Identity {
    uid: u32,
    gid: u32,
    /// The passwd name of the user, when it has one; /etc/group lists members by name.
    name: Option<String>,
}

/// Resolves the user: `run_as_user` / `run_as_username` (with `run_as_group`) from the security
/// context win over the image's USER (`name`, `uid`, `name:group`, `uid:gid`).
pub(super) fn resolve(
    sc: &LinuxContainerSecurityContext,
    image_user: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<User, SpecError> {
    let passwd = passwd.unwrap_or("");
    let group = group.unwrap_or("");
    let mut id = if let Some(u) = &sc.run_as_user {
        let uid = to_id(u.value, &format!("{SC}.run_as_user"))?;
        by_uid(uid, passwd)
    } else if !sc.run_as_username.is_empty() {
        by_name(
            &sc.run_as_username,
            passwd,
            &format!("{SC}.run_as_username"),
        )?
    } else {
        from_image_user(image_user.unwrap_or(""), passwd, group)?
    };
    if let Some(g) = &sc.run_as_group {
        if sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(SpecError::invalid(
                format!("{SC}.run_as_group"),
                "set only together with run_as_user or run_as_username",
            ));
        }
        id.gid = to_id(g.value, &format!("{SC}.run_as_group"))?;
    }

    // The primary gid leads the list, as containerd does, so that tools reading getgroups(2)
    // see it even after setgroups replaced the kernel's default.
    let mut gids = vec![id.gid];
    let strict = sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32;
    if let (Some(name), false) = (&id.name, strict) {
        for g in group_entries(group) {
            if g.members.contains(&name.as_str()) {
                gids.push(g.gid);
            }
        }
    }
    for (i, g) in sc.supplemental_groups.iter().enumerate() {
        gids.push(to_id(*g, &format!("{SC}.supplemental_groups[{i}]"))?);
    }
    let mut seen = std::collections::HashSet::new();
    gids.retain(|g| seen.insert(*g));

    Ok(UserBuilder::default()
        .uid(id.uid)
        .gid(id.gid)
        .additional_gids(gids)
        .build()?)
}

fn from_image_user(spec: &str, passwd: &str, group: &str) -> Result<Identity, SpecError> {
    const FIELD: &str = "image config User";
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let mut id = match user_part {
        // Docker's rule: no USER means root.
        "" => by_uid(0, passwd),
        u => match u.parse::<u32>() {
            Ok(uid) => by_uid(uid, passwd),
            Err(_) => by_name(u, passwd, FIELD)?,
        },
    };
    match group_part {
        None | Some("") => {}
        Some(g) => {
            id.gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => group_entries(group)
                    .find(|e| e.name == g)
                    .map(|e| e.gid)
                    .ok_or_else(|| SpecError::UnknownGroup {
                        field: FIELD.to_string(),
                        group: g.to_string(),
                    })?,
            }
        }
    }
    Ok(id)
}

/// A numeric uid needs no passwd entry; without one the primary group is root's, as in Docker.
fn by_uid(uid: u32, passwd: &str) -> Identity {
    match passwd_entries(passwd).find(|e| e.uid == uid) {
        Some(e) => Identity {
            uid,
            gid: e.gid,
            name: Some(e.name.to_string()),
        },
        None => Identity {
            uid,
            gid: 0,
            name: None,
        },
    }
}

fn by_name(name: &str, passwd: &str, field: &str) -> Result<Identity, SpecError> {
    passwd_entries(passwd)
        .find(|e| e.name == name)
        .map(|e| Identity {
            uid: e.uid,
            gid: e.gid,
            name: Some(e.name.to_string()),
        })
        .ok_or_else(|| SpecError::UnknownUser {
            field: field.to_string(),
            user: name.to_string(),
        })
}

fn to_id(value: i64, field: &str) -> Result<u32, SpecError> {
    u32::try_from(value)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| SpecError::invalid(field, format!("{value} is not a valid id")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::Int64Value;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          # a comment\n\
                          broken line\n\
                          nobody:x:65534:65534:nobody:/:/sbin/nologin\n\
                          app:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
                         wheel:x:10:root,app\n\
                         appgrp:x:1001:\n\
                         audio:x:29:app\n\
                         staff:x:50:someone\n";

    fn run(sc: &LinuxContainerSecurityContext, image: Option<&str>) -> Result<User, SpecError> {
        resolve(sc, image, Some(PASSWD), Some(GROUP))
    }

    fn ids(u: &User) -> (u32, u32, Vec<u32>) {
        (
            u.uid(),
            u.gid(),
            u.additional_gids().clone().unwrap_or_default(),
        )
    }

    #[test]
    fn no_user_anywhere_is_root_with_root_groups() {
        let u = run(&Default::default(), None).unwrap();
        assert_eq!(ids(&u), (0, 0, vec![0, 10]));
    }

    #[test]
    fn image_user_by_name_gets_passwd_gid_and_memberships() {
        let u = run(&Default::default(), Some("app")).unwrap();
        assert_eq!(ids(&u), (1000, 1001, vec![1001, 10, 29]));
    }

    #[test]
    fn image_user_by_uid_with_and_without_passwd_entry() {
        assert_eq!(
            ids(&run(&Default::default(), Some("1000")).unwrap()).1,
            1001
        );
        assert_eq!(
            ids(&run(&Default::default(), Some("4242")).unwrap()),
            (4242, 0, vec![0])
        );
    }

    #[test]
    fn image_user_with_group() {
        let u = run(&Default::default(), Some("app:audio")).unwrap();
        assert_eq!((u.uid(), u.gid()), (1000, 29));
        let u = run(&Default::default(), Some("5:7")).unwrap();
        assert_eq!(ids(&u), (5, 7, vec![7]));
    }

    #[test]
    fn unknown_image_user_and_group_are_named() {
        let err = run(&Default::default(), Some("ghost")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image config User: user \"ghost\" not found in the image's /etc/passwd"
        );
        let err = run(&Default::default(), Some("app:ghosts")).unwrap_err();
        assert!(err.to_string().contains("group \"ghosts\""), "{err}");
    }

    #[test]
    fn run_as_user_wins_over_image_user() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: 65534 }),
            ..Default::default()
        };
        let u = run(&sc, Some("app")).unwrap();
        assert_eq!(ids(&u), (65534, 65534, vec![65534]));
    }

    #[test]
    fn run_as_username_resolves_and_run_as_group_overrides() {
        let sc = LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            run_as_group: Some(Int64Value { value: 3000 }),
            supplemental_groups: vec![4000, 10],
            ..Default::default()
        };
        let u = run(&sc, None).unwrap();
        assert_eq!(ids(&u), (1000, 3000, vec![3000, 10, 29, 4000]));
    }

    #[test]
    fn unknown_run_as_username_is_named() {
        let sc = LinuxContainerSecurityContext {
            run_as_username: "x".into(),
            ..Default::default()
        };
        let err = run(&sc, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "linux.security_context.run_as_username: user \"x\" not found in the image's /etc/passwd"
        );
        // No /etc/passwd at all is the same error, not a panic.
        assert!(resolve(&sc, None, None, None).is_err());
    }

    #[test]
    fn run_as_group_alone_is_rejected() {
        let sc = LinuxContainerSecurityContext {
            run_as_group: Some(Int64Value { value: 1 }),
            ..Default::default()
        };
        let err = run(&sc, None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("linux.security_context.run_as_group: ")
        );
    }

    #[test]
    fn strict_policy_ignores_etc_group() {
        let sc = LinuxContainerSecurityContext {
            run_as_username: "app".into(),
            supplemental_groups: vec![4000],
            supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
            ..Default::default()
        };
        assert_eq!(ids(&run(&sc, None).unwrap()).2, vec![1001, 4000]);
    }

    #[test]
    fn negative_ids_are_named() {
        let sc = LinuxContainerSecurityContext {
            run_as_user: Some(Int64Value { value: -1 }),
            ..Default::default()
        };
        assert!(
            run(&sc, None)
                .unwrap_err()
                .to_string()
                .contains("run_as_user")
        );
        let sc = LinuxContainerSecurityContext {
            supplemental_groups: vec![1 << 40],
            ..Default::default()
        };
        let err = run(&sc, None).unwrap_err();
        assert!(err.to_string().contains("supplemental_groups[0]"), "{err}");
    }
}
