//! Call recording and fault injection shared by both fakes. A call is described as `"<method> <subject>"`
//! (for example `kv_put secret/istio/index cas=3`); rules match on a prefix of that description.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use meshtrust_core::ports::{ErrorKind, PortError, PortResult, System};

type Hook<S> = Box<dyn FnMut(&mut S) + Send>;

struct Rule<S> {
    prefix: String,
    remaining: usize,
    action: RuleAction<S>,
}

enum RuleAction<S> {
    Fail(ErrorKind),
    /// Runs before the call, with the fake's state: how a test makes a concurrent writer win a race.
    Before(Hook<S>),
}

/// Every call a fake received, in order.
#[derive(Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<String>>>);

impl CallLog {
    fn lock(&self) -> MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn all(&self) -> Vec<String> {
        self.lock().clone()
    }

    /// Only the calls that change something (every method whose name does not start with a read verb).
    pub fn writes(&self) -> Vec<String> {
        const READS: [&str; 13] = [
            "mount ",
            "list_issuers",
            "key_info",
            "kv_get",
            "kv_metadata",
            "namespace_exists",
            "auth_mount",
            "kubernetes_auth_",
            "read_policy",
            "get_",
            "list_secrets",
            "kv_list",
            "list_policies",
        ];
        self.all()
            .into_iter()
            .filter(|c| !READS.iter().any(|r| c.starts_with(r)))
            .collect()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    fn push(&self, call: String) {
        self.lock().push(call);
    }
}

/// The rules and log of one fake, over its state `S`.
pub(crate) struct Faults<S> {
    rules: Mutex<Vec<Rule<S>>>,
    pub log: CallLog,
    system: System,
}

impl<S> Faults<S> {
    pub fn new(system: System) -> Self {
        Faults {
            rules: Mutex::new(vec![]),
            log: CallLog::default(),
            system,
        }
    }

    pub fn fail(&self, prefix: &str, times: usize, kind: ErrorKind) {
        self.add(prefix, times, RuleAction::Fail(kind));
    }

    pub fn before(&self, prefix: &str, times: usize, hook: Hook<S>) {
        self.add(prefix, times, RuleAction::Before(hook));
    }

    fn add(&self, prefix: &str, times: usize, action: RuleAction<S>) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Rule {
                prefix: prefix.to_string(),
                remaining: times,
                action,
            });
    }

    /// Records `call` and applies the first matching rule: an injected error, or a hook on the state.
    pub fn enter(&self, call: String, state: &mut S) -> Result<(), PortError> {
        self.log.push(call.clone());
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rule) = rules
            .iter_mut()
            .find(|r| r.remaining > 0 && call.starts_with(&r.prefix))
        else {
            return Ok(());
        };
        rule.remaining -= 1;
        match &mut rule.action {
            RuleAction::Fail(kind) => Err(PortError::new(
                self.system.clone(),
                *kind,
                call,
                "injected by the test",
            )),
            RuleAction::Before(hook) => {
                hook(state);
                Ok(())
            }
        }
    }
}

/// What both fakes share: their state behind one lock, the faults and call log, and a settable clock. Each fake
/// derefs to it, so tests call `fail`, `before`, `with_state`, `calls` and `set_now` on either.
pub struct FakeCore<S> {
    state: Mutex<S>,
    faults: Faults<S>,
    now: AtomicI64,
}

impl<S: Default> FakeCore<S> {
    pub(crate) fn new(system: System, now: i64) -> Arc<Self> {
        Arc::new(FakeCore {
            state: Mutex::default(),
            faults: Faults::new(system),
            now: AtomicI64::new(now),
        })
    }
}

impl<S> FakeCore<S> {
    pub fn set_now(&self, now: i64) {
        self.now.store(now, Ordering::SeqCst);
    }

    pub(crate) fn now(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    pub fn calls(&self) -> CallLog {
        self.faults.log.clone()
    }

    /// The next `times` calls whose description starts with `prefix` fail with `kind`.
    pub fn fail(&self, prefix: &str, times: usize, kind: ErrorKind) {
        self.faults.fail(prefix, times, kind);
    }

    /// Before the next `times` calls matching `prefix`, `hook` changes the state (a concurrent writer).
    pub fn before(&self, prefix: &str, times: usize, hook: impl FnMut(&mut S) + Send + 'static) {
        self.faults.before(prefix, times, Box::new(hook));
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records the call, applies the faults, then runs `f` on the state.
    pub(crate) fn call<T>(
        &self,
        call: String,
        f: impl FnOnce(&mut S, &str) -> PortResult<T>,
    ) -> PortResult<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.faults.enter(call.clone(), &mut state)?;
        f(&mut state, &call)
    }
}
