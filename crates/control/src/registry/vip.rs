//! Virtual IPs: one owner per VIP, and an automatic VIP for every service
//! that declares none (Istio's auto-allocation, in its 240.240.0.0/16 range).
//!
//! An allocated VIP depends only on the hostname (a fixed hash) unless that
//! slot is taken, so it survives restarts and does not move when unrelated
//! services come and go; collisions probe forward in sorted service order.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::{ServiceDef, ServiceId};

/// Istio's auto-allocation range, `240.240.0.0/16` (reserved class E space,
/// never routed, so it cannot shadow a real destination).
pub const AUTO_VIP_RANGE: (Ipv4Addr, u8) = (Ipv4Addr::new(240, 240, 0, 0), 16);

/// Host part 0 is the network and 65535 the broadcast address.
const SLOTS: u32 = 65534;

/// The VIP a hostname gets when nothing else holds its slot.
pub fn auto_vip(hostname: &str) -> Ipv4Addr {
    slot_address(first_slot(hostname))
}

fn first_slot(hostname: &str) -> u32 {
    // FNV-1a: fixed and documented, unlike std's hasher, which may change
    // between Rust releases (and would move every VIP on upgrade).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in hostname.to_ascii_lowercase().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(SLOTS)) as u32
}

fn slot_address(slot: u32) -> Ipv4Addr {
    let host = slot % SLOTS + 1;
    let [a, b, ..] = AUTO_VIP_RANGE.0.octets();
    Ipv4Addr::new(a, b, (host >> 8) as u8, (host & 0xff) as u8)
}

/// Drops VIPs already owned by an earlier service (a proxy maps each VIP to
/// one service), then allocates for services without any. `services` must
/// be sorted.
pub(super) fn resolve(services: &mut [ServiceDef], warnings: &mut Vec<String>) {
    let mut owners: BTreeMap<IpAddr, ServiceId> = BTreeMap::new();
    for service in services.iter_mut() {
        let id = service.id();
        service.vips.retain(|vip| match owners.get(vip) {
            Some(owner) if *owner != id => {
                warnings.push(format!(
                    "service {:?} in {:?}: VIP {vip} already belongs to {:?} in {:?}; dropped",
                    id.hostname, id.namespace, owner.hostname, owner.namespace
                ));
                false
            }
            _ => {
                owners.insert(*vip, id.clone());
                true
            }
        });
    }
    for service in services.iter_mut() {
        // A wildcard is many hosts: no single address stands for it.
        if !service.vips.is_empty() || service.is_wildcard() {
            continue;
        }
        let start = first_slot(&service.hostname);
        let free = (0..SLOTS)
            .map(|probe| IpAddr::V4(slot_address(start + probe)))
            .find(|vip| !owners.contains_key(vip));
        match free {
            Some(vip) => {
                owners.insert(vip, service.id());
                service.vips.push(vip);
                service.auto_vip = true;
            }
            None => warnings.push(format!(
                "service {:?}: no free VIP left in 240.240.0.0/16",
                service.hostname
            )),
        }
    }
}
