//! The types of `.rwd` expressions and the typing rules of its operators.
//! Kept apart from the checker so that the compiler and the evaluator can
//! share one definition of what, say, `money * decimal` is.

use crate::ast::{BinaryOp, TypeName};
use std::fmt;

/// The type of an expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Type {
    /// `true` / `false`
    Bool,
    /// A whole number (i64).
    Integer,
    /// An exact decimal.
    Decimal,
    /// An amount in the ruleset's currency.
    Money,
    /// Points (exact decimal until an award is rounded).
    Points,
    /// Text.
    String,
    /// A calendar date.
    Date,
    /// An instant.
    DateTime,
    /// A length of time.
    Duration,
    /// A transaction kind (`purchase`, `refund`, ...).
    Kind,
    /// Card presence (`online`, `in_store`).
    Presence,
    /// A day of the week (ordered `mon` < ... < `sun`).
    Weekday,
    /// A tier (ordered as declared).
    Tier,
    /// A currency code.
    Currency,
    /// A declared set of merchant category codes (right side of `in` only).
    Category,
    /// A list whose elements have the given type.
    List(Box<Type>),
    /// The type of an expression that already has an error; it is
    /// compatible with everything so that one mistake gives one diagnostic.
    Error,
}

impl Type {
    /// The type of a declared attribute, extern parameter or result.
    pub fn from_name(name: TypeName) -> Type {
        match name {
            TypeName::String => Type::String,
            TypeName::Decimal => Type::Decimal,
            TypeName::Integer => Type::Integer,
            TypeName::Bool => Type::Bool,
            TypeName::Money => Type::Money,
            TypeName::Date => Type::Date,
            TypeName::DateTime => Type::DateTime,
            TypeName::Duration => Type::Duration,
            TypeName::Points => Type::Points,
        }
    }

    /// Integer or decimal.
    pub fn is_number(&self) -> bool {
        matches!(self, Type::Integer | Type::Decimal)
    }

    /// Whether `<`, `<=`, `>`, `>=`, ranges, `min` and `max` apply.
    pub fn is_ordered(&self) -> bool {
        matches!(
            self,
            Type::Integer
                | Type::Decimal
                | Type::Money
                | Type::Points
                | Type::Date
                | Type::DateTime
                | Type::Duration
                | Type::Weekday
                | Type::Tier
                | Type::Error
        )
    }

    /// Whether `==` and `!=` apply.
    pub fn has_equality(&self) -> bool {
        !matches!(self, Type::Category | Type::List(_))
    }

    /// The common type of two values compared or listed together, if any:
    /// equal types; integer with decimal gives decimal; points with a
    /// number gives points; an error type matches anything.
    pub fn unify(&self, other: &Type) -> Option<Type> {
        match (self, other) {
            (Type::Error, t) | (t, Type::Error) => Some(t.clone()),
            (a, b) if a == b => Some(a.clone()),
            (a, b) if a.is_number() && b.is_number() => Some(Type::Decimal),
            (Type::Points, b) if b.is_number() => Some(Type::Points),
            (a, Type::Points) if a.is_number() => Some(Type::Points),
            (Type::List(a), Type::List(b)) => a.unify(b).map(|t| Type::List(Box::new(t))),
            _ => None,
        }
    }

    /// Whether a value of type `self` may be given where `want` is declared
    /// (an integer where a decimal or points is wanted, for example).
    pub fn fits(&self, want: &Type) -> bool {
        match (self, want) {
            (Type::Error, _) | (_, Type::Error) => true,
            (a, b) if a == b => true,
            (Type::Integer, Type::Decimal | Type::Points) => true,
            (Type::Decimal, Type::Points) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Type {
    /// `{}` prints the type's name; `{:#}` prints it as a noun phrase with
    /// its article ("an integer", "money", "a list of string").
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return match self {
                Type::Money => f.write_str("money"),
                Type::Points => f.write_str("points"),
                Type::Integer => f.write_str("an integer"),
                Type::Error => f.write_str("an unknown value"),
                other => write!(f, "a {other}"),
            };
        }
        match self {
            Type::Bool => f.write_str("bool"),
            Type::Integer => f.write_str("integer"),
            Type::Decimal => f.write_str("decimal"),
            Type::Money => f.write_str("money"),
            Type::Points => f.write_str("points"),
            Type::String => f.write_str("string"),
            Type::Date => f.write_str("date"),
            Type::DateTime => f.write_str("datetime"),
            Type::Duration => f.write_str("duration"),
            Type::Kind => f.write_str("transaction kind"),
            Type::Presence => f.write_str("presence"),
            Type::Weekday => f.write_str("weekday"),
            Type::Tier => f.write_str("tier"),
            Type::Currency => f.write_str("currency"),
            Type::Category => f.write_str("category"),
            Type::List(t) if **t == Type::Error => f.write_str("list"),
            Type::List(t) => write!(f, "list of {t}"),
            Type::Error => f.write_str("unknown"),
        }
    }
}

/// The result type of an arithmetic operator, or `None` if the operands
/// do not go together. `and`, `or` and comparisons are not arithmetic.
pub fn arithmetic(op: BinaryOp, lhs: &Type, rhs: &Type) -> Option<Type> {
    use Type::*;
    if *lhs == Error || *rhs == Error {
        return Some(Error);
    }
    let num = |t: &Type| t.is_number();
    let widen = |a: &Type, b: &Type| {
        if *a == Integer && *b == Integer {
            Integer
        } else {
            Decimal
        }
    };
    match op {
        BinaryOp::Add | BinaryOp::Sub => match (lhs, rhs) {
            (a, b) if num(a) && num(b) => Some(widen(a, b)),
            (Money, Money) => Some(Money),
            (Points, Points) => Some(Points),
            (Points, b) if num(b) => Some(Points),
            (a, Points) if num(a) => Some(Points),
            (Date, Duration) => Some(Date),
            (DateTime, Duration) => Some(DateTime),
            (Duration, Duration) => Some(Duration),
            (Duration, Date) if op == BinaryOp::Add => Some(Date),
            (Duration, DateTime) if op == BinaryOp::Add => Some(DateTime),
            (Date, Date) | (DateTime, DateTime) if op == BinaryOp::Sub => Some(Duration),
            _ => None,
        },
        BinaryOp::Mul => match (lhs, rhs) {
            (a, b) if num(a) && num(b) => Some(widen(a, b)),
            (Money, b) if num(b) => Some(Money),
            (a, Money) if num(a) => Some(Money),
            (Points, b) if num(b) => Some(Points),
            (a, Points) if num(a) => Some(Points),
            (Duration, Integer) | (Integer, Duration) => Some(Duration),
            _ => None,
        },
        BinaryOp::Div => match (lhs, rhs) {
            (a, b) if num(a) && num(b) => Some(Decimal),
            (Money, b) if num(b) => Some(Money),
            (Money, Money) => Some(Decimal),
            (Points, b) if num(b) => Some(Points),
            (Points, Points) => Some(Decimal),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_points_never_mix() {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            assert_eq!(arithmetic(op, &Type::Money, &Type::Points), None);
            assert_eq!(arithmetic(op, &Type::Points, &Type::Money), None);
        }
        assert_eq!(
            arithmetic(BinaryOp::Add, &Type::Money, &Type::Integer),
            None
        );
        assert_eq!(
            arithmetic(BinaryOp::Mul, &Type::Integer, &Type::Money),
            Some(Type::Money)
        );
        assert_eq!(
            arithmetic(BinaryOp::Div, &Type::Integer, &Type::Integer),
            Some(Type::Decimal)
        );
    }

    #[test]
    fn unify_widens_numbers() {
        assert_eq!(Type::Integer.unify(&Type::Decimal), Some(Type::Decimal));
        assert_eq!(Type::Integer.unify(&Type::Points), Some(Type::Points));
        assert_eq!(Type::Money.unify(&Type::Points), None);
        assert_eq!(Type::Error.unify(&Type::Tier), Some(Type::Tier));
    }
}
