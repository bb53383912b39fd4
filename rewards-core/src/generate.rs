//! A seeded generator of realistic transactions (feature `generate`), for
//! load tests, benchmarks and demos. The same configuration and seed give
//! the same stream, bit for bit (ChaCha8, integer arithmetic only).
//!
//! What it produces, over one day in time order:
//! - purchases with a realistic merchant-category mix (groceries, dining,
//!   fast food, fuel, airlines, hotels, online retail, ...) and amounts
//!   skewed toward small tickets within each category's range;
//! - members with a Zipf-like activity (the member of rank `r` is drawn
//!   with weight `1/r`), so a few members are very active;
//! - refunds at a few percent, each referring to an earlier purchase of the
//!   same member, about half of them partial, never refunding more than
//!   the purchase's amount in total;
//! - card authorizations, most settled later in the stream (some for a
//!   different amount: tips at restaurants, partial shipments), a few
//!   reversed and a few never settled.
//!
//! Emit JSON lines in the wire format with [`Transaction::to_json_string`]
//! (or [`Generator::lines`]).

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, VecDeque};

use crate::ids::{MemberId, TxId};
use crate::money::{Currency, Money};
use crate::transaction::{Presence, Transaction, TxKind};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// The seed.
    pub seed: u64,
    /// How many transactions.
    pub transactions: usize,
    /// How many members (ranks 1..=members).
    pub members: usize,
    /// The (UTC) day the transactions are spread over.
    pub day: NaiveDate,
    /// Refunds per thousand transactions.
    pub refunds_per_mille: u32,
    /// Of the refunds, the percentage that are partial.
    pub partial_refund_percent: u32,
    /// Authorizations per thousand transactions (their settlements, reversals
    /// come later in the stream).
    pub authorizations_per_mille: u32,
    /// Prefix of the transaction ids (`tx-` gives `tx-0000001`).
    pub id_prefix: String,
    /// The currency of every amount.
    pub currency: Currency,
}

impl Default for GeneratorConfig {
    fn default() -> GeneratorConfig {
        GeneratorConfig {
            seed: 7,
            transactions: 10_000,
            members: 1_000,
            day: NaiveDate::from_ymd_opt(2026, 9, 20).unwrap_or_default(),
            refunds_per_mille: 30,
            partial_refund_percent: 50,
            authorizations_per_mille: 80,
            id_prefix: "tx-".into(),
            currency: Currency::USD,
        }
    }
}

/// A merchant category: MCC, relative weight, amount range in cents, and
/// whether it is mostly online.
struct Category {
    mcc: u16,
    name: &'static str,
    weight: u32,
    min_cents: u64,
    max_cents: u64,
    online: bool,
}

const CATEGORIES: &[Category] = &[
    Category {
        mcc: 5411,
        name: "Fresh Market",
        weight: 24,
        min_cents: 300,
        max_cents: 25_000,
        online: false,
    },
    Category {
        mcc: 5812,
        name: "Trattoria",
        weight: 12,
        min_cents: 800,
        max_cents: 15_000,
        online: false,
    },
    Category {
        mcc: 5814,
        name: "Slice Express",
        weight: 10,
        min_cents: 300,
        max_cents: 3_000,
        online: false,
    },
    Category {
        mcc: 5541,
        name: "Fuel Stop",
        weight: 9,
        min_cents: 1_500,
        max_cents: 12_000,
        online: false,
    },
    Category {
        mcc: 4511,
        name: "Blue Air",
        weight: 3,
        min_cents: 8_000,
        max_cents: 150_000,
        online: true,
    },
    Category {
        mcc: 7011,
        name: "Harbor Hotel",
        weight: 3,
        min_cents: 9_000,
        max_cents: 90_000,
        online: true,
    },
    Category {
        mcc: 5942,
        name: "Paper Books Online",
        weight: 6,
        min_cents: 500,
        max_cents: 8_000,
        online: true,
    },
    Category {
        mcc: 5999,
        name: "Everything Store",
        weight: 9,
        min_cents: 500,
        max_cents: 30_000,
        online: true,
    },
    Category {
        mcc: 5912,
        name: "Corner Pharmacy",
        weight: 5,
        min_cents: 400,
        max_cents: 8_000,
        online: false,
    },
    Category {
        mcc: 4111,
        name: "Metro Transit",
        weight: 7,
        min_cents: 150,
        max_cents: 1_500,
        online: false,
    },
    Category {
        mcc: 7832,
        name: "Cinema 8",
        weight: 4,
        min_cents: 900,
        max_cents: 6_000,
        online: false,
    },
    Category {
        mcc: 5311,
        name: "Grand Department Store",
        weight: 6,
        min_cents: 2_000,
        max_cents: 40_000,
        online: false,
    },
    Category {
        mcc: 5732,
        name: "Volt Electronics",
        weight: 2,
        min_cents: 2_000,
        max_cents: 200_000,
        online: true,
    },
];

/// A purchase that may still be refunded.
#[derive(Debug, Clone)]
struct Refundable {
    id: TxId,
    member: MemberId,
    mcc: u16,
    cents: u64,
    refunded: u64,
}

/// A follow-up scheduled for later in the stream.
#[derive(Debug, Clone)]
struct FollowUp {
    at_index: usize,
    kind: TxKind,
    original: TxId,
    member: MemberId,
    mcc: u16,
    cents: u64,
}

/// The generator: an iterator of transactions in time order.
pub struct Generator {
    config: GeneratorConfig,
    rng: ChaCha8Rng,
    member_weights: Vec<u64>,
    category_weights: Vec<u64>,
    refundable: Vec<Refundable>,
    /// Which of `refundable` can still be refunded, as an order-statistics
    /// index: picking the k-th one costs O(log n), not a scan.
    open: OpenIndex,
    follow_ups: VecDeque<FollowUp>,
    index: usize,
    start: DateTime<Utc>,
}

/// Builds cumulative weights for `weight(i)`.
fn cumulative(n: usize, weight: impl Fn(usize) -> u64) -> Vec<u64> {
    let mut total = 0u64;
    (0..n)
        .map(|i| {
            total += weight(i).max(1);
            total
        })
        .collect()
}

impl Generator {
    /// A generator for `config`; the id prefix must leave room for the
    /// 7-digit sequence within the 128-character id limit.
    pub fn new(config: GeneratorConfig) -> Result<Generator, crate::ids::IdError> {
        let longest = format!("{}{:07}", config.id_prefix, config.transactions);
        TxId::new(longest)?;
        let members = config.members.max(1);
        // Zipf with exponent 1: weight of rank r is 1/r, scaled to integers.
        let member_weights = cumulative(members, |i| 1_000_000_000 / (i as u64 + 1));
        let category_weights = cumulative(CATEGORIES.len(), |i| u64::from(CATEGORIES[i].weight));
        let start = Utc.from_utc_datetime(&config.day.and_hms_opt(0, 0, 0).unwrap_or_default());
        Ok(Generator {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            member_weights,
            category_weights,
            refundable: Vec::new(),
            open: OpenIndex::default(),
            follow_ups: VecDeque::new(),
            index: 0,
            start,
        })
    }

    /// The stream as JSON lines in the wire format.
    pub fn lines(self) -> impl Iterator<Item = String> {
        self.map(|tx| tx.to_json_string())
    }

    fn id(&self) -> TxId {
        TxId::new(format!("{}{:07}", self.config.id_prefix, self.index + 1))
            .expect("the prefix was checked in Generator::new")
    }

    /// The i-th transaction's time: evenly spread over the day, with jitter
    /// inside its slot, so times never go backwards.
    fn time(&mut self) -> DateTime<Utc> {
        let n = self.config.transactions.max(1) as i64;
        let slot_ms = (86_400_000 / n).max(1);
        let jitter = self.rng.gen_range(0..slot_ms);
        self.start + Duration::milliseconds(self.index as i64 * slot_ms + jitter)
    }

    fn money(&self, cents: u64) -> Money {
        let scale = self.config.currency.minor_units();
        let units = match scale {
            0 => Decimal::from(cents / 100),
            _ => Decimal::new(cents as i64, 2),
        };
        Money::new(units, self.config.currency)
    }

    fn base(&mut self, kind: TxKind, member: MemberId, mcc: u16, cents: u64) -> Transaction {
        let category = CATEGORIES.iter().find(|c| c.mcc == mcc);
        let online = category.is_some_and(|c| c.online);
        let store_no = self.rng.gen_range(1..5000);
        let wallet = self.rng.gen_range(0..100) < 20;
        Transaction {
            id: self.id(),
            member,
            kind,
            program: None,
            amount: self.money(cents),
            time: self.time(),
            mcc: Some(mcc),
            merchant: category.map(|c| format!("{} #{store_no}", c.name)),
            channel: Some(if wallet { "wallet" } else { "card" }.into()),
            presence: Some(if online {
                Presence::Online
            } else {
                Presence::InStore
            }),
            country: Some("US".into()),
            original_id: None,
            line_items: Vec::new(),
            attributes: BTreeMap::new(),
            points: None,
            reason: None,
            actor: None,
        }
    }

    fn member(&mut self) -> MemberId {
        let rank = pick(&mut self.rng, &self.member_weights);
        MemberId::new(format!("m-{:06}", rank + 1)).expect("a short member id")
    }

    fn purchase_like(&mut self, kind: TxKind) -> Transaction {
        let member = self.member();
        let c = &CATEGORIES[pick(&mut self.rng, &self.category_weights)];
        let span = c.max_cents - c.min_cents;
        // Skewed toward small tickets: u² over the range.
        let u = self.rng.gen_range(0..1000u64);
        let cents = c.min_cents + span * u * u / 1_000_000;
        self.base(kind, member, c.mcc, cents)
    }

    fn follow_up(&mut self, f: FollowUp) -> Transaction {
        let mut tx = self.base(f.kind, f.member.clone(), f.mcc, f.cents);
        tx.original_id = Some(f.original.clone());
        if f.kind == TxKind::Settlement {
            self.push_refundable(Refundable {
                id: f.original,
                member: f.member,
                mcc: f.mcc,
                cents: f.cents,
                refunded: 0,
            });
        }
        tx
    }

    fn push_refundable(&mut self, r: Refundable) {
        self.open.push(r.refunded < r.cents);
        self.refundable.push(r);
    }

    fn refund(&mut self) -> Option<Transaction> {
        // The same draw as picking from the list of still-refundable
        // purchases in order: the k-th one, found in O(log n).
        let count = self.open.count();
        if count == 0 {
            return None;
        }
        let i = self.open.nth(self.rng.gen_range(0..count));
        let left = self.refundable[i].cents - self.refundable[i].refunded;
        let partial = left > 1 && self.rng.gen_range(0..100) < self.config.partial_refund_percent;
        let cents = if partial {
            self.rng.gen_range(1..left)
        } else {
            left
        };
        self.refundable[i].refunded += cents;
        if self.refundable[i].refunded >= self.refundable[i].cents {
            self.open.close(i);
        }
        let r = self.refundable[i].clone();
        let mut tx = self.base(TxKind::Refund, r.member, r.mcc, cents);
        tx.original_id = Some(r.id);
        Some(tx)
    }

    fn authorization(&mut self) -> Transaction {
        let tx = self.purchase_like(TxKind::Authorization);
        let roll = self.rng.gen_range(0..100u64);
        let auth_cents = self.cents_of(&tx);
        let mcc = tx.mcc.unwrap_or(0);
        let (kind, settled) = match self.rng.gen_range(0..100u32) {
            0..=1 => (None, 0), // never settles
            2..=3 => (Some(TxKind::Reversal), auth_cents),
            4..=13 if mcc == 5812 || mcc == 5814 => (
                Some(TxKind::Settlement),
                auth_cents + auth_cents * (10 + roll % 11) / 100,
            ),
            4..=8 => (
                Some(TxKind::Settlement),
                (auth_cents * (50 + roll % 50) / 100).max(1),
            ),
            _ => (Some(TxKind::Settlement), auth_cents),
        };
        if let Some(kind) = kind {
            let delay = self.rng.gen_range(5..200usize);
            let f = FollowUp {
                at_index: self.index + delay,
                kind,
                original: tx.id.clone(),
                member: tx.member.clone(),
                mcc,
                cents: settled,
            };
            let at = self
                .follow_ups
                .partition_point(|g| g.at_index <= f.at_index);
            self.follow_ups.insert(at, f);
        }
        tx
    }

    fn cents_of(&self, tx: &Transaction) -> u64 {
        let mut amount = tx.amount.amount;
        amount.rescale(2);
        u64::try_from(amount.mantissa()).unwrap_or(0)
    }
}

impl Iterator for Generator {
    type Item = Transaction;

    fn next(&mut self) -> Option<Transaction> {
        if self.index >= self.config.transactions {
            return None;
        }
        let tx = if self
            .follow_ups
            .front()
            .is_some_and(|f| f.at_index <= self.index)
        {
            let f = self.follow_ups.pop_front()?;
            self.follow_up(f)
        } else {
            let roll = self.rng.gen_range(0..1000u32);
            let refund = if roll < self.config.refunds_per_mille {
                self.refund()
            } else {
                None
            };
            match refund {
                Some(tx) => tx,
                None if roll
                    < self.config.refunds_per_mille + self.config.authorizations_per_mille =>
                {
                    self.authorization()
                }
                None => {
                    let tx = self.purchase_like(TxKind::Purchase);
                    let cents = self.cents_of(&tx);
                    self.push_refundable(Refundable {
                        id: tx.id.clone(),
                        member: tx.member.clone(),
                        mcc: tx.mcc.unwrap_or(0),
                        cents,
                        refunded: 0,
                    });
                    tx
                }
            }
        };
        self.index += 1;
        Some(tx)
    }
}

/// A Fenwick tree over 0/1 flags ("still open") that grows at the end:
/// count, close and find the k-th open flag in O(log n).
#[derive(Debug, Default)]
struct OpenIndex {
    /// 1-based Fenwick array (`tree[0]` unused).
    tree: Vec<usize>,
    open: usize,
}

impl OpenIndex {
    fn lowbit(i: usize) -> usize {
        i & i.wrapping_neg()
    }

    /// Sum of the flags `1..=i` (1-based).
    fn prefix(&self, mut i: usize) -> usize {
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= Self::lowbit(i);
        }
        sum
    }

    /// Appends a flag.
    fn push(&mut self, open: bool) {
        if self.tree.is_empty() {
            self.tree.push(0);
        }
        let i = self.tree.len();
        let covered = self.prefix(i - 1) - self.prefix(i - Self::lowbit(i));
        self.tree.push(covered + usize::from(open));
        self.open += usize::from(open);
    }

    fn count(&self) -> usize {
        self.open
    }

    /// Clears the flag at (0-based) `index`, which must be open.
    fn close(&mut self, index: usize) {
        let mut i = index + 1;
        while i < self.tree.len() {
            self.tree[i] -= 1;
            i += Self::lowbit(i);
        }
        self.open -= 1;
    }

    /// The (0-based) index of the k-th (0-based) open flag; `k < count()`.
    fn nth(&self, k: usize) -> usize {
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut left = k;
        let mut step = n.checked_next_power_of_two().unwrap_or(0);
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= left {
                pos = next;
                left -= self.tree[next];
            }
            step >>= 1;
        }
        // `pos` flags hold k of the open ones: the next one is the k-th.
        pos
    }
}

/// Draws an index with probability proportional to its weight.
fn pick(rng: &mut ChaCha8Rng, cumulative: &[u64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(1);
    let x = rng.gen_range(0..total);
    cumulative.partition_point(|&c| c <= x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn config(n: usize) -> GeneratorConfig {
        GeneratorConfig {
            transactions: n,
            members: 500,
            ..GeneratorConfig::default()
        }
    }

    #[test]
    fn open_index_finds_the_kth_open_flag() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut index = OpenIndex::default();
        let mut flags: Vec<bool> = Vec::new();
        for _ in 0..3000 {
            if rng.gen_range(0..3) > 0 || index.count() == 0 {
                let open = rng.gen_range(0..10) > 0;
                index.push(open);
                flags.push(open);
            } else {
                let open: Vec<usize> = (0..flags.len()).filter(|&i| flags[i]).collect();
                assert_eq!(index.count(), open.len());
                let k = rng.gen_range(0..open.len());
                assert_eq!(index.nth(k), open[k]);
                index.close(open[k]);
                flags[open[k]] = false;
            }
        }
    }

    #[test]
    fn same_seed_same_stream() {
        let a: Vec<String> = Generator::new(config(2000)).unwrap().lines().collect();
        let b: Vec<String> = Generator::new(config(2000)).unwrap().lines().collect();
        assert_eq!(a, b);
        let c: Vec<String> = Generator::new(GeneratorConfig {
            seed: 8,
            ..config(2000)
        })
        .unwrap()
        .lines()
        .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn a_realistic_stream() {
        let n = 20_000;
        let txs: Vec<Transaction> = Generator::new(config(n)).unwrap().collect();
        assert_eq!(txs.len(), n);
        let mut seen: HashMap<TxId, &Transaction> = HashMap::new();
        let mut refunded: HashMap<TxId, Decimal> = HashMap::new();
        let mut settled: HashMap<TxId, Decimal> = HashMap::new();
        let mut kinds: HashMap<TxKind, usize> = HashMap::new();
        let mut per_member: HashMap<&MemberId, usize> = HashMap::new();
        let mut mccs = HashSet::new();
        let mut last = None;
        for tx in &txs {
            // Wire round trip.
            let again = Transaction::from_json_str(&tx.to_json_string()).unwrap();
            assert_eq!(&again, tx);
            assert!(last.is_none_or(|t| t <= tx.time), "time order");
            assert_eq!(tx.time.date_naive(), config(n).day);
            last = Some(tx.time);
            *kinds.entry(tx.kind).or_default() += 1;
            *per_member.entry(&tx.member).or_default() += 1;
            mccs.insert(tx.mcc);
            if let Some(original) = &tx.original_id {
                let o = seen
                    .get(original)
                    .expect("refers to an earlier transaction");
                assert_eq!(o.member, tx.member);
                match tx.kind {
                    TxKind::Refund => {
                        assert!(matches!(o.kind, TxKind::Purchase | TxKind::Authorization));
                        let total = refunded.entry(original.clone()).or_default();
                        *total += tx.amount.amount;
                        let earned = settled.get(original).copied().unwrap_or(o.amount.amount);
                        assert!(*total <= earned, "never refunds more than the purchase");
                    }
                    kind => {
                        assert_eq!(o.kind, TxKind::Authorization);
                        if kind == TxKind::Settlement {
                            settled.insert(original.clone(), tx.amount.amount);
                        }
                    }
                }
            }
            assert!(seen.insert(tx.id.clone(), tx).is_none(), "unique ids");
        }
        let refunds = kinds[&TxKind::Refund];
        assert!(
            (n * 15 / 1000..n * 45 / 1000).contains(&refunds),
            "{refunds} refunds"
        );
        assert!(kinds[&TxKind::Authorization] > n * 5 / 100);
        assert!(kinds[&TxKind::Settlement] > kinds[&TxKind::Authorization] * 8 / 10);
        assert!(kinds.get(&TxKind::Reversal).copied().unwrap_or(0) > 0);
        assert!(mccs.len() >= 10, "a category mix");
        // Zipf-like: the most active member has far more than the median.
        let mut counts: Vec<usize> = per_member.values().copied().collect();
        counts.sort_unstable();
        let top = counts[counts.len() - 1];
        let median = counts[counts.len() / 2];
        assert!(top > 20 * median, "top {top}, median {median}");
        assert_eq!(
            per_member
                .keys()
                .filter(|m| m.as_str() == "m-000001")
                .count(),
            1
        );
    }
}
