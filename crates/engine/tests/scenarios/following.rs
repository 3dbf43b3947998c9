//! Agents follow their peers through the change marker: published entries and, once a second root exists,
//! trust facts. A round reads what the marker named; a full re-read is narrowed by one listing of versions
//! where OpenBao offers it. Counted in calls to the in-memory OpenBao.

use std::collections::BTreeSet;

use meshtrust_core::planner::PlanOptions;
use meshtrust_engine::published::PublishedCache;
use meshtrust_engine::{Engine, Scope};

use crate::support::{HOUR, Harness, KV};

const TRUST: &str = "istio/meshtrust-trust";
const ENTRIES: &str = "istio/remote-secrets";

/// An agent as `meshtrust agent` runs it: its engine keeps a cache, and the marker says what to re-read.
struct Follower {
    cluster: String,
    cache: PublishedCache,
    seen: Option<u64>,
}

impl Follower {
    fn new(cluster: &str) -> Self {
        Follower {
            cluster: cluster.to_string(),
            cache: PublishedCache::default(),
            seen: None,
        }
    }

    fn engine(&self, h: &Harness) -> Engine {
        h.engine_for(h.mesh.clone(), Scope::Agent, &[&self.cluster])
            .with_published_cache(self.cache.clone())
    }

    /// One poll that found the marker moved (or the first), then a round. Returns the clusters whose trust
    /// facts the marker named (and this one's own, which its last round may have written).
    async fn round(&mut self, h: &Harness) -> BTreeSet<String> {
        let engine = self.engine(h);
        let current = engine.index_version().await.expect("marker");
        let mut named = BTreeSet::from([self.cluster.clone()]);
        if let Some(seen) = self.seen {
            match engine.changed_since(seen, current).await.expect("hints") {
                Some(changed) => {
                    named.extend(changed.trust.iter().cloned());
                    self.cache.mark_changed(changed);
                }
                None => {
                    self.cache.mark_all_stale();
                    self.cache.mark_all_trust_stale();
                }
            }
        }
        h.converge_with(&engine, PlanOptions::default(), &mut |_, _| {})
            .await
            .expect("an agent round");
        h.assert_no_trust_gap();
        self.seen = Some(current);
        named
    }
}

/// The reads of entries under `folder` since the last `clear_calls`, by cluster name.
fn reads(h: &Harness, folder: &str) -> Vec<String> {
    let prefix = format!("kv_get {KV}/{folder}/");
    h.calls("openbao")
        .iter()
        .filter_map(|c| c.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

#[tokio::test]
async fn agents_following_the_marker_read_only_the_trust_facts_it_names() {
    let names = ["c1", "c2", "c3", "c4", "c5"];
    let h = Harness::settled(&names).await;
    let mut agents: Vec<Follower> = names.iter().map(|n| Follower::new(n)).collect();
    for agent in &mut agents {
        agent.round(&h).await;
    }
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    engine.start_root_rotation(&snapshot).await.expect("start");
    // The first round after the new root reads every peer's trust facts once; from then on a round reads only
    // those the marker named.
    for agent in &mut agents {
        agent.round(&h).await;
    }
    let (mut rounds, mut read_total) = (0, 0);
    while names.iter().any(|n| h.generations(n) != (vec![2], 2)) {
        h.advance(12 * HOUR);
        for agent in &mut agents {
            h.clear_calls();
            let named = agent.round(&h).await;
            let read: BTreeSet<String> = reads(&h, TRUST).into_iter().collect();
            assert!(
                read.is_subset(&named),
                "{} read {read:?}; the marker named {named:?}",
                agent.cluster
            );
            read_total += read.len();
        }
        rounds += 1;
        assert!(rounds < 12, "the rotation settles");
    }
    // Reading every cluster's trust facts in every round would have been rounds × agents × clusters reads.
    assert!(
        read_total < rounds * names.len() * names.len(),
        "{read_total} reads in {rounds} rounds"
    );
    // Settled: once the last marks are published, an idle round reads no trust facts at all.
    for _ in 0..2 {
        for agent in &mut agents {
            agent.round(&h).await;
        }
    }
    h.clear_calls();
    agents[0].round(&h).await;
    assert_eq!(reads(&h, TRUST), Vec::<String>::new());
    h.assert_verified().await;
}

#[tokio::test]
async fn a_trust_facts_publication_names_its_writer_and_what_it_wrote() {
    let h = Harness::settled(&["c1", "c2"]).await;
    let engine = h.engine();
    let snapshot = engine.observe(h.now()).await.expect("observe");
    engine.start_root_rotation(&snapshot).await.expect("start");
    let seen = engine.index_version().await.expect("marker");
    h.agent_rounds(&["c1"]).await;
    let current = engine.index_version().await.expect("marker");
    let changed = engine
        .changed_since(seen, current)
        .await
        .expect("hints")
        .expect("within the kept versions");
    assert!(changed.trust.contains("c1"), "{changed:?}");
    assert!(!changed.trust.contains("c2"), "{changed:?}");
}

#[tokio::test]
async fn a_full_reread_reads_only_what_the_listing_shows_changed() {
    let names = ["c1", "c2", "c3", "c4"];
    let h = Harness::settled(&names).await;
    let mut agent = Follower::new("c1");
    agent.round(&h).await;
    // c3's agent republishes, and the hint is lost: only the periodic full re-read can find it.
    h.bao.with_state(|s| {
        let path = (KV.to_string(), format!("{ENTRIES}/c3"));
        let data = s.kv[&path]
            .versions
            .last()
            .cloned()
            .flatten()
            .expect("c3 published");
        s.kv_write_behind(KV, &path.1, data);
    });
    agent.cache.mark_all_stale();
    h.clear_calls();
    agent.round(&h).await;
    assert_eq!(reads(&h, ENTRIES), vec!["c3".to_string()]);
    assert!(
        h.calls("openbao")
            .contains(&format!("kv_list_metadata {KV}/{ENTRIES}")),
        "{:?}",
        h.calls("openbao")
    );
    // A server without the listing (Vault): every entry is read, as before.
    h.bao.with_state(|s| s.without_detailed_metadata = true);
    agent.cache.mark_all_stale();
    h.clear_calls();
    agent.round(&h).await;
    let mut read = reads(&h, ENTRIES);
    read.sort();
    assert_eq!(read, names.map(String::from).to_vec());
}
