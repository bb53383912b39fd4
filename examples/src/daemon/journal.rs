//! The explain journal: for every transaction the pipeline applied, what
//! evaluation saw — the transaction, the program, the ruleset stamp and the
//! member view — so that `GET /v1/transactions/{id}/explain` can evaluate
//! it again, with an explain trace, on the very plan version that produced
//! it (when that version is still loaded).
//!
//! [`JournalingStore`] wraps the ledger store the pipeline writes through:
//! it remembers the view each member's last `member_view` returned (the
//! pipeline reads a member's view, evaluates, then appends — one writer per
//! member) and, once an append succeeds, writes one JSON line to
//! `journal.jsonl` in the state folder. The store stays the source of
//! truth: a journal line is written after the commit, so a crash between
//! the two loses only that line (explain then answers "not in the
//! journal"), never a posting. Duplicates are not journalled twice.
//!
//! Memory: an index of transaction id → file offset; lines are read back on
//! demand.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use rewards_core::error::Result;
use rewards_core::ledger::Receipt;
use rewards_core::{
    AttrValue, CounterKey, LedgerStore, MemberId, MemberView, Outcome, Points, RulesetStamp,
    Transaction, TxId,
};

/// The member view as journalled (counters as a list: JSON map keys must be strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalView {
    /// Tier.
    pub tier: Option<Arc<str>>,
    /// Enrolment date.
    pub enrolled: Option<NaiveDate>,
    /// Profile attributes.
    pub attributes: BTreeMap<String, AttrValue>,
    /// Counter values read.
    pub counters: Vec<(CounterKey, Decimal)>,
    /// Available balance.
    pub balance: Points,
    /// The member's version the view was read at (absent in journals
    /// written before it was recorded).
    #[serde(default)]
    pub version: u64,
}

impl From<&MemberView> for JournalView {
    fn from(v: &MemberView) -> JournalView {
        let mut counters: Vec<(CounterKey, Decimal)> =
            v.counters.iter().map(|(k, d)| (k.clone(), *d)).collect();
        counters.sort();
        JournalView {
            tier: v.tier.clone(),
            enrolled: v.enrolled,
            attributes: v.attributes.clone(),
            counters,
            balance: v.balance,
            version: v.version,
        }
    }
}

impl From<JournalView> for MemberView {
    fn from(v: JournalView) -> MemberView {
        MemberView {
            tier: v.tier,
            enrolled: v.enrolled,
            attributes: v.attributes,
            counters: v.counters.into_iter().collect(),
            balance: v.balance,
            version: v.version,
        }
    }
}

/// One journalled transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The transaction in the wire format.
    pub tx: serde_json::Value,
    /// The ruleset that evaluated it.
    pub ruleset: RulesetStamp,
    /// What evaluation saw of the member (`None` if it was not captured).
    pub view: Option<JournalView>,
    /// Net points per rule as stored (after trimming).
    pub awards: Vec<(Arc<str>, Points)>,
    /// The member's version after it.
    pub version: u64,
    /// When it was applied.
    pub applied_at: DateTime<Utc>,
}

/// The journal file and its index.
pub struct Journal {
    path: PathBuf,
    inner: Mutex<JournalFile>,
}

struct JournalFile {
    file: File,
    len: u64,
    index: HashMap<TxId, u64>,
    /// Member → sequence number of its latest journalled transaction.
    members: HashMap<MemberId, u64>,
    next_seq: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The id of a journal line, read without decoding the rest.
#[derive(Deserialize)]
struct IdOnly {
    tx: IdField,
}

#[derive(Deserialize)]
struct IdField {
    id: String,
    member: String,
}

impl Journal {
    /// Opens (creating) the journal at `path` and indexes it; a torn last
    /// line (a crash mid-write) is cut off.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut index = HashMap::new();
        let mut members = HashMap::new();
        let mut next_seq = 0u64;
        let mut offset = 0u64;
        let mut good = 0u64;
        {
            let mut reader = BufReader::new(&mut file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 {
                    break;
                }
                if line.last() != Some(&b'\n') {
                    break; // torn
                }
                if let Ok(entry) = serde_json::from_slice::<IdOnly>(&line) {
                    if let Ok(id) = TxId::new(entry.tx.id) {
                        index.entry(id).or_insert(offset);
                    }
                    if let Ok(member) = MemberId::new(entry.tx.member) {
                        next_seq += 1;
                        members.insert(member, next_seq);
                    }
                }
                offset += n as u64;
                good = offset;
            }
        }
        let len = file.metadata()?.len();
        if len != good {
            file.set_len(good)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            inner: Mutex::new(JournalFile {
                file,
                len: good,
                index,
                members,
                next_seq,
            }),
        })
    }

    /// Transactions journalled.
    pub fn len(&self) -> usize {
        self.lock().index.len()
    }

    /// True when nothing is journalled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalFile> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Members with a journalled transaction, most recently active first.
    pub fn members(&self) -> Vec<MemberId> {
        let inner = self.lock();
        let mut all: Vec<(&MemberId, &u64)> = inner.members.iter().collect();
        all.sort_by(|a, b| b.1.cmp(a.1));
        all.into_iter().map(|(m, _)| m.clone()).collect()
    }

    /// Appends an entry (once per transaction id).
    pub fn record(&self, id: &TxId, entry: &JournalEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut inner = self.lock();
        if inner.index.contains_key(id) {
            return Ok(());
        }
        inner.file.write_all(&line)?;
        let offset = inner.len;
        inner.len += line.len() as u64;
        inner.index.insert(id.clone(), offset);
        if let Some(member) = entry
            .tx
            .get("member")
            .and_then(serde_json::Value::as_str)
            .and_then(|m| MemberId::new(m).ok())
        {
            inner.next_seq += 1;
            let seq = inner.next_seq;
            inner.members.insert(member, seq);
        }
        Ok(())
    }

    /// The entry of a transaction, if journalled.
    pub fn get(&self, id: &TxId) -> std::io::Result<Option<JournalEntry>> {
        let mut inner = self.lock();
        let Some(&offset) = inner.index.get(id) else {
            return Ok(None);
        };
        inner.file.seek(SeekFrom::Start(offset))?;
        let mut reader =
            BufReader::new((&mut inner.file).take(rewards_core::limits::MAX_TX_BYTES as u64 * 8));
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line)?;
        let entry = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
        Ok(Some(entry))
    }

    /// Flushes to the disk.
    pub fn sync(&self) -> std::io::Result<()> {
        self.lock().file.sync_data()
    }
}

/// The ledger store the pipeline writes through, journalling each applied
/// transaction (see the module docs). Every call is passed on unchanged.
pub struct JournalingStore {
    inner: Arc<dyn LedgerStore>,
    journal: Arc<Journal>,
    views: Mutex<HashMap<MemberId, MemberView>>,
}

impl JournalingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn LedgerStore>, journal: Arc<Journal>) -> JournalingStore {
        JournalingStore {
            inner,
            journal,
            views: Mutex::new(HashMap::new()),
        }
    }

    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<MemberId, MemberView>> {
        self.views.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn journal(&self, tx: &Transaction, outcome: &Outcome, receipt: &Receipt) {
        let view = self.views().remove(&tx.member);
        if receipt.duplicate {
            return;
        }
        // The pipeline evaluates a member's next transaction in the same
        // round from the view predicted past this one: keep that.
        if let Some(view) = &view {
            let mut next = view.clone();
            if rewards_core::ledger::advance_view(&mut next, tx, outcome) {
                self.views().insert(tx.member.clone(), next);
            }
        }
        let entry = JournalEntry {
            tx: tx.to_json_value(),
            ruleset: outcome.ruleset.clone(),
            view: view.as_ref().map(JournalView::from),
            awards: receipt.awards.clone(),
            version: receipt.version,
            applied_at: Utc::now(),
        };
        if let Err(e) = self.journal.record(&tx.id, &entry) {
            tracing::warn!(tx = %tx.id, error = %e, "explain journal write failed (the posting is stored)");
        }
    }
}

rewards_core::forward_ledger_store! {
    impl LedgerStore for JournalingStore {
        forward self.inner;

        async fn member_view(
            &self,
            member: &MemberId,
            counters: &[CounterKey],
        ) -> Result<MemberView> {
            let view = self.inner.member_view(member, counters).await?;
            self.views().insert(member.clone(), view.clone());
            Ok(view)
        }

        async fn member_views(
            &self,
            requests: &[(MemberId, Vec<CounterKey>)],
        ) -> Result<Vec<MemberView>> {
            // Forwarded so the pipeline keeps the store's one-round-trip read.
            let views = self.inner.member_views(requests).await?;
            let mut kept = self.views();
            for ((member, _), view) in requests.iter().zip(&views) {
                kept.insert(member.clone(), view.clone());
            }
            Ok(views)
        }

        async fn append(&self, tx: &Transaction, outcome: &Outcome) -> Result<Receipt> {
            let receipt = self.inner.append(tx, outcome).await?;
            self.journal(tx, outcome, &receipt);
            Ok(receipt)
        }

        async fn append_batch(
            &self,
            items: &[(Transaction, Outcome)],
        ) -> Result<Vec<Result<Receipt>>> {
            let results = self.inner.append_batch(items).await?;
            for ((tx, outcome), result) in items.iter().zip(&results) {
                if let Ok(receipt) = result {
                    self.journal(tx, outcome, receipt);
                }
            }
            Ok(results)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> JournalEntry {
        JournalEntry {
            tx: serde_json::json!({"id": id, "member": "m-1"}),
            ruleset: RulesetStamp {
                id: "r".into(),
                version: 1,
                hash: "h".into(),
            },
            view: None,
            awards: vec![(Arc::from("base"), Points(5))],
            version: 1,
            applied_at: Utc::now(),
        }
    }

    #[test]
    fn entries_survive_a_reopen_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let j = Journal::open(&path).unwrap();
        let a = TxId::new("tx-a").unwrap();
        let b = TxId::new("tx-b").unwrap();
        j.record(&a, &entry("tx-a")).unwrap();
        j.record(&b, &entry("tx-b")).unwrap();
        j.record(&a, &entry("tx-a")).unwrap(); // once per id
        drop(j);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"tx\":{\"id\":\"tx-c\"").unwrap();
        drop(f);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j.get(&b).unwrap().unwrap().tx["id"], "tx-b");
        assert!(j.get(&TxId::new("tx-c").unwrap()).unwrap().is_none());
        let c = TxId::new("tx-c").unwrap();
        j.record(&c, &entry("tx-c")).unwrap();
        assert_eq!(j.get(&c).unwrap().unwrap().tx["id"], "tx-c");
        assert_eq!(j.get(&a).unwrap().unwrap().awards[0].1, Points(5));
        assert_eq!(j.members(), vec![MemberId::new("m-1").unwrap()]);
    }
}
