//! One module per `berth` command, each with its own error type. Commands may use each
//! other (`run -d` and `start` launch a `monitor`, `restart` stops); nothing below uses them.

pub mod attach;
pub mod exec;
pub mod image;
pub mod logs;
pub mod monitor;
pub mod network;
pub mod prune;
pub mod ps;
pub mod rm;
pub mod run;
pub mod start;
pub mod stop;
