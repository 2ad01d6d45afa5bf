//! STS, for workload identity, the way Vault's and Consul's AWS IAM auth methods do it: a
//! task's agent signs an `sts:GetCallerIdentity` request with its task role and does not send
//! it ([`sign_with`], [`sign_caller_identity`]); ecs-xds checks it (`identity/proof.rs`) and sends
//! it to its own pinned STS endpoint ([`Sts::caller_arn`]). Whoever STS says signed it is who
//! the task is: a proof of identity that needs no shared secret and that ecs-xds cannot forge.
//!
//! Where the request goes is never the caller's choice (Vault's CVE-2020-16250 was a request
//! that named its own destination): [`Sts`] fixes the method, the path, the endpoint and the
//! `Host`, and sends only the caller's headers and body. The proof is sent once: a failed proof
//! is the agent's to sign afresh and retry, so this is not [`super::Aws::call`]'s retry loop,
//! but it is counted in the same [`CallCounter`].
//!
//! Credentials, the `authorization` header and the session token are never logged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::error::Error;
use std::time::{Duration, SystemTime};

use aws_config::Region;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_xml::decode::{try_data, Document, ScopedDecoder};
use axum::body::Body;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{AwsError, CallCounter, Outcome};

/// The body of every proof: the one action ecs-xds accepts.
pub const CALLER_IDENTITY_BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";

const OPERATION: &str = "GetCallerIdentity";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// A proof is checked while a task waits for its certificate: STS answers in milliseconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// STS's answers are a few hundred bytes; anything much larger is not STS.
const MAX_ANSWER: usize = 64 * 1024;

/// A GetCallerIdentity request signed with the caller's credentials and not sent: what an
/// agent hands ecs-xds (as JSON). Header names are lower-case.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SignedRequest {
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// STS's regional host for `region` (`sts.us-east-1.amazonaws.com`); China's regions are
/// under `amazonaws.com.cn`.
pub fn sts_host(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("sts.{region}.amazonaws.com.cn")
    } else {
        format!("sts.{region}.amazonaws.com")
    }
}

/// Signs a GetCallerIdentity request for `region`'s STS endpoint with `creds`, at `now`.
/// `extra` (ecs-xds's server-id and key-hash headers) is signed with the rest: every header
/// of the request is signed, so none can be changed or swapped on the way.
pub fn sign_with(
    creds: &Credentials,
    region: &str,
    extra: &[(&str, &str)],
    now: SystemTime,
) -> Result<SignedRequest, AwsError> {
    let host = valid_host(region)?;
    let mut headers = BTreeMap::from([
        ("host".to_owned(), host.clone()),
        ("content-type".to_owned(), CONTENT_TYPE.to_owned()),
        (
            "content-length".to_owned(),
            CALLER_IDENTITY_BODY.len().to_string(),
        ),
    ]);
    for (name, value) in extra {
        let name = name.to_ascii_lowercase();
        if headers.contains_key(&name) || is_signers(&name) {
            let message = format!("header {name} is the signer's, or given twice");
            return Err(failed(&host, None, message));
        }
        headers.insert(name, (*value).to_owned());
    }
    let added = signature_headers(creds, region, &host, &headers, now)
        .map_err(|e| failed(&host, None, format!("cannot sign: {}", chain(&*e))))?;
    headers.extend(added);
    Ok(SignedRequest {
        headers,
        body: CALLER_IDENTITY_BODY.to_owned(),
    })
}

/// Headers SigV4 writes itself, which a caller's extra headers must not pre-empt.
fn is_signers(name: &str) -> bool {
    name == "authorization" || name.starts_with("x-amz-")
}

/// The headers SigV4 adds to `headers`: x-amz-date, authorization and, with a session token,
/// x-amz-security-token (signed too).
fn signature_headers(
    creds: &Credentials,
    region: &str,
    host: &str,
    headers: &BTreeMap<String, String>,
    now: SystemTime,
) -> Result<Vec<(String, String)>, Box<dyn Error + Send + Sync>> {
    let identity = Identity::from(creds.clone());
    let mut settings = SigningSettings::default();
    // The default leaves out headers proxies may rewrite; this request has none of those, and
    // every header the server will see must be covered.
    settings.excluded_headers = None;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(settings)
        .build()?
        .into();
    let request = SignableRequest::new(
        "POST",
        format!("https://{host}/"),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(CALLER_IDENTITY_BODY.as_bytes()),
    )?;
    let (instructions, _signature) = sign(request, &params)?.into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Signs with the standard credential chain: on ECS, the task role from the container
/// credentials endpoint; elsewhere the environment, the profile, and so on.
pub async fn sign_caller_identity(
    region: &str,
    extra: &[(&str, &str)],
) -> Result<SignedRequest, AwsError> {
    let provider = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .region(Region::new(region.to_owned()))
        .build()
        .await;
    sign_from(&provider, region, extra, SystemTime::now()).await
}

/// [`sign_with`] the credentials `provider` gives.
async fn sign_from(
    provider: &impl ProvideCredentials,
    region: &str,
    extra: &[(&str, &str)],
    now: SystemTime,
) -> Result<SignedRequest, AwsError> {
    let creds = provider.provide_credentials().await.map_err(|e| {
        let message = format!("no credentials to sign with: {}", chain(&e));
        failed(&sts_host(region), None, message)
    })?;
    sign_with(&creds, region, extra, now)
}

/// Sends checked proofs to the pinned STS endpoint. Cheap to clone (the HTTP client is a
/// handle), and clones count into the same counter.
#[derive(Debug, Clone)]
pub struct Sts {
    region: String,
    /// The `Host` of every request: `sts_host(region)`, which the proof's signature covers.
    host: String,
    /// Where requests go: `https://<host>/`, or an emulator's address.
    uri: http::Uri,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    calls: CallCounter,
}

impl Sts {
    /// The client for `region`'s STS, sending to `endpoint_override` instead when set (an
    /// emulator such as `http://127.0.0.1:4566`).
    pub fn new(
        region: &str,
        endpoint_override: Option<&str>,
        calls: CallCounter,
    ) -> Result<Sts, AwsError> {
        let host = valid_host(region)?;
        let endpoint = endpoint_override.map_or_else(|| format!("https://{host}"), str::to_owned);
        let uri = endpoint_uri(&endpoint).map_err(|e| failed(&host, None, e))?;
        let connector = connector(&uri).map_err(|e| failed(&host, None, e))?;
        let client = Client::builder(TokioExecutor::new())
            // The Host is ours to set (the pinned one), not the endpoint's.
            .set_host(false)
            .build(connector);
        Ok(Sts {
            region: region.to_owned(),
            host,
            uri,
            client,
            calls,
        })
    }

    /// The pinned STS host proofs must be signed for.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Sends `signed` (its headers and body; the method, path, endpoint and `Host` are ours)
    /// once, and returns the ARN of whoever signed it
    /// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`). STS's refusals keep their code
    /// (`SignatureDoesNotMatch`, `ExpiredToken`...).
    pub async fn caller_arn(&self, signed: &SignedRequest) -> Result<String, AwsError> {
        let request = self.request(signed)?;
        let answer = match tokio::time::timeout(CALL_TIMEOUT, self.send(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(Refused::error(format!(
                "no answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))),
        };
        let arn = answer.and_then(|(status, body)| read_answer(status, &body));
        match arn {
            Ok(arn) => {
                self.calls.record(OPERATION, Outcome::Ok);
                Ok(arn)
            }
            Err(refused) => {
                self.calls.record(OPERATION, refused.outcome);
                Err(failed(&self.host, refused.code, refused.message))
            }
        }
    }

    fn request(&self, signed: &SignedRequest) -> Result<http::Request<Body>, AwsError> {
        let mut request = http::Request::post(self.uri.clone());
        for (name, value) in &signed.headers {
            if !name.eq_ignore_ascii_case("host") {
                request = request.header(name, value);
            }
        }
        request
            .header(http::header::HOST, &self.host)
            .body(Body::from(signed.body.clone()))
            // http's errors name neither the header nor its value, which may be secret.
            .map_err(|e| failed(&self.host, None, format!("not a valid HTTP request: {e}")))
    }

    async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<(http::StatusCode, bytes::Bytes), Refused> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| Refused::error(chain(&e)))?;
        let status = response.status();
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER)
            .await
            .map_err(|e| Refused::error(format!("cannot read the answer: {}", chain(&e))))?;
        Ok((status, body))
    }
}

/// Why a proof sent to STS did not give an ARN.
struct Refused {
    outcome: Outcome,
    code: Option<String>,
    message: String,
}

impl Refused {
    /// A failure without an STS error code: no answer, or not one of STS's.
    fn error(message: String) -> Refused {
        Refused {
            outcome: Outcome::Error,
            code: None,
            message,
        }
    }
}

/// The ARN in a GetCallerIdentityResponse, or the code and message of an ErrorResponse.
fn read_answer(status: http::StatusCode, body: &[u8]) -> Result<String, Refused> {
    let xml = std::str::from_utf8(body)
        .map_err(|_| Refused::error(format!("HTTP {status}, and the answer is not text")))?;
    if status.is_success() {
        let path = [
            "GetCallerIdentityResponse",
            "GetCallerIdentityResult",
            "Arn",
        ];
        return text_at(xml, &path)
            .filter(|arn| !arn.is_empty())
            .ok_or_else(|| Refused::error("the answer holds no Arn".into()));
    }
    let code = text_at(xml, &["ErrorResponse", "Error", "Code"]);
    let message = text_at(xml, &["ErrorResponse", "Error", "Message"])
        .unwrap_or_else(|| format!("HTTP {status}"));
    let throttled =
        status == http::StatusCode::TOO_MANY_REQUESTS || code.as_deref() == Some("Throttling");
    let outcome = if throttled {
        Outcome::Throttled
    } else {
        Outcome::Error
    };
    Err(Refused {
        outcome,
        code,
        message,
    })
}

/// The text of the element at `path` (the root element first), if the document has one.
fn text_at(xml: &str, path: &[&str]) -> Option<String> {
    let (root_name, rest) = path.split_first()?;
    let mut doc = Document::new(xml);
    let mut root = doc.root_element().ok()?;
    if !root.start_el().matches(root_name) {
        return None;
    }
    text_below(&mut root, rest)
}

fn text_below(scope: &mut ScopedDecoder<'_, '_>, path: &[&str]) -> Option<String> {
    let Some((name, rest)) = path.split_first() else {
        return try_data(scope).ok().map(Cow::into_owned);
    };
    while let Some(mut tag) = scope.next_tag() {
        if tag.start_el().matches(name) {
            return text_below(&mut tag, rest);
        }
    }
    None
}

/// `region`'s STS host, once `region` is known to be a region name: it becomes a host name.
fn valid_host(region: &str) -> Result<String, AwsError> {
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if region.is_empty() || !region.chars().all(plain) {
        return Err(failed(
            "STS",
            None,
            format!("{region:?} is not an AWS region name"),
        ));
    }
    Ok(sts_host(region))
}

/// The URI requests are sent to: the endpoint's scheme and authority, path `/`.
fn endpoint_uri(endpoint: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("STS endpoint {endpoint:?} is not a URL: {e}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("https" | "http"));
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    match (scheme_ok, uri.authority(), path_ok) {
        (true, Some(authority), true) => {
            let scheme = uri.scheme_str().unwrap_or("https");
            format!("{scheme}://{authority}/")
                .parse()
                .map_err(|e| format!("STS endpoint {endpoint:?}: {e}"))
        }
        _ => Err(format!(
            "STS endpoint {endpoint:?} must be http(s)://host[:port] with no path"
        )),
    }
}

/// HTTPS with the system's roots for AWS; plain HTTP only when the endpoint is an emulator's
/// `http://` address (which needs no roots, so none are loaded).
fn connector(uri: &http::Uri) -> Result<HttpsConnector<HttpConnector>, String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let builder = HttpsConnectorBuilder::new();
    if uri.scheme_str() == Some("https") {
        let builder = builder
            .with_provider_and_native_roots(provider)
            .map_err(|e| format!("cannot load the system's CA certificates: {e}"))?;
        return Ok(builder.https_only().enable_http1().build());
    }
    let tls = rustls::ClientConfig::builder_with_provider(provider.into())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(builder
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build())
}

fn failed(target: &str, code: Option<String>, message: String) -> AwsError {
    AwsError::Call {
        operation: OPERATION,
        target: target.to_owned(),
        code,
        message,
    }
}

/// "a: b: c" from an error and its sources.
fn chain(err: &(dyn Error + 'static)) -> String {
    std::iter::successors(Some(err), |e| (*e).source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Dummy credentials for tests elsewhere in the crate, which do not name SDK types.
#[cfg(test)]
pub(crate) fn test_credentials(session_token: Option<&str>) -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token.map(str::to_owned),
        None,
        "test",
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;

    use super::*;

    const SERVER_ID: (&str, &str) = ("x-ecs-xds-server-id", "mesh-1");
    const KEY_HASH: (&str, &str) = ("x-ecs-xds-key-sha256", "ab12");

    /// 2026-12-02T12:00:00Z.
    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_212_800)
    }

    fn signed(token: Option<&str>, now: SystemTime) -> SignedRequest {
        sign_with(
            &test_credentials(token),
            "us-east-1",
            &[SERVER_ID, KEY_HASH],
            now,
        )
        .unwrap()
    }

    fn authorization(req: &SignedRequest) -> &str {
        &req.headers["authorization"]
    }

    #[test]
    fn the_sts_host_is_regional_and_china_regions_are_under_amazonaws_com_cn() {
        assert_eq!(sts_host("eu-west-3"), "sts.eu-west-3.amazonaws.com");
        assert_eq!(sts_host("cn-north-1"), "sts.cn-north-1.amazonaws.com.cn");
    }

    #[test]
    fn a_signed_request_signs_every_header_it_carries() {
        let req = signed(Some("the-token"), noon());
        let names: Vec<&str> = req.headers.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "authorization",
                "content-length",
                "content-type",
                "host",
                "x-amz-date",
                "x-amz-security-token",
                "x-ecs-xds-key-sha256",
                "x-ecs-xds-server-id",
            ]
        );
        let signed_headers = "content-length;content-type;host;x-amz-date;\
                              x-amz-security-token;x-ecs-xds-key-sha256;x-ecs-xds-server-id";
        let auth = authorization(&req);
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261202/us-east-1/sts/aws4_request, "
            ),
            "{auth}"
        );
        assert!(
            auth.contains(&format!("SignedHeaders={signed_headers}, ")),
            "{auth}"
        );
        assert_eq!(req.headers["host"], "sts.us-east-1.amazonaws.com");
        assert_eq!(req.headers["x-amz-date"], "20261202T120000Z");
        assert_eq!(req.headers["x-amz-security-token"], "the-token");
        assert_eq!(req.headers["content-length"], "43");
        assert_eq!(req.body, CALLER_IDENTITY_BODY);
    }

    #[test]
    fn without_a_session_token_no_token_header_is_sent_or_signed() {
        let req = signed(None, noon());
        assert!(!req.headers.contains_key("x-amz-security-token"));
        assert!(!authorization(&req).contains("x-amz-security-token"));
    }

    #[test]
    fn signing_twice_at_the_same_instant_gives_the_same_signature_and_a_second_later_another() {
        assert_eq!(signed(Some("t"), noon()), signed(Some("t"), noon()));
        let later = signed(Some("t"), noon() + Duration::from_secs(1));
        assert_ne!(
            authorization(&later),
            authorization(&signed(Some("t"), noon()))
        );
    }

    #[test]
    fn extra_headers_cannot_replace_the_signers_own() {
        for name in [
            "host",
            "X-Amz-Date",
            "authorization",
            "x-amz-security-token",
        ] {
            let err = sign_with(&test_credentials(None), "us-east-1", &[(name, "x")], noon());
            assert!(err.is_err(), "{name} was accepted");
        }
    }

    #[test]
    fn a_region_that_is_not_a_region_name_is_refused() {
        assert!(sign_with(&test_credentials(None), "evil.com/", &[], noon()).is_err());
        assert!(Sts::new("us-east-1.evil.com#", None, CallCounter::new()).is_err());
    }

    #[test]
    fn an_endpoint_with_a_path_or_another_scheme_is_refused() {
        for endpoint in ["http://127.0.0.1:1/sts", "ftp://127.0.0.1", "127.0.0.1:80"] {
            assert!(Sts::new("us-east-1", Some(endpoint), CallCounter::new()).is_err());
        }
    }

    #[tokio::test]
    async fn signing_from_a_provider_uses_its_credentials() {
        let provider = test_credentials(Some("from-provider"));
        let req = sign_from(&provider, "us-east-1", &[SERVER_ID], noon())
            .await
            .unwrap();
        assert_eq!(req.headers["x-amz-security-token"], "from-provider");
        assert_eq!(req, {
            let creds = test_credentials(Some("from-provider"));
            sign_with(&creds, "us-east-1", &[SERVER_ID], noon()).unwrap()
        });
    }

    /// What the emulator received: method, path, headers (one value each) and body.
    #[derive(Debug, Clone, PartialEq)]
    struct Seen {
        method: String,
        path: String,
        headers: BTreeMap<String, String>,
        body: String,
    }

    /// An STS on 127.0.0.1 that answers every request with `status` and `answer`.
    async fn sts_emulator(
        status: StatusCode,
        answer: &'static str,
    ) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let record = record.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 1 << 16).await.unwrap();
                record.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
                        .collect(),
                    body: String::from_utf8(body.to_vec()).unwrap(),
                });
                (status, answer)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    const IDENTITY_ANSWER: &str = r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>arn:aws:sts::123456789012:assumed-role/orders-task/8f2c</Arn>
    <UserId>AROAEXAMPLEID:8f2c</UserId>
    <Account>123456789012</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata>
    <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
  </ResponseMetadata>
</GetCallerIdentityResponse>
"#;

    const SIGNATURE_ERROR: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>SignatureDoesNotMatch</Code>
    <Message>The request signature we calculated does not match the signature you provided.</Message>
  </Error>
  <RequestId>01234567-89ab-cdef-0123-456789abcdef</RequestId>
</ErrorResponse>
"#;

    #[tokio::test]
    async fn caller_arn_sends_exactly_the_signed_request_to_the_pinned_host_and_reads_the_arn() {
        let (endpoint, seen) = sts_emulator(StatusCode::OK, IDENTITY_ANSWER).await;
        let calls = CallCounter::new();
        let sts = Sts::new("us-east-1", Some(&endpoint), calls.clone()).unwrap();
        let req = signed(Some("the-token"), noon());

        let arn = sts.caller_arn(&req).await.unwrap();

        assert_eq!(
            arn,
            "arn:aws:sts::123456789012:assumed-role/orders-task/8f2c"
        );
        let seen = seen.lock().unwrap().clone();
        let expected = Seen {
            method: "POST".into(),
            path: "/".into(),
            headers: req.headers.clone(),
            body: CALLER_IDENTITY_BODY.into(),
        };
        assert_eq!(seen, [expected]);
        assert_eq!(seen[0].headers["host"], "sts.us-east-1.amazonaws.com");
        assert_eq!(calls.get("GetCallerIdentity", Outcome::Ok), 1);
    }

    #[tokio::test]
    async fn the_host_sent_is_the_pinned_one_whatever_the_request_says() {
        let (endpoint, seen) = sts_emulator(StatusCode::OK, IDENTITY_ANSWER).await;
        let sts = Sts::new("us-east-1", Some(&endpoint), CallCounter::new()).unwrap();
        let mut req = signed(None, noon());
        req.headers.insert("host".into(), "sts.evil.example".into());

        sts.caller_arn(&req).await.unwrap();

        assert_eq!(seen.lock().unwrap()[0].headers["host"], sts.host());
    }

    #[tokio::test]
    async fn an_sts_error_answer_becomes_an_aws_error_with_its_code_and_message() {
        let (endpoint, _seen) = sts_emulator(StatusCode::FORBIDDEN, SIGNATURE_ERROR).await;
        let calls = CallCounter::new();
        let sts = Sts::new("us-east-1", Some(&endpoint), calls.clone()).unwrap();

        let err = sts.caller_arn(&signed(None, noon())).await.unwrap_err();

        assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
        let AwsError::Call {
            operation,
            target,
            message,
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(*operation, "GetCallerIdentity");
        assert_eq!(target, "sts.us-east-1.amazonaws.com");
        assert!(
            message.starts_with("The request signature we calculated"),
            "{message}"
        );
        assert_eq!(calls.get("GetCallerIdentity", Outcome::Error), 1);
    }

    #[tokio::test]
    async fn an_answer_without_an_arn_is_an_error_not_an_empty_identity() {
        let (endpoint, _seen) = sts_emulator(StatusCode::OK, "<Other/>").await;
        let sts = Sts::new("us-east-1", Some(&endpoint), CallCounter::new()).unwrap();
        let err = sts.caller_arn(&signed(None, noon())).await.unwrap_err();
        assert!(err.to_string().contains("no Arn"), "{err}");
    }

    #[tokio::test]
    async fn throttling_is_counted_as_throttled() {
        let throttled = "<ErrorResponse><Error><Code>Throttling</Code>\
                         <Message>Rate exceeded</Message></Error></ErrorResponse>";
        let (endpoint, _seen) = sts_emulator(StatusCode::BAD_REQUEST, throttled).await;
        let calls = CallCounter::new();
        let sts = Sts::new("us-east-1", Some(&endpoint), calls.clone()).unwrap();
        let err = sts.caller_arn(&signed(None, noon())).await.unwrap_err();
        assert_eq!(err.code(), Some("Throttling"));
        assert_eq!(calls.get("GetCallerIdentity", Outcome::Throttled), 1);
    }
}
