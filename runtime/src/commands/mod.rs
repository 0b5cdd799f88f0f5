//! One module per `berth` command.

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
