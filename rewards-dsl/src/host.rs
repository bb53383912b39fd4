//! Host functions: typed Rust functions registered before compiling, bound
//! to the program's `extern fn` declarations by name and signature.
//!
//! ```
//! use rewards_dsl::ast::TypeName;
//! use rewards_dsl::host::HostFunctions;
//! use rewards_dsl::value::Value;
//!
//! let mut host = HostFunctions::new();
//! host.register("is_partner", &[TypeName::String], TypeName::Bool, |args| {
//!     Ok(Value::Bool(matches!(&args[0], Value::String(m) if m.starts_with("Skyway"))))
//! });
//! assert!(host.get("is_partner").is_some());
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::ast::TypeName;
use crate::value::Value;

/// Why a host function could not answer (an evaluation error `eval.host`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

/// The Rust side of a host function: pure, bounded, thread-safe.
pub type HostFn = Arc<dyn Fn(&[Value]) -> Result<Value, HostError> + Send + Sync>;

/// One registered function.
#[derive(Clone)]
pub struct HostFunction {
    /// Parameter types in order.
    pub params: Vec<TypeName>,
    /// Result type.
    pub ret: TypeName,
    /// The implementation.
    pub func: HostFn,
}

impl fmt::Debug for HostFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", signature_text("fn", &self.params, self.ret))
    }
}

/// Writes a signature as `.rwd` would declare it: `name(string, decimal) -> bool`.
pub fn signature_text(name: &str, params: &[TypeName], ret: TypeName) -> String {
    let params: Vec<&str> = params.iter().map(|p| p.as_str()).collect();
    format!("{name}({}) -> {}", params.join(", "), ret.as_str())
}

/// The functions a host offers to rulesets, by name.
#[derive(Debug, Clone, Default)]
pub struct HostFunctions {
    functions: BTreeMap<String, HostFunction>,
}

impl HostFunctions {
    /// No functions.
    pub fn new() -> HostFunctions {
        HostFunctions::default()
    }

    /// Registers (or replaces) a function.
    pub fn register(
        &mut self,
        name: impl Into<String>,
        params: &[TypeName],
        ret: TypeName,
        func: impl Fn(&[Value]) -> Result<Value, HostError> + Send + Sync + 'static,
    ) -> &mut HostFunctions {
        self.functions.insert(
            name.into(),
            HostFunction {
                params: params.to_vec(),
                ret,
                func: Arc::new(func),
            },
        );
        self
    }

    /// The function called `name`.
    pub fn get(&self, name: &str) -> Option<&HostFunction> {
        self.functions.get(name)
    }

    /// Every registered function, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostFunction)> {
        self.functions.iter().map(|(n, f)| (n.as_str(), f))
    }
}
