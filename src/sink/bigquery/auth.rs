//! Credentials for the BigQuery API: none (the local emulator checks no
//! token), a service-account key file (OAuth2 JWT-bearer grant, the JWT
//! signed RS256 with `ring`), or Application Default Credentials
//! (`GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's well-known file; either a
//! service-account key or an `authorized_user` refresh token).
//!
//! Tokens are cached until five minutes before they expire. The real-Google
//! paths are untested here (no network to Google); the emulator path is.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value as Json, json};
use tokio::sync::Mutex;

const SCOPE: &str = "https://www.googleapis.com/auth/bigquery";
const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// How the sink authenticates.
#[derive(Clone, Debug, PartialEq)]
pub enum Auth {
    /// No token: the local emulator.
    None,
    /// A service-account JSON key file.
    ServiceAccountKey(PathBuf),
    /// `GOOGLE_APPLICATION_CREDENTIALS`, else `~/.config/gcloud/application_default_credentials.json`.
    ApplicationDefault,
}

enum Kind {
    None,
    ServiceAccount { email: String, key_der: Vec<u8>, token_uri: String },
    AuthorizedUser { client_id: String, client_secret: String, refresh_token: String, token_uri: String },
}

/// Hands out (cached) bearer tokens.
pub struct TokenSource {
    kind: Kind,
    cache: Mutex<Option<(String, Instant)>>,
}

impl TokenSource {
    /// Reads the credentials now, so a missing or malformed file fails at start-up.
    pub fn new(auth: &Auth) -> Result<TokenSource, String> {
        let kind = match auth {
            Auth::None => Kind::None,
            Auth::ServiceAccountKey(path) => from_file(path)?,
            Auth::ApplicationDefault => {
                let path = match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
                    Some(p) if !p.is_empty() => PathBuf::from(p),
                    _ => well_known_file().ok_or("no Application Default Credentials: set GOOGLE_APPLICATION_CREDENTIALS to a key file, or run `gcloud auth application-default login`")?,
                };
                from_file(&path)?
            }
        };
        Ok(TokenSource { kind, cache: Mutex::new(None) })
    }

    /// A bearer token, or `None` when no authentication is used.
    pub async fn token(&self, http: &reqwest::Client) -> Result<Option<String>, String> {
        if matches!(self.kind, Kind::None) {
            return Ok(None);
        }
        let mut cache = self.cache.lock().await;
        if let Some((t, until)) = cache.as_ref()
            && Instant::now() < *until
        {
            return Ok(Some(t.clone()));
        }
        let (uri, form): (&str, Vec<(&str, String)>) = match &self.kind {
            Kind::None => return Ok(None),
            Kind::ServiceAccount { email, key_der, token_uri } => {
                let jwt = signed_jwt(email, key_der, token_uri)?;
                (
                    token_uri,
                    vec![("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".into()), ("assertion", jwt)],
                )
            }
            Kind::AuthorizedUser { client_id, client_secret, refresh_token, token_uri } => (
                token_uri,
                vec![
                    ("grant_type", "refresh_token".into()),
                    ("client_id", client_id.clone()),
                    ("client_secret", client_secret.clone()),
                    ("refresh_token", refresh_token.clone()),
                ],
            ),
        };
        let body =
            form.iter().map(|(k, v)| format!("{k}={}", super::client::urlencode(v))).collect::<Vec<_>>().join("&");
        let resp = http
            .post(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("token exchange with {uri} failed: {e}"))?;
        let status = resp.status();
        let json: Json = resp.json().await.map_err(|e| format!("token exchange with {uri}: unreadable answer: {e}"))?;
        let token = json["access_token"].as_str().ok_or_else(|| format!("token exchange with {uri} refused (HTTP {status}): {json}; check the key file and that the account is enabled"))?;
        let ttl = json["expires_in"].as_u64().unwrap_or(3600).saturating_sub(300).max(30);
        *cache = Some((token.to_string(), Instant::now() + Duration::from_secs(ttl)));
        Ok(Some(token.to_string()))
    }
}

fn well_known_file() -> Option<PathBuf> {
    let base = std::env::var_os("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")))?;
    let p = base.join("application_default_credentials.json");
    p.exists().then_some(p)
}

fn from_file(path: &Path) -> Result<Kind, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read BigQuery credentials {}: {e}", path.display()))?;
    let j: Json = serde_json::from_str(&text)
        .map_err(|e| format!("BigQuery credentials {} are not JSON: {e}", path.display()))?;
    let s = |k: &str| {
        j[k].as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("BigQuery credentials {}: missing \"{k}\"", path.display()))
    };
    let token_uri = j["token_uri"].as_str().unwrap_or(DEFAULT_TOKEN_URI).to_string();
    match j["type"].as_str() {
        Some("service_account") => {
            let key_der = pem_to_der(&s("private_key")?)
                .map_err(|e| format!("BigQuery credentials {}: private_key {e}", path.display()))?;
            // Fail now on an unusable key rather than at the first batch.
            ring::signature::RsaKeyPair::from_pkcs8(&key_der).map_err(|e| {
                format!("BigQuery credentials {}: private_key is not an RSA PKCS#8 key ({e})", path.display())
            })?;
            Ok(Kind::ServiceAccount { email: s("client_email")?, key_der, token_uri })
        }
        Some("authorized_user") => Ok(Kind::AuthorizedUser {
            client_id: s("client_id")?,
            client_secret: s("client_secret")?,
            refresh_token: s("refresh_token")?,
            token_uri,
        }),
        other => Err(format!(
            "BigQuery credentials {}: type {other:?} is not supported; use a service_account key or `gcloud auth application-default login` (authorized_user)",
            path.display()
        )),
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, String> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| format!("is not PEM ({e})"))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The JWT-bearer assertion: header.claims signed with RS256.
fn signed_jwt(email: &str, key_der: &[u8], token_uri: &str) -> Result<String, String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs();
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let claims = json!({"iss": email, "scope": SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600});
    let message = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let key =
        ring::signature::RsaKeyPair::from_pkcs8(key_der).map_err(|e| format!("service-account key rejected: {e}"))?;
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), message.as_bytes(), &mut sig)
        .map_err(|e| format!("signing the token request failed: {e}"))?;
    Ok(format!("{message}.{}", b64url(&sig)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.json");
        assert!(
            TokenSource::new(&Auth::ServiceAccountKey(p.clone()))
                .err()
                .unwrap()
                .contains("cannot read BigQuery credentials")
        );
        std::fs::write(&p, r#"{"type": "external_account"}"#).unwrap();
        assert!(TokenSource::new(&Auth::ServiceAccountKey(p.clone())).err().unwrap().contains("not supported"));
        std::fs::write(&p, r#"{"type": "service_account", "client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#).unwrap();
        assert!(TokenSource::new(&Auth::ServiceAccountKey(p)).err().unwrap().contains("not an RSA PKCS#8 key"));
    }

    #[test]
    fn service_account_jwt_is_signed_rs256() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("key.pem");
        let made = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&pem)
            .output();
        // A missing openssl fails the test rather than skipping it: a skipped
        // signing check would pass CI with RS256 untested (scripts/lib/build.sh
        // installs openssl).
        match &made {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "`openssl genpkey` failed ({}): {}; the RS256 check needs a working openssl",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!(
                "cannot run `openssl` ({e}); the RS256 check needs it: apt-get install openssl (scripts/lib/build.sh does)"
            ),
        }
        let key = std::fs::read_to_string(&pem).unwrap();
        let file = dir.path().join("sa.json");
        std::fs::write(&file, json!({"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com", "private_key": key, "token_uri": "https://example.invalid/token"}).to_string()).unwrap();
        let src = TokenSource::new(&Auth::ServiceAccountKey(file)).unwrap();
        let Kind::ServiceAccount { email, key_der, token_uri } = &src.kind else { panic!("a service account") };
        let jwt = signed_jwt(email, key_der, token_uri).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Json =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
                .unwrap();
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://example.invalid/token");
        assert_eq!(claims["scope"], SCOPE);
        let pair = ring::signature::RsaKeyPair::from_pkcs8(key_der).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            ring::signature::KeyPair::public_key(&pair).as_ref().to_vec(),
        );
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig).expect("signature verifies");
    }

    #[tokio::test]
    async fn emulator_needs_no_token() {
        crate::install_tls_provider();
        let t = TokenSource::new(&Auth::None).unwrap();
        assert_eq!(t.token(&reqwest::Client::new()).await.unwrap(), None);
    }
}
