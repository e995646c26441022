//! Training infrastructure that does not depend on the compiler's graph.
//!
//! Owns the pieces a training loop needs around the model: data sets and
//! their batches ([`data`]), optimizers and gradient clipping ([`optim`]),
//! learning-rate schedules ([`schedule`]), parameter initializers
//! ([`init`]), checkpoints ([`checkpoint`]) and metrics ([`metrics`]), all on
//! candle tensors and all driven by the checked settings of
//! [`crate::sema::spec`]. Guarantees: nothing here panics on user data or
//! files; every failure is a typed error naming the file or parameter.

pub mod checkpoint;
pub mod data;
pub mod init;
pub mod metrics;
pub mod optim;
pub mod schedule;
