//! What the DNS server does with one query: answer it from the name table,
//! or hand it to the upstream resolvers.
//!
//! Contract (Istio's DNS proxy): a query for a name in the table is
//! answered here, authoritatively, with a short TTL — A with the host's
//! IPv4 addresses, AAAA with its IPv6 ones, and any other type (or a
//! family the host has no address in) with an empty NOERROR answer, never
//! forwarded, so the app does not get a different answer from elsewhere
//! for a name the mesh owns. Everything else (unknown names, anything but a
//! plain one-question query) is forwarded as the app sent it.

use std::sync::Arc;

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{RData, Record, RecordType};

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

/// Decides for `query` (the bytes the app sent) against `table`. `udp`:
/// the answer must fit the client's UDP size or be marked truncated (the
/// client then asks again over TCP).
pub fn decide(query: &[u8], table: &NameTable, udp: bool) -> Decision {
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
    let Some(addresses) = table.lookup(&name) else {
        return Decision::Forward;
    };
    let reply = local_answer(&message, addresses);
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

fn local_answer(query: &Message, addresses: &Arc<HostAddresses>) -> Message {
    let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.metadata.response_code = ResponseCode::NoError;
    let question = query.queries[0].clone();
    let name = question.name().clone();
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
        let reply = answered(decide(&query("Reviews.", RecordType::A), &reviews(), true));
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
            let reply = answered(decide(&query("reviews", kind), &reviews(), true));
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(reply.answers.is_empty(), "{kind}: {:?}", reply.answers);
        }
    }

    #[test]
    fn unknown_names_and_odd_messages_go_upstream() {
        assert!(matches!(
            decide(&query("example.com", RecordType::A), &reviews(), true),
            Decision::Forward
        ));
        assert!(matches!(
            decide(b"not dns", &reviews(), true),
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
        let over_udp = answered(decide(&query("big.example.com", RecordType::A), &big, true));
        assert!(over_udp.metadata.truncation);
        let over_tcp = answered(decide(
            &query("big.example.com", RecordType::A),
            &big,
            false,
        ));
        assert_eq!(over_tcp.answers.len(), 60);
    }
}
