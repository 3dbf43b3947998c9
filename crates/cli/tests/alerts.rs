//! The chart's PrometheusRule, checked by the real `promtool` (built by `scripts/build-promtool`):
//! `promtool check rules`, and `promtool test rules` on series scraped from a real agent's `/metrics` (real
//! OpenBao, real kube-apiservers). Held as scraped while time passes, as Prometheus sees an agent that stopped
//! succeeding, every alert fires once the threshold its mesh file sets is crossed, and not before.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::Mesh;
use support::agent::{agent_identity, http_get, start_agent_with};
use support::helm::{repo, run, template};

/// The mesh file's lifetimes: short enough that every alert fires within a day of test time, and a root that
/// expires within `ca.intermediate.ttl` + 2 × `phaseDwell` (6h) so MeshtrustRootExpiring fires on the values
/// as scraped.
const LIFETIMES: &str = "ca:\n  root:\n    ttl: 5h\n  intermediate:\n    ttl: 4h\n    renewBefore: 2h\n  rootRotation:\n    phaseDwell: 1h\n";
/// The labels Prometheus adds to what it scrapes from the agent's pod (the ServiceMonitor's target labels).
const TARGET: &str =
    r#"namespace="istio-system",pod="meshtrust-agent-0",job="meshtrust-agent-metrics""#;
/// Minutes of test time the scraped values are held for (a day and a bit).
const HOLD_MINUTES: u64 = 26 * 60;

/// The promtool binary `scripts/build-promtool` caches.
fn promtool() -> Command {
    let out = Command::new("bash")
        .arg(repo().join("scripts/build-promtool"))
        .arg("print-path")
        .output()
        .expect("run scripts/build-promtool print-path");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "promtool is not installed at {}: run scripts/build-promtool (scripts/test does) to build it from its Go module",
        path.display()
    );
    Command::new(path)
}

/// The rule groups of the chart's PrometheusRule, as a Prometheus rule file (JSON is YAML).
fn rule_file(mesh: &Path, dir: &Path) -> (PathBuf, Value) {
    let objects = template(
        "istio-system",
        "cluster-a",
        mesh,
        &["prometheusRule.enabled=true"],
    );
    let rule = objects
        .into_iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let path = dir.join("meshtrust.rules.json");
    std::fs::write(&path, rule["spec"].to_string()).expect("write rules");
    (path, rule["spec"].clone())
}

/// Every sample line of an OpenMetrics text as `(series, value)`, with the target labels added.
fn samples(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let series = match series.split_once('{') {
                Some((name, labels)) => format!("{name}{{{TARGET},{labels}"),
                None => format!("{series}{{{TARGET}}}"),
            };
            Some((series, value))
        })
        .collect()
}

fn value_of(samples: &[(String, f64)], prefix: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no sample {prefix} in {samples:?}"))
}

/// The first whole minute of test time at which `threshold_at` (Unix seconds) lies behind, plus `hold` minutes
/// of the alert's `for` and one evaluation to spare.
fn minute_after(threshold_at: f64, start: u64, hold: u64) -> u64 {
    let seconds = (threshold_at - start as f64).max(0.0);
    (seconds / 60.0).ceil() as u64 + hold + 2
}

/// An alert as promtool expects it: the rule's labels and its annotations with `$labels` filled in.
fn expected(rules: &Value, alert: &str, labels: Value) -> Value {
    let rule = rules["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|r| r["alert"] == alert)
        .unwrap_or_else(|| panic!("no rule {alert}"));
    let mut exp_labels = labels.as_object().cloned().unwrap_or_default();
    for (k, v) in rule["labels"].as_object().expect("labels") {
        exp_labels.insert(k.clone(), v.clone());
    }
    let mut annotations = serde_json::Map::new();
    for (k, v) in rule["annotations"].as_object().expect("annotations") {
        let mut text = v.as_str().expect("text").to_string();
        for (label, value) in &exp_labels {
            text = text.replace(
                &format!("{{{{ $labels.{label} }}}}"),
                value.as_str().unwrap_or_default(),
            );
        }
        annotations.insert(k.clone(), json!(text));
    }
    json!({"exp_labels": exp_labels, "exp_annotations": annotations})
}

fn case(minute: u64, alert: &str, firing: Vec<Value>) -> Value {
    json!({"eval_time": format!("{minute}m"), "alertname": alert, "exp_alerts": firing})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_rule_passes_promtool_and_fires_on_a_real_agents_metrics() {
    let mesh = Mesh::start(2, LIFETIMES);
    mesh.ok(&["apply"]);
    agent_identity(&mesh, 0).await;
    // The agent's mesh file also names cluster-c, a peer that never published: its remote secret is stale.
    let agent_mesh = mesh.env.dir().join("mesh-with-c.yaml");
    let text = std::fs::read_to_string(&mesh.file).expect("mesh file");
    std::fs::write(
        &agent_mesh,
        format!("{text}  - name: cluster-c\n    network: network-c\n    apiServer: https://127.0.0.1:1\n"),
    )
    .expect("agent mesh file");
    let agent = start_agent_with(&mesh, 0, &agent_mesh, &[]);
    let (status, metrics) = http_get(agent.port, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200, "{metrics}");
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    drop(agent);

    let dir = tempfile::tempdir().expect("tempdir");
    let (rules_path, rules) = rule_file(&mesh.file, dir.path());
    let check = run({
        let mut cmd = promtool();
        cmd.args(["check", "rules"]).arg(&rules_path);
        cmd
    });
    assert!(check.contains("SUCCESS: 8 rules found"), "{check}");

    let scraped = samples(&metrics);
    let setting = |name: &str| {
        value_of(
            &scraped,
            &format!("meshtrust_mesh_setting_seconds{{{TARGET},setting=\"{name}\"}}"),
        )
    };
    let intermediate = value_of(
        &scraped,
        &format!("meshtrust_certificate_expiry_timestamp_seconds{{{TARGET},secret=\"cacerts\"}}"),
    );
    let renew_before = setting("ca.intermediate.renewBefore");
    let token = value_of(
        &scraped,
        "meshtrust_openbao_token_expiry_timestamp_seconds{",
    );
    let token_ttl = value_of(&scraped, "meshtrust_openbao_token_ttl_seconds{");
    let peer_token = value_of(
        &scraped,
        &format!("meshtrust_peer_token_expiry_timestamp_seconds{{{TARGET},peer=\"cluster-b\"}}"),
    );
    let refresh_before = setting("remoteSecrets.refreshBefore");
    assert_eq!(
        renew_before, 7200.0,
        "the mesh file's renewBefore, exported"
    );
    assert_eq!(
        value_of(&scraped, "meshtrust_leader{"),
        1.0,
        "the scraped agent leads"
    );

    let target = json!({"namespace": "istio-system", "pod": "meshtrust-agent-0", "job": "meshtrust-agent-metrics"});
    let with = |extra: &[(&str, &str)]| {
        let mut labels = target.clone();
        for (k, v) in extra {
            labels[*k] = json!(v);
        }
        labels
    };
    let e = |alert: &str, labels: Value| expected(&rules, alert, labels);
    let overdue = minute_after(intermediate - renew_before, start, 15);
    let expiring = minute_after(intermediate - renew_before / 2.0, start, 5);
    let token_at = minute_after(token - token_ttl / 4.0, start, 5);
    let peer_at = minute_after(peer_token - refresh_before / 2.0, start, 15);
    let cacerts = with(&[("secret", "cacerts")]);
    let all = [
        "MeshtrustIntermediateRenewalOverdue",
        "MeshtrustIntermediateExpiring",
        "MeshtrustRootExpiring",
        "MeshtrustNoSuccessfulRound",
        "MeshtrustNoLeader",
        "MeshtrustOpenBaoTokenExpiring",
        "MeshtrustRemoteSecretStale",
        "MeshtrustPeerTokenExpiring",
    ];
    let mut cases: Vec<Value> = all
        .iter()
        .filter(|a| **a != "MeshtrustRootExpiring")
        .map(|a| case(10, a, vec![]))
        .collect();
    cases.extend([
        // As scraped: the root expires within ca.intermediate.ttl + 2 × phaseDwell.
        case(
            10,
            "MeshtrustRootExpiring",
            vec![e(
                "MeshtrustRootExpiring",
                with(&[("secret", "cacerts/root")]),
            )],
        ),
        // The agent stalled: no round since the scrape, the peer that never published still stale.
        case(
            30,
            "MeshtrustNoSuccessfulRound",
            vec![e("MeshtrustNoSuccessfulRound", target.clone())],
        ),
        case(
            30,
            "MeshtrustRemoteSecretStale",
            vec![e(
                "MeshtrustRemoteSecretStale",
                with(&[("peer", "cluster-c")]),
            )],
        ),
        // The intermediate, never renewed, enters renewBefore, then half of it.
        case(overdue - 3, "MeshtrustIntermediateRenewalOverdue", vec![]),
        case(
            overdue,
            "MeshtrustIntermediateRenewalOverdue",
            vec![e("MeshtrustIntermediateRenewalOverdue", cacerts.clone())],
        ),
        case(expiring - 3, "MeshtrustIntermediateExpiring", vec![]),
        case(
            expiring,
            "MeshtrustIntermediateExpiring",
            vec![e("MeshtrustIntermediateExpiring", cacerts.clone())],
        ),
        case(token_at - 3, "MeshtrustOpenBaoTokenExpiring", vec![]),
        case(
            token_at,
            "MeshtrustOpenBaoTokenExpiring",
            vec![e("MeshtrustOpenBaoTokenExpiring", target.clone())],
        ),
        case(peer_at - 3, "MeshtrustPeerTokenExpiring", vec![]),
        case(
            peer_at,
            "MeshtrustPeerTokenExpiring",
            vec![e(
                "MeshtrustPeerTokenExpiring",
                with(&[("peer", "cluster-b")]),
            )],
        ),
    ]);
    assert!(
        peer_at < HOLD_MINUTES,
        "the test holds the series long enough"
    );

    let held = |series: &str, value: f64| json!({"series": series, "values": format!("{value}+0x{HOLD_MINUTES}")});
    let input: Vec<Value> = scraped.iter().map(|(s, v)| held(s, *v)).collect();
    // The leader loses its Lease after 10 minutes and no replica takes it.
    let no_leader_input: Vec<Value> = scraped
        .iter()
        .map(|(s, v)| {
            if s.starts_with("meshtrust_leader{") {
                json!({"series": s, "values": "1x10 0x60"})
            } else {
                held(s, *v)
            }
        })
        .collect();
    let tests = json!({
        "rule_files": [rules_path.file_name().and_then(|f| f.to_str()).expect("name")],
        "evaluation_interval": "1m",
        "tests": [
            {"name": "held as scraped", "interval": "1m", "start_timestamp": start.to_string(),
             "input_series": input, "alert_rule_test": cases},
            {"name": "the leader steps down", "interval": "1m", "start_timestamp": start.to_string(),
             "input_series": no_leader_input, "alert_rule_test": [
                case(14, "MeshtrustNoLeader", vec![]),
                case(18, "MeshtrustNoLeader", vec![e("MeshtrustNoLeader", json!({}))]),
             ]},
        ],
    });
    let tests_path = dir.path().join("meshtrust.test.json");
    std::fs::write(&tests_path, tests.to_string()).expect("write tests");
    let mut cmd = promtool();
    cmd.current_dir(dir.path())
        .args(["test", "rules"])
        .arg(&tests_path);
    let out = cmd.output().expect("run promtool");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
