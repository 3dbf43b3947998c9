//! Scenario tests of the engine against the in-memory OpenBao and clusters of `meshtrust-fakes`, in the style of
//! kube-rs controller-rs `fixtures.rs`: each scenario sets up the fakes, runs the engine, and states the exact
//! calls it expects. No server is started; the whole file runs in well under two seconds.

mod bootstrap;
mod failures;
mod following;
mod races;
mod remote_secrets;
mod rotation;
mod scopes;
mod support;
