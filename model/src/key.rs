//! API keys (CONTRACTS.md §1): `mk_<id>_<secret>`, stored only as the SHA-256 of the whole string.
//!
//! The plain key exists in memory only between generation (or presentation) and hashing. [`ApiKey`]
//! keeps it in a [`SecretString`], which is zeroed on drop and never printed by `Debug` or `Display`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The fixed prefix of every key this system issues.
pub const KEY_PREFIX: &str = "mk_";
/// Length of the id part of an issued key.
pub const ID_LEN: usize = 12;
/// Length of the secret part of an issued key.
pub const SECRET_LEN: usize = 32;
/// Longest id accepted for a key item (imported keys may use ids of their own).
pub const MAX_ID_LEN: usize = 128;

/// Crockford's base32 alphabet, lowercase: no `i`, `l`, `o`, `u`, so ids survive being read aloud.
const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const SECRET_ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What is wrong with a presented key or id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not of the `mk_<id>_<secret>` form (it may still be an imported key).
    #[error("not a meter key (expected mk_<12-char id>_<32-char secret>)")]
    NotMeterFormat,
    /// An id that cannot name a key item.
    #[error(
        "{0:?} is not a key id (1 to 128 characters of letters, digits, '-', '_' or '.'; not starting with '#')"
    )]
    InvalidId(String),
    /// A stored hash that is not 64 lowercase hex digits.
    #[error("stored hashedKey is not 64 lowercase hex digits")]
    InvalidHash,
    /// The operating system's random source failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// The id of a key item: the primary key of `ApiKeys`. Not secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Validates an id: issued ids are 12 Crockford base32 characters, imported ones may differ, but
    /// none may start with `#`, which marks bookkeeping items in the counters table.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        if Self::is_valid(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(KeyError::InvalidId(text.to_owned()))
        }
    }

    /// Whether `text` is a valid id (see [`KeyId::parse`]). `#` is not among the allowed characters,
    /// which keeps ids apart from the bookkeeping items of the counters table.
    #[must_use]
    pub fn is_valid(text: &str) -> bool {
        !text.is_empty()
            && text.len() <= MAX_ID_LEN
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    /// A fresh random id of the issued format (60 bits from the OS CSPRNG).
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        let mut bits = u64::from_le_bytes(bytes);
        let mut id = String::with_capacity(ID_LEN);
        for _ in 0..ID_LEN {
            id.push(char::from(ID_ALPHABET[(bits & 31) as usize]));
            bits >>= 5;
        }
        Ok(Self(id))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Lowercase hex SHA-256 of a whole key string: all that is ever stored of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HashedKey(String);

impl HashedKey {
    /// Hashes a presented key string.
    #[must_use]
    pub fn of(key: &str) -> Self {
        Self(hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// Accepts a stored hash after checking its shape.
    pub fn parse(hex_digest: &str) -> Result<Self, KeyError> {
        let valid = hex_digest.len() == 64
            && hex_digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid { Ok(Self(hex_digest.to_owned())) } else { Err(KeyError::InvalidHash) }
    }

    /// Whether `presented` hashes to this value, compared in constant time so that response timing
    /// reveals nothing about how much of a guess was right.
    #[must_use]
    pub fn verify(&self, presented: &PresentedKey) -> bool {
        presented.hashed().0.as_bytes().ct_eq(self.0.as_bytes()).into()
    }

    /// The hex digest.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key as a caller presented it: any string, kept secret, with the id parsed out when the key has
/// this system's format. Keys of another format (imported ones) have no id and are found by hash.
pub struct PresentedKey {
    text: SecretString,
    id: Option<KeyId>,
}

impl PresentedKey {
    /// Wraps a presented string.
    #[must_use]
    pub fn new(text: &str) -> Self {
        let id = parse_meter_format(text).ok();
        Self { text: SecretString::from(text), id }
    }

    /// The id embedded in a key of this system's format.
    #[must_use]
    pub fn id(&self) -> Option<&KeyId> {
        self.id.as_ref()
    }

    /// The hash to compare with the stored `hashedKey`.
    #[must_use]
    pub fn hashed(&self) -> HashedKey {
        HashedKey::of(self.text.expose_secret())
    }

    /// The raw SHA-256 of the key: a cache key that costs no allocation.
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        digest_of(self.text.expose_secret())
    }

    /// Length of the presented text in bytes (for shape checks that must not look at the text).
    #[must_use]
    pub fn len(&self) -> usize {
        self.text.expose_secret().len()
    }

    /// Whether nothing was presented.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the text could be a key at all (see [`could_be_key`]).
    #[must_use]
    pub fn is_plausible(&self) -> bool {
        could_be_key(self.text.expose_secret())
    }
}

impl fmt::Debug for PresentedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedKey").field("id", &self.id).field("secret", &"[redacted]").finish()
    }
}

/// A key of this system's format, with its secret. Shown to a person once, at creation.
pub struct ApiKey {
    id: KeyId,
    full: SecretString,
}

impl ApiKey {
    /// A new key: a random id and a 32-character base62 secret from the OS CSPRNG (≈190.5 bits).
    pub fn generate() -> Result<Self, KeyError> {
        let id = KeyId::generate()?;
        let mut full = String::with_capacity(KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
        full.push_str(KEY_PREFIX);
        full.push_str(id.as_str());
        full.push('_');
        let mut pool = [0u8; 64];
        let mut written = 0;
        while written < SECRET_LEN {
            getrandom::fill(&mut pool).map_err(|e| KeyError::Random(e.to_string()))?;
            // Keep 6 bits and reject 62 and 63: every symbol stays exactly equally likely.
            for index in pool.iter().map(|b| usize::from(b & 63)).filter(|&i| i < SECRET_ALPHABET.len()) {
                if written == SECRET_LEN {
                    break;
                }
                full.push(char::from(SECRET_ALPHABET[index]));
                written += 1;
            }
        }
        pool.fill(0);
        Ok(Self { id, full: SecretString::from(full) })
    }

    /// Parses a key of this system's format.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let id = parse_meter_format(text)?;
        Ok(Self { id, full: SecretString::from(text) })
    }

    /// The key's id.
    #[must_use]
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The stored form of the key.
    #[must_use]
    pub fn hashed(&self) -> HashedKey {
        HashedKey::of(self.full.expose_secret())
    }

    /// The whole key, for the one moment it is shown to its owner.
    #[must_use]
    pub fn reveal(&self) -> &str {
        self.full.expose_secret()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey").field("id", &self.id).field("secret", &"[redacted]").finish()
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}_{}", self.id, "*".repeat(8))
    }
}

/// The raw SHA-256 of a presented key, without allocating (the authorizer's cache key).
#[must_use]
pub fn digest_of(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Whether a presented string could be a key at all: this system's format, or (for imported keys)
/// 16 to 512 printable ASCII characters without spaces. Checked without allocating.
#[must_use]
pub fn could_be_key(text: &str) -> bool {
    parse_meter_format_ref(text).is_some()
        || ((16..=512).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()))
}

fn parse_meter_format_ref(text: &str) -> Option<&str> {
    let rest = text.strip_prefix(KEY_PREFIX)?;
    if rest.len() != ID_LEN + 1 + SECRET_LEN || rest.as_bytes()[ID_LEN] != b'_' {
        return None;
    }
    let (id, secret) = (&rest[..ID_LEN], &rest[ID_LEN + 1..]);
    let valid =
        id.bytes().all(|b| ID_ALPHABET.contains(&b)) && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then_some(id)
}

fn parse_meter_format(text: &str) -> Result<KeyId, KeyError> {
    parse_meter_format_ref(text).map(|id| KeyId(id.to_owned())).ok_or(KeyError::NotMeterFormat)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = ApiKey::generate().unwrap();
        let text = key.reveal();
        assert_eq!(text.len(), 48);
        assert!(text.starts_with("mk_"));
        assert_eq!(&text[3..15], key.id().as_str());
        assert!(key.id().as_str().bytes().all(|b| ID_ALPHABET.contains(&b)));
        assert!(text[16..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let reparsed = ApiKey::parse(text).unwrap();
        assert_eq!(reparsed.id(), key.id());
        assert_eq!(reparsed.hashed(), key.hashed());
    }

    #[test]
    fn generated_keys_differ() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        assert_ne!(a.reveal(), b.reveal());
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn hash_is_lowercase_hex_sha256_of_the_whole_string() {
        // echo -n "mk_0123456789ab_abcdefghijklmnopqrstuvwxyzABCDEF" | sha256sum
        let hashed = HashedKey::of("mk_0123456789ab_abcdefghijklmnopqrstuvwxyzABCDEF");
        assert_eq!(hashed.as_str(), "4d5ea8698e5110a120c9ba2b25379487aabb0b20adb0f4f125dc99dc8025ceac");
        assert_eq!(HashedKey::parse(hashed.as_str()).unwrap(), hashed);
        assert!(HashedKey::parse(&hashed.as_str().to_uppercase()).is_err());
    }

    #[test]
    fn verify_accepts_only_the_exact_key() {
        let key = ApiKey::generate().unwrap();
        let stored = key.hashed();
        assert!(stored.verify(&PresentedKey::new(key.reveal())));
        let mut wrong = key.reveal().to_owned();
        wrong.pop();
        wrong.push('!');
        assert!(!stored.verify(&PresentedKey::new(&wrong)));
        assert!(!stored.verify(&PresentedKey::new("")));
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let key = ApiKey::generate().unwrap();
        let secret = &key.reveal()[16..];
        for shown in [format!("{key:?}"), format!("{key}"), format!("{:?}", PresentedKey::new(key.reveal()))]
        {
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains(key.id().as_str()), "{shown}");
        }
    }

    #[test]
    fn presented_keys_of_another_format_have_no_id() {
        assert!(PresentedKey::new("legacy-0123456789").id().is_none());
        assert!(PresentedKey::new("mk_0123456789ab_short").id().is_none());
        // Crockford excludes 'u': an id with it is not ours.
        assert!(PresentedKey::new("mk_0123456789au_abcdefghijklmnopqrstuvwxyzABCDEF").id().is_none());
        let ours = PresentedKey::new("mk_0123456789ab_abcdefghijklmnopqrstuvwxyzABCDEF");
        assert_eq!(ours.id().unwrap().as_str(), "0123456789ab");
    }

    #[test]
    fn ids_reject_bookkeeping_prefix_and_odd_characters() {
        assert!(KeyId::parse("0123456789ab").is_ok());
        assert!(KeyId::parse("legacy_key-1.2").is_ok());
        for bad in ["", "#epoch", "has space", "slash/", &"x".repeat(129)] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = ApiKey::parse(&text);
            let _ = KeyId::parse(&text);
            let _ = PresentedKey::new(&text).id();
        }
    }
}
