//! The memif control protocol (version 2.0): the 128-byte messages exchanged
//! over the unix `SOCK_SEQPACKET` control socket, encoded and decoded here.
//!
//! The layout is DPDK's `drivers/net/memif/memif.h` (v22.11, lines 58-146) and
//! libmemif's `extras/libmemif/src/memif.h` (lines 70-143): every message is a
//! packed struct of 128 bytes, a 16-bit type first (`memif_msg_type_t type:16`)
//! and the type's payload right after it at byte 2, little-endian on every
//! platform either runs on. Names and strings are fixed-size byte arrays,
//! NUL-terminated when shorter.
//!
//! Decoding never trusts the peer: a message of the wrong size, an unknown type
//! or a string without a terminator is an error or is cut, never a panic.
#![deny(unsafe_code)]

use std::fmt;

/// `MEMIF_COOKIE`: written at the start of every ring (memif.h:8).
pub const COOKIE: u32 = 0x3E31F20;
/// `MEMIF_VERSION` 2.0, `(major << 8) | minor` (memif.h:9-11).
pub const VERSION: u16 = 0x0200;
/// Every control message is exactly this long (`sizeof(memif_msg_t)`, the
/// struct is `__rte_aligned(128)`: memif.h:134; libmemif asserts it, memif.h:142).
pub const MSG_SIZE: usize = 128;
/// `MEMIF_NAME_SZ` (memif.h:12).
pub const NAME_SIZE: usize = 32;
/// `ETH_MEMIF_SECRET_SIZE` (rte_eth_memif.h:26), the `secret` field of INIT.
pub const SECRET_SIZE: usize = 24;
/// `ETH_MEMIF_DISC_STRING_SIZE` (rte_eth_memif.h:25), the reason of DISCONNECT.
pub const DISC_STRING_SIZE: usize = 96;
/// The largest ring DPDK offers, as log2 (`ETH_MEMIF_MAX_LOG2_RING_SIZE`,
/// rte_eth_memif.h:21); a server advertises it in HELLO.
pub const MAX_LOG2_RING_SIZE: u8 = 14;
/// The most ring pairs DPDK offers (`ETH_MEMIF_MAX_NUM_Q_PAIRS`, rte_eth_memif.h:20).
pub const MAX_QUEUE_PAIRS: u16 = 255;
/// The most regions one connection may share (`ETH_MEMIF_MAX_REGION_NUM`,
/// rte_eth_memif.h:22); HELLO advertises the largest index, one less.
pub const MAX_REGIONS: u16 = 256;
/// `MEMIF_MSG_ADD_RING_FLAG_C2S` (memif.h:101; libmemif calls it S2M).
pub const ADD_RING_FLAG_C2S: u16 = 1;
/// `MEMIF_INTERFACE_MODE_ETHERNET` (memif.h:41), the only mode DPDK speaks.
pub const MODE_ETHERNET: u8 = 0;

/// Message types (`memif_msg_type_t`, memif.h:23-33).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum MsgType {
    /// Acknowledges the last message.
    Ack = 1,
    /// Server to client, first: the server's limits.
    Hello = 2,
    /// Client to server: which interface (id), secret, name.
    Init = 3,
    /// Client to server: a shared memory region; its memfd rides along.
    AddRegion = 4,
    /// Client to server: a ring in a region; its interrupt eventfd rides along.
    AddRing = 5,
    /// Client to server: everything is sent, connect.
    Connect = 6,
    /// Server to client: connected.
    Connected = 7,
    /// Either way: the connection ends, with a reason.
    Disconnect = 8,
}

impl MsgType {
    fn from_u16(v: u16) -> Option<MsgType> {
        Some(match v {
            1 => MsgType::Ack,
            2 => MsgType::Hello,
            3 => MsgType::Init,
            4 => MsgType::AddRegion,
            5 => MsgType::AddRing,
            6 => MsgType::Connect,
            7 => MsgType::Connected,
            8 => MsgType::Disconnect,
            _ => return None,
        })
    }
}

/// HELLO (`memif_msg_hello_t`, memif.h:62-70): the server's name and limits.
/// The ring limits are the largest ring *index*, not a count (DPDK sends 255
/// and the client takes `max + 1`: memif_socket.c:172).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The server's application name (DPDK puts its version string here).
    pub name: String,
    /// Lowest protocol version the server speaks.
    pub min_version: u16,
    /// Highest protocol version the server speaks.
    pub max_version: u16,
    /// Largest region index the server takes.
    pub max_region: u16,
    /// Largest server-to-client ring index.
    pub max_s2c_ring: u16,
    /// Largest client-to-server ring index.
    pub max_c2s_ring: u16,
    /// Largest ring, as log2 of its slot count.
    pub max_log2_ring_size: u8,
}

/// INIT (`memif_msg_init_t`, memif.h:77-83): which interface the client wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Init {
    /// Protocol version of the client.
    pub version: u16,
    /// Interface id (`id=`).
    pub id: u32,
    /// Interface mode (`memif_interface_mode_t mode:8`; 0 is Ethernet).
    pub mode: u8,
    /// The secret, NUL-padded (`secret=`; empty when all zero).
    pub secret: [u8; SECRET_SIZE],
    /// The client's application name.
    pub name: String,
}

/// ADD_REGION (`memif_msg_add_region_t`, memif.h:90-93).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddRegion {
    /// Region index: regions are added in order from 0.
    pub index: u16,
    /// Region size in bytes.
    pub size: u64,
}

/// ADD_RING (`memif_msg_add_ring_t`, memif.h:99-107).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddRing {
    /// [`ADD_RING_FLAG_C2S`] for a client-to-server ring.
    pub flags: u16,
    /// Ring index within its direction.
    pub index: u16,
    /// Region holding the ring.
    pub region: u16,
    /// Offset of the ring header in that region.
    pub offset: u32,
    /// Slots, as log2.
    pub log2_ring_size: u8,
    /// Private header bytes per buffer: DPDK and libmemif send 0 and libmemif
    /// refuses anything else.
    pub private_hdr_size: u16,
}

impl AddRing {
    /// Whether the ring carries client-to-server traffic.
    pub fn is_c2s(&self) -> bool {
        self.flags & ADD_RING_FLAG_C2S != 0
    }
}

/// One control message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// ACK.
    Ack,
    /// HELLO.
    Hello(Hello),
    /// INIT.
    Init(Init),
    /// ADD_REGION.
    AddRegion(AddRegion),
    /// ADD_RING.
    AddRing(AddRing),
    /// CONNECT, with the client's interface name (memif.h:113-115).
    Connect {
        /// The client's interface name.
        if_name: String,
    },
    /// CONNECTED, with the server's interface name (memif.h:121-123).
    Connected {
        /// The server's interface name.
        if_name: String,
    },
    /// DISCONNECT (memif.h:129-132).
    Disconnect {
        /// Error code (DPDK and libmemif send 0).
        code: u32,
        /// Why.
        reason: String,
    },
}

/// Why a received message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not [`MSG_SIZE`] bytes (the peer speaks another protocol, or sent a
    /// truncated message).
    Size(usize),
    /// A type that memif does not have (0 is `MEMIF_MSG_TYPE_NONE`).
    UnknownType(u16),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Size(n) => write!(
                f,
                "a control message of {n} bytes (memif messages are {MSG_SIZE} bytes)"
            ),
            DecodeError::UnknownType(t) => write!(f, "unknown control message type {t}"),
        }
    }
}

/// Payload offsets, from the packed structs (memif.h:62-146): the type is at
/// 0..2, every payload starts at 2.
mod off {
    pub const PAYLOAD: usize = 2;
    // HELLO
    pub const HELLO_NAME: usize = PAYLOAD;
    pub const HELLO_MIN_VERSION: usize = PAYLOAD + 32;
    pub const HELLO_MAX_VERSION: usize = PAYLOAD + 34;
    pub const HELLO_MAX_REGION: usize = PAYLOAD + 36;
    pub const HELLO_MAX_S2C: usize = PAYLOAD + 38;
    pub const HELLO_MAX_C2S: usize = PAYLOAD + 40;
    pub const HELLO_MAX_LOG2: usize = PAYLOAD + 42;
    // INIT: version u16, id u32, mode:8 (one byte of the packed bit-field),
    // secret[24], name[32].
    pub const INIT_VERSION: usize = PAYLOAD;
    pub const INIT_ID: usize = PAYLOAD + 2;
    pub const INIT_MODE: usize = PAYLOAD + 6;
    pub const INIT_SECRET: usize = PAYLOAD + 7;
    pub const INIT_NAME: usize = PAYLOAD + 31;
    // ADD_REGION
    pub const REGION_INDEX: usize = PAYLOAD;
    pub const REGION_SIZE: usize = PAYLOAD + 2;
    // ADD_RING: flags, index, region u16; offset u32; log2 u8; private_hdr_size u16.
    pub const RING_FLAGS: usize = PAYLOAD;
    pub const RING_INDEX: usize = PAYLOAD + 2;
    pub const RING_REGION: usize = PAYLOAD + 4;
    pub const RING_OFFSET: usize = PAYLOAD + 6;
    pub const RING_LOG2: usize = PAYLOAD + 10;
    pub const RING_PRIV: usize = PAYLOAD + 11;
    // CONNECT / CONNECTED
    pub const IF_NAME: usize = PAYLOAD;
    // DISCONNECT
    pub const DISC_CODE: usize = PAYLOAD;
    pub const DISC_STRING: usize = PAYLOAD + 4;
}

fn put_u16(b: &mut [u8; MSG_SIZE], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8; MSG_SIZE], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8; MSG_SIZE], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
/// A string into a fixed field, cut so a NUL always ends it (as `strlcpy`).
fn put_str(b: &mut [u8; MSG_SIZE], at: usize, size: usize, s: &str) {
    let bytes = s.as_bytes();
    let n = bytes.len().min(size - 1);
    b[at..at + n].copy_from_slice(&bytes[..n]);
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
/// A fixed field as text: up to the first NUL (or the whole field if the peer
/// left none), bytes that are not printable ASCII shown as `?`, so a peer's
/// name can go into a log line safely.
pub fn field_text(field: &[u8]) -> String {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    field[..end]
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect()
}

impl Msg {
    /// The message's type.
    pub fn kind(&self) -> MsgType {
        match self {
            Msg::Ack => MsgType::Ack,
            Msg::Hello(_) => MsgType::Hello,
            Msg::Init(_) => MsgType::Init,
            Msg::AddRegion(_) => MsgType::AddRegion,
            Msg::AddRing(_) => MsgType::AddRing,
            Msg::Connect { .. } => MsgType::Connect,
            Msg::Connected { .. } => MsgType::Connected,
            Msg::Disconnect { .. } => MsgType::Disconnect,
        }
    }

    /// The 128 bytes on the wire.
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        put_u16(&mut b, 0, self.kind() as u16);
        match self {
            Msg::Ack => {}
            Msg::Hello(h) => {
                put_str(&mut b, off::HELLO_NAME, NAME_SIZE, &h.name);
                put_u16(&mut b, off::HELLO_MIN_VERSION, h.min_version);
                put_u16(&mut b, off::HELLO_MAX_VERSION, h.max_version);
                put_u16(&mut b, off::HELLO_MAX_REGION, h.max_region);
                put_u16(&mut b, off::HELLO_MAX_S2C, h.max_s2c_ring);
                put_u16(&mut b, off::HELLO_MAX_C2S, h.max_c2s_ring);
                b[off::HELLO_MAX_LOG2] = h.max_log2_ring_size;
            }
            Msg::Init(i) => {
                put_u16(&mut b, off::INIT_VERSION, i.version);
                put_u32(&mut b, off::INIT_ID, i.id);
                b[off::INIT_MODE] = i.mode;
                b[off::INIT_SECRET..off::INIT_SECRET + SECRET_SIZE].copy_from_slice(&i.secret);
                put_str(&mut b, off::INIT_NAME, NAME_SIZE, &i.name);
            }
            Msg::AddRegion(r) => {
                put_u16(&mut b, off::REGION_INDEX, r.index);
                put_u64(&mut b, off::REGION_SIZE, r.size);
            }
            Msg::AddRing(r) => {
                put_u16(&mut b, off::RING_FLAGS, r.flags);
                put_u16(&mut b, off::RING_INDEX, r.index);
                put_u16(&mut b, off::RING_REGION, r.region);
                put_u32(&mut b, off::RING_OFFSET, r.offset);
                b[off::RING_LOG2] = r.log2_ring_size;
                put_u16(&mut b, off::RING_PRIV, r.private_hdr_size);
            }
            Msg::Connect { if_name } | Msg::Connected { if_name } => {
                put_str(&mut b, off::IF_NAME, NAME_SIZE, if_name);
            }
            Msg::Disconnect { code, reason } => {
                put_u32(&mut b, off::DISC_CODE, *code);
                put_str(&mut b, off::DISC_STRING, DISC_STRING_SIZE, reason);
            }
        }
        b
    }

    /// Decode what `recvmsg` returned (its first `len` bytes).
    pub fn decode(buf: &[u8]) -> Result<Msg, DecodeError> {
        if buf.len() != MSG_SIZE {
            return Err(DecodeError::Size(buf.len()));
        }
        let b = buf;
        let t = get_u16(b, 0);
        let kind = MsgType::from_u16(t).ok_or(DecodeError::UnknownType(t))?;
        Ok(match kind {
            MsgType::Ack => Msg::Ack,
            MsgType::Hello => Msg::Hello(Hello {
                name: field_text(&b[off::HELLO_NAME..off::HELLO_NAME + NAME_SIZE]),
                min_version: get_u16(b, off::HELLO_MIN_VERSION),
                max_version: get_u16(b, off::HELLO_MAX_VERSION),
                max_region: get_u16(b, off::HELLO_MAX_REGION),
                max_s2c_ring: get_u16(b, off::HELLO_MAX_S2C),
                max_c2s_ring: get_u16(b, off::HELLO_MAX_C2S),
                max_log2_ring_size: b[off::HELLO_MAX_LOG2],
            }),
            MsgType::Init => {
                let mut secret = [0u8; SECRET_SIZE];
                secret.copy_from_slice(&b[off::INIT_SECRET..off::INIT_SECRET + SECRET_SIZE]);
                Msg::Init(Init {
                    version: get_u16(b, off::INIT_VERSION),
                    id: get_u32(b, off::INIT_ID),
                    mode: b[off::INIT_MODE],
                    secret,
                    name: field_text(&b[off::INIT_NAME..off::INIT_NAME + NAME_SIZE]),
                })
            }
            MsgType::AddRegion => Msg::AddRegion(AddRegion {
                index: get_u16(b, off::REGION_INDEX),
                size: get_u64(b, off::REGION_SIZE),
            }),
            MsgType::AddRing => Msg::AddRing(AddRing {
                flags: get_u16(b, off::RING_FLAGS),
                index: get_u16(b, off::RING_INDEX),
                region: get_u16(b, off::RING_REGION),
                offset: get_u32(b, off::RING_OFFSET),
                log2_ring_size: b[off::RING_LOG2],
                private_hdr_size: get_u16(b, off::RING_PRIV),
            }),
            MsgType::Connect => Msg::Connect {
                if_name: field_text(&b[off::IF_NAME..off::IF_NAME + NAME_SIZE]),
            },
            MsgType::Connected => Msg::Connected {
                if_name: field_text(&b[off::IF_NAME..off::IF_NAME + NAME_SIZE]),
            },
            MsgType::Disconnect => Msg::Disconnect {
                code: get_u32(b, off::DISC_CODE),
                reason: field_text(&b[off::DISC_STRING..off::DISC_STRING + DISC_STRING_SIZE]),
            },
        })
    }
}

/// A `secret=` value as the INIT field: its bytes, NUL-padded. DPDK copies it
/// with `strlcpy` into 24 bytes (memif_socket.c:417-418), so at most 23 bytes
/// travel; longer secrets are refused when the device arguments are read.
pub fn secret_field(secret: &str) -> [u8; SECRET_SIZE] {
    let mut f = [0u8; SECRET_SIZE];
    let b = secret.as_bytes();
    let n = b.len().min(SECRET_SIZE - 1);
    f[..n].copy_from_slice(&b[..n]);
    f
}

/// Whether a server configured with `ours` accepts a client that sent `theirs`,
/// as DPDK decides (memif_socket.c:232-244: no secret configured accepts
/// anything; otherwise `strncmp` over 24 bytes). `Err` carries DPDK's reason
/// strings, which the client logs.
pub fn check_secret(
    ours: &[u8; SECRET_SIZE],
    theirs: &[u8; SECRET_SIZE],
) -> Result<(), &'static str> {
    if ours[0] == 0 {
        return Ok(());
    }
    if theirs[0] == 0 {
        return Err("Secret required");
    }
    // strncmp: equal up to and including the first NUL, or over all 24 bytes.
    for i in 0..SECRET_SIZE {
        if ours[i] != theirs[i] {
            return Err("Incorrect secret");
        }
        if ours[i] == 0 {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: Msg) {
        let b = m.encode();
        assert_eq!(Msg::decode(&b).unwrap(), m, "{m:?}");
    }

    #[test]
    fn every_message_round_trips() {
        roundtrip(Msg::Ack);
        roundtrip(Msg::Hello(Hello {
            name: "DPDK 22.11.11".into(),
            min_version: VERSION,
            max_version: VERSION,
            max_region: 255,
            max_s2c_ring: 255,
            max_c2s_ring: 255,
            max_log2_ring_size: 14,
        }));
        roundtrip(Msg::Init(Init {
            version: VERSION,
            id: 0xdead_beef,
            mode: MODE_ETHERNET,
            secret: secret_field("s3cret"),
            name: "nicpoll".into(),
        }));
        roundtrip(Msg::AddRegion(AddRegion {
            index: 3,
            size: 0x1_2345_6789,
        }));
        roundtrip(Msg::AddRing(AddRing {
            flags: ADD_RING_FLAG_C2S,
            index: 7,
            region: 0,
            offset: 0x4_0080,
            log2_ring_size: 10,
            private_hdr_size: 0,
        }));
        roundtrip(Msg::Connect {
            if_name: "net_memif0".into(),
        });
        roundtrip(Msg::Connected {
            if_name: "net_memif1".into(),
        });
        roundtrip(Msg::Disconnect {
            code: 0,
            reason: "Incorrect secret".into(),
        });
    }

    /// The byte offsets of DPDK's packed structs, written out by hand from
    /// memif.h (v22.11): a regression here breaks interoperability.
    #[test]
    fn wire_layout_matches_the_packed_c_structs() {
        let b = Msg::AddRing(AddRing {
            flags: 0x0101,
            index: 0x0202,
            region: 0x0303,
            offset: 0x0404_0404,
            log2_ring_size: 0x05,
            private_hdr_size: 0x0606,
        })
        .encode();
        assert_eq!(
            &b[..15],
            &[5, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5, 6, 6],
            "type u16, flags, index, region, offset u32, log2 u8, private_hdr_size u16"
        );
        let b = Msg::Init(Init {
            version: 0x0200,
            id: 0x0403_0201,
            mode: 0,
            secret: secret_field("AB"),
            name: "N".into(),
        })
        .encode();
        assert_eq!(&b[..11], &[3, 0, 0, 2, 1, 2, 3, 4, 0, b'A', b'B']);
        assert_eq!(b[33], b'N', "name after the 24-byte secret, at 2+2+4+1+24");
        let b = Msg::Hello(Hello {
            name: String::new(),
            min_version: 0x0200,
            max_version: 0x0201,
            max_region: 0x00ff,
            max_s2c_ring: 0x0102,
            max_c2s_ring: 0x0304,
            max_log2_ring_size: 14,
        })
        .encode();
        assert_eq!(&b[34..45], &[0, 2, 1, 2, 0xff, 0, 2, 1, 4, 3, 14]);
        let b = Msg::AddRegion(AddRegion {
            index: 1,
            size: 0x0807_0605_0403_0201,
        })
        .encode();
        assert_eq!(&b[..12], &[4, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let b = Msg::Disconnect {
            code: 9,
            reason: "x".into(),
        }
        .encode();
        assert_eq!(&b[..7], &[8, 0, 9, 0, 0, 0, b'x']);
    }

    #[test]
    fn garbage_from_the_peer_is_an_error_or_cut_never_a_panic() {
        assert_eq!(Msg::decode(&[0u8; 127]), Err(DecodeError::Size(127)));
        assert_eq!(Msg::decode(&[]), Err(DecodeError::Size(0)));
        assert_eq!(Msg::decode(&[0u8; 129]), Err(DecodeError::Size(129)));
        assert_eq!(Msg::decode(&[0u8; 128]), Err(DecodeError::UnknownType(0)));
        let mut b = [0xffu8; 128];
        assert_eq!(Msg::decode(&b), Err(DecodeError::UnknownType(0xffff)));
        // A HELLO whose name fills its field with no NUL and non-ASCII bytes.
        b[0] = 2;
        b[1] = 0;
        match Msg::decode(&b).unwrap() {
            Msg::Hello(h) => {
                assert_eq!(h.name, "?".repeat(32));
                assert_eq!(h.max_log2_ring_size, 0xff);
            }
            m => panic!("{m:?}"),
        }
        // A DISCONNECT reason of 96 bytes without a terminator is cut at 96.
        let mut b = [b'a'; 128];
        b[0] = 8;
        b[1] = 0;
        match Msg::decode(&b).unwrap() {
            Msg::Disconnect { reason, .. } => assert_eq!(reason.len(), DISC_STRING_SIZE),
            m => panic!("{m:?}"),
        }
        // Every type byte with random-ish payloads decodes or errs.
        for t in 0..=u16::MAX {
            let mut b = [0u8; 128];
            b[..2].copy_from_slice(&t.to_le_bytes());
            for (i, x) in b[2..].iter_mut().enumerate() {
                *x = (i as u16).wrapping_mul(t).wrapping_add(7) as u8;
            }
            let _ = Msg::decode(&b);
        }
    }

    #[test]
    fn long_strings_are_cut_with_a_terminator() {
        let m = Msg::Connect {
            if_name: "x".repeat(100),
        };
        let b = m.encode();
        assert_eq!(b[2 + 31], 0);
        match Msg::decode(&b).unwrap() {
            Msg::Connect { if_name } => assert_eq!(if_name.len(), 31),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn secrets_compare_as_dpdk_does() {
        let none = secret_field("");
        let a = secret_field("alpha");
        assert_eq!(check_secret(&none, &a), Ok(()));
        assert_eq!(check_secret(&none, &none), Ok(()));
        assert_eq!(check_secret(&a, &a), Ok(()));
        assert_eq!(check_secret(&a, &none), Err("Secret required"));
        assert_eq!(
            check_secret(&a, &secret_field("alphA")),
            Err("Incorrect secret")
        );
        assert_eq!(
            check_secret(&a, &secret_field("alpha2")),
            Err("Incorrect secret")
        );
        // Bytes after the NUL are not compared (strncmp).
        let mut padded = a;
        padded[20] = 0x55;
        assert_eq!(check_secret(&a, &padded), Ok(()));
        assert_eq!(secret_field(&"z".repeat(40))[23], 0);
    }
}
