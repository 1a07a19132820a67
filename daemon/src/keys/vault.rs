//! The vault: the database plus whatever is known about its data key.
//!
//! The daemon starts even when the key cannot be found (a keyring still
//! locked after login, a credential not yet loaded, a restored file on its
//! way): it then answers every credential request UNAVAILABLE with a
//! message saying what is missing, reports the problem through `Status`,
//! and retries, so the key turning up later brings the store back without a
//! restart. It never generates a key over data sealed with another one.
//!
//! Rotation and moves between tiers run here, one at a time, each ordered
//! so that a SIGKILL between any two steps leaves a store that opens with
//! either the old or the new key (see [`Vault::rotate`], [`Vault::move_to`]).

use std::sync::RwLock;

use crate::fault;
use crate::keys::custody::{Custody, KeyError, KeyTier, Resolution, Slot, TierReport, TierState};
use crate::store::crypto::DataKey;
use crate::store::events::EventBus;
use crate::store::{Database, Store, StoreError};

/// What is known about the key right now.
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    /// The tier in use, when the store is open.
    pub tier: Option<KeyTier>,
    /// The key id in use.
    pub key_id: Option<String>,
    /// Why the store is not open, when it is not.
    pub problem: Option<String>,
    /// Each tier's state at the last look.
    pub reports: Vec<TierReport>,
}

/// The outcome of a rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The key id before.
    pub old_key_id: String,
    /// The key id after.
    pub new_key_id: String,
    /// Credentials re-sealed.
    pub resealed: u64,
    /// The tier holding the key.
    pub tier: KeyTier,
}

/// Database + key custody + the open store, when there is one.
#[derive(Debug)]
pub struct Vault {
    db: Database,
    events: EventBus,
    custody: Custody,
    store: RwLock<Option<Store>>,
    state: RwLock<KeyState>,
    ops: tokio::sync::Mutex<()>,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Custody failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request cannot be done in this state.
    #[error("{0}")]
    Refused(String),
    /// The request would weaken the key's protection and the config does
    /// not allow that.
    #[error("{0}")]
    Downgrade(String),
    /// The store is locked: its key has not been found; the message says
    /// what is missing.
    #[error("the credential store is locked: {0}")]
    Locked(String),
}

impl Vault {
    /// A vault over `db`; nothing is unlocked yet.
    pub fn new(db: Database, events: EventBus, custody: Custody) -> Self {
        Self {
            db,
            events,
            custody,
            store: RwLock::new(None),
            state: RwLock::new(KeyState::default()),
            ops: tokio::sync::Mutex::new(()),
        }
    }

    /// The database (usable without the key: audit log, paths).
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The change feed.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The open store, or [`VaultError::Locked`] saying what is missing.
    pub fn store(&self) -> Result<Store, VaultError> {
        let store = match self.store.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        store.ok_or_else(|| {
            let problem = self
                .state()
                .problem
                .unwrap_or_else(|| "the data key has not been loaded yet".into());
            VaultError::Locked(problem)
        })
    }

    /// True when requests can be served.
    pub fn is_open(&self) -> bool {
        self.store.read().map(|s| s.is_some()).unwrap_or(false)
    }

    /// The key state, for `Status` and `doctor`.
    pub fn state(&self) -> KeyState {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_state(&self, f: impl FnOnce(&mut KeyState)) {
        match self.state.write() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn set_store(&self, store: Store) {
        match self.store.write() {
            Ok(mut s) => *s = Some(store),
            Err(p) => *p.into_inner() = Some(store),
        }
    }

    /// Looks for the key and opens the store when it is found (or, for a
    /// new store, generates one). Returns whether the store is open. `Err`
    /// only for a pinned tier that cannot be used.
    pub async fn unlock(&self) -> Result<bool, VaultError> {
        let _ops = self.ops.lock().await;
        if self.is_open() {
            return Ok(true);
        }
        let needed = self.db.row_key_ids().await?;
        let (resolution, reports) = self.custody.resolve(&needed).await?;
        let (key, tier, generated) = match resolution {
            Resolution::Waiting { problem } => {
                let changed = self.state().problem.as_deref() != Some(problem.as_str());
                if changed {
                    tracing::warn!(%problem, "the credential store stays locked until its key is found");
                }
                self.set_state(|s| {
                    s.problem = Some(problem);
                    s.reports = reports;
                    s.tier = None;
                    s.key_id = None;
                });
                return Ok(false);
            }
            Resolution::Ready { key, tier, slot } => {
                if slot == Slot::Pending {
                    // A rotation was interrupted after the rows were
                    // re-sealed: finish it.
                    tracing::warn!(key_id = key.id(), %tier, "finishing an interrupted key rotation");
                    self.custody.write(tier, Slot::Current, &key).await?;
                }
                (*key, tier, false)
            }
            Resolution::Generate { tier } => {
                let key = DataKey::generate().map_err(KeyError::from)?;
                self.custody.write(tier, Slot::Current, &key).await?;
                tracing::info!(key_id = key.id(), %tier, "generated a new data key");
                (key, tier, true)
            }
        };
        if tier != KeyTier::SystemdCredential {
            // A pending key left by a rotation that never committed.
            self.custody.erase(tier, Slot::Pending).await?;
        }
        let key_id = key.id().to_owned();
        let mut reports = reports;
        for r in reports.iter_mut().filter(|r| r.tier == tier) {
            r.state = TierState::Active;
            r.detail = format!("{}; key id {key_id}", self.custody.describe(tier));
        }
        let store = match self.db.with_key(key, self.events.clone()).await {
            Ok(store) => store,
            Err(e @ (StoreError::WrongKey { .. } | StoreError::MissingKey { .. })) => {
                let problem = format!("the key found in {tier} does not open this store: {e}");
                tracing::error!(%problem);
                self.set_state(|s| {
                    s.problem = Some(problem);
                    s.reports = reports;
                });
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        if tier == KeyTier::File {
            tracing::warn!(
                source = %self.custody.describe(tier),
                "the data key is kept in a 0600 key file: it protects copies of the database \
                 alone (backups, sync folders), not against programs running as you; run \
                 `keyhaven doctor` to see how to move it to your keyring"
            );
        }
        self.warn_about_stale_copies(tier, &key_id).await;
        self.set_store(store);
        self.set_state(|s| {
            s.tier = Some(tier);
            s.key_id = Some(key_id.clone());
            s.problem = None;
            s.reports = reports;
        });
        tracing::info!(%tier, key_id, generated, "credential store unlocked");
        Ok(true)
    }

    /// Lower tiers still holding the same key after an interrupted move
    /// weaken nothing that matters for opening, but the user should know.
    async fn warn_about_stale_copies(&self, active: KeyTier, key_id: &str) {
        let lower = KeyTier::ALL
            .into_iter()
            .skip_while(|t| *t != active)
            .skip(1);
        for tier in lower {
            if let Ok(Some(k)) = self.custody.read(tier, Slot::Current).await
                && k.id() == key_id
            {
                tracing::warn!(
                    %tier, %active,
                    "a copy of the data key is also kept in a lower tier; run `keyhaven key move \
                     --to {active}` to remove it"
                );
            }
        }
    }

    /// After a rotation or a move: records the key now in use and looks at
    /// every tier again, so that `Status` and `keyhaven doctor` name the
    /// new key id and no longer report a tier the key has left.
    async fn refresh_reports(&self, tier: KeyTier, key_id: &str) {
        let mut reports = match self.custody.resolve(&[key_id.to_owned()]).await {
            Ok((_, reports)) => reports,
            Err(e) => {
                tracing::warn!(error = %e, "could not look at the key tiers again");
                self.state().reports
            }
        };
        // The tier in use is the one the key was just written to, even when
        // a copy left elsewhere would be found first.
        for r in &mut reports {
            if r.tier == tier {
                r.state = TierState::Active;
                r.detail = format!("{}; key id {key_id}", self.custody.describe(tier));
            } else if r.state == TierState::Active {
                r.state = TierState::HoldsKey;
            }
        }
        self.set_state(|s| {
            s.tier = Some(tier);
            s.key_id = Some(key_id.to_owned());
            s.reports = reports;
        });
    }

    /// Re-seals every credential under a new key, kept in the same tier.
    ///
    /// Order, and what a SIGKILL at each point leaves:
    /// 1. new key written to the tier's pending slot — rows still sealed
    ///    with the old key, which is still current;
    /// 2. all rows re-sealed in one transaction — rows sealed with the new
    ///    key, which the pending slot holds (start-up finds it there and
    ///    finishes the rotation);
    /// 3. new key written to the current slot — both slots hold it;
    /// 4. pending slot erased, old key forgotten.
    pub async fn rotate(&self) -> Result<Rotated, VaultError> {
        let _ops = self.ops.lock().await;
        let store = self
            .store()
            .map_err(|e| VaultError::Refused(e.to_string()))?;
        let Some(tier) = self.state().tier else {
            return Err(VaultError::Refused("the store is locked".into()));
        };
        if tier == KeyTier::SystemdCredential {
            return Err(VaultError::Refused(
                "the data key comes from a systemd credential, which keyhaven cannot rewrite; \
                 move it to another tier first or provision a new credential"
                    .into(),
            ));
        }
        let old_key_id = store.key().id().to_owned();
        let new = DataKey::generate().map_err(KeyError::from)?;
        let new_key_id = new.id().to_owned();
        self.custody.write(tier, Slot::Pending, &new).await?;
        fault::point("rotate:after-pending");
        let resealed = store
            .rotate_to(DataKey::from_bytes(new.expose_bytes()))
            .await?;
        self.custody.write(tier, Slot::Current, &new).await?;
        fault::point("rotate:after-promote");
        self.custody.erase(tier, Slot::Pending).await?;
        store.forget_unused_keys().await?;
        self.refresh_reports(tier, &new_key_id).await;
        tracing::info!(old_key_id, new_key_id, resealed, %tier, "data key rotated");
        Ok(Rotated {
            old_key_id,
            new_key_id,
            resealed,
            tier,
        })
    }

    /// Moves the data key to `target`. Order: written to the target (read
    /// back and compared), then erased from the old tier. A SIGKILL in
    /// between leaves the key in both; the higher tier is used at start-up.
    /// A move to a weaker tier (later in [`KeyTier::ALL`]: systemd
    /// credential > keyring > key file) is refused unless `allow_downgrade`
    /// (the config's `allow_key_downgrade`).
    pub async fn move_to(
        &self,
        target: KeyTier,
        allow_downgrade: bool,
    ) -> Result<(KeyTier, String), VaultError> {
        let _ops = self.ops.lock().await;
        let store = self
            .store()
            .map_err(|e| VaultError::Refused(e.to_string()))?;
        let Some(from) = self.state().tier else {
            return Err(VaultError::Refused("the store is locked".into()));
        };
        if let Some(pinned) = self.custody.config().pinned
            && pinned != target
        {
            return Err(VaultError::Refused(format!(
                "key_source = \"{pinned}\" is set in the config; change it to \"{target}\" first"
            )));
        }
        if target == KeyTier::SystemdCredential {
            return Err(VaultError::Refused(
                "keyhaven cannot write systemd credentials; create one with `systemd-creds \
                 encrypt` from the key (see \"The data key\" in docs/operations.md) and restart the service"
                    .into(),
            ));
        }
        let key = store.key();
        let key_id = key.id().to_owned();
        if target == from {
            return Ok((from, key_id));
        }
        if target.weaker_than(from) && !allow_downgrade {
            return Err(VaultError::Downgrade(format!(
                "moving the data key from the {from} tier to the weaker {target} tier is refused: \
                 it would protect every token less (a key file is readable by anyone with the \
                 disk); set allow_key_downgrade = true in the config file to allow it"
            )));
        }
        self.custody.write(target, Slot::Current, &key).await?;
        fault::point("move:after-write");
        if from != KeyTier::SystemdCredential {
            self.custody.erase(from, Slot::Current).await?;
            self.custody.erase(from, Slot::Pending).await?;
        }
        self.refresh_reports(target, &key_id).await;
        tracing::info!(%from, to = %target, key_id, "data key moved");
        Ok((from, key_id))
    }
}
