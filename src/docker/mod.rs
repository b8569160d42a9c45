//! The Docker engine: finding it ([`discovery`]), following its networks
//! ([`client`]), and the VM side reached through it ([`vmside`]).

pub mod client;
pub mod discovery;
pub mod local;
pub mod runtime;
pub mod vmside;

pub use client::{
    changes, classify, connect, container, containers, desired_subnets, events, exec, networks,
    Change, ContainerInfo, DockerError, Engine, ExecOutput, NetworkInfo,
};
pub use discovery::{
    candidates, user_home, Candidate, Inputs, Invoker, RealFiles, RealUsers, Source,
};
pub use local::{local_addresses, local_bridge, LocalBridge};
pub use runtime::Runtime;
