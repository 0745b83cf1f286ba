//! The bankmesh node: the libp2p driver of the protocol state machine, the operator's daemon
//! and commands, and the local demo.

pub mod admin;
pub mod audit;
pub mod client;
pub mod config;
pub mod consortium;
pub mod daemon;
pub mod decoders;
pub mod demo;
pub mod init;
pub mod inputs;
pub mod metrics;
pub mod net;
pub mod peer;
pub mod protocol_thread;
pub mod throttle;
