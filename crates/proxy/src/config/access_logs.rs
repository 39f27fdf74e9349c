//! Where access-log records go, compiled with the snapshot: each provider
//! weftd selected (`telemetry.accessLogProviders`: files, the proxy's own
//! sink, OpenTelemetry collectors) with its sides and its format parsed
//! once here, not per request. A format the proxy cannot parse rejects
//! the config (weftd refuses such a MeshConfig before it gets here).
//!
//! Without pushed providers, the one destination of the older fields
//! (`accessLogTextFormat`/`accessLogLabels`/`accessLogPath`) or, with
//! none, the proxy's `--access-log` sink in Istio's default format.

use weft_proto::proxy::v1 as pb;

use super::log_format::{LogFormat, Piece, parse};

/// The access-log destinations of one snapshot, in the order pushed.
#[derive(Debug)]
pub struct AccessLogs {
    pub providers: Vec<LogProvider>,
}

impl Default for AccessLogs {
    /// The proxy's own sink, Istio's default line.
    fn default() -> Self {
        Self::own(String::new(), None)
    }
}

#[derive(Debug)]
pub struct LogProvider {
    /// MeshConfig's name (empty for the proxy's own destination).
    pub name: String,
    pub client: bool,
    pub server: bool,
    pub kind: LogKind,
}

#[derive(Debug)]
pub enum LogKind {
    /// A file (`/dev/stdout` is stdout); `path` empty: the proxy's own
    /// sink. `format` `None`: Istio's default line, in the pushed encoding.
    File {
        path: String,
        format: Option<LogFormat>,
    },
    /// OTLP/gRPC logs to the first endpoint of `cluster`, as Envoy's
    /// OpenTelemetry access logger writes them: `body` (else Istio's
    /// default line) as the record's body, `attributes` typed.
    Otel {
        cluster: String,
        log_name: String,
        body: Option<Vec<Piece>>,
        attributes: Vec<(String, Vec<Piece>)>,
    },
}

impl LogProvider {
    pub fn covers(&self, client: bool) -> bool {
        if client { self.client } else { self.server }
    }

    fn reads_headers(&self) -> bool {
        let header = |p: &Piece| {
            matches!(
                p,
                Piece::Op(super::log_format::Op::Req(_) | super::log_format::Op::Resp(_))
            )
        };
        match &self.kind {
            LogKind::File { format, .. } => format.as_ref().is_some_and(LogFormat::reads_headers),
            LogKind::Otel {
                body, attributes, ..
            } => {
                body.iter().flatten().any(header)
                    || attributes.iter().flat_map(|(_, p)| p).any(header)
            }
        }
    }
}

impl AccessLogs {
    /// Compiles the pushed settings; an unparsable format is an error
    /// naming the provider.
    pub fn compile(telemetry: Option<&pb::Telemetry>) -> Result<Self, String> {
        let Some(t) = telemetry else {
            return Ok(Self::default());
        };
        if t.access_log_providers.is_empty() {
            let format = format(&t.access_log_text_format, &t.access_log_labels)
                .map_err(|e| format!("telemetry.accessLogFormat: {e}"))?;
            return Ok(Self::own(t.access_log_path.clone(), format));
        }
        let mut providers = Vec::with_capacity(t.access_log_providers.len());
        for provider in &t.access_log_providers {
            let at = |e: String| format!("telemetry.accessLogProviders[{:?}]: {e}", provider.name);
            let kind = if provider.otel_cluster.is_empty() {
                LogKind::File {
                    path: provider.path.clone(),
                    format: format(&provider.text_format, &provider.labels).map_err(at)?,
                }
            } else {
                let body = match provider.text_format.as_str() {
                    "" => None,
                    text => Some(parse(text).map_err(at)?),
                };
                let mut attributes = Vec::with_capacity(provider.labels.len());
                for label in &provider.labels {
                    let pieces = parse(&label.format)
                        .map_err(|e| at(format!("label {}: {e}", label.name)))?;
                    attributes.push((label.name.clone(), pieces));
                }
                LogKind::Otel {
                    cluster: provider.otel_cluster.clone(),
                    log_name: provider.log_name.clone(),
                    body,
                    attributes,
                }
            };
            providers.push(LogProvider {
                name: provider.name.clone(),
                client: provider.client,
                server: provider.server,
                kind,
            });
        }
        Ok(Self { providers })
    }

    /// One destination for both sides: a file, or (empty) the proxy's sink.
    fn own(path: String, format: Option<LogFormat>) -> Self {
        Self {
            providers: vec![LogProvider {
                name: String::new(),
                client: true,
                server: true,
                kind: LogKind::File { path, format },
            }],
        }
    }

    /// Whether some provider's format reads request or response headers
    /// beyond those a record keeps anyway.
    pub fn reads_headers(&self) -> bool {
        self.providers.iter().any(LogProvider::reads_headers)
    }
}

/// Labels (JSON) over text; neither: `None`.
fn format(text: &str, labels: &[pb::AccessLogLabel]) -> Result<Option<LogFormat>, String> {
    if !labels.is_empty() {
        return LogFormat::json(labels.iter().map(|l| (l.name.as_str(), l.format.as_str())))
            .map(Some);
    }
    if text.is_empty() {
        return Ok(None);
    }
    LogFormat::text(text).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, format: &str) -> pb::AccessLogLabel {
        pb::AccessLogLabel {
            name: name.into(),
            format: format.into(),
        }
    }

    #[test]
    fn providers_compile_with_their_formats_and_a_bad_one_names_its_provider() {
        let mut pushed = pb::Telemetry {
            access_log_providers: vec![
                pb::AccessLogProvider {
                    name: "audit".into(),
                    client: true,
                    path: "/tmp/audit.log".into(),
                    labels: vec![label("code", "%RESPONSE_CODE%")],
                    ..Default::default()
                },
                pb::AccessLogProvider {
                    name: "otel".into(),
                    server: true,
                    otel_cluster: "outbound|4317||otel".into(),
                    log_name: "mesh".into(),
                    text_format: "%REQ(X-USER)%".into(),
                    labels: vec![label("code", "%RESPONSE_CODE%")],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let logs = AccessLogs::compile(Some(&pushed)).expect("valid");
        assert_eq!(logs.providers.len(), 2);
        assert!(logs.providers[0].covers(true) && !logs.providers[0].covers(false));
        assert!(matches!(
            &logs.providers[0].kind,
            LogKind::File { path, format: Some(LogFormat::Json(_)) } if path == "/tmp/audit.log"
        ));
        assert!(matches!(
            &logs.providers[1].kind,
            LogKind::Otel { body: Some(_), attributes, .. } if attributes.len() == 1
        ));
        assert!(logs.reads_headers(), "the OTel body reads x-user");

        pushed.access_log_providers[1].labels = vec![label("bad", "%NOPE%")];
        let err = AccessLogs::compile(Some(&pushed)).expect_err("bad operator");
        assert!(
            err.starts_with("telemetry.accessLogProviders[\"otel\"]: label bad:"),
            "{err}"
        );
    }

    #[test]
    fn without_providers_the_older_fields_or_the_proxys_sink() {
        let plain = AccessLogs::compile(None).expect("none");
        assert!(matches!(
            &plain.providers[..],
            [LogProvider { kind: LogKind::File { path, format: None }, client: true, server: true, .. }]
                if path.is_empty()
        ));
        let pushed = pb::Telemetry {
            access_log_text_format: "%DURATION%".into(),
            access_log_path: "/dev/stdout".into(),
            ..Default::default()
        };
        let older = AccessLogs::compile(Some(&pushed)).expect("valid");
        assert!(matches!(
            &older.providers[0].kind,
            LogKind::File { path, format: Some(LogFormat::Text(_)) } if path == "/dev/stdout"
        ));
        assert!(!older.reads_headers());
    }
}
