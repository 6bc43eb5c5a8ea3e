//! htpasswd files (`auth_basic_user_file`): reading them, and checking a password against a line.
//!
//! The formats Apache's `htpasswd` writes are supported: bcrypt (`$2y$`, `$2a$`, `$2b$`; `-B`), the
//! Apache MD5 variant (`$apr1$`; the default), and SHA-1 (`{SHA}` + base64; `-s`). nginx also accepts
//! crypt(3) hashes (DES, `$1$`, `$5$`, `$6$`) and plain text (`{PLAIN}`, `htpasswd -p`); certd refuses
//! those when the file is read, naming the file and line, rather than accepting a password check it
//! would do differently. As in nginx, a line is `user:hash` with anything after a further `:` ignored,
//! blank lines and lines starting with `#` are skipped, and the first line for a user wins.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

/// The largest htpasswd file read: far more than any real one, small enough to hold in memory.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// A problem with an htpasswd file, naming it (and the line, where there is one).
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("{path}: cannot read the file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{path}: is larger than {MAX_FILE_BYTES} bytes, which no htpasswd file needs")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// One line cannot be used.
    #[error("{path}:{line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong with it (never the hash itself).
        reason: String,
    },
}

/// The users of one htpasswd file, as read when the configuration was loaded (and on SIGHUP).
#[derive(Clone, PartialEq, Eq)]
pub struct Htpasswd {
    path: PathBuf,
    users: HashMap<String, Hash>,
}

// By hand: the hashes stay out of logs and debug output.
impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Htpasswd")
            .field("path", &self.path)
            .field("users", &self.users.len())
            .finish()
    }
}

/// One user's stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Hash {
    /// The hash as written in the file (part of the verification cache's key, so a changed hash is
    /// verified anew).
    text: String,
    kind: HashKind,
}

#[derive(Clone, PartialEq, Eq)]
enum HashKind {
    Bcrypt,
    /// `$apr1$<salt>$<22 characters>`.
    Apr1 {
        salt: String,
        encoded: String,
    },
    /// `{SHA}` + base64 of the SHA-1 digest of the password.
    Sha1([u8; 20]),
}

impl Htpasswd {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Self, Vec<HtpasswdError>> {
        let read = |source| {
            vec![HtpasswdError::Read {
                path: path.to_path_buf(),
                source,
            }]
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_FILE_BYTES {
            return Err(vec![HtpasswdError::TooLarge {
                path: path.to_path_buf(),
            }]);
        }
        let bytes = std::fs::read(path).map_err(read)?;
        Self::parse(path, &bytes)
    }

    /// Parses the `bytes` of a file read from `path` (named in errors). Every bad line is reported.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, Vec<HtpasswdError>> {
        let mut users = HashMap::new();
        let mut problems = Vec::new();
        for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
            let problem = |reason: String| HtpasswdError::Line {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line.starts_with(b"#") {
                continue;
            }
            let Ok(line) = std::str::from_utf8(line) else {
                problems.push(problem("is not UTF-8 text".into()));
                continue;
            };
            let Some((user, rest)) = line.split_once(':') else {
                problems.push(problem("is not `user:hash`".into()));
                continue;
            };
            if user.is_empty() {
                problems.push(problem("has an empty user name".into()));
                continue;
            }
            // As nginx: the hash ends at the next `:` (a comment field may follow).
            let hash = rest.split(':').next().unwrap_or_default();
            match Hash::parse(hash) {
                Ok(hash) => {
                    users.entry(user.to_owned()).or_insert(hash);
                }
                Err(reason) => problems.push(problem(format!("user `{user}`: {reason}"))),
            }
        }
        if problems.is_empty() {
            Ok(Self {
                path: path.to_path_buf(),
                users,
            })
        } else {
            Err(problems)
        }
    }

    /// The stored hash of `user`, if the file has that user.
    pub fn user(&self, user: &str) -> Option<&Hash> {
        self.users.get(user)
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many users the file has.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users (then every password is refused, as in nginx).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

const CRYPT_REFUSED: &str = "crypt(3) hashes are not supported by certd (nginx accepts them): \
                             write the password again with `htpasswd -B` (bcrypt)";

impl Hash {
    /// A hash as written after `user:`; `Err` says why it cannot be used.
    fn parse(text: &str) -> Result<Self, String> {
        let kind = if ["$2y$", "$2a$", "$2b$"]
            .iter()
            .any(|prefix| text.starts_with(prefix))
        {
            // The crate reads `$2y$` as well as `$2a$`/`$2b$`; checking here means a broken line is
            // a configuration error rather than a password that never matches.
            text.parse::<bcrypt::HashParts>()
                .map_err(|error| format!("is not a valid bcrypt hash: {error}"))?;
            HashKind::Bcrypt
        } else if let Some(rest) = text.strip_prefix("$apr1$") {
            let (salt, encoded) = rest
                .split_once('$')
                .ok_or("is not a valid `$apr1$salt$hash` line")?;
            let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
            if salt.is_empty()
                || salt.len() > 8
                || !salt.chars().all(valid_char)
                || encoded.len() != 22
                || !encoded.chars().all(valid_char)
            {
                return Err("is not a valid `$apr1$salt$hash` line".into());
            }
            HashKind::Apr1 {
                salt: salt.to_owned(),
                encoded: encoded.to_owned(),
            }
        } else if let Some(encoded) = text.strip_prefix("{SHA}") {
            let digest = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|digest| <[u8; 20]>::try_from(digest).ok())
                .ok_or("is not a valid `{SHA}` hash (base64 of a 20-byte SHA-1 digest)")?;
            HashKind::Sha1(digest)
        } else if text.starts_with("{PLAIN}") {
            return Err(
                "plain-text passwords are not supported: write it again with `htpasswd -B`".into(),
            );
        } else if text.starts_with('$') || text.len() == 13 {
            return Err(CRYPT_REFUSED.into());
        } else {
            return Err(
                "is not a hash htpasswd writes (bcrypt `$2y$`, `$apr1$` or `{SHA}`); \
                 plain-text passwords are not supported: write it again with `htpasswd -B`"
                    .into(),
            );
        };
        Ok(Self {
            text: text.to_owned(),
            kind,
        })
    }

    /// Whether `password` matches. Comparisons of digests are constant-time.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.kind {
            // bcrypt compares in constant time itself.
            HashKind::Bcrypt => bcrypt::verify(password, &self.text).unwrap_or(false),
            HashKind::Apr1 { salt, encoded } => {
                let computed = apr1(password, salt.as_bytes());
                computed.as_bytes().ct_eq(encoded.as_bytes()).into()
            }
            HashKind::Sha1(digest) => {
                let computed = Sha1::digest(password);
                computed.as_slice().ct_eq(digest.as_slice()).into()
            }
        }
    }

    /// Whether verifying costs enough to need a blocking thread and the cache (bcrypt).
    pub fn is_slow(&self) -> bool {
        matches!(self.kind, HashKind::Bcrypt)
    }

    /// The hash as written in the file.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The 22 characters after `$apr1$<salt>$` for `password`: Apache's variant of the FreeBSD MD5 crypt
/// (the same algorithm as `$1$`, with its own magic string), as `apr_md5_encode` computes it.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let mut alternate = Md5::new();
    alternate.update(password);
    alternate.update(salt);
    alternate.update(password);
    let alternate = alternate.finalize();

    let mut context = Md5::new();
    context.update(password);
    context.update(MAGIC);
    context.update(salt);
    for chunk in password.chunks(16) {
        context.update(&alternate[..chunk.len()]);
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();

    // The 1000 rounds the algorithm uses to slow down brute force.
    for round in 0..1000 {
        let mut context = Md5::new();
        if round & 1 == 1 {
            context.update(password);
        } else {
            context.update(digest);
        }
        if round % 3 != 0 {
            context.update(salt);
        }
        if round % 7 != 0 {
            context.update(password);
        }
        if round & 1 == 1 {
            context.update(digest);
        } else {
            context.update(password);
        }
        digest = context.finalize();
    }

    const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut push = |value: u32, count: usize| {
        let mut value = value;
        for _ in 0..count {
            out.push(char::from(ALPHABET[(value & 0x3f) as usize]));
            value >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        push((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    push(d(11), 2);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Htpasswd, Vec<HtpasswdError>> {
        Htpasswd::parse(Path::new("/etc/certd/users"), text.as_bytes())
    }

    #[test]
    fn apr1_matches_known_vectors() {
        // Published with htpasswd-verify and other apr1 implementations; also checked against
        // `openssl passwd -apr1 -salt lZL6V/ci password`.
        assert_eq!(apr1(b"password", b"lZL6V/ci"), "eIMz/iKDkbtys/uU7LEK00");
        assert_eq!(apr1(b"password", b"RandSalt"), "PgCXHRrkpSt4cbyC2C6bm/");
    }

    #[test]
    fn each_format_verifies_the_right_password_only() {
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
        let text = format!(
            "# written by htpasswd\n\
             md5user:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00\n\
             \n\
             shauser:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\r\n\
             bcryptuser:{bcrypt}:a comment field\n"
        );
        let file = parse(&text).unwrap();
        assert_eq!(file.len(), 3);
        let cases = [
            ("md5user", "password", true),
            ("md5user", "Password", false),
            ("shauser", "password", true),
            ("shauser", "password ", false),
            ("bcryptuser", "s3cret", true),
            ("bcryptuser", "s3cre", false),
        ];
        for (user, password, expected) in cases {
            let hash = file.user(user).unwrap();
            assert_eq!(
                hash.verify(password.as_bytes()),
                expected,
                "{user} {password}"
            );
        }
        assert!(file.user("bcryptuser").unwrap().is_slow());
        assert!(!file.user("md5user").unwrap().is_slow());
        assert!(file.user("nobody").is_none());
    }

    #[test]
    fn every_bcrypt_prefix_htpasswd_and_others_write_is_read() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let rest = hash.strip_prefix("$2b$").unwrap();
        for prefix in ["$2y$", "$2a$", "$2b$"] {
            let file = parse(&format!("u:{prefix}{rest}\n")).unwrap();
            assert!(file.user("u").unwrap().verify(b"pw"), "{prefix}");
        }
    }

    #[test]
    fn the_first_line_for_a_user_wins() {
        let file =
            parse("u:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nu:$apr1$RandSalt$PgCXHRrkpSt4cbyC2C6bm/\n")
                .unwrap();
        assert!(file.user("u").unwrap().text().starts_with("{SHA}"));
    }

    #[test]
    fn unsupported_and_broken_lines_are_refused_with_their_line() {
        let text = "ok:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n\
                    des:abJnggxhB/yWI\n\
                    md5crypt:$1$abc$0123456789012345678901\n\
                    plain:{PLAIN}password\n\
                    text:password\n\
                    nocolon\n\
                    :{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n\
                    badsha:{SHA}bm90IDIwIGJ5dGVz\n\
                    badapr:$apr1$toolongsalt$eIMz/iKDkbtys/uU7LEK00\n\
                    badbcrypt:$2y$05$short\n";
        let problems = parse(text).unwrap_err();
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 9, "{lines:#?}");
        assert!(lines[0].starts_with("/etc/certd/users:2: user `des`: crypt(3)"));
        assert!(lines[1].starts_with("/etc/certd/users:3: user `md5crypt`: crypt(3)"));
        assert!(lines[2].contains(":4: user `plain`: plain-text"));
        assert!(lines[3].contains(":5: user `text`: is not a hash htpasswd writes"));
        assert!(lines[4].contains(":6: is not `user:hash`"));
        assert!(lines[5].contains(":7: has an empty user name"));
        assert!(lines[6].contains(":8: user `badsha`"));
        assert!(lines[7].contains(":9: user `badapr`"));
        assert!(lines[8].contains(":10: user `badbcrypt`: is not a valid bcrypt hash"));
        // The hashes themselves are never repeated in a message.
        assert!(!lines.iter().any(|line| line.contains("W6ph5")));
    }

    #[test]
    fn debug_output_leaves_the_hashes_out() {
        let file = parse("u:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n").unwrap();
        let shown = format!("{file:?}");
        assert!(!shown.contains("W6ph5"), "{shown}");
        assert!(shown.contains("users: 1"), "{shown}");
    }
}
