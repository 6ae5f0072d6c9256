//! Logs, traces and metrics of the process: the tracing subscriber (text or JSON lines, with
//! OpenTelemetry OTLP export when configured), the Prometheus recorder behind `/metrics`, and
//! the samplers that keep process and queue gauges current.

use outcall_domain::metrics::{self as m, Kind};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How logs are written and whether traces are exported.
#[derive(Debug, Clone, Default)]
pub struct LogSetup {
    pub filter: String,
    pub json: bool,
    /// OTLP/HTTP endpoint (`http://collector:4318`); traces go to `<endpoint>/v1/traces`.
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (default) or `http/json`.
    pub otlp_protocol: Option<String>,
}

#[cfg(feature = "otlp")]
static TRACER_PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber. Fails only on an invalid OTLP setting.
pub fn init_logging(setup: &LogSetup) -> Result<(), String> {
    // The SIP stack logs whole messages (with plaintext numbers) at info and below: keep it at
    // warn unless the operator names it explicitly.
    let mut spec = setup.filter.clone();
    if !spec.contains("rsipstack") {
        spec.push_str(",rsipstack=warn");
    }
    // The TLS verifier logs a rejected certificate at error level; the HTTP client's error
    // (printed by the client commands, recorded by webhook deliveries) carries the same reason.
    if !spec.contains("rustls_platform_verifier") {
        spec.push_str(",rustls_platform_verifier=off");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let fmt = if setup.json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));
    match &setup.otlp_endpoint {
        None => {
            registry.init();
            Ok(())
        }
        Some(endpoint) => init_otlp(registry, endpoint, setup.otlp_protocol.as_deref()),
    }
}

#[cfg(feature = "otlp")]
fn init_otlp<S>(registry: S, endpoint: &str, protocol: Option<&str>) -> Result<(), String>
where
    S: tracing::Subscriber
        + for<'a> tracing_subscriber::registry::LookupSpan<'a>
        + Send
        + Sync
        + 'static,
{
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let protocol = match protocol.unwrap_or("http/protobuf") {
        "http/protobuf" => Protocol::HttpBinary,
        "http/json" => Protocol::HttpJson,
        other => {
            return Err(format!(
                "OTLP protocol `{other}` is not supported (http/protobuf, http/json)"
            ))
        }
    };
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(url)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("outcall")
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("outcall");
    // Spans at info and above are exported, whatever the log filter prints.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::EnvFilter::new(
            "info,rsipstack=off,h2=off,hyper=off,reqwest=off,sqlx=off",
        ));
    registry.with(otel).init();
    let _ = TRACER_PROVIDER.set(provider);
    outcall_telephony::trace::set_link_hook(link_span);
    Ok(())
}

#[cfg(not(feature = "otlp"))]
fn init_otlp<S>(_registry: S, _endpoint: &str, _protocol: Option<&str>) -> Result<(), String> {
    Err("this build has no OTLP exporter (build with the `otlp` feature)".into())
}

/// Makes `span` a child of the remote trace `trace_id`, so its exported spans carry that id.
#[cfg(feature = "otlp")]
fn link_span(span: &tracing::Span, trace_id: &str) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Ok(tid) = TraceId::from_hex(trace_id) else {
        return;
    };
    let sid = SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes());
    let sc = SpanContext::new(tid, sid, TraceFlags::SAMPLED, true, TraceState::default());
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
}

/// Flushes exported spans (at exit).
pub fn shutdown_tracing() {
    #[cfg(feature = "otlp")]
    if let Some(p) = TRACER_PROVIDER.get() {
        let _ = p.force_flush();
        let _ = p.shutdown();
    }
}

/// The process's Prometheus recorder, installed once.
static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (buckets and help texts from the metric catalogue) and
/// returns a renderer for `/metrics`. Later calls return the same renderer. Call it on the
/// tokio runtime (its upkeep is a task).
pub fn install_metrics() -> Result<Arc<dyn Fn() -> String + Send + Sync>, String> {
    let handle = match HANDLE.get() {
        Some(h) => h.clone(),
        None => {
            let mut b = metrics_exporter_prometheus::PrometheusBuilder::new();
            for d in m::ALL.iter().filter(|d| d.kind == Kind::Histogram) {
                b = b
                    .set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(d.name.to_string()),
                        d.buckets,
                    )
                    .map_err(|e| format!("metric {}: {e}", d.name))?;
            }
            let h = b
                .install_recorder()
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
            for d in m::ALL {
                match d.kind {
                    Kind::Counter => metrics::describe_counter!(d.name, d.help),
                    Kind::Gauge => metrics::describe_gauge!(d.name, d.help),
                    Kind::Histogram => {
                        metrics::describe_histogram!(d.name, metrics::Unit::Seconds, d.help)
                    }
                }
            }
            metrics::gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            metrics::gauge!(m::PROCESS_START).set(jiff::Timestamp::now().as_second() as f64);
            // Histograms and idle series are compacted periodically.
            let upkeep = h.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
            let _ = HANDLE.set(h.clone());
            h
        }
    };
    Ok(Arc::new(move || {
        sample_process();
        handle.render()
    }))
}

/// Process CPU, memory, descriptors and threads, read from /proc at scrape time.
fn sample_process() {
    // Whole seconds: the metrics facade's counters are integers.
    let (cpu, _) = super::proc_stats::cpu_seconds();
    metrics::counter!(m::PROCESS_CPU).absolute(cpu as u64);
    metrics::gauge!(m::PROCESS_RSS).set(super::proc_stats::rss_kib() as f64 * 1024.0);
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!(m::PROCESS_FDS).set(d.count() as f64);
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/task") {
        metrics::gauge!(m::PROCESS_THREADS).set(d.count() as f64);
    }
}
