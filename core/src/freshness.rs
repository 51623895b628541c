//! Cache-stampede protection: when should this caller recompute a cached value?
//!
//! `OPT.FETCH` answers with an action per caller: `hit` (use the value), `recompute` (this
//! caller recomputes; chosen early by the XFetch rule of Vattani et al., VLDB 2015,
//! `now - delta * beta * ln(rand) >= expiry`, or on a miss), `stale` (serve the expired copy,
//! someone else recomputes) or `wait` (nothing to serve, someone else recomputes). With a lock
//! only one caller at a time is told to recompute (single flight). The decision is a pure
//! function of the key's state, the clock and one random number, so it is tested here.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::name_map::NameMap;

/// A fast hasher for maps keyed by client-chosen names ((db, key) maps, patterns): xxh3,
/// seeded with the process's secret ([`crate::hash_secret`]) so that a client cannot aim many
/// names at one bucket.
#[derive(Clone, Copy)]
pub struct KeyHasher(u64);

impl Default for KeyHasher {
    fn default() -> Self {
        KeyHasher(crate::hash_secret::process_secret())
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_usize(&mut self, v: usize) {
        self.0 = (self.0 ^ v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 ^= self.0 >> 29;
    }
}

/// Map from (db, key) with [`KeyHasher`].
pub type KeyMap<V> = HashMap<(usize, Vec<u8>), V, BuildHasherDefault<KeyHasher>>;

/// What the module stores next to a value written with `DELTA` or `STALE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When the value stops being fresh (Unix ms); the key itself lives `stale_ms` longer.
    pub expires_at_ms: i64,
    /// How long the value took to compute (ms): the XFetch `delta`.
    pub delta_ms: u64,
    /// How long after `expires_at_ms` a stale copy may still be served (ms).
    pub stale_ms: u64,
}

/// The action for one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Use the value.
    Hit,
    /// Recompute the value now (and write it with OPT.SET, passing the token if any).
    Recompute,
    /// Use the stale value: someone else is recomputing.
    Stale,
    /// Nothing to serve and someone else is recomputing: retry shortly.
    Wait,
}

impl Action {
    /// The word in the reply.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Hit => "hit",
            Action::Recompute => "recompute",
            Action::Stale => "stale",
            Action::Wait => "wait",
        }
    }
}

/// What happened to the lock for this caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockOutcome {
    /// No LOCK asked.
    NotRequested,
    /// Not needed (a plain hit).
    NotNeeded,
    /// This caller holds it now (its token is in the reply).
    Taken,
    /// Another caller holds it.
    HeldByOther,
    /// A replica cannot take locks that its master's clients would see.
    UnavailableOnReplica,
    /// `opt.max-locks` locks are held already: this caller recomputes without one.
    LimitReached,
}

/// What [`Locks::try_take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOutcome {
    /// The caller holds the lock now.
    Taken,
    /// Another caller holds it.
    HeldByOther,
    /// The limit of locks is reached (after dropping the timed-out ones).
    LimitReached,
}

impl LockOutcome {
    /// The word in the reply.
    pub fn as_str(self) -> &'static str {
        match self {
            LockOutcome::NotRequested => "not-requested",
            LockOutcome::NotNeeded => "not-needed",
            LockOutcome::Taken => "taken",
            LockOutcome::HeldByOther => "held-by-other",
            LockOutcome::UnavailableOnReplica => "unavailable-on-replica",
            LockOutcome::LimitReached => "unavailable-limit",
        }
    }
}

/// The state of the key being fetched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyState {
    /// No value.
    Missing,
    /// A value, with its freshness if it was written with DELTA/STALE.
    Present(Option<Freshness>),
}

/// The XFetch rule: recompute before `expires_at` with a probability that grows as expiry
/// nears, faster for values that take long to compute. `u` is uniform in (0, 1].
pub fn xfetch_early(now_ms: i64, expires_at_ms: i64, delta_ms: u64, beta: f64, u: f64) -> bool {
    let gap = -(delta_ms as f64) * beta * u.max(f64::MIN_POSITIVE).ln();
    now_ms as f64 + gap >= expires_at_ms as f64
}

/// Single-flight locks, one per key, held until the value is written or they time out.
///
/// Timed-out locks are purged when the map reaches `purge_at`, which then doubles past what
/// survived (purging whenever the map was merely large made every OPT.FETCH walk all of them:
/// with 220,000 locks held, 3,100 OPT.FETCH/s instead of tens of thousands), or when the map
/// is at the caller's limit (`opt.max-locks`) and a lock can have timed out. A purge walks the
/// map [`PURGE_STEP`] locks per call of [`Locks::try_take`], never all at once: dropping
/// 100,000 timed-out locks in one go took 6 ms (225 ms for a million). The map never holds
/// more than the limit.
///
/// The locks of each database are a [`NameMap`] of key name to (token, held until): it grows
/// without holding the server (an `IndexMap` held it 358 ms at four million locks), and a purge
/// walks its positions, which never move.
#[derive(Debug, Clone)]
pub struct Locks {
    held: Vec<NameMap<(u64, i64)>>,
    /// Locks held in every database.
    count: usize,
    purge_at: usize,
    /// No lock held times out before this (Unix ms; it may be earlier than the truth after a
    /// release): at the limit, a purge is worth its walk only from then on.
    soonest_until: i64,
    /// The database and position the purge in progress goes on from, if one is in progress.
    purging: Option<(usize, usize)>,
    /// The soonest timeout among the locks the purge in progress kept or saw taken.
    purge_soonest: i64,
    /// Purges completed so far (for the tests of their amortization).
    #[cfg(test)]
    purges: usize,
}

/// The map size at which timed-out locks are first purged.
const FIRST_PURGE_AT: usize = 4096;

/// Locks a purge looks at per call of [`Locks::try_take`] (a few microseconds).
pub const PURGE_STEP: usize = 256;

impl Default for Locks {
    fn default() -> Self {
        Locks::new_const()
    }
}

impl Locks {
    /// No locks (usable in a `static`).
    pub const fn new_const() -> Self {
        Locks {
            held: Vec::new(),
            count: 0,
            purge_at: FIRST_PURGE_AT,
            soonest_until: i64::MAX,
            purging: None,
            purge_soonest: i64::MAX,
            #[cfg(test)]
            purges: 0,
        }
    }

    /// Takes the lock of `key` for `ms` if nobody holds it and fewer than `limit` locks are
    /// held; returns whether it was taken.
    pub fn try_take(
        &mut self,
        db: usize,
        key: &[u8],
        token: u64,
        now_ms: i64,
        ms: u64,
        limit: usize,
    ) -> TakeOutcome {
        let until = now_ms.saturating_add(ms as i64);
        match self.held.get_mut(db).and_then(|m| m.get_mut(key)) {
            Some((_, t)) if *t > now_ms => TakeOutcome::HeldByOther,
            Some(entry) => {
                *entry = (token, until);
                self.note_taken(until);
                TakeOutcome::Taken
            }
            None => {
                let full = self.count >= limit;
                if self.purging.is_none()
                    && (self.count >= self.purge_at || (full && now_ms >= self.soonest_until))
                {
                    self.purging = Some((0, 0));
                    self.purge_soonest = i64::MAX;
                }
                self.purge_step(now_ms, PURGE_STEP);
                if self.count >= limit {
                    return TakeOutcome::LimitReached;
                }
                if self.held.len() <= db {
                    self.held.resize_with(db + 1, NameMap::default);
                }
                self.held[db].insert(key, (token, until));
                self.count += 1;
                self.note_taken(until);
                TakeOutcome::Taken
            }
        }
    }

    fn note_taken(&mut self, until: i64) {
        self.soonest_until = self.soonest_until.min(until);
        self.purge_soonest = self.purge_soonest.min(until);
    }

    /// Looks at up to `budget` locks of the purge in progress, dropping the timed-out ones;
    /// ends the purge when it has seen them all.
    fn purge_step(&mut self, now_ms: i64, budget: usize) {
        let Some((mut db, mut at)) = self.purging else {
            return;
        };
        let mut left = budget;
        while left > 0 && db < self.held.len() {
            let map = &mut self.held[db];
            if at >= map.positions() {
                (db, at) = (db + 1, 0);
                continue;
            }
            left -= 1;
            if let Some((_, &(_, until))) = map.at(at) {
                if until <= now_ms {
                    map.take_at(at);
                    self.count -= 1;
                } else {
                    self.purge_soonest = self.purge_soonest.min(until);
                }
            }
            at += 1;
        }
        if db < self.held.len() {
            self.purging = Some((db, at));
            return;
        }
        self.purging = None;
        self.soonest_until = self.purge_soonest;
        self.purge_at = (self.count * 2).max(FIRST_PURGE_AT);
        #[cfg(test)]
        {
            self.purges += 1;
        }
    }

    /// Whether someone holds the lock of `key` now.
    pub fn is_held(&self, db: usize, key: &[u8], now_ms: i64) -> bool {
        self.held
            .get(db)
            .and_then(|m| m.get(key))
            .is_some_and(|&(_, until)| until > now_ms)
    }

    /// Checks a writer's token: an error if another caller holds the lock now.
    pub fn check(&self, db: usize, key: &[u8], token: u64, now_ms: i64) -> Result<(), String> {
        match self.held.get(db).and_then(|m| m.get(key)) {
            Some(&(t, until)) if until > now_ms && t != token => Err(
                "TOKEN does not match the lock on this key (it expired and another caller \
                 holds it now, or the token is wrong)"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    /// Ends the lock of `key` (the value was written, or the key went away).
    pub fn release(&mut self, db: usize, key: &[u8]) {
        // Most writes hold no lock: skip hashing the key.
        if self.count == 0 {
            return;
        }
        if self.held.get_mut(db).and_then(|m| m.remove(key)).is_some() {
            self.count -= 1;
        }
    }

    /// Drops every lock that timed out, at once (for tests and callers that can afford it;
    /// [`Self::try_take`] purges a part at a time).
    pub fn purge(&mut self, now_ms: i64) {
        if self.purging.is_none() {
            self.purging = Some((0, 0));
            self.purge_soonest = i64::MAX;
        }
        self.purge_step(now_ms, usize::MAX);
    }

    /// Locks held (including timed-out ones not purged yet).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no lock is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The request: BETA, LOCK, whether locks can be taken here, and the random draw.
#[derive(Debug, Clone, Copy)]
pub struct FetchRequest {
    /// XFetch beta (1.0 is the paper's choice).
    pub beta: f64,
    /// LOCK ms, if asked.
    pub lock_ms: Option<u64>,
    /// False on a replica.
    pub can_lock: bool,
    /// Uniform in (0, 1].
    pub u: f64,
    /// The token a taken lock gets.
    pub token: u64,
    /// Most locks held at once (`opt.max-locks`).
    pub max_locks: usize,
}

/// Decides the action for one caller, taking the lock when it tells the caller to recompute.
pub fn decide(
    state: KeyState,
    now_ms: i64,
    req: &FetchRequest,
    locks: &mut Locks,
    db: usize,
    key: &[u8],
) -> (Action, LockOutcome) {
    // Whether the value, if any, must be recomputed now, and what to serve otherwise.
    let (needs_recompute, otherwise) = match state {
        KeyState::Missing => (true, Action::Wait),
        KeyState::Present(None) => (false, Action::Hit),
        KeyState::Present(Some(f)) if now_ms >= f.expires_at_ms => (true, Action::Stale),
        KeyState::Present(Some(f)) => {
            let early = f.delta_ms > 0
                && xfetch_early(now_ms, f.expires_at_ms, f.delta_ms, req.beta, req.u);
            (early, Action::Hit)
        }
    };
    if !needs_recompute {
        let outcome = if req.lock_ms.is_some() {
            LockOutcome::NotNeeded
        } else {
            LockOutcome::NotRequested
        };
        return (Action::Hit, outcome);
    }
    match req.lock_ms {
        None => (Action::Recompute, LockOutcome::NotRequested),
        Some(_) if !req.can_lock => (Action::Recompute, LockOutcome::UnavailableOnReplica),
        Some(ms) => match locks.try_take(db, key, req.token, now_ms, ms, req.max_locks) {
            TakeOutcome::Taken => (Action::Recompute, LockOutcome::Taken),
            // Early recomputation by someone else: this caller keeps using the value.
            TakeOutcome::HeldByOther => (otherwise, LockOutcome::HeldByOther),
            TakeOutcome::LimitReached => (Action::Recompute, LockOutcome::LimitReached),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(lock: Option<u64>, u: f64, token: u64) -> FetchRequest {
        FetchRequest {
            beta: 1.0,
            lock_ms: lock,
            can_lock: true,
            u,
            token,
            max_locks: 1000,
        }
    }

    const FRESH: Freshness = Freshness {
        expires_at_ms: 10_000,
        delta_ms: 100,
        stale_ms: 5_000,
    };

    #[test]
    fn xfetch_recomputes_earlier_as_expiry_nears() {
        // u = e^-1: gap = delta * beta = 100 ms.
        let u = (-1.0f64).exp();
        assert!(!xfetch_early(9_800, 10_000, 100, 1.0, u));
        assert!(xfetch_early(9_900, 10_000, 100, 1.0, u));
        assert!(
            xfetch_early(9_000, 10_000, 100, 1.0, 1e-9),
            "small u: far earlier"
        );
        assert!(
            !xfetch_early(9_999, 10_000, 100, 1.0, 1.0),
            "u = 1: never early"
        );
    }

    #[test]
    fn each_action() {
        let mut locks = Locks::default();
        let p = KeyState::Present(Some(FRESH));
        assert_eq!(
            decide(p, 1_000, &req(None, 0.5, 1), &mut locks, 0, b"k").0,
            Action::Hit
        );
        assert_eq!(
            decide(
                KeyState::Missing,
                1_000,
                &req(None, 0.5, 1),
                &mut locks,
                0,
                b"k"
            ),
            (Action::Recompute, LockOutcome::NotRequested)
        );
        // Single flight on a miss: the first takes the lock, the second waits.
        assert_eq!(
            decide(
                KeyState::Missing,
                1_000,
                &req(Some(500), 0.5, 1),
                &mut locks,
                0,
                b"m"
            ),
            (Action::Recompute, LockOutcome::Taken)
        );
        assert_eq!(
            decide(
                KeyState::Missing,
                1_100,
                &req(Some(500), 0.5, 2),
                &mut locks,
                0,
                b"m"
            ),
            (Action::Wait, LockOutcome::HeldByOther)
        );
        // The lock times out.
        assert_eq!(
            decide(
                KeyState::Missing,
                1_600,
                &req(Some(500), 0.5, 3),
                &mut locks,
                0,
                b"m"
            )
            .0,
            Action::Recompute
        );
        // Stale: one recomputes, the others are served the stale copy.
        assert_eq!(
            decide(p, 11_000, &req(Some(500), 0.5, 4), &mut locks, 0, b"s"),
            (Action::Recompute, LockOutcome::Taken)
        );
        assert_eq!(
            decide(p, 11_001, &req(Some(500), 0.5, 5), &mut locks, 0, b"s"),
            (Action::Stale, LockOutcome::HeldByOther)
        );
        // Early recomputation near expiry; others keep hitting meanwhile.
        let tiny = 1e-6;
        assert_eq!(
            decide(p, 9_500, &req(Some(500), tiny, 6), &mut locks, 0, b"e"),
            (Action::Recompute, LockOutcome::Taken)
        );
        assert_eq!(
            decide(p, 9_501, &req(Some(500), tiny, 7), &mut locks, 0, b"e"),
            (Action::Hit, LockOutcome::HeldByOther)
        );
        // A replica never takes locks.
        let mut r = req(Some(500), 0.5, 8);
        r.can_lock = false;
        assert_eq!(
            decide(KeyState::Missing, 1_000, &r, &mut locks, 0, b"x"),
            (Action::Recompute, LockOutcome::UnavailableOnReplica)
        );
        assert!(!locks.is_held(0, b"x", 1_000));
        // Values written without DELTA/STALE are plain hits.
        assert_eq!(
            decide(
                KeyState::Present(None),
                1,
                &req(Some(5), 0.5, 9),
                &mut locks,
                0,
                b"p"
            ),
            (Action::Hit, LockOutcome::NotNeeded)
        );
    }

    #[test]
    fn tokens() {
        let mut locks = Locks::default();
        assert_eq!(locks.try_take(0, b"k", 42, 0, 100, 10), TakeOutcome::Taken);
        assert!(locks.check(0, b"k", 42, 50).is_ok());
        assert!(locks.check(0, b"k", 41, 50).unwrap_err().contains("TOKEN"));
        assert!(
            locks.check(0, b"k", 41, 150).is_ok(),
            "a timed-out lock no longer binds"
        );
        locks.release(0, b"k");
        assert!(locks.is_empty());
        assert_eq!(locks.try_take(0, b"a", 1, 0, 10, 10), TakeOutcome::Taken);
        locks.purge(20);
        assert_eq!(locks.len(), 0);
    }

    /// At the limit a new lock is refused (the caller recomputes without one) until locks
    /// time out; the timed-out ones are dropped when the limit is hit.
    #[test]
    fn the_number_of_locks_is_bounded() {
        let mut locks = Locks::default();
        let missing = KeyState::Missing;
        for i in 0..5u64 {
            let r = FetchRequest {
                max_locks: 5,
                ..req(Some(100), 0.5, i + 1)
            };
            let key = format!("k{i}");
            let got = decide(missing, 0, &r, &mut locks, 0, key.as_bytes());
            assert_eq!(got, (Action::Recompute, LockOutcome::Taken));
        }
        let r = FetchRequest {
            max_locks: 5,
            ..req(Some(100), 0.5, 9)
        };
        assert_eq!(
            decide(missing, 50, &r, &mut locks, 0, b"k5"),
            (Action::Recompute, LockOutcome::LimitReached)
        );
        assert_eq!(LockOutcome::LimitReached.as_str(), "unavailable-limit");
        // Refusals before any lock can have timed out do not walk the map again.
        let purges = locks.purges;
        for t in 51..99 {
            assert_eq!(
                decide(missing, t, &r, &mut locks, 0, b"k6").1,
                LockOutcome::LimitReached
            );
        }
        assert_eq!(locks.purges, purges);
        // A held lock still tells other callers to wait.
        assert_eq!(
            decide(missing, 50, &r, &mut locks, 0, b"k0"),
            (Action::Wait, LockOutcome::HeldByOther)
        );
        // Once the five time out, the next new lock drops them and is taken.
        assert_eq!(
            decide(missing, 150, &r, &mut locks, 0, b"k5"),
            (Action::Recompute, LockOutcome::Taken)
        );
        assert_eq!(locks.len(), 1);
    }

    /// Dropping many timed-out locks at once stalled the server (6 ms for 100,000): a purge
    /// looks at [`PURGE_STEP`] locks per call and goes on with the next calls.
    #[test]
    fn a_purge_is_spread_over_calls() {
        let mut locks = Locks::default();
        let n = 10_000usize;
        for i in 0..n as u64 {
            let got = locks.try_take(0, &i.to_le_bytes(), 1, 0, 10, n);
            assert_eq!(got, TakeOutcome::Taken);
        }
        // Every lock timed out at 10; at 20 the map is at the limit, so a purge starts.
        let purges = locks.purges;
        let mut calls = 0;
        loop {
            let before = locks.len();
            let key = format!("new{calls}");
            let got = locks.try_take(0, key.as_bytes(), 2, 20, 10_000, n);
            calls += 1;
            assert_eq!(got, TakeOutcome::Taken);
            assert!(before + 1 - locks.len() <= PURGE_STEP, "one step per call");
            if locks.purging.is_none() {
                break;
            }
        }
        assert_eq!(locks.len(), calls, "only the new locks are left");
        assert!(calls <= n / (PURGE_STEP - 1) + 2, "{calls} calls");
        assert_eq!(locks.purges, purges + 1);
        // Releases and a whole purge: the new locks stay held, the timed-out ones go.
        for i in 0..1000u64 {
            locks.try_take(0, &i.to_le_bytes(), 3, 20, 10, n);
        }
        locks.purge(25);
        assert_eq!(locks.len(), calls + 1000);
        locks.release(0, b"new0");
        assert!(!locks.is_held(0, b"new0", 25));
        locks.purge(40);
        assert_eq!(locks.len(), calls - 1);
        assert!(locks.is_held(0, b"new1", 40));
    }

    /// Purges walk the whole map, so they come at doubling sizes: inserting n locks that
    /// never time out purges about log2(n) times, not once per insert past a threshold.
    #[test]
    fn purges_are_amortized() {
        let mut locks = Locks::default();
        for i in 0..100_000u64 {
            let key = i.to_le_bytes();
            let got = locks.try_take(0, &key, i + 1, 0, 1_000_000, 1_000_000);
            assert_eq!(got, TakeOutcome::Taken);
        }
        assert_eq!(locks.len(), 100_000);
        assert!(
            locks.purges <= 5,
            "{} purges for 100,000 locks",
            locks.purges
        );
    }
}
