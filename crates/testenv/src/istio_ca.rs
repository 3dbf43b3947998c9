//! A minimal client for istiod's CA: `istio.v1.auth.IstioCertificateService/CreateCertificate` over TLS on the
//! secure gRPC port, authenticated like a sidecar with a ServiceAccount token (audience `istio-ca`).
//! The messages are written by hand from istio.io/api `security/v1alpha1/ca.proto`, so no protoc is needed.

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::TestEnvError;

/// `IstioCertificateRequest`; field 4 (`metadata`, a Struct) is left out: istiod treats it as optional.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded PKCS#10 CSR.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds.
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates: the workload certificate first, then the CA chain, the root last.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// The name istiod's own serving certificate carries (from `ISTIOD_CUSTOM_HOST` and its namespace).
pub const ISTIOD_HOST: &str = "istiod.istio-system.svc";

const METHOD: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// A workload certificate issued by istiod for a fresh P-256 key: returns istiod's `cert_chain`.
/// `roots_pem` is what the client trusts for istiod's serving certificate (the mesh root bundle).
pub async fn create_certificate(
    secure_grpc: &str,
    roots_pem: &str,
    token: &str,
    validity_seconds: i64,
) -> Result<Vec<String>, TestEnvError> {
    let grpc_err = |what: &str, e: &dyn std::fmt::Display| {
        TestEnvError::Grpc(format!("{what} istiod's CA at {secure_grpc}: {e}"))
    };
    let key = rcgen::KeyPair::generate()?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())?
        .serialize_request(&key)?
        .pem()?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(roots_pem))
        .domain_name(ISTIOD_HOST);
    let channel = Endpoint::from_shared(format!("https://{secure_grpc}"))
        .map_err(|e| grpc_err("addressing", &e))?
        .tls_config(tls)
        .map_err(|e| grpc_err("configuring TLS for", &e))?
        .connect()
        .await
        .map_err(|e| grpc_err("connecting to", &e))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| grpc_err("waiting for", &e))?;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: validity_seconds,
    });
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| TestEnvError::Grpc("the ServiceAccount token is not a valid header".into()))?;
    request.metadata_mut().insert("authorization", bearer);
    let response: tonic::Response<IstioCertificateResponse> = client
        .unary(
            request,
            PathAndQuery::from_static(METHOD),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(|status| grpc_err("CreateCertificate refused by", &status))?;
    Ok(response.into_inner().cert_chain)
}
