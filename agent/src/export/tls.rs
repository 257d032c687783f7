//! TLS to the collector, from the standard variables: `OTEL_EXPORTER_OTLP_CERTIFICATE` (the CA
//! that signed the collector's certificate; without it the system's roots), and
//! `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` with `OTEL_EXPORTER_OTLP_CLIENT_KEY` (mutual TLS),
//! each with its `_TRACES_` / `_METRICS_` variant, which wins. One rustls (with ring) serves
//! tonic and reqwest.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {variable}={path}: {source}; point it at a readable PEM file")]
    Read {
        variable: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{given} is set but {missing} is not: mutual TLS needs both the client certificate and its key"
    )]
    HalfIdentity { given: String, missing: String },
    #[error("the TLS settings for the collector are not usable: {0}; check the PEM files")]
    Build(String),
}

/// Which signal's variables to read first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Metrics,
    Logs,
}

/// PEM contents, read once at start (a file that cannot be read stops the agent then, not at
/// the first export).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    pub fn from_env(signal: Signal) -> Result<Self, TlsError> {
        let sig = match signal {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        };
        let read = |name: &str| -> Result<Option<(String, Vec<u8>)>, TlsError> {
            let specific = format!("OTEL_EXPORTER_OTLP_{sig}_{name}");
            let generic = format!("OTEL_EXPORTER_OTLP_{name}");
            for variable in [specific, generic] {
                let Some(path) = std::env::var_os(&variable).filter(|p| !p.is_empty()) else {
                    continue;
                };
                let path = PathBuf::from(path);
                return std::fs::read(&path)
                    .map(|pem| Some((variable.clone(), pem)))
                    .map_err(|source| TlsError::Read {
                        variable,
                        path,
                        source,
                    });
            }
            Ok(None)
        };
        let ca = read("CERTIFICATE")?.map(|(_, pem)| pem);
        let identity = match (read("CLIENT_CERTIFICATE")?, read("CLIENT_KEY")?) {
            (Some((_, cert)), Some((_, key))) => Some((cert, key)),
            (None, None) => None,
            (Some((given, _)), None) => {
                return Err(TlsError::HalfIdentity {
                    given,
                    missing: format!("OTEL_EXPORTER_OTLP_{sig}_CLIENT_KEY"),
                });
            }
            (None, Some((given, _))) => {
                return Err(TlsError::HalfIdentity {
                    given,
                    missing: format!("OTEL_EXPORTER_OTLP_{sig}_CLIENT_CERTIFICATE"),
                });
            }
        };
        Ok(TlsFiles { ca, identity })
    }

    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.identity.is_none()
    }

    /// For tonic: the CA file when given, else the system's roots; the client identity if any.
    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }

    /// For reqwest (OTLP/HTTP): the same trust and identity.
    pub fn reqwest(&self) -> Result<reqwest::Client, TlsError> {
        let build = |e: reqwest::Error| TlsError::Build(e.to_string());
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(build)?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some((cert, key)) = &self.identity {
            let mut both = cert.clone();
            both.push(b'\n');
            both.extend_from_slice(key);
            builder = builder.identity(reqwest::Identity::from_pem(&both).map_err(build)?);
        }
        builder.build().map_err(build)
    }
}

/// Makes ring the process's rustls provider; reqwest (built without one) and tonic use it.
pub fn install_crypto_provider() {
    // An error means one is already installed, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
