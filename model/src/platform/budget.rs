//! The budget: the components' requests against the room on the node(s), the verdict, the
//! table the operator reads, and the EC2 instance type that would hold it.
//!
//! Room is counted as the Kubernetes scheduler counts it (a pod is admitted when its requests
//! fit the node's allocatable minus what is already requested): on the cluster, from the nodes'
//! `status.allocatable` and the running pods' requests; on the laptop, from an instance type
//! ([`InstanceType::room`]). The k3s server process itself is outside the scheduler's view
//! (about 500-600 MiB on a small node, docs.k3s.io resource profiling): a profile that fits a
//! 1 GiB node leaves k3s its memory only because the learner profile stays small.

use std::fmt::Write as _;

use super::quantity::{Requests, cpu, memory};

const MI: u64 = 1 << 20;

/// What one component (a playbook's include: its releases and manifests) requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentRequests {
    pub name: String,
    pub requests: Requests,
    /// The workloads it installs, to tell its pods from others' on a cluster where it already
    /// runs (their requests are counted here, not again as "already requested").
    pub owns: Vec<Owned>,
    /// The kubeconfig its first release reaches the cluster with.
    pub kubeconfig: Option<String>,
}

/// Pods a component owns: those of a Helm release (`app.kubernetes.io/instance` = the release,
/// or starting with `<release>-` as k3s's HelmChart releases label them), or every pod of a
/// namespace its manifests create (`release` = `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub namespace: String,
    pub release: Option<String>,
}

impl Owned {
    /// Whether the pod in `namespace` with this `app.kubernetes.io/instance` label is owned.
    pub fn owns(&self, namespace: &str, instance: Option<&str>) -> bool {
        namespace == self.namespace
            && match (&self.release, instance) {
                (None, _) => true,
                (Some(r), Some(i)) => i == r || i.starts_with(&format!("{r}-")),
                (Some(_), None) => false,
            }
    }
}

/// The room on the node(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// Where the figures come from, for the table ("node ip-10-0-1-5", "t2.micro").
    pub source: String,
    /// The nodes' allocatable CPU and memory.
    pub allocatable: Requests,
    /// What running pods already request.
    pub requested: Requests,
}

impl Room {
    /// Allocatable minus already requested.
    pub fn left(&self) -> Requests {
        self.allocatable - self.requested
    }
}

/// An EC2 instance type's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// The instance types the budget suggests, smallest first (general purpose, burstable first).
pub const INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType {
        name: "t3.micro",
        vcpus: 2,
        memory_mib: 1024,
    },
    InstanceType {
        name: "t3.small",
        vcpus: 2,
        memory_mib: 2048,
    },
    InstanceType {
        name: "t3.medium",
        vcpus: 2,
        memory_mib: 4096,
    },
    InstanceType {
        name: "t3.large",
        vcpus: 2,
        memory_mib: 8192,
    },
    InstanceType {
        name: "t3.xlarge",
        vcpus: 4,
        memory_mib: 16384,
    },
    InstanceType {
        name: "t3.2xlarge",
        vcpus: 8,
        memory_mib: 32768,
    },
];

/// Other instance types a stack may name (not suggested).
const OTHER_TYPES: &[InstanceType] = &[
    InstanceType {
        name: "t2.micro",
        vcpus: 1,
        memory_mib: 1024,
    },
    InstanceType {
        name: "t2.small",
        vcpus: 1,
        memory_mib: 2048,
    },
    InstanceType {
        name: "t2.medium",
        vcpus: 2,
        memory_mib: 4096,
    },
    InstanceType {
        name: "t2.large",
        vcpus: 2,
        memory_mib: 8192,
    },
    InstanceType {
        name: "t3.nano",
        vcpus: 2,
        memory_mib: 512,
    },
    InstanceType {
        name: "t4g.micro",
        vcpus: 2,
        memory_mib: 1024,
    },
    InstanceType {
        name: "t4g.small",
        vcpus: 2,
        memory_mib: 2048,
    },
    InstanceType {
        name: "t4g.medium",
        vcpus: 2,
        memory_mib: 4096,
    },
    InstanceType {
        name: "t4g.large",
        vcpus: 2,
        memory_mib: 8192,
    },
    InstanceType {
        name: "t4g.xlarge",
        vcpus: 4,
        memory_mib: 16384,
    },
    InstanceType {
        name: "m7i.large",
        vcpus: 2,
        memory_mib: 8192,
    },
    InstanceType {
        name: "m7i.xlarge",
        vcpus: 4,
        memory_mib: 16384,
    },
    InstanceType {
        name: "m7i.2xlarge",
        vcpus: 8,
        memory_mib: 32768,
    },
];

/// The size of a named instance type, when bosun knows it.
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES
        .iter()
        .chain(OTHER_TYPES)
        .find(|t| t.name == name)
}

/// The names [`instance_type`] knows, for an error message.
pub fn known_instance_types() -> Vec<&'static str> {
    INSTANCE_TYPES
        .iter()
        .chain(OTHER_TYPES)
        .map(|t| t.name)
        .collect()
}

/// The kubelet's default hard eviction threshold (`memory.available<100Mi`): allocatable memory
/// is the node's memory minus this (k3s reserves nothing else by default).
const EVICTION_HARD: u64 = 100 * MI;

/// What k3s's own pods request on a fresh server: CoreDNS (100m, 70Mi) and metrics-server
/// (100m, 70Mi), from k3s's manifests/coredns.yaml and manifests/metrics-server/; the
/// local-path provisioner requests nothing, and Traefik is the platform's ingress component.
pub const K3S_SYSTEM_PODS: Requests = Requests {
    cpu_millis: 200,
    memory_bytes: 140 * MI,
};

impl InstanceType {
    /// A fresh single-node k3s on this type, as the scheduler will see it.
    pub fn room(&self) -> Room {
        Room {
            source: format!(
                "{} ({} vCPU, {} MiB)",
                self.name, self.vcpus, self.memory_mib
            ),
            allocatable: Requests {
                cpu_millis: u64::from(self.vcpus) * 1000,
                memory_bytes: self.memory_mib * MI - EVICTION_HARD,
            },
            requested: K3S_SYSTEM_PODS,
        }
    }
}

/// What would hold a budget that does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// The smallest suggested instance type whose fresh node fits the total.
    InstanceType(&'static InstanceType),
    /// No single suggested type: this many nodes of the largest (agents beside the server).
    Nodes {
        count: u64,
        of: &'static InstanceType,
    },
}

/// The components a run will install against the room they would go into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    pub components: Vec<ComponentRequests>,
    pub room: Room,
}

impl Budget {
    pub fn total(&self) -> Requests {
        self.components
            .iter()
            .fold(Requests::default(), |a, c| a + c.requests)
    }

    pub fn fits(&self) -> bool {
        self.total().fits_in(self.room.left())
    }

    /// The smallest instance type (or node count) that holds [`Budget::total`] on a fresh
    /// cluster.
    pub fn remedy(&self) -> Remedy {
        let total = self.total();
        if let Some(t) = INSTANCE_TYPES
            .iter()
            .find(|t| total.fits_in(t.room().left()))
        {
            return Remedy::InstanceType(t);
        }
        let of = INSTANCE_TYPES.last().expect("instance types");
        // The server holds k3s's pods; each agent node adds its whole allocatable.
        let first = of.room().left();
        let per_node = of.room().allocatable;
        let more = |need: u64, first: u64, each: u64| need.saturating_sub(first).div_ceil(each);
        let count = 1 + more(
            total.memory_bytes,
            first.memory_bytes,
            per_node.memory_bytes,
        )
        .max(more(
            total.cpu_millis,
            first.cpu_millis,
            per_node.cpu_millis,
        ));
        Remedy::Nodes { count, of }
    }

    /// The table: each component's requests, the total, the room left, and the verdict with
    /// what would fit.
    pub fn table(&self) -> String {
        let width = self
            .components
            .iter()
            .map(|c| c.name.len())
            .chain([9])
            .max()
            .unwrap_or(9);
        let mut t = String::new();
        let row = |t: &mut String, name: &str, r: Requests| {
            let _ = writeln!(
                t,
                "{name:<width$}  {:>8}  {:>9}",
                cpu(r.cpu_millis),
                memory(r.memory_bytes)
            );
        };
        let _ = writeln!(t, "{:<width$}  {:>8}  {:>9}", "component", "cpu", "memory");
        for c in &self.components {
            row(&mut t, &c.name, c.requests);
        }
        row(&mut t, "total", self.total());
        row(&mut t, "room left", self.room.left());
        let _ = writeln!(
            t,
            "room on {}: allocatable {}, already requested {}",
            self.room.source, self.room.allocatable, self.room.requested
        );
        if self.fits() {
            let _ = writeln!(t, "fits");
        } else {
            let total = self.total();
            let left = self.room.left();
            let mut short = Vec::new();
            if total.memory_bytes > left.memory_bytes {
                short.push(format!(
                    "memory {} over",
                    memory(total.memory_bytes - left.memory_bytes)
                ));
            }
            if total.cpu_millis > left.cpu_millis {
                short.push(format!(
                    "cpu {} over",
                    cpu(total.cpu_millis - left.cpu_millis)
                ));
            }
            let _ = write!(t, "does not fit ({}); ", short.join(", "));
            let _ = match self.remedy() {
                Remedy::InstanceType(it) => writeln!(
                    t,
                    "the smallest instance type that fits is {} ({} vCPU, {} MiB)",
                    it.name, it.vcpus, it.memory_mib
                ),
                Remedy::Nodes { count, of } => writeln!(
                    t,
                    "no single instance type fits: {count} nodes of {} ({} vCPU, {} MiB) would",
                    of.name, of.vcpus, of.memory_mib
                ),
            };
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, cpu_millis: u64, mib: u64) -> ComponentRequests {
        ComponentRequests {
            name: name.into(),
            requests: Requests {
                cpu_millis,
                memory_bytes: mib * MI,
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_small_budget_fits_a_micro_and_says_so() {
        let b = Budget {
            components: vec![c("ingress", 50, 64), c("monitoring", 75, 232)],
            room: instance_type("t2.micro").unwrap().room(),
        };
        assert!(b.fits());
        let t = b.table();
        assert!(t.contains("total           125m      296Mi"), "{t}");
        assert!(t.contains("room left       800m      784Mi"), "{t}");
        assert!(t.ends_with("fits\n"), "{t}");
    }

    #[test]
    fn over_budget_names_the_smallest_type_that_fits() {
        let b = Budget {
            components: vec![c("jenkins", 600, 1280), c("sonarqube", 500, 2250)],
            room: instance_type("t2.micro").unwrap().room(),
        };
        assert!(!b.fits());
        assert_eq!(
            b.remedy(),
            Remedy::InstanceType(instance_type("t3.medium").unwrap())
        );
        let t = b.table();
        assert!(
            t.contains("does not fit (memory 2746Mi over, cpu 300m over)"),
            "{t}"
        );
        assert!(t.contains("t3.medium (2 vCPU, 4096 MiB)"), "{t}");
        // And that type holds it.
        let there = Budget {
            room: instance_type("t3.medium").unwrap().room(),
            ..b
        };
        assert!(there.fits());
    }

    #[test]
    fn beyond_the_largest_type_it_counts_nodes() {
        let b = Budget {
            components: vec![c("everything", 4000, 70 * 1024)],
            room: instance_type("t3.micro").unwrap().room(),
        };
        let Remedy::Nodes { count, of } = b.remedy() else {
            panic!("{:?}", b.remedy())
        };
        assert_eq!(of.name, "t3.2xlarge");
        assert_eq!(count, 3);
    }
}
