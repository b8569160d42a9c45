//! The Docker engine: finding it ([`discovery`]) and following its networks
//! ([`client`]).

pub mod client;
pub mod discovery;
pub mod local;

pub use client::{
    classify, connect, desired_subnets, events, networks, Change, DockerError, Engine, NetworkInfo,
};
pub use discovery::{
    candidates, user_home, Candidate, Inputs, Invoker, RealFiles, RealUsers, Source,
};
pub use local::{local_addresses, local_bridge, LocalBridge};
