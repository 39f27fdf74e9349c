//! PeerAuthentication → the mTLS mode of each workload port, with Istio's
//! precedence: a policy selecting the workload over its namespace's policy
//! over the mesh-wide one (root namespace, no selector); `UNSET` inherits
//! from the level above, and with nothing above means PERMISSIVE.
//! `portLevelMtls` counts only on a policy with a selector. When several
//! policies tie at one level, the first by namespace and name wins (Istio
//! takes the oldest; Weft keeps no creation times).

use std::collections::BTreeMap;

use weft_api::Resource;
use weft_api::security::peer_authentication::{MtlsMode, PeerAuthentication};
use weft_proto::proxy::v1 as pb;

use crate::registry::{RootNamespace, labels_match, namespace_or_default};

#[derive(Debug, Default, Clone)]
pub struct PeerPolicies {
    /// Sorted by namespace and name.
    policies: Vec<Policy>,
    /// MeshConfig `rootNamespace`.
    root: RootNamespace,
}

#[derive(Debug, Clone)]
struct Policy {
    namespace: String,
    name: String,
    spec: PeerAuthentication,
    /// `portLevelMtls`, parsed once (it is read for every endpoint).
    ports: BTreeMap<u16, MtlsMode>,
}

impl PeerPolicies {
    pub fn new(resources: &[Resource]) -> Self {
        let mut policies: Vec<_> = resources
            .iter()
            .filter_map(|r| match r {
                Resource::PeerAuthentication(object) => Some(Policy {
                    namespace: namespace_or_default(&object.metadata.namespace).to_string(),
                    name: object.metadata.name.clone(),
                    ports: object.spec.port_modes(),
                    spec: object.spec.clone(),
                }),
                _ => None,
            })
            .collect();
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Self {
            policies,
            root: RootNamespace::default(),
        }
    }

    /// Under MeshConfig's `rootNamespace`.
    pub fn with_root(mut self, root: &str) -> Self {
        self.root = RootNamespace::new(root);
        self
    }

    /// The resolved mode (never UNSET) of `port` of a workload in
    /// `namespace` with `labels`.
    pub fn mode(&self, namespace: &str, labels: &BTreeMap<String, String>, port: u32) -> MtlsMode {
        let without_selector = |ns: &str| {
            self.policies
                .iter()
                .find(|p| p.namespace == ns && p.spec.selector.is_none())
        };
        let mesh = without_selector(self.root.as_str());
        let namespace_wide = without_selector(namespace);
        let workload = self.policies.iter().find(|p| {
            // `selector: {}` selects every workload (still at the
            // workload level, as in Istio).
            p.namespace == namespace
                && p.spec
                    .selector
                    .as_ref()
                    .is_some_and(|s| labels_match(&s.match_labels, labels))
        });
        let mut mode = MtlsMode::Permissive;
        for level in [mesh, namespace_wide, workload].into_iter().flatten() {
            if let Some(set) = level.spec.mtls.as_ref().and_then(|m| m.mode)
                && set != MtlsMode::Unset
            {
                mode = set;
            }
        }
        let port_level = workload.and_then(|policy| {
            let number = u16::try_from(port).ok()?;
            policy.ports.get(&number).copied()
        });
        match port_level {
            Some(set) if set != MtlsMode::Unset => set,
            _ => mode,
        }
    }
}

pub fn to_pb(mode: MtlsMode) -> pb::mtls::Mode {
    match mode {
        MtlsMode::Unset | MtlsMode::Permissive => pb::mtls::Mode::Permissive,
        MtlsMode::Disable => pb::mtls::Mode::Disable,
        MtlsMode::Strict => pb::mtls::Mode::Strict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies(yaml: &str) -> PeerPolicies {
        let decoded = weft_api::decode_str(yaml, "pa.yaml");
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
        PeerPolicies::new(&decoded.resources)
    }

    fn labels(app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_string(), app.to_string())])
    }

    const LAYERS: &str = "
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: db, namespace: legacy}
spec:
  selector: {matchLabels: {app: db}}
  mtls: {mode: UNSET}
  portLevelMtls:
    '5432': {mode: DISABLE}
    '9000': {mode: STRICT}
";

    #[test]
    fn workload_over_namespace_over_mesh_with_port_overrides() {
        let p = policies(LAYERS);
        assert_eq!(
            p.mode("default", &labels("web"), 80),
            MtlsMode::Strict,
            "mesh-wide"
        );
        assert_eq!(
            p.mode("legacy", &labels("web"), 80),
            MtlsMode::Permissive,
            "namespace"
        );
        // UNSET at the workload inherits the namespace's PERMISSIVE.
        assert_eq!(p.mode("legacy", &labels("db"), 80), MtlsMode::Permissive);
        assert_eq!(p.mode("legacy", &labels("db"), 5432), MtlsMode::Disable);
        assert_eq!(p.mode("legacy", &labels("db"), 9000), MtlsMode::Strict);
        assert_eq!(
            policies("").mode("default", &labels("web"), 80),
            MtlsMode::Permissive,
            "nothing: PERMISSIVE"
        );
        let everyone = policies(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: all, namespace: shop}\nspec: {selector: {}, mtls: {mode: STRICT}}\n",
        );
        assert_eq!(everyone.mode("shop", &labels("web"), 80), MtlsMode::Strict);
    }
}
