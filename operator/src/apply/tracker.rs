//! What the operator applied, to skip unchanged children and to tell drift from its own
//! changes.

use super::*;

/// What the last apply of an object looked like, to tell drift from our own changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint {
    pub(super) desired: String,
    pub(super) uid: String,
    pub(super) marker: String,
    /// resourceVersion the apply returned, and when it was applied.
    pub(super) version: String,
    pub(super) at: Instant,
}

/// In-memory record of applied objects, shared by all reconciles.
#[derive(Debug, Default)]
pub struct DriftTracker {
    pub(super) applied: Mutex<HashMap<String, Fingerprint>>,
    pub(super) known_absent: Mutex<HashSet<String>>,
    /// Objects (key → desired hash and generation) whose part still differed right after being
    /// replaced: the difference comes back on every write (e.g. a mutating admission webhook), so
    /// replacing again would only write (and report drift) on every reconcile. Replaced again
    /// once the object or the desired state changes.
    pub(super) futile: Mutex<HashMap<String, (String, String)>>,
    /// The last clean sweep of each kind of each platform ([`super::sweep`]): the hash of the
    /// names wanted then, and when.
    pub(super) swept: Mutex<HashMap<String, (String, Instant)>>,
    /// What the controller's watches last saw of each child (see [`WatchCache`]).
    pub watched: WatchCache,
}

impl DriftTracker {
    /// Records an apply; returns true when the object had drifted (deleted or changed by someone
    /// else) although we applied the same desired state as last time.
    pub(super) fn record(&self, key: String, fp: Fingerprint) -> bool {
        let mut map = match self.applied.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        // An empty marker is one a controller had not written yet (a new Deployment's revision
        // annotation): its first value is not someone else's change.
        let drifted = map.get(&key).is_some_and(|prev| {
            prev.desired == fp.desired
                && (prev.uid != fp.uid || (!prev.marker.is_empty() && prev.marker != fp.marker))
        });
        map.insert(key, fp);
        drifted
    }

    /// (uid, resourceVersion) of `key` when it cannot have changed since our last apply of the
    /// same `desired` state: the watch shows the object that apply returned, and that apply is
    /// less than [`REVERIFY_AFTER`] old. `None`: apply it.
    pub(super) fn unchanged(&self, key: &str, desired: &str) -> Option<(String, String)> {
        let last = {
            let map = match self.applied.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            let fp = map.get(key)?;
            (fp.desired == desired && fp.at.elapsed() < REVERIFY_AFTER)
                .then(|| (fp.uid.clone(), fp.version.clone()))?
        };
        (self.watched.version(key)? == last).then_some(last)
    }

    /// Forgets the last apply of `key`, so the next reconcile applies it for real.
    pub(super) fn forget_key(&self, key: &str) {
        match self.applied.lock() {
            Ok(mut m) => m.remove(key),
            Err(poisoned) => poisoned.into_inner().remove(key),
        };
    }

    /// The desired-state hash of the last apply of `key`, if any.
    pub(super) fn last_desired(&self, key: &str) -> Option<String> {
        let map = match self.applied.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.get(key).map(|fp| fp.desired.clone())
    }

    pub(super) fn futile(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, String)>> {
        match self.futile.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether replacing `key` is known to be futile for this desired state and this version of
    /// the object (`version`: generation, else resourceVersion).
    pub(super) fn replacement_futile(&self, key: &str, desired: &str, version: &str) -> bool {
        self.futile()
            .get(key)
            .is_some_and(|(d, v)| d == desired && v == version)
    }

    /// Whether the sweep of `key` must list again: its wanted names changed since its last
    /// clean sweep, or that sweep is older than [`REVERIFY_AFTER`].
    pub(super) fn sweep_due(&self, key: &str, wanted: &str) -> bool {
        let swept = match self.swept.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        !swept
            .get(key)
            .is_some_and(|(w, at)| w == wanted && at.elapsed() < REVERIFY_AFTER)
    }

    /// Records a clean sweep of `key` with the wanted names' hash `wanted`.
    pub(super) fn swept(&self, key: String, wanted: String) {
        match self.swept.lock() {
            Ok(mut m) => m.insert(key, (wanted, Instant::now())),
            Err(poisoned) => poisoned.into_inner().insert(key, (wanted, Instant::now())),
        };
    }

    pub(super) fn absent(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        match self.known_absent.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Forgets everything about a platform (after deletion).
    pub fn forget(&self, namespace: &str, platform: &str) {
        let needle = format!("/{namespace}/{platform}-");
        match self.applied.lock() {
            Ok(mut m) => m.retain(|k, _| !k.contains(&needle)),
            Err(poisoned) => poisoned.into_inner().retain(|k, _| !k.contains(&needle)),
        }
        self.absent().retain(|k| !k.contains(&needle));
        self.futile().retain(|k, _| !k.contains(&needle));
        let platform_suffix = format!("/{namespace}/{platform}");
        match self.swept.lock() {
            Ok(mut m) => m.retain(|k, _| !k.ends_with(&platform_suffix)),
            Err(poisoned) => poisoned
                .into_inner()
                .retain(|k, _| !k.ends_with(&platform_suffix)),
        }
    }

    pub fn len(&self) -> usize {
        match self.applied.lock() {
            Ok(m) => m.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
