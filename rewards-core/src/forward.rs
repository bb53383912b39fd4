//! [`forward_ledger_store!`](crate::forward_ledger_store): a
//! [`LedgerStore`](crate::LedgerStore) for a wrapper that passes every call
//! on to an inner store except the few it overrides.

/// Implements [`LedgerStore`](crate::LedgerStore) for a wrapper around
/// another store: the wrapper writes only the methods it changes, names the
/// field holding the inner store, and every other method of the trait is
/// forwarded to that field unchanged (`self.inner.redeem(redemption).await`).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use rewards_core::error::Result;
/// use rewards_core::ledger::{LedgerConfig, MemberBalance};
/// use rewards_core::memory::MemoryStore;
/// use rewards_core::{LedgerStore, MemberId, Points};
///
/// /// Counts balance look-ups; everything else goes to `inner` as is.
/// struct Counted {
///     inner: MemoryStore,
///     lookups: AtomicU64,
/// }
///
/// rewards_core::forward_ledger_store! {
///     impl LedgerStore for Counted {
///         forward self.inner;
///         async fn balance(&self, member: &MemberId) -> Result<MemberBalance> {
///             self.lookups.fetch_add(1, Ordering::Relaxed);
///             self.inner.balance(member).await
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let store = Counted {
///     inner: MemoryStore::new(LedgerConfig::default()),
///     lookups: AtomicU64::new(0),
/// };
/// let member = MemberId::new("m-1").expect("id");
/// assert!(store.balance(&member).await.is_err()); // never seen: NotFound
/// assert_eq!(store.budget_used("launch").await.expect("forwarded"), Points(0));
/// assert_eq!(store.lookups.load(Ordering::Relaxed), 1);
/// # }
/// ```
///
/// The shape, in this order:
///
/// - `impl LedgerStore for Wrapper { ... }`, with optional generics
///   (`impl<S: LedgerStore> LedgerStore for Timed<S>`), each parameter with
///   at most one bound;
/// - `forward self.FIELD;`: the field the rest is forwarded to (anything
///   whose methods `self.FIELD.name(..)` reaches: a store, an `Arc` of one,
///   an `Arc<dyn LedgerStore>`);
/// - optionally `default NAME, NAME;`: methods with a default in the trait
///   that keep that default instead of being forwarded (`member_views`
///   then asks `self.member_view` once per member, the outbox methods
///   refuse);
/// - the overrides, as plain `async fn`s (no `#[async_trait]`: the macro
///   writes the attribute on the whole impl, through `rewards_core`, so the
///   caller needs no `async-trait` dependency).
///
/// Nothing is left out silently: a method is overridden, named under
/// `default`, or forwarded. An override or a `default` name that is no
/// method of the trait does not compile.
///
/// Adding a method to the trait takes one line in the table of this macro
/// (the `@table` arm); a test checks that the table names every method of
/// the trait.
#[macro_export]
macro_rules! forward_ledger_store {
    // Every method of `LedgerStore`: name, parameters, result; one line
    // each. `$cb` is the macro to hand the table to, after `$pre`.
    (@table ($($cb:tt)*) [$($pre:tt)*]) => {
        $($cb)*! {
            $($pre)*
            member_view(member: &$crate::ids::MemberId, counters: &[$crate::window::CounterKey]) -> $crate::error::Result<$crate::member::MemberView>;
            member_views(requests: &[($crate::ids::MemberId, ::std::vec::Vec<$crate::window::CounterKey>)]) -> $crate::error::Result<::std::vec::Vec<$crate::member::MemberView>>;
            append(tx: &$crate::transaction::Transaction, outcome: &$crate::outcome::Outcome) -> $crate::error::Result<$crate::ledger::Receipt>;
            append_batch(items: &[($crate::transaction::Transaction, $crate::outcome::Outcome)]) -> $crate::error::Result<::std::vec::Vec<$crate::error::Result<$crate::ledger::Receipt>>>;
            redeem(redemption: &$crate::ledger::Redemption) -> $crate::error::Result<$crate::ledger::Receipt>;
            adjust(adjustment: &$crate::ledger::Adjustment) -> $crate::error::Result<$crate::ledger::Receipt>;
            expire_due(as_of: $crate::__private::DateTime<$crate::__private::Utc>) -> $crate::error::Result<$crate::ledger::SweepReport>;
            release_pending(as_of: $crate::__private::DateTime<$crate::__private::Utc>) -> $crate::error::Result<$crate::ledger::SweepReport>;
            expire_authorizations(as_of: $crate::__private::DateTime<$crate::__private::Utc>) -> $crate::error::Result<$crate::ledger::SweepReport>;
            review_tier(review: &$crate::ledger::TierReview) -> $crate::error::Result<$crate::ledger::MemberBalance>;
            apply_scheduled_tiers(as_of: $crate::__private::DateTime<$crate::__private::Utc>) -> $crate::error::Result<$crate::ledger::SweepReport>;
            members_after(after: ::std::option::Option<&$crate::ids::MemberId>, limit: usize) -> $crate::error::Result<::std::vec::Vec<$crate::ids::MemberId>>;
            tier_views(members: &[$crate::ids::MemberId], counters: &[$crate::window::CounterKey]) -> $crate::error::Result<::std::vec::Vec<$crate::store::TierView>>;
            balance(member: &$crate::ids::MemberId) -> $crate::error::Result<$crate::ledger::MemberBalance>;
            recent(member: &$crate::ids::MemberId, limit: usize) -> $crate::error::Result<::std::vec::Vec<$crate::ledger::RecentEntry>>;
            history(member: &$crate::ids::MemberId, after_seq: u64, limit: usize) -> $crate::error::Result<::std::vec::Vec<$crate::ledger::Posting>>;
            audit(member: &$crate::ids::MemberId, after_seq: u64, limit: usize) -> $crate::error::Result<::std::vec::Vec<$crate::ledger::AuditEvent>>;
            put_profile(profile: &$crate::member::MemberProfile) -> $crate::error::Result<()>;
            profile(member: &$crate::ids::MemberId) -> $crate::error::Result<$crate::member::MemberProfile>;
            budget_used(budget: &str) -> $crate::error::Result<$crate::points::Points>;
            reconcile() -> $crate::error::Result<$crate::ledger::ReconcileReport>;
            outbox_fetch(limit: usize) -> $crate::error::Result<::std::vec::Vec<$crate::store::OutboxEvent>>;
            outbox_ack(seqs: &[u64]) -> $crate::error::Result<u64>;
        }
    };

    // The table's method names, as an array of `&str` (for the test).
    (@names) => {
        $crate::forward_ledger_store!(@table ($crate::forward_ledger_store) [@names_of])
    };
    (@names_of $($name:ident ($($param:tt)*) -> $result:ty;)*) => {
        [$(stringify!($name)),*]
    };

    // `$d` is a `$`, for the walker's own metavariables. The walker goes
    // down the table with the forwarding methods written so far in
    // `[..]`: a method the wrapper writes (overridden or kept default) is
    // passed over, any other gets a forwarding method; at the end it
    // writes the impl, overrides first. The walker is defined here, per
    // wrapper, because only a macro can compare a name with the ones the
    // wrapper wrote (a literal in one of its patterns); the `const _`
    // block keeps it private to this impl.
    (@define ($d:tt) {$($generics:tt)*} {$ty:ty} {$field:ident} [$($kept:ident),*]
        [$($name:ident)*] {$($items:tt)*}) => {
        const _: () = {
            $(let _ = <dyn $crate::store::LedgerStore as $crate::store::LedgerStore>::$kept;)*

            macro_rules! __forward_ledger_store_walk {
                ([$d($d done:tt)*]) => {
                    #[$crate::__private::async_trait]
                    impl $($generics)* $crate::store::LedgerStore for $ty {
                        $($items)*
                        $d($d done)*
                    }
                };
                $(
                    ([$d($d done:tt)*] $name ($d($d param:tt)*) -> $d result:ty; $d($d rest:tt)*) => {
                        __forward_ledger_store_walk! { [$d($d done)*] $d($d rest)* }
                    };
                )*
                $(
                    ([$d($d done:tt)*] $kept ($d($d param:tt)*) -> $d result:ty; $d($d rest:tt)*) => {
                        __forward_ledger_store_walk! { [$d($d done)*] $d($d rest)* }
                    };
                )*
                ([$d($d done:tt)*] $d method:ident ($d($d param:ident: $d param_ty:ty),*) -> $d result:ty;
                    $d($d rest:tt)*) => {
                    __forward_ledger_store_walk! {
                        [
                            $d($d done)*
                            async fn $d method(&self, $d($d param: $d param_ty),*) -> $d result {
                                self.$field.$d method($d($d param),*).await
                            }
                        ]
                        $d($d rest)*
                    }
                };
            }

            $crate::forward_ledger_store!(@table (__forward_ledger_store_walk) [[]]);
        };
    };

    (
        impl $(<$($generic:ident $(: $bound:path)?),+>)? LedgerStore for $ty:ty {
            forward self.$field:ident;
            $(default $($kept:ident),+;)?
            $(
                $(#[$($attr:tt)*])*
                async fn $name:ident ($($param:tt)*) -> $result:ty { $($body:tt)* }
            )*
        }
    ) => {
        $crate::forward_ledger_store! {
            @define ($) {$(<$($generic $(: $bound)?),+>)?} {$ty} {$field} [$($($kept),+)?] [$($name)*] {
                $(
                    $(#[$($attr)*])*
                    async fn $name ($($param)*) -> $result { $($body)* }
                )*
            }
        }
    };
}

#[cfg(test)]
mod tests {
    /// The names of the methods of `LedgerStore`, read from its source.
    fn trait_methods() -> Vec<String> {
        let source = include_str!("store.rs");
        let start = source
            .find("pub trait LedgerStore")
            .expect("the trait in store.rs");
        let body = &source[start..];
        let end = body.find("\n}\n").expect("the end of the trait");
        body[..end]
            .split("async fn ")
            .skip(1)
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_table_names_every_method_of_the_trait() {
        let table: Vec<String> = forward_ledger_store!(@names)
            .iter()
            .map(|name| name.to_string())
            .collect();
        let methods = trait_methods();
        assert!(methods.len() > 20, "{methods:?}");
        assert_eq!(table, methods);
    }
}
