use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use meshtrust_core::duration::Span;

/// A duration flag as the mesh file writes durations (`30s`, `5m`, `24h`); clap reports a bad one with its flag.
fn duration(text: &str) -> Result<Duration, String> {
    Span::parse(text).map(|s| Duration::from_secs(s.seconds()))
}

/// A period or timeout: zero would make a loop spin or every request fail at once.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d.is_zero() {
        return Err(format!("{text:?} is zero; use at least 1s"));
    }
    Ok(d)
}

/// Shared trust and cross-cluster discovery for multi-cluster Istio, with OpenBao as the only source of truth.
///
/// OpenBao credentials come from BAO_ADDR/BAO_TOKEN (or VAULT_ADDR/VAULT_TOKEN), like the bao CLI.
#[derive(Debug, Parser)]
#[command(name = "meshtrust", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    /// More log output on stderr (-v info, -vv debug). MESHTRUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The mesh file.
    #[arg(
        long,
        global = true,
        default_value = "mesh.yaml",
        env = "MESHTRUST_MESH"
    )]
    pub mesh: PathBuf,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Allow an http:// OpenBao address on a host other than loopback (tokens then cross the network in
    /// clear text). https:// needs no flag.
    #[arg(long, global = true)]
    pub allow_insecure_http: bool,
    /// How long one request to OpenBao or a Kubernetes API server may take (connect, send, answer) before
    /// the command fails, so a hung server cannot hang it. The agent has its own --openbao-timeout.
    #[arg(long, global = true, default_value = "30s", value_parser = positive_duration, env = "MESHTRUST_REQUEST_TIMEOUT")]
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what apply would change in OpenBao and in every cluster, and why. Writes nothing.
    Plan(PlanArgs),
    /// Make OpenBao and every cluster match the mesh file. A second run with nothing to do writes nothing.
    Apply(PlanArgs),
    /// Check that the mesh is consistent (same roots everywhere, valid chains, keys match, not expiring).
    /// Exits non-zero on any finding.
    Verify(VerifyArgs),
    /// One table of the mesh: roots, intermediates and their expiry, peers synced, reader tokens.
    Status(StatusArgs),
    /// Run the engine in a loop for one cluster, with that cluster's credentials and its own OpenBao role:
    /// repairs drift from a watch, follows OpenBao by polling its change index, renews what falls due.
    Agent(AgentArgs),
    /// CA operations.
    Ca(CaArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write man pages: one for meshtrust and one per subcommand into DIR, or meshtrust(1) on stdout.
    Man(ManArgs),
    /// OpenBao helpers.
    Bao(BaoArgs),
    /// Render manifests: GitOps (ArgoCD or Flux) in dependency order, or a cluster's remote secret as istioctl prints it.
    Render(RenderArgs),
    /// Write a commented mesh file from kubeconfig contexts, one cluster per context. Never overwrites a file.
    Init(InitArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// The kubeconfig to read. Default as kubectl: every file in $KUBECONFIG, else ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A context to add as a cluster named after it (repeat it; default: the current context).
    #[arg(long)]
    pub context: Vec<String>,
    /// OpenBao's URL (default: left to BAO_ADDR).
    #[arg(long, value_name = "URL")]
    pub openbao: Option<String>,
    /// Istio's mesh ID.
    #[arg(long, default_value = "mesh1")]
    pub mesh_id: String,
    /// The file to write; it must not exist yet ("-" prints it).
    #[arg(long, default_value = "mesh.yaml")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BaoArgs {
    #[command(subcommand)]
    pub command: BaoCommand,
}

#[derive(Debug, Subcommand)]
pub enum BaoCommand {
    /// Print the least-privilege policies apply writes (one per cluster's agent, and the admin's), as HCL.
    Policies(PoliciesArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PoliciesArgs {
    /// Print only the admin policy (pipe it to `bao policy write meshtrust-admin -`).
    #[arg(long, conflicts_with = "cluster")]
    pub admin: bool,
    /// Print only this cluster's agent policy.
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// Take over, in place, an existing istio-system/cacerts and istio-remote-secret-* that meshtrust does not
    /// manage (made by hand, istioctl or another controller already handed over).
    #[arg(long)]
    pub adopt: bool,
    /// Only OpenBao's side (namespace, mounts, root, auth, policies); the agents do the clusters.
    #[arg(long)]
    pub openbao_only: bool,
    /// Only one domain (with OpenBao's configuration): `ca` (roots and cacerts) or `remote-secrets` (reader
    /// identities, published kubeconfigs, istio-remote-secret-*). A migration moves one while the other waits
    /// for a hand-over; the other domain's blockers do not stop it.
    #[arg(long, value_enum, conflicts_with = "openbao_only")]
    pub only: Option<OnlyDomain>,
    /// Destroy the KV bundle `ca.importRoot.kvPath` imported the root from (every version and its metadata),
    /// once every cluster trusts and signs with a root generated inside OpenBao only; planned never earlier.
    #[arg(long)]
    pub destroy_imported_key: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnlyDomain {
    Ca,
    RemoteSecrets,
}

impl OnlyDomain {
    pub fn domain(self) -> meshtrust_core::plan::Domain {
        match self {
            OnlyDomain::Ca => meshtrust_core::plan::Domain::Trust,
            OnlyDomain::RemoteSecrets => meshtrust_core::plan::Domain::RemoteSecrets,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write meshtrust.1, meshtrust-apply.1, ... into this directory (created if needed).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CaArgs {
    #[command(subcommand)]
    pub command: CaCommand,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Rotate the root CA in phases, without a trust gap: (1) every cluster trusts old + new root,
    /// (2) intermediates are re-issued from the new root, (3) the old root is dropped once every cluster has
    /// signed with the new one for ca.rootRotation.phaseDwell.
    #[command(
        after_help = "Exit status: 0 the rotation is complete (or --step applied a phase); 3 it is under way and waits only for ca.rootRotation.phaseDwell (the agents, or a later run, finish it); 4 a phase is held by something that needs attention (printed); 1 an error."
    )]
    RotateRoot(RotateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    /// Run one phase and stop; run the command again for the next phase.
    #[arg(long, conflicts_with = "start")]
    pub step: bool,
    /// Only create the new root and return: the agents carry the mesh through the phases, each advancing on
    /// every cluster's published trust and waiting `ca.rootRotation.phaseDwell` before dropping the old root.
    #[arg(long)]
    pub start: bool,
    /// Wait this long between phases, so istiod can hand the new bundle to workloads (e.g. 24h in production).
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub phase_wait: Duration,
    /// Stay until the rotation is complete (through `ca.rootRotation.phaseDwell`), checking again every few
    /// seconds, instead of returning when a phase waits.
    #[arg(long, conflicts_with_all = ["start", "step"])]
    pub wait: bool,
    /// Drop the old root as soon as every cluster signs with the new one, without `ca.rootRotation.phaseDwell`.
    /// Workload certificates signed under the old root then stop being trusted at once: for tests only.
    #[arg(long)]
    pub skip_dwell: bool,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(subcommand)]
    pub command: RenderCommand,
}

#[derive(Debug, Subcommand)]
pub enum RenderCommand {
    /// ArgoCD Applications (sync waves) or Flux Kustomizations/HelmReleases (dependsOn), per cluster:
    /// OpenBao setup -> meshtrust agent -> istio-base -> istiod -> east-west gateway, with istiod's
    /// multi-primary values (meshID, clusterName, network).
    Gitops(GitopsArgs),
    /// The published remote secret of a cluster, exactly as `istioctl create-remote-secret` prints it.
    RemoteSecret(RemoteSecretArgs),
    /// The agent's deploy files for a cluster: ServiceAccount, least-privilege RBAC, mesh file ConfigMap, Deployment.
    Agent(RenderAgentArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlavorArg {
    Argocd,
    Flux,
}

#[derive(Debug, Clone, Args)]
pub struct GitopsArgs {
    #[arg(long, value_enum)]
    pub flavor: FlavorArg,
    /// Write one file per object into DIR/<cluster>/ instead of printing a multi-document YAML.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The Git repository ArgoCD reads the per-cluster paths from.
    #[arg(long, default_value = "https://git.example.com/platform/mesh.git")]
    pub repo_url: String,
    /// Base path of the per-cluster directories in the repository.
    #[arg(long, default_value = "clusters")]
    pub path: String,
    #[arg(long, default_value = "1.28.0")]
    pub istio_version: String,
    /// Where the agent's step comes from: the Git path `render agent --out` fills (manifests), or the Helm
    /// chart charts/meshtrust-agent published at --chart-repo (chart), with this cluster's values and the mesh file.
    #[arg(long, value_enum, default_value_t = AgentFrom::Manifests)]
    pub agent_from: AgentFrom,
    /// The Helm repository (https://...) or OCI registry (oci://...) serving the meshtrust-agent chart.
    #[arg(long, value_name = "URL", required_if_eq("agent_from", "chart"))]
    pub chart_repo: Option<String>,
    /// The meshtrust-agent chart version.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub chart_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentFrom {
    Manifests,
    Chart,
}

#[derive(Debug, Clone, Args)]
pub struct RemoteSecretArgs {
    #[arg(long)]
    pub cluster: String,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The cluster this agent runs in (a name from the mesh file).
    #[arg(long)]
    pub cluster: String,
    /// Use this kubeconfig. Default: in a pod the in-cluster configuration, outside one the mesh file's
    /// kubeconfig and context for --cluster (as apply uses).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address for /healthz, /readyz and /metrics. Default: 0.0.0.0:8080 in a pod, 127.0.0.1:8080 outside
    /// one; each agent on one machine needs its own port.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// How often to read OpenBao's change marker (one request of a few hundred bytes, whatever the mesh's
    /// size): a peer's change reaches this cluster within about this long.
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    pub poll_interval: Duration,
    /// A full reconcile at least this often (renewals).
    #[arg(long, default_value = "5m", value_parser = positive_duration)]
    pub resync_interval: Duration,
    /// Re-read every peer's published entry (and, during a root rotation, its trust facts) this often even
    /// when the change marker named none: the bound on how long a lost or forged hint delays a change. On
    /// OpenBao a listing of versions narrows it to the entries that changed.
    #[arg(long, default_value = "1h", value_parser = positive_duration)]
    pub full_reread_interval: Duration,
    /// Give up on an OpenBao request after this long (then back off and keep the last good state).
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub openbao_timeout: Duration,
    /// Abandon a round (poll or reconcile) that runs longer than this, count it as a failure and retry with
    /// backoff; SIGTERM and the Lease renewal never wait for a round.
    #[arg(long, default_value = "2m", value_parser = positive_duration)]
    pub round_timeout: Duration,
    /// The ServiceAccount token used to log in to OpenBao. Default: the pod's token in a pod, else TokenRequest.
    #[arg(long, conflicts_with = "token_request")]
    pub token_file: Option<PathBuf>,
    /// Get the login token from the TokenRequest API for agent.serviceAccount (the default outside a pod).
    #[arg(long)]
    pub token_request: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RenderAgentArgs {
    #[arg(long)]
    pub cluster: String,
    /// Write one file per object plus a kustomization.yaml into DIR instead of printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = concat!("ghcr.io/meshtrust/meshtrust:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// PEM file of the CA that signed OpenBao's TLS certificate: shipped as ConfigMap meshtrust-openbao-ca and
    /// given to the agent as BAO_CACERT.
    #[arg(long, value_name = "FILE")]
    pub openbao_cacert: Option<PathBuf>,
    /// An OpenBao HA node (repeat for each): the agent gets them as BAO_ADDRS and moves on to the next on a
    /// connection error.
    #[arg(long = "openbao-addr", value_name = "URL")]
    pub openbao_addrs: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn agent(extra: &[&str]) -> Result<AgentArgs, clap::Error> {
        let mut argv = vec!["meshtrust", "agent", "--cluster", "a"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Agent(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn duration_flags_are_typed_and_a_bad_one_names_its_flag() {
        let args = agent(&["--poll-interval", "1s", "--resync-interval", "1h30m"]).expect("parse");
        assert_eq!(args.poll_interval, Duration::from_secs(1));
        assert_eq!(args.resync_interval, Duration::from_secs(5400));
        assert_eq!(args.openbao_timeout, Duration::from_secs(10));

        let error = agent(&["--poll-interval", "10x"])
            .expect_err("bad unit")
            .to_string();
        assert!(error.contains("--poll-interval"), "{error}");
        assert!(error.contains("unknown unit"), "{error}");
        let error = agent(&["--openbao-timeout", "0s"])
            .expect_err("zero")
            .to_string();
        assert!(
            error.contains("--openbao-timeout") && error.contains("at least 1s"),
            "{error}"
        );

        let cli = Cli::try_parse_from(["meshtrust", "ca", "rotate-root"]).expect("parse");
        let Command::Ca(CaArgs {
            command: CaCommand::RotateRoot(rotate),
        }) = cli.command
        else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(rotate.phase_wait, Duration::ZERO);
        let error = Cli::try_parse_from(["meshtrust", "ca", "rotate-root", "--phase-wait", "24"])
            .expect_err("no unit")
            .to_string();
        assert!(error.contains("--phase-wait"), "{error}");
    }
}
