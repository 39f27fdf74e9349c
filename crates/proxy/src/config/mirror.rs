//! A route's compiled mirror policies (Istio's `mirror`/`mirrors`): the
//! cluster each copy goes to and the share copied. Sending copies lives in
//! `http::mirror`.

use std::collections::HashMap;
use std::sync::Arc;

use weft_proto::proxy::v1 as pb;

use super::cors::Problem;
use super::snapshot::Cluster;

/// One compiled mirror policy.
pub struct Mirror {
    pub cluster: Arc<Cluster>,
    /// Share of requests copied, 0..=1.
    pub fraction: f64,
}

impl Mirror {
    /// Compiles a route's mirrors; every mirror cluster must exist.
    pub fn compile_all(
        mirrors: &[pb::Mirror],
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Result<Vec<Self>, Vec<Problem>> {
        let mut compiled = Vec::new();
        let mut problems = Vec::new();
        for (index, mirror) in mirrors.iter().enumerate() {
            let path = format!("mirrors[{index}]");
            let percentage = if mirror.has_percentage {
                mirror.percentage
            } else {
                100.0
            };
            if !(0.0..=100.0).contains(&percentage) {
                problems.push((
                    format!("{path}.percentage"),
                    format!("must be 0..100, got {percentage}"),
                ));
            }
            match clusters.get(&mirror.cluster) {
                Some(cluster) => compiled.push(Self {
                    cluster: cluster.clone(),
                    fraction: percentage / 100.0,
                }),
                None => problems.push((
                    format!("{path}.cluster"),
                    format!("no cluster named {:?}", mirror.cluster),
                )),
            }
        }
        if problems.is_empty() {
            Ok(compiled)
        } else {
            Err(problems)
        }
    }
}
