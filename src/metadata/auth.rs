//! Authentication and authorisation: argon2id password hashes and the per-stream rights check.
//!
//! What it owns: the hash format (argon2id PHC strings, `$argon2id$v=19$m=..,t=..,p=..$salt$hash`,
//! argon2's default cost of 19 MiB and 2 passes, a random 16-byte salt per hash) and the rule of
//! who may do what. Pure functions; they run on whichever shard handles the request. Hashing and
//! verifying cost about 19 MiB and some milliseconds of CPU on the calling core, so the server
//! throttles logins.
//!
//! Rights: an admin may do everything. Anyone else needs a [`StreamPermission`] entry whose
//! stream is the stream's name or `*`; entries combine. `manage` implies `read` and `write`
//! (whoever may delete a topic may as well read it); `write` does not imply `read`, so a
//! produce-only user cannot read what others produced.
//!
//! Invariants: [`verify_password`] never panics and refuses, without hashing, a hash that is not
//! argon2id or whose cost exceeds [`HASH_MEMORY_KIB_MAX`], [`HASH_PASSES_MAX`] or
//! [`HASH_LANES_MAX`], so a corrupt catalog entry cannot make a login allocate without bound.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier};

use super::catalog::{CreateUserOp, MetadataOp, User};
use super::{validate_name, MetadataError};
use crate::protocol::messages::StreamPermission;

/// The longest password accepted.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// The longest stored password hash (a PHC string; ours are about 100 bytes).
pub const PASSWORD_HASH_BYTES_MAX: usize = 512;

/// The largest argon2 memory cost a stored hash may ask for (KiB).
pub const HASH_MEMORY_KIB_MAX: u32 = 256 * 1024;

/// The most argon2 passes a stored hash may ask for.
pub const HASH_PASSES_MAX: u32 = 16;

/// The most argon2 lanes a stored hash may ask for.
pub const HASH_LANES_MAX: u32 = 16;

const _: () = assert!(Params::DEFAULT_M_COST <= HASH_MEMORY_KIB_MAX);
const _: () = assert!(Params::DEFAULT_T_COST <= HASH_PASSES_MAX);
const _: () = assert!(Params::DEFAULT_P_COST <= HASH_LANES_MAX);

/// What a request needs on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Right {
    /// Poll, get and store offsets, join consumer groups, stats.
    Read,
    /// Produce.
    Write,
    /// Create and delete topics, partitions and groups in the stream.
    Manage,
}

/// Hashes `password` into an argon2id PHC string with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, MetadataError> {
    check_password(password)?;
    let salt = SaltString::generate(&mut OsRng);
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| MetadataError::InvalidArgument(format!("cannot hash the password: {e}")))?;
    let hash = hash.to_string();
    debug_assert!(check_password_hash(&hash).is_ok(), "our own hash must pass our own check");
    Ok(hash)
}

/// True when `password` matches `hash`. False for a wrong password and for any hash that is
/// malformed, not argon2id, or costlier than the limits; never panics.
pub fn verify_password(hash: &str, password: &str) -> bool {
    if password.len() > PASSWORD_BYTES_MAX {
        return false;
    }
    match parse_hash(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Checks that `hash` is a PHC string [`verify_password`] would try: argon2id, with a salt and an
/// output, within the cost limits. Does not hash.
pub fn check_password_hash(hash: &str) -> Result<(), MetadataError> {
    parse_hash(hash).map(|_| ())
}

fn parse_hash(hash: &str) -> Result<PasswordHash<'_>, MetadataError> {
    let invalid =
        |reason: String| MetadataError::InvalidArgument(format!("malformed password hash: {reason}"));
    if hash.len() > PASSWORD_HASH_BYTES_MAX {
        return Err(invalid(format!("longer than {PASSWORD_HASH_BYTES_MAX} bytes")));
    }
    let parsed = PasswordHash::new(hash).map_err(|e| invalid(e.to_string()))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(invalid(format!("algorithm `{}` is not argon2id", parsed.algorithm)));
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(invalid("no salt or no output".to_string()));
    }
    let params = Params::try_from(&parsed).map_err(|e| invalid(e.to_string()))?;
    if params.m_cost() > HASH_MEMORY_KIB_MAX
        || params.t_cost() > HASH_PASSES_MAX
        || params.p_cost() > HASH_LANES_MAX
    {
        return Err(invalid(format!(
            "cost m={} t={} p={} over the limits",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        )));
    }
    Ok(parsed)
}

fn check_password(password: &str) -> Result<(), MetadataError> {
    if password.is_empty() || password.len() > PASSWORD_BYTES_MAX {
        return Err(MetadataError::InvalidArgument(format!(
            "a password must have 1..={PASSWORD_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

/// True when `user` holds `right` on the stream named `stream`.
pub fn allowed(user: &User, stream: &str, right: Right) -> bool {
    user.admin
        || user.permissions.iter().filter(|p| p.stream == "*" || p.stream == stream).any(|p| grants(p, right))
}

fn grants(permission: &StreamPermission, right: Right) -> bool {
    match right {
        Right::Read => permission.read || permission.manage,
        Right::Write => permission.write || permission.manage,
        Right::Manage => permission.manage,
    }
}

/// The op creating user `name` with `password` (hashed here), as a
/// [`CreateUser`](crate::protocol::messages::CreateUser) request asks. Checks the name and the
/// password; the catalog checks the rest when the op is applied.
pub fn create_user_op(
    name: &str,
    password: &str,
    admin: bool,
    permissions: Vec<StreamPermission>,
) -> Result<MetadataOp, MetadataError> {
    validate_name(name)?;
    let password_hash = hash_password(password)?;
    Ok(MetadataOp::CreateUser(CreateUserOp { name: name.to_string(), password_hash, admin, permissions }))
}

/// The op creating the root (admin) user, committed when the broker starts with no users.
pub fn root_user_op(name: &str, password: &str) -> Result<MetadataOp, MetadataError> {
    create_user_op(name, password, true, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(admin: bool, permissions: &[(&str, bool, bool, bool)]) -> User {
        User {
            id: 1,
            name: "u".into(),
            password_hash: String::new(),
            admin,
            permissions: permissions
                .iter()
                .map(|&(stream, read, write, manage)| StreamPermission {
                    stream: stream.into(),
                    read,
                    write,
                    manage,
                })
                .collect(),
        }
    }

    #[test]
    fn hash_and_verify() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horsE"));
        assert!(!verify_password(&hash, ""));
        assert!(!verify_password(&hash, &"x".repeat(PASSWORD_BYTES_MAX + 1)));
        assert!(check_password_hash(&hash).is_ok());
        assert!(matches!(hash_password(""), Err(MetadataError::InvalidArgument(_))));
        match root_user_op("root", "secret") {
            Ok(MetadataOp::CreateUser(op)) => {
                assert!(op.admin && op.name == "root" && op.permissions.is_empty());
                assert_ne!(op.password_hash, hash, "salts are random");
                assert!(verify_password(&op.password_hash, "secret"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(root_user_op("ro ot", "secret"), Err(MetadataError::InvalidName { .. })));
    }

    #[test]
    fn malformed_hashes_are_refused_without_panicking() {
        let salt_and_output = "c29tZXNhbHRzb21lc2FsdA$hmac5DJzkRPc2fNMbmTtoBfSJJ3+kvuEPv1cYjH4FBQ";
        let huge_memory = format!("$argon2id$v=19$m=4294967295,t=2,p=1${salt_and_output}");
        let huge_passes = format!("$argon2id$v=19$m=19456,t=4294967295,p=1${salt_and_output}");
        let argon2i = format!("$argon2i$v=19$m=19456,t=2,p=1${salt_and_output}");
        let no_output = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA";
        let long = format!("$argon2id$v=19$m=19456,t=2,p=1${}", "A".repeat(600));
        for hash in [
            "",
            "plain",
            "$",
            "$$$$",
            "$argon2id$",
            "$argon2id$v=19$m=x",
            no_output,
            &huge_memory,
            &huge_passes,
        ]
        .into_iter()
        .chain([argon2i.as_str(), long.as_str(), "$argon2id$v=19$m=19456,t=2,p=1$$"])
        {
            assert!(!verify_password(hash, "pw"), "{hash}");
            assert!(check_password_hash(hash).is_err(), "{hash}");
        }
    }

    #[test]
    fn rights_matrix() {
        use Right::{Manage, Read, Write};
        let admin = user(true, &[]);
        let nobody = user(false, &[]);
        let reader = user(false, &[("orders", true, false, false)]);
        let writer = user(false, &[("orders", false, true, false)]);
        let manager = user(false, &[("orders", false, false, true)]);
        let everywhere = user(false, &[("*", true, false, false), ("orders", false, true, false)]);
        let cases = [
            (&admin, "orders", [true, true, true]),
            (&admin, "other", [true, true, true]),
            (&nobody, "orders", [false, false, false]),
            (&reader, "orders", [true, false, false]),
            (&reader, "other", [false, false, false]),
            (&writer, "orders", [false, true, false]),
            (&manager, "orders", [true, true, true]),
            (&manager, "orders2", [false, false, false]),
            (&everywhere, "orders", [true, true, false]),
            (&everywhere, "other", [true, false, false]),
        ];
        for (user, stream, expected) in cases {
            let actual = [Read, Write, Manage].map(|right| allowed(user, stream, right));
            assert_eq!(actual, expected, "{:?} on {stream}", user.permissions);
        }
    }
}
