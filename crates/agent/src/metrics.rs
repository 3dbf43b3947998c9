//! The agent's Prometheus metrics, kept in a `prometheus-client` registry and encoded as OpenMetrics text.
//! Label values come from small fixed sets (error kinds, plan action types) so the series count stays bounded.

use meshtrust_core::plan::Action;
use meshtrust_core::ports::{ErrorKind, System};
use meshtrust_engine::EngineError;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod horizons;

pub use horizons::Horizons;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the reconcile duration buckets, in seconds: an idle round takes milliseconds, a round
/// that issues intermediates takes seconds, one stuck on OpenBao's timeout up to a minute.
const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every value the `kind` label of the error counter takes; all are exported from the start, at zero.
pub const ERROR_KINDS: [&str; 6] = [
    "openbao",
    "kubernetes",
    "conflict",
    "blocked",
    "pki",
    "other",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leader: Gauge,
    reconciles: Counter,
    errors: Family<KindLabel, Counter>,
    writes: Counter,
    writes_by_kind: Family<KindLabel, Counter>,
    duration: Histogram,
    last_success: Gauge,
    horizons: Horizons,
}

/// Registers `metric` under `name` (the registry appends `_total` to counters and the unit to names when it
/// encodes) and hands it back for recording.
pub(crate) fn registered<M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let secs = || Some(Unit::Seconds);
        let errors = registered(
            &mut r,
            "meshtrust_reconcile_errors",
            "Reconcile rounds that failed, by what failed",
            None,
            Family::<KindLabel, Counter>::default(),
        );
        for kind in ERROR_KINDS {
            let _ = errors.get_or_create(&KindLabel { kind: kind.into() });
        }
        Metrics {
            leader: registered(
                &mut r,
                "meshtrust_leader",
                "1 if this replica holds the Lease and writes",
                None,
                Gauge::default(),
            ),
            reconciles: registered(
                &mut r,
                "meshtrust_reconciles",
                "Reconcile rounds run",
                None,
                Counter::default(),
            ),
            errors,
            writes: registered(
                &mut r,
                "meshtrust_writes",
                "Changes applied",
                None,
                Counter::default(),
            ),
            writes_by_kind: registered(
                &mut r,
                "meshtrust_writes_by_kind",
                "Changes applied, by plan action type",
                None,
                Family::default(),
            ),
            duration: registered(
                &mut r,
                "meshtrust_reconcile_duration",
                "Duration of successful reconcile rounds",
                secs(),
                Histogram::new(DURATION_BUCKETS),
            ),
            last_success: registered(
                &mut r,
                "meshtrust_last_success_timestamp",
                "When the last reconcile succeeded (Unix time)",
                secs(),
                Gauge::default(),
            ),
            horizons: Horizons::register(&mut r),
            registry: r,
        }
    }
}

impl Metrics {
    pub fn success(&self, now: i64, seconds: f64) {
        self.reconciles.inc();
        self.duration.observe(seconds);
        self.last_success.set(now);
    }

    pub fn failure(&self, kind: &'static str) {
        self.reconciles.inc();
        self.errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    pub fn wrote(&self, action: &Action) {
        self.writes.inc();
        self.writes_by_kind
            .get_or_create(&KindLabel {
                kind: action_kind(action),
            })
            .inc();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// What the alerts compare: expiries and the mesh file's thresholds.
    pub fn horizons(&self) -> &Horizons {
        &self.horizons
    }

    /// OpenMetrics text, ending in `# EOF`.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// What failed, as one of [`ERROR_KINDS`].
pub fn error_kind(error: &EngineError) -> &'static str {
    match error {
        EngineError::Port(p) if p.kind == ErrorKind::Conflict => "conflict",
        EngineError::MarkerNotMoved { source, .. } => error_kind(source),
        EngineError::Port(p) => match p.system {
            System::OpenBao => "openbao",
            System::Cluster(_) => "kubernetes",
        },
        EngineError::Pki { .. } => "pki",
        EngineError::Blocked(_) => "blocked",
        _ => "other",
    }
}

/// The action's type as the plan's JSON names it (`issueIntermediate`, `writePolicy`, ...): one value per
/// action variant, never a name or a path.
fn action_kind(action: &Action) -> String {
    serde_json::to_value(action)
        .ok()
        .and_then(|v| v.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "other".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtrust_core::ports::PortError;

    #[test]
    fn errors_map_to_a_small_fixed_set_of_kinds() {
        let port = |system, kind| EngineError::Port(PortError::new(system, kind, "op", "msg"));
        assert_eq!(
            error_kind(&port(System::OpenBao, ErrorKind::Unavailable)),
            "openbao"
        );
        assert_eq!(
            error_kind(&port(System::Cluster("a".into()), ErrorKind::Denied)),
            "kubernetes"
        );
        assert_eq!(
            error_kind(&port(System::OpenBao, ErrorKind::Conflict)),
            "conflict"
        );
        assert_eq!(error_kind(&EngineError::Blocked(vec![])), "blocked");
        assert_eq!(error_kind(&EngineError::Inconsistent("x".into())), "other");
    }

    #[test]
    fn writes_are_labelled_by_action_type() {
        let metrics = Metrics::default();
        metrics.wrote(&Action::WritePolicy {
            name: "meshtrust-agent-a".into(),
        });
        let text = metrics.encode().expect("encode");
        assert!(
            text.contains("meshtrust_writes_by_kind_total{kind=\"writePolicy\"} 1"),
            "{text}"
        );
        assert!(text.contains("meshtrust_writes_total 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
