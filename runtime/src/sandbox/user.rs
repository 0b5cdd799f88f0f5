//! The user a container's command runs as: docker's `User` / `-u` (`uid`, `uid:gid`, `name`,
//! `name:group`, `name:gid`, `uid:group`), resolved through the container's own `/etc/passwd`
//! and `/etc/group` exactly as runc's `GetExecUser` does:
//! - a name must be in passwd ("unable to find user app: no matching entries in passwd
//!   file"); a numeric uid need not be (gid 0 and HOME `/` then);
//! - an explicit group (name or gid) replaces the primary gid, and then no supplementary
//!   groups are added; otherwise the groups that list the user's name are its supplementary
//!   groups;
//! - HOME comes from passwd when the environment does not set it.
//!
//! Resolution happens in the container's init (or exec helper) once its root is the
//! container's (after `pivot_root`, or after joining the mount namespace, whose root the
//! kernel makes the caller's): `/etc/passwd` is then read as the container sees it, and a
//! symlink in the image cannot point outside its root. The files are opened without
//! blocking and must be regular files of bounded size (an image could make them a FIFO or
//! `/dev/zero`). The ids are the container's: with a user namespace, those inside it.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;

use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

/// The highest uid or gid docker and runc accept (`user.maxID`).
const MAX_ID: u64 = i32::MAX as u64;

/// The largest passwd or group file read (real ones are a few kB).
const MAX_FILE: u64 = 16 << 20;

/// Errors of the `user` module. The lookup failures read as docker's.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("invalid user {input:?}: expected USER[:GROUP], each a name or a numeric id")]
    Syntax { input: String },
    #[error("invalid user {input:?}: uids and gids must be in range 0-{MAX_ID}")]
    Range { input: String },
    #[error("unable to find user {user}: no matching entries in passwd file")]
    NoUser { user: String },
    #[error("unable to find group {group}: no matching entries in group file")]
    NoGroup { group: String },
    #[error("read the container's {path}")]
    Read {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the container's {path} is not a regular file")]
    NotRegular { path: &'static str },
    #[error("the container's {path} is larger than {MAX_FILE} bytes")]
    TooLarge { path: &'static str },
    #[error("set the supplementary groups to {groups:?}")]
    SetGroups {
        groups: Vec<u32>,
        #[source]
        source: nix::Error,
    },
    #[error("set gid {gid}")]
    SetGid {
        gid: u32,
        #[source]
        source: nix::Error,
    },
    #[error("set uid {uid}")]
    SetUid {
        uid: u32,
        #[source]
        source: nix::Error,
    },
}

/// A `USER[:GROUP]` value, checked for syntax (what it names is only known inside the
/// container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    user: Name,
    group: Option<Name>,
}

/// A user or group as written: a number is always taken as an id, as runc does.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Id(u32),
    Name(String),
}

impl Name {
    fn parse(part: &str, input: &str) -> Result<Name, UserError> {
        let bad = || UserError::Syntax {
            input: input.to_owned(),
        };
        if part.is_empty() || part.contains(|c: char| c == ':' || c.is_whitespace() || c == '\0') {
            return Err(bad());
        }
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Name::Name(part.to_owned()));
        }
        part.parse::<u64>()
            .ok()
            .filter(|id| *id <= MAX_ID)
            .and_then(|id| u32::try_from(id).ok())
            .map(Name::Id)
            .ok_or_else(|| UserError::Range {
                input: input.to_owned(),
            })
    }
}

impl UserSpec {
    /// `65534`, `1000:1000`, `app`, `app:staff`, `app:50`, `0:staff`.
    pub fn parse(input: &str) -> Result<UserSpec, UserError> {
        let (user, group) = match input.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (input, None),
        };
        Ok(UserSpec {
            user: Name::parse(user, input)?,
            group: group.map(|g| Name::parse(g, input)).transpose()?,
        })
    }
}

/// Whom the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary gid is not repeated unless a group lists the user).
    pub groups: Vec<u32>,
    /// HOME, unless the environment sets one.
    pub home: String,
}

/// One line of `/etc/passwd`.
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

/// One line of `/etc/group`.
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Lines of a colon-separated database, skipping blanks, comments and NIS `+`/`-` lines.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect())
}

/// `name:password:uid:gid:gecos:home:shell`; lines whose ids do not parse are skipped (a
/// malformed line must not resolve to uid 0).
fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    records(text).filter_map(|f| {
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or_default(),
        })
    })
}

/// `name:password:gid:member,member`.
fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    records(text).filter_map(|f| {
        Some(GroupEntry {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    })
}

/// Resolves `spec` (`None`: the image sets no user, i.e. root) against the contents of the
/// container's passwd and group files (`None`: the file does not exist). runc's rules, see
/// the module documentation.
pub fn resolve(
    spec: Option<&UserSpec>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let wanted = spec.map_or(Name::Id(0), |s| s.user.clone());
    let mut user = ExecUser {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        home: "/".to_owned(),
    };
    let matched = passwd.and_then(|text| {
        passwd_entries(text).find(|e| match &wanted {
            Name::Id(uid) => e.uid == *uid,
            Name::Name(name) => e.name == name,
        })
    });
    let matched_name = match (matched, &wanted) {
        (Some(entry), _) => {
            user.uid = entry.uid;
            user.gid = entry.gid;
            user.home = entry.home.to_owned();
            Some(entry.name)
        }
        (None, Name::Id(uid)) => {
            user.uid = *uid;
            None
        }
        (None, Name::Name(name)) => return Err(UserError::NoUser { user: name.clone() }),
    };
    match spec.and_then(|s| s.group.as_ref()) {
        Some(wanted_group) => {
            let found = group.and_then(|text| {
                group_entries(text)
                    .find(|g| match wanted_group {
                        Name::Id(gid) => g.gid == *gid,
                        Name::Name(name) => g.name == name,
                    })
                    .map(|g| g.gid)
            });
            user.gid = match (found, wanted_group) {
                (Some(gid), _) | (None, &Name::Id(gid)) => gid,
                (None, Name::Name(name)) => {
                    return Err(UserError::NoGroup {
                        group: name.clone(),
                    });
                }
            };
        }
        None => {
            if let (Some(name), Some(text)) = (matched_name, group) {
                user.groups = group_entries(text)
                    .filter(|g| g.members.contains(&name))
                    .map(|g| g.gid)
                    .collect();
            }
        }
    }
    Ok(user)
}

/// Reads `path` of the current root for [`resolve`]: `None` if it does not exist. Opened
/// without blocking and without becoming a controlling terminal, then checked to be a regular
/// file of bounded size.
fn read_database(path: &'static str) -> Result<Option<String>, UserError> {
    let read_err = |source| UserError::Read { path, source };
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None);
        }
        Err(e) => return Err(read_err(e)),
    };
    if !file.metadata().map_err(read_err)?.is_file() {
        return Err(UserError::NotRegular { path });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(UserError::TooLarge { path });
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Resolves `user` (`None`: root) through the `/etc/passwd` and `/etc/group` of the calling
/// process's root, which must be the container's.
pub fn resolve_in_root(user: Option<&str>) -> Result<ExecUser, UserError> {
    let spec = user.map(UserSpec::parse).transpose()?;
    let passwd = read_database("/etc/passwd")?;
    // The group file is only needed for an explicit group or for a name's memberships.
    let group = read_database("/etc/group")?;
    resolve(spec.as_ref(), passwd.as_deref(), group.as_deref())
}

/// Becomes `user`: supplementary groups, then gid, then uid (each step needs the privilege
/// the next one gives up). Changing every uid from 0 to non-zero makes the kernel clear the
/// permitted, effective and ambient capabilities (`PR_SET_KEEPCAPS` is off): a non-root user
/// ends up with none, as in docker. The bounding set is unaffected.
pub fn switch_to(user: &ExecUser) -> Result<(), UserError> {
    let groups: Vec<Gid> = user.groups.iter().copied().map(Gid::from_raw).collect();
    setgroups(&groups).map_err(|source| UserError::SetGroups {
        groups: user.groups.clone(),
        source,
    })?;
    let gid = Gid::from_raw(user.gid);
    setresgid(gid, gid, gid).map_err(|source| UserError::SetGid {
        gid: user.gid,
        source,
    })?;
    let uid = Uid::from_raw(user.uid);
    setresuid(uid, uid, uid).map_err(|source| UserError::SetUid {
        uid: user.uid,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        \n\
        broken:x:notanumber:0::/nowhere:/bin/sh\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
        app:x:1000:\n\
        staff:x:50:app,other\n\
        audio:x:29: other , app \n\
        nogroup:x:65534:\n";

    fn resolved(spec: &str) -> Result<ExecUser, UserError> {
        resolve(Some(&UserSpec::parse(spec)?), Some(PASSWD), Some(GROUP))
    }

    fn user(uid: u32, gid: u32, groups: &[u32], home: &str) -> ExecUser {
        ExecUser {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.into(),
        }
    }

    #[test]
    fn no_user_is_root_from_passwd() {
        assert_eq!(
            resolve(None, Some(PASSWD), Some(GROUP)).unwrap(),
            user(0, 0, &[], "/root")
        );
        assert_eq!(resolve(None, None, None).unwrap(), user(0, 0, &[], "/"));
    }

    #[test]
    fn names_and_ids_resolve_like_runc() {
        assert_eq!(
            resolved("app").unwrap(),
            user(1000, 1000, &[50, 29], "/home/app")
        );
        assert_eq!(
            resolved("1000").unwrap(),
            user(1000, 1000, &[50, 29], "/home/app")
        );
        assert_eq!(
            resolved("65534").unwrap(),
            user(65534, 65534, &[], "/nonexistent")
        );
        // A numeric uid absent from passwd: gid 0, HOME /.
        assert_eq!(resolved("4242").unwrap(), user(4242, 0, &[], "/"));
        assert_eq!(
            resolve(Some(&UserSpec::parse("7").unwrap()), None, None).unwrap(),
            user(7, 0, &[], "/")
        );
        // An explicit group replaces the gid and brings no supplementary groups.
        assert_eq!(
            resolved("app:staff").unwrap(),
            user(1000, 50, &[], "/home/app")
        );
        assert_eq!(
            resolved("app:77").unwrap(),
            user(1000, 77, &[], "/home/app")
        );
        assert_eq!(resolved("4242:staff").unwrap(), user(4242, 50, &[], "/"));
        assert_eq!(resolved("0:0").unwrap(), user(0, 0, &[], "/root"));
    }

    #[test]
    fn unknown_names_fail_as_docker_says() {
        assert_eq!(
            resolved("nosuchuser").unwrap_err().to_string(),
            "unable to find user nosuchuser: no matching entries in passwd file"
        );
        assert_eq!(
            resolved("app:nosuchgroup").unwrap_err().to_string(),
            "unable to find group nosuchgroup: no matching entries in group file"
        );
        // No passwd file at all: names cannot resolve, ids can.
        assert!(matches!(
            resolve(Some(&UserSpec::parse("app").unwrap()), None, None),
            Err(UserError::NoUser { .. })
        ));
        // A malformed line does not make a name resolve to uid 0.
        assert!(matches!(resolved("broken"), Err(UserError::NoUser { .. })));
    }

    #[test]
    fn syntax_is_checked_before_the_container_exists() {
        for good in ["0", "app", "app:staff", "1000:1000", "a.b-c_d"] {
            assert!(UserSpec::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ":", "app:", ":staff", "a:b:c", "a b", "a\0"] {
            assert!(
                matches!(UserSpec::parse(bad), Err(UserError::Syntax { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            UserSpec::parse("2147483648"),
            Err(UserError::Range { .. })
        ));
        assert!(UserSpec::parse("2147483647").is_ok());
    }

    #[test]
    fn databases_must_be_regular_files() {
        assert!(matches!(
            read_database("/dev/null"),
            Err(UserError::NotRegular { .. })
        ));
        assert_eq!(read_database("/nonexistent/berth/passwd").unwrap(), None);
    }
}
