//! The only layer that touches the operating system directly: files and their attributes,
//! processes, and facts about the machine. Steps call it; it calls nothing above it.

pub mod archive;
pub mod download;
pub mod facts;
pub mod fs;
pub mod packages;
pub mod process;
pub mod swap;
pub mod systemd;
