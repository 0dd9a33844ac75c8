//! The platform's capacity budget: what the Helm releases (and custom resources) a run will
//! install request, against the room a node has.
//!
//! Pure: callers hand in the values and manifests they are about to install (YAML text) and
//! the room (from the cluster's nodes, or from an EC2 instance type on the laptop), and get a
//! [`Budget`] back: per component, its CPU and memory requests; the total; whether it fits; and
//! when it does not, the smallest instance type (or node count) that would hold it.
//!
//! - [`quantity`]: Kubernetes resource quantities (`250m`, `1.5`, `512Mi`, `2048M`, `1G`).
//! - [`requests`]: the requests written in a values file or a manifest.
//! - [`budget`]: the sum, the room, the verdict and its table; EC2 instance types.
//! - [`plan`]: the components a loaded playbook will install, with their requests.

pub mod budget;
pub mod plan;
pub mod quantity;
pub mod requests;

pub use budget::{Budget, ComponentRequests, InstanceType, Owned, Remedy, Room, instance_type};
pub use plan::components;
pub use quantity::Requests;
