//! The bankmesh node: the libp2p driver of the protocol state machine, and the local demo.

pub mod demo;
pub mod inputs;
pub mod net;
pub mod peer;
