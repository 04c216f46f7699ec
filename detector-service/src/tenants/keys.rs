//! Keys → principals. Keys come from `SLC_API_KEYS` (`tenant:key`; a key without a prefix
//! belongs to the `local` tenant, as every key did before tenants), `SLC_ADMIN_KEYS` and
//! `SLC_KEYS_FILE`, whose lines are `tenant:SALT_HEX:SHA256_HEX` with SHA-256 over salt ‖ key
//! (`@operator` as the tenant for operator keys) so that no key is stored in the clear. The
//! file is re-read when it changes (checked every two seconds) and on SIGHUP; a file that
//! no longer parses keeps the last good set and logs why.
//!
//! Keys are long random tokens, so one salted SHA-256 is enough (a slow hash defends weak
//! passwords, and would cost every request). Every entry is checked in constant time with no
//! early exit, so timing tells nothing about which key, if any, matched.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{LOCAL_TENANT, Principal, TenantId};

/// The tenant column of an operator key's line in a keys file.
pub const OPERATOR_MARK: &str = "@operator";

/// How often the keys file's modification time and size are looked at.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Tenant(TenantId),
    Operator,
}

#[derive(Debug, Clone)]
struct KeyEntry {
    role: Role,
    salt: Vec<u8>,
    digest: [u8; 32],
}

impl KeyEntry {
    /// A key given in the clear (env), hashed at once under a fresh salt.
    fn from_plain(role: Role, key: &str) -> KeyEntry {
        let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
        let digest = salted_digest(&salt, key.as_bytes());
        KeyEntry { role, salt, digest }
    }
}

fn salted_digest(salt: &[u8], key: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(key);
    hasher.finalize().into()
}

/// One line of a keys file for `key` (what `slc-detector hash-key` prints).
pub fn keys_file_line(tenant: &str, key: &str) -> String {
    let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
    let digest = salted_digest(&salt, key.as_bytes());
    format!("{tenant}:{}:{}", hex::encode(&salt), hex::encode(digest))
}

/// Parses `SLC_API_KEYS` entries (`tenant:key` or `key`) and `SLC_ADMIN_KEYS`.
fn env_entries(api_keys: &[String], admin_keys: &[String]) -> Result<Vec<KeyEntry>, String> {
    let mut entries = Vec::new();
    for entry in api_keys {
        let (tenant, key) = match entry.split_once(':') {
            Some((tenant, key)) => (TenantId::parse(tenant)?, key),
            None => (TenantId::parse(LOCAL_TENANT)?, entry.as_str()),
        };
        if key.is_empty() {
            return Err(format!("SLC_API_KEYS: tenant {tenant} has an empty key"));
        }
        entries.push(KeyEntry::from_plain(Role::Tenant(tenant), key));
    }
    for key in admin_keys {
        entries.push(KeyEntry::from_plain(Role::Operator, key));
    }
    Ok(entries)
}

fn parse_keys_file(text: &str, path: &Path) -> Result<Vec<KeyEntry>, String> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |why: &str| format!("{}:{}: {why}", path.display(), number + 1);
        let fields: Vec<&str> = line.split(':').collect();
        let [tenant, salt, digest] = fields[..] else {
            return Err(fail("expected tenant:SALT_HEX:SHA256_HEX"));
        };
        let role = if tenant == OPERATOR_MARK {
            Role::Operator
        } else {
            Role::Tenant(TenantId::parse(tenant).map_err(|why| fail(&why))?)
        };
        let salt = hex::decode(salt).map_err(|_| fail("the salt is not hex"))?;
        if salt.len() < 16 {
            return Err(fail("the salt is shorter than 16 bytes"));
        }
        let digest: [u8; 32] = hex::decode(digest)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| fail("the digest is not 64 hex digits"))?;
        entries.push(KeyEntry { role, salt, digest });
    }
    Ok(entries)
}

/// The accepted keys, from the environment and (when given) a keys file.
pub struct KeyStore {
    env: Vec<KeyEntry>,
    file: Option<PathBuf>,
    current: RwLock<Arc<Vec<KeyEntry>>>,
    /// The keys file's (modification time, length) when last read.
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

impl KeyStore {
    pub fn new(
        api_keys: &[String],
        admin_keys: &[String],
        file: Option<PathBuf>,
    ) -> Result<KeyStore, String> {
        let store = KeyStore {
            env: env_entries(api_keys, admin_keys)?,
            file,
            current: RwLock::new(Arc::new(Vec::new())),
            stamp: Mutex::new(None),
        };
        store.reload()?;
        Ok(store)
    }

    /// No key of any kind and no keys file: keyless mode, one local tenant.
    pub fn is_keyless(&self) -> bool {
        self.env.is_empty() && self.file.is_none()
    }

    /// Whether any operator key is in force (then `/metrics` takes a key).
    pub fn has_operator_keys(&self) -> bool {
        let entries = self.current.read().unwrap_or_else(|e| e.into_inner());
        entries.iter().any(|entry| entry.role == Role::Operator)
    }

    /// Re-reads the keys file. On failure the previous set stays in force.
    pub fn reload(&self) -> Result<usize, String> {
        let mut entries = self.env.clone();
        if let Some(path) = &self.file {
            let stamp = file_stamp(path);
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("reading {}: {error}", path.display()))?;
            entries.extend(parse_keys_file(&text, path)?);
            *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        }
        let count = entries.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(entries);
        Ok(count)
    }

    /// The principal `presented` acts for, if it is an accepted key.
    pub fn authenticate(&self, presented: &[u8]) -> Option<Principal> {
        let entries = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut matched: Option<&Role> = None;
        for entry in entries.iter() {
            let digest = salted_digest(&entry.salt, presented);
            if bool::from(digest.ct_eq(&entry.digest)) {
                matched = Some(&entry.role);
            }
        }
        matched.map(|role| match role {
            Role::Tenant(tenant) => Principal::Tenant {
                tenant: tenant.clone(),
                keyed: true,
            },
            Role::Operator => Principal::Operator,
        })
    }

    /// Reloads the keys file whenever it changes and on SIGHUP, for the life of the process.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let signalled = match hangup.as_mut() {
                    Some(signal) => tokio::select! {
                        _ = signal.recv() => true,
                        _ = tokio::time::sleep(WATCH_INTERVAL) => false,
                    },
                    None => {
                        tokio::time::sleep(WATCH_INTERVAL).await;
                        false
                    }
                };
                let last = *store.stamp.lock().unwrap_or_else(|e| e.into_inner());
                if !signalled && file_stamp(&path) == last {
                    continue;
                }
                match store.reload() {
                    Ok(count) => {
                        tracing::info!(keys = count, file = %path.display(), "reloaded the keys")
                    }
                    Err(why) => {
                        tracing::error!(%why, "the keys file does not load; the previous keys stay")
                    }
                }
            }
        });
    }
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Option<Principal> {
        Some(Principal::Tenant {
            tenant: TenantId::parse(name).unwrap(),
            keyed: true,
        })
    }

    #[test]
    fn env_keys_name_their_tenant_and_bare_keys_belong_to_local() {
        let store =
            KeyStore::new(&["alice:ka".into(), "kb".into()], &["root".into()], None).unwrap();
        assert_eq!(store.authenticate(b"ka"), tenant("alice"));
        assert_eq!(store.authenticate(b"kb"), tenant("local"));
        assert_eq!(store.authenticate(b"root"), Some(Principal::Operator));
        assert_eq!(store.authenticate(b"alice:ka"), None);
        assert_eq!(store.authenticate(b""), None);
        assert!(KeyStore::new(&["Alice:x".into()], &[], None).is_err());
        assert!(KeyStore::new(&["alice:".into()], &[], None).is_err());
    }

    #[test]
    fn the_keys_file_holds_salted_hashes_and_reloads() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("keys");
        let line = keys_file_line("bob", "secret-bob");
        assert!(!line.contains("secret-bob"));
        std::fs::write(
            &path,
            format!(
                "# comment\n{line}\n{}\n",
                keys_file_line(OPERATOR_MARK, "op")
            ),
        )
        .unwrap();
        let store = KeyStore::new(&[], &[], Some(path.clone())).unwrap();
        assert!(!store.is_keyless());
        assert_eq!(store.authenticate(b"secret-bob"), tenant("bob"));
        assert_eq!(store.authenticate(b"op"), Some(Principal::Operator));
        std::fs::write(&path, keys_file_line("carol", "k-carol")).unwrap();
        store.reload().unwrap();
        assert_eq!(store.authenticate(b"secret-bob"), None);
        assert_eq!(store.authenticate(b"k-carol"), tenant("carol"));
        std::fs::write(&path, "carol:zz:00").unwrap();
        assert!(store.reload().is_err());
        assert_eq!(
            store.authenticate(b"k-carol"),
            tenant("carol"),
            "the last good set stays"
        );
    }
}
