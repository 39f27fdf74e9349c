//! What the DNS server does with one query: answer it from the name table,
//! or hand it to the upstream resolvers.
//!
//! Contract (Istio's DNS proxy): a query for a name in the table is
//! answered here, authoritatively, with a short TTL — A with the host's
//! IPv4 addresses, AAAA with its IPv6 ones, and any other type (or a
//! family the host has no address in) with an empty NOERROR answer, never
//! forwarded, so the app does not get a different answer from elsewhere
//! for a name the mesh owns. A name the pod's search path expanded
//! (`api.example.com.default.svc.cluster.local`: a table name with more
//! than one label, then one of the search domains) is answered with a
//! CNAME to the table name and its addresses, as Istio's agent does, which
//! saves the app one upstream round trip per search domain. Everything else
//! (unknown names, anything but a plain one-question query) is forwarded as
//! the app sent it.

use std::sync::Arc;

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use crate::config::dns::{HostAddresses, NameTable};

/// The TTL of answers from the table (Istio's DNS proxy uses 30 s): short,
/// so an app re-asks soon after the mesh changes.
pub const TTL_SECONDS: u32 = 30;

/// The largest UDP answer a client without EDNS accepts (RFC 1035).
const PLAIN_UDP_LIMIT: usize = 512;

/// The outcome for one query.
#[derive(Debug)]
pub enum Decision {
    /// The encoded answer to send back.
    Answer(Vec<u8>),
    /// Not ours: forward the query bytes upstream.
    Forward,
    /// Not a DNS message: nothing to answer.
    Drop,
}

/// Decides for `query` (the bytes the app sent) against `table` and the
/// pod resolver's `search` domains. `udp`: the answer must fit the
/// client's UDP size or be marked truncated (the client then asks again
/// over TCP).
pub fn decide(query: &[u8], table: &NameTable, search: &[String], udp: bool) -> Decision {
    let Ok(message) = Message::from_vec(query) else {
        return Decision::Drop;
    };
    let plain_query = message.metadata.message_type == MessageType::Query
        && message.metadata.op_code == OpCode::Query
        && message.queries.len() == 1;
    if !plain_query {
        return Decision::Forward;
    }
    let question = &message.queries[0];
    let name = question.name().to_ascii();
    let (addresses, alias) = match table.lookup(&name) {
        Some(addresses) => (addresses, None),
        None => match expanded(&name, table, search) {
            Some((target, addresses)) => (addresses, Some(target)),
            None => return Decision::Forward,
        },
    };
    let reply = local_answer(&message, addresses, alias);
    let limit = if udp {
        message
            .edns
            .as_ref()
            .map_or(PLAIN_UDP_LIMIT, |e| usize::from(e.max_payload()))
            .max(PLAIN_UDP_LIMIT)
    } else {
        usize::from(u16::MAX)
    };
    match reply.to_vec() {
        Ok(bytes) if bytes.len() <= limit => Decision::Answer(bytes),
        Ok(_) => match reply.truncate().to_vec() {
            Ok(bytes) => Decision::Answer(bytes),
            Err(_) => Decision::Forward,
        },
        // Cannot happen for records built here; the upstream still can answer.
        Err(_) => Decision::Forward,
    }
}

/// A SERVFAIL for `query`: what the app gets when no upstream answered.
pub fn server_failure(query: &[u8]) -> Option<Vec<u8>> {
    let message = Message::from_vec(query).ok()?;
    let mut reply = Message::error_msg(
        message.metadata.id,
        message.metadata.op_code,
        ResponseCode::ServFail,
    );
    reply.metadata.recursion_desired = message.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(message.queries);
    reply.to_vec().ok()
}

/// `name` as a table name with one of `search` appended: that table name
/// (a bare short name is left out: `x.svc.cluster.local` is no one's).
fn expanded<'t>(
    name: &str,
    table: &'t NameTable,
    search: &[String],
) -> Option<(Name, &'t Arc<HostAddresses>)> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    search.iter().find_map(|domain| {
        let prefix = name.strip_suffix(domain.as_str())?.strip_suffix('.')?;
        if !prefix.contains('.') {
            return None;
        }
        let addresses = table.lookup(prefix)?;
        Some((Name::from_ascii(format!("{prefix}.")).ok()?, addresses))
    })
}

/// The answer from the table; with `alias`, the asked name is a CNAME of
/// it and the addresses are the alias's.
fn local_answer(query: &Message, addresses: &Arc<HostAddresses>, alias: Option<Name>) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.metadata.response_code = ResponseCode::NoError;
    let question = query.queries[0].clone();
    let mut name = question.name().clone();
    if let Some(target) = alias {
        reply.add_answer(Record::from_rdata(
            name,
            TTL_SECONDS,
            RData::CNAME(CNAME(target.clone())),
        ));
        name = target;
    }
    match question.query_type() {
        RecordType::A => {
            for ip in &addresses.v4 {
                reply.add_answer(Record::from_rdata(
                    name.clone(),
                    TTL_SECONDS,
                    RData::A(A(*ip)),
                ));
            }
        }
        RecordType::AAAA => {
            for ip in &addresses.v6 {
                reply.add_answer(Record::from_rdata(
                    name.clone(),
                    TTL_SECONDS,
                    RData::AAAA(AAAA(*ip)),
                ));
            }
        }
        _ => {}
    }
    reply.add_query(question);
    reply
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::Name;
    use weft_proto::proxy::v1 as pb;

    use super::*;
    use crate::config::Snapshot;

    fn table(hosts: Vec<pb::DnsHost>) -> Arc<NameTable> {
        let config = pb::ProxyConfig {
            dns_hosts: hosts,
            ..Default::default()
        };
        Snapshot::compile(config, "test").expect("config").names
    }

    fn reviews() -> Arc<NameTable> {
        table(vec![pb::DnsHost {
            names: vec!["reviews.default.svc.cluster.local".into(), "reviews".into()],
            addresses: vec!["240.240.0.3".into(), "240.240.0.4".into()],
        }])
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 4242;
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).expect("name"), kind));
        message.to_vec().expect("encode")
    }

    fn answered(decision: Decision) -> Message {
        match decision {
            Decision::Answer(bytes) => Message::from_vec(&bytes).expect("decode"),
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    #[test]
    fn a_known_name_is_answered_with_its_addresses_and_a_short_ttl() {
        let reply = answered(decide(
            &query("Reviews.", RecordType::A),
            &reviews(),
            &[],
            true,
        ));
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.metadata.authoritative);
        let ips: Vec<_> = reply
            .answers
            .iter()
            .map(|r| (r.data.clone(), r.ttl))
            .collect();
        assert_eq!(
            ips,
            vec![
                (RData::A(A(Ipv4Addr::new(240, 240, 0, 3))), TTL_SECONDS),
                (RData::A(A(Ipv4Addr::new(240, 240, 0, 4))), TTL_SECONDS),
            ]
        );
        assert_eq!(reply.queries.len(), 1, "the question is echoed");
    }

    #[test]
    fn other_types_of_a_known_name_are_answered_empty_not_forwarded() {
        for kind in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
            let reply = answered(decide(&query("reviews", kind), &reviews(), &[], true));
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(reply.answers.is_empty(), "{kind}: {:?}", reply.answers);
        }
    }

    #[test]
    fn a_search_path_expansion_of_a_known_host_is_a_cname_to_it() {
        let table = table(vec![pb::DnsHost {
            names: vec!["api.example.com".into(), "reviews".into()],
            addresses: vec!["10.1.2.3".into()],
        }]);
        let search = [
            "default.svc.cluster.local".to_string(),
            "cluster.local".into(),
        ];
        let asked = "api.example.com.default.svc.cluster.local.";
        let reply = answered(decide(&query(asked, RecordType::A), &table, &search, true));
        let records: Vec<_> = reply
            .answers
            .iter()
            .map(|r| (r.name.to_ascii(), r.data.clone()))
            .collect();
        let target = Name::from_ascii("api.example.com.").expect("name");
        assert_eq!(
            records,
            vec![
                (asked.to_string(), RData::CNAME(CNAME(target))),
                (
                    "api.example.com.".to_string(),
                    RData::A(A(Ipv4Addr::new(10, 1, 2, 3)))
                ),
            ]
        );
        // A bare short name plus a search domain is no one's; a domain
        // outside the search path is not stripped.
        for other in ["reviews.cluster.local", "api.example.com.elsewhere.test"] {
            assert!(
                matches!(
                    decide(&query(other, RecordType::A), &table, &search, true),
                    Decision::Forward
                ),
                "{other}"
            );
        }
    }

    #[test]
    fn unknown_names_and_odd_messages_go_upstream() {
        assert!(matches!(
            decide(&query("example.com", RecordType::A), &reviews(), &[], true),
            Decision::Forward
        ));
        assert!(matches!(
            decide(b"not dns", &reviews(), &[], true),
            Decision::Drop
        ));
        let failure = server_failure(&query("example.com", RecordType::A)).expect("servfail");
        let failure = Message::from_vec(&failure).expect("decode");
        assert_eq!(failure.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(failure.metadata.id, 4242);
    }

    #[test]
    fn an_answer_too_big_for_plain_udp_is_truncated() {
        let many = (1..=60).map(|i| format!("240.240.1.{i}")).collect();
        let big = table(vec![pb::DnsHost {
            names: vec!["big.example.com".into()],
            addresses: many,
        }]);
        let over_udp = answered(decide(
            &query("big.example.com", RecordType::A),
            &big,
            &[],
            true,
        ));
        assert!(over_udp.metadata.truncation);
        let over_tcp = answered(decide(
            &query("big.example.com", RecordType::A),
            &big,
            &[],
            false,
        ));
        assert_eq!(over_tcp.answers.len(), 60);
    }
}
