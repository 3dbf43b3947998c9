//! Rendering the mesh as manifests: GitOps Applications/Kustomizations for Istio and meshtrust, and the
//! agent's deploy files. Pure data from a validated mesh file; the CLI writes it out.
#![forbid(unsafe_code)]
// Long functions hide their steps; split them (tests may `#[allow]` this).
#![deny(clippy::too_many_lines)]

mod agent;
mod gitops;

pub use agent::{AgentOpenBao, agent_manifests, agent_manifests_with};
pub use gitops::{
    AgentChart, Flavor, RenderOptions, Rendered, eastwest_values, gitops, istio_namespace,
    istiod_values,
};
