//! Link layers: from a frame's bytes and its data-link type to the ethertype (or IP version)
//! and the offset where the network layer starts, with the VLAN tags on the way.
//!
//! Contract: every function here checks a length before it reads; none panics on any input.
//! Byte offsets are named in `field` modules, as in smoltcp.

use super::{be16, DecodeError, Vlans};

/// Data-link types we decode (libpcap `DLT_*` values as `pcap_datalink()` reports them; a
/// savefile's `LINKTYPE_*` value is mapped to these by libpcap, e.g. 101 becomes 12).
pub mod linktype {
    /// BSD loopback: a 4-byte address family in the writer's byte order.
    pub const NULL: i32 = 0;
    /// Ethernet II / IEEE 802.3.
    pub const ETHERNET: i32 = 1;
    /// Raw IP (DLT_RAW on most systems).
    pub const RAW_12: i32 = 12;
    /// Raw IP (DLT_RAW on OpenBSD).
    pub const RAW_14: i32 = 14;
    /// Raw IP (LINKTYPE_RAW, as stored in files).
    pub const RAW: i32 = 101;
    /// OpenBSD loopback: a 4-byte address family in network byte order.
    pub const LOOP: i32 = 108;
    /// Linux cooked capture v1.
    pub const LINUX_SLL: i32 = 113;
    /// Raw IPv4.
    pub const IPV4: i32 = 228;
    /// Raw IPv6.
    pub const IPV6: i32 = 229;
    /// Linux cooked capture v2.
    pub const LINUX_SLL2: i32 = 276;

    /// Whether [`super::super::decode`] understands this link type.
    pub fn is_supported(lt: i32) -> bool {
        matches!(
            lt,
            NULL | ETHERNET | RAW_12 | RAW_14 | RAW | LOOP | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2
        )
    }

    /// A short name for messages.
    pub fn name(lt: i32) -> &'static str {
        match lt {
            NULL => "BSD null loopback",
            ETHERNET => "Ethernet",
            RAW_12 | RAW_14 | RAW => "raw IP",
            LOOP => "OpenBSD loopback",
            LINUX_SLL => "Linux cooked v1",
            LINUX_SLL2 => "Linux cooked v2",
            IPV4 => "raw IPv4",
            IPV6 => "raw IPv6",
            9 => "PPP",
            10 => "FDDI",
            50 => "PPP in HDLC framing",
            104 => "Cisco HDLC",
            105 => "IEEE 802.11",
            119 => "Prism 802.11",
            127 => "radiotap 802.11",
            147..=162 => "user-defined",
            195 => "IEEE 802.15.4",
            _ => "unknown",
        }
    }
}

/// Ethertypes we act on.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ outer tag).
    pub const QINQ: u16 = 0x88A8;
    /// Pre-standard QinQ outer tags still seen on some switches.
    pub const QINQ_OLD_9100: u16 = 0x9100;
    pub const QINQ_OLD_9200: u16 = 0x9200;
}

/// Where the network layer starts: an IP packet at `offset`; `version` is what the link layer
/// announced (ethertype, address family or link type), `None` where only the packet's own
/// nibble tells. Anything else (ARP, LLDP, IPX, 802.3 LLC…) is [`DecodeError::NotIp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    pub offset: usize,
    pub version: Option<u8>,
}

mod field {
    use crate::decode::Field;
    /// Ethernet II: destination, source, ethertype.
    pub const ETH_TYPE: Field = 12..14;
    pub const ETH_LEN: usize = 14;
    /// One 802.1Q/802.1ad tag after its TPID: TCI then the next ethertype.
    pub const VLAN_TCI: Field = 0..2;
    pub const VLAN_TYPE: Field = 2..4;
    pub const VLAN_LEN: usize = 4;
    /// Linux cooked v1: packet type, ARPHRD, address length, 8 address bytes, protocol.
    pub const SLL_PROTO: Field = 14..16;
    pub const SLL_LEN: usize = 16;
    /// Linux cooked v2: protocol first, then reserved, ifindex, ARPHRD, type, addr len, addr.
    pub const SLL2_PROTO: Field = 0..2;
    pub const SLL2_LEN: usize = 20;
    /// BSD null / loop: the address family.
    pub const NULL_AF: Field = 0..4;
    pub const NULL_LEN: usize = 4;
}

/// Maximum number of VLAN tags we walk (802.1ad + 802.1Q + one more for stacked carriers).
pub const MAX_VLAN_TAGS: usize = 3;

/// Finds the network layer of a frame of link type `lt`, collecting VLAN tags into `vlans`.
#[inline(always)]
pub fn network(lt: i32, data: &[u8], vlans: &mut Vlans) -> Result<Network, DecodeError> {
    match lt {
        linktype::ETHERNET => {
            let ty = be16(data, field::ETH_TYPE).ok_or(DecodeError::LinkTruncated)?;
            ethertype_dispatch(ty, data, field::ETH_LEN, vlans)
        }
        linktype::LINUX_SLL => {
            if data.len() < field::SLL_LEN {
                return Err(DecodeError::LinkTruncated);
            }
            let ty = be16(data, field::SLL_PROTO).ok_or(DecodeError::LinkTruncated)?;
            ethertype_dispatch(ty, data, field::SLL_LEN, vlans)
        }
        linktype::LINUX_SLL2 => {
            if data.len() < field::SLL2_LEN {
                return Err(DecodeError::LinkTruncated);
            }
            let ty = be16(data, field::SLL2_PROTO).ok_or(DecodeError::LinkTruncated)?;
            ethertype_dispatch(ty, data, field::SLL2_LEN, vlans)
        }
        linktype::RAW_12 | linktype::RAW_14 | linktype::RAW => match data.first().map(|b| b >> 4) {
            Some(4) | Some(6) => Ok(Network {
                offset: 0,
                version: None,
            }),
            Some(_) => Err(DecodeError::IpVersion),
            None => Err(DecodeError::LinkTruncated),
        },
        linktype::IPV4 => Ok(Network {
            offset: 0,
            version: Some(4),
        }),
        linktype::IPV6 => Ok(Network {
            offset: 0,
            version: Some(6),
        }),
        linktype::NULL | linktype::LOOP => {
            let b = data.get(field::NULL_AF).ok_or(DecodeError::LinkTruncated)?;
            let b = [b[0], b[1], b[2], b[3]];
            // DLT_NULL is in the writer's byte order, DLT_LOOP in network order; accept either.
            let version = [u32::from_be_bytes(b), u32::from_le_bytes(b)]
                .into_iter()
                .find_map(|af| {
                    if is_af_inet(af) {
                        Some(4)
                    } else if is_af_inet6(af) {
                        Some(6)
                    } else {
                        None
                    }
                });
            match version {
                Some(v) => Ok(Network {
                    offset: field::NULL_LEN,
                    version: Some(v),
                }),
                None => Err(DecodeError::NotIp(0)),
            }
        }
        other => Err(DecodeError::UnsupportedLinkType(other)),
    }
}

/// AF_INET is 2 everywhere.
fn is_af_inet(af: u32) -> bool {
    af == 2
}

/// AF_INET6: 10 (Linux), 24 (NetBSD, OpenBSD, BSD/OS), 28 (FreeBSD, DragonFly), 30 (macOS).
fn is_af_inet6(af: u32) -> bool {
    matches!(af, 10 | 24 | 28 | 30)
}

fn ethertype_dispatch(
    mut ty: u16,
    data: &[u8],
    mut offset: usize,
    vlans: &mut Vlans,
) -> Result<Network, DecodeError> {
    while matches!(
        ty,
        ethertype::VLAN | ethertype::QINQ | ethertype::QINQ_OLD_9100 | ethertype::QINQ_OLD_9200
    ) {
        if vlans.len() >= MAX_VLAN_TAGS {
            return Err(DecodeError::TooManyVlanTags);
        }
        let tag = data
            .get(offset..offset + field::VLAN_LEN)
            .ok_or(DecodeError::LinkTruncated)?;
        let tci = be16(tag, field::VLAN_TCI).ok_or(DecodeError::LinkTruncated)?;
        vlans.push(tci & 0x0FFF);
        ty = be16(tag, field::VLAN_TYPE).ok_or(DecodeError::LinkTruncated)?;
        offset += field::VLAN_LEN;
    }
    match ty {
        ethertype::IPV4 => Ok(Network {
            offset,
            version: Some(4),
        }),
        ethertype::IPV6 => Ok(Network {
            offset,
            version: Some(6),
        }),
        other => Err(DecodeError::NotIp(other)),
    }
}
