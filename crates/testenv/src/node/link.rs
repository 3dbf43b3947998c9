use std::process::Command;

use crate::TestEnvError;

/// The veth pair that joins one node's network namespace to the host: `mtn<k>` stays on the host with
/// 10.213.k.1/24 (the address of every server the node's pods reach), `mtn<k>n` moves into the node as its
/// eth0 with 10.213.k.2; the node's pods get 10.244.k.0/24, routed through the node (the route goes with the
/// link). The kernel refuses a second link of the same name, so `k` is taken atomically even
/// with other test environments running; deleting the host end (or the node's namespace) removes both ends.
pub(crate) struct NodeLink {
    pub(crate) host_if: String,
    pub(crate) node_if: String,
    pub(crate) host_ip: String,
    pub(crate) node_ip: String,
    pub(crate) pod_subnet: String,
}

/// Links are named `mtn0`..`mtn249`: at most that many nodes run at once on one machine.
const MAX_LINKS: u16 = 250;

impl NodeLink {
    pub(crate) fn create() -> Result<Self, TestEnvError> {
        for k in 0..MAX_LINKS {
            let host_if = format!("mtn{k}");
            let node_if = format!("mtn{k}n");
            let created = Command::new("ip")
                .args([
                    "link", "add", &host_if, "type", "veth", "peer", "name", &node_if,
                ])
                .stderr(std::process::Stdio::null())
                .status()
                .map_err(TestEnvError::io("ip"))?;
            if !created.success() {
                continue;
            }
            let link = Self {
                host_ip: format!("10.213.{k}.1"),
                node_ip: format!("10.213.{k}.2"),
                pod_subnet: format!("10.244.{k}.0/24"),
                host_if,
                node_if,
            };
            ip(&[
                "addr",
                "add",
                &format!("{}/24", link.host_ip),
                "dev",
                &link.host_if,
            ])?;
            ip(&["link", "set", &link.host_if, "up"])?;
            return Ok(link);
        }
        Err(TestEnvError::Node(format!(
            "no free veth name mtn0..mtn{MAX_LINKS} for a test node; delete stale ones with `ip link del mtn<k>`"
        )))
    }

    /// Moves the node's end into the network namespace of process `pid`, and routes the node's pods there.
    pub(crate) fn move_into(&self, pid: u32) -> Result<(), TestEnvError> {
        ip(&["link", "set", &self.node_if, "netns", &pid.to_string()])?;
        ip(&[
            "route",
            "add",
            &self.pod_subnet,
            "via",
            &self.node_ip,
            "dev",
            &self.host_if,
            "onlink",
        ])
    }

    /// The cgroup directory the node's kubelet uses as its root (unique while this link exists).
    pub(crate) fn cgroup_root(&self) -> String {
        format!("meshtrust-{}", self.host_if)
    }
}

impl Drop for NodeLink {
    fn drop(&mut self) {
        // Usually gone already with the node's namespace; this covers a node that never started.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

pub(crate) fn ip(args: &[&str]) -> Result<(), TestEnvError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(TestEnvError::io("ip"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TestEnvError::Node(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
