//! Object keys of backups: the template, its rendering and the date read back from a key are
//! the model's ([`bosun_model::backup::key`]), since `mysql_backup`'s arguments are checked
//! against them.

pub use bosun_model::backup::key::{DEFAULT_KEY_TEMPLATE, render_key, time_in_key};
