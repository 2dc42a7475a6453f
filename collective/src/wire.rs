//! The ring's wire format: the rendezvous hello and reply, and the header that starts every
//! operation. Fields are little-endian; buffers travel as raw native `f32` bytes, so the hello
//! carries a byte-order probe and ranks of different byte order refuse each other.
//!
//! The hello is authenticated: it carries a fresh random nonce and an HMAC-SHA256, under the
//! ring's key (derived from the job token), of everything it says. Without the key nobody can
//! introduce itself as a rank; the acceptor refuses a nonce it has seen, so a recorded hello
//! cannot be played again.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Operation, RejectReason};

/// Protocol version carried in the hello; bumped on any change of this file.
const PROTOCOL_VERSION: u32 = 3;
const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"4MRG");
const REPLY_MAGIC: u32 = u32::from_le_bytes(*b"4MRY");
const OP_MAGIC: u32 = u32::from_le_bytes(*b"4MOP");

/// What the connecting rank (the left neighbour) announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub generation: u64,
    pub rank: u64,
    pub world_size: u64,
}

/// The bytes a hello's authentication code covers (everything before it).
const SIGNED: usize = 52;

impl Hello {
    pub const LEN: usize = SIGNED + 32;

    /// The hello, with `nonce` and its authentication code under `key`.
    pub fn encode(&self, key: &[u8], nonce: [u8; 16]) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.generation.to_le_bytes());
        out[16..24].copy_from_slice(&self.rank.to_le_bytes());
        out[24..32].copy_from_slice(&self.world_size.to_le_bytes());
        out[32..36].copy_from_slice(&1.0f32.to_ne_bytes());
        out[36..SIGNED].copy_from_slice(&nonce);
        let tag = mac(key)
            .chain_update(&out[..SIGNED])
            .finalize()
            .into_bytes();
        out[SIGNED..].copy_from_slice(&tag);
        out
    }

    /// Decodes and authenticates a hello; `Err(None)` when the bytes are not a hello at all,
    /// `Err(Some(reason))` when they are one that this rank cannot or must not talk to. Returns
    /// the nonce too, for the caller's replay check.
    pub fn decode(
        bytes: &[u8; Self::LEN],
        key: &[u8],
    ) -> Result<(Self, [u8; 16]), Option<RejectReason>> {
        if u32_at(bytes, 0) != HELLO_MAGIC {
            return Err(None);
        }
        if u32_at(bytes, 4) != PROTOCOL_VERSION || bytes[32..36] != 1.0f32.to_ne_bytes() {
            return Err(Some(RejectReason::Protocol));
        }
        mac(key)
            .chain_update(&bytes[..SIGNED])
            .verify_slice(&bytes[SIGNED..])
            .map_err(|_| Some(RejectReason::Unauthenticated))?;
        let mut nonce = [0u8; 16];
        nonce.copy_from_slice(&bytes[36..SIGNED]);
        let hello = Self {
            generation: u64_at(bytes, 8),
            rank: u64_at(bytes, 16),
            world_size: u64_at(bytes, 24),
        };
        Ok((hello, nonce))
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The accepting rank's answer to a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    Accept,
    Reject(RejectReason),
}

impl Reply {
    pub const LEN: usize = 16;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let (status, value): (u32, u64) = match *self {
            Self::Accept => (0, 0),
            Self::Reject(RejectReason::Generation { theirs }) => (1, theirs),
            Self::Reject(RejectReason::Rank { expected }) => (2, expected as u64),
            Self::Reject(RejectReason::Protocol) => (3, 0),
            Self::Reject(RejectReason::Unauthenticated) => (4, 0),
        };
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&REPLY_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&status.to_le_bytes());
        out[8..16].copy_from_slice(&value.to_le_bytes());
        out
    }

    /// `None` when the bytes are not a reply.
    pub fn decode(bytes: &[u8; Self::LEN]) -> Option<Self> {
        if u32_at(bytes, 0) != REPLY_MAGIC {
            return None;
        }
        let value = u64_at(bytes, 8);
        match u32_at(bytes, 4) {
            0 => Some(Self::Accept),
            1 => Some(Self::Reject(RejectReason::Generation { theirs: value })),
            2 => Some(Self::Reject(RejectReason::Rank {
                expected: usize::try_from(value).ok()?,
            })),
            3 => Some(Self::Reject(RejectReason::Protocol)),
            4 => Some(Self::Reject(RejectReason::Unauthenticated)),
            _ => None,
        }
    }
}

/// What a rank is about to run: the header every rank sends its right neighbour at the start of
/// each operation, so that ranks that disagree fail with
/// [`CollectiveError::Mismatch`](crate::CollectiveError::Mismatch) instead of mixing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpSignature {
    /// The operation.
    pub operation: Operation,
    /// How many operations this rank ran before on this collective.
    pub seq: u64,
    /// The buffer length in elements.
    pub len: u64,
}

impl OpSignature {
    pub(crate) const LEN: usize = 32;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let (kind, root): (u32, u64) = match self.operation {
            Operation::Rendezvous => (0, 0),
            Operation::AllReduceSum => (1, 0),
            Operation::AllReduceMean => (2, 0),
            Operation::Broadcast { root } => (3, root as u64),
            Operation::Barrier => (4, 0),
            Operation::ReduceScatterSum => (5, 0),
            Operation::AllGather => (6, 0),
        };
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&OP_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&kind.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.len.to_le_bytes());
        out[24..32].copy_from_slice(&root.to_le_bytes());
        out
    }

    /// `None` when the bytes are not an operation header.
    pub(crate) fn decode(bytes: &[u8; Self::LEN]) -> Option<Self> {
        if u32_at(bytes, 0) != OP_MAGIC {
            return None;
        }
        let operation = match u32_at(bytes, 4) {
            0 => Operation::Rendezvous,
            1 => Operation::AllReduceSum,
            2 => Operation::AllReduceMean,
            3 => Operation::Broadcast {
                root: usize::try_from(u64_at(bytes, 24)).ok()?,
            },
            4 => Operation::Barrier,
            5 => Operation::ReduceScatterSum,
            6 => Operation::AllGather,
            _ => return None,
        };
        Some(Self {
            operation,
            seq: u64_at(bytes, 8),
            len: u64_at(bytes, 16),
        })
    }
}

impl fmt::Display for OpSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} of {} elements",
            self.operation, self.seq, self.len
        )
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let hello = Hello {
            generation: 7,
            rank: 3,
            world_size: 4,
        };
        let nonce = [5u8; 16];
        assert_eq!(
            Hello::decode(&hello.encode(b"key", nonce), b"key"),
            Ok((hello, nonce))
        );
        for reply in [
            Reply::Accept,
            Reply::Reject(RejectReason::Generation { theirs: 9 }),
            Reply::Reject(RejectReason::Rank { expected: 2 }),
            Reply::Reject(RejectReason::Protocol),
            Reply::Reject(RejectReason::Unauthenticated),
        ] {
            assert_eq!(Reply::decode(&reply.encode()), Some(reply));
        }
        for operation in [
            Operation::AllReduceSum,
            Operation::AllReduceMean,
            Operation::Broadcast { root: 5 },
            Operation::Barrier,
            Operation::ReduceScatterSum,
            Operation::AllGather,
        ] {
            let sig = OpSignature {
                operation,
                seq: 11,
                len: 1 << 40,
            };
            assert_eq!(OpSignature::decode(&sig.encode()), Some(sig));
        }
    }

    #[test]
    fn foreign_bytes_are_refused() {
        let junk = [0xabu8; 64];
        let junk_hello = [0xabu8; Hello::LEN];
        assert_eq!(Hello::decode(&junk_hello, b"key"), Err(None));
        assert_eq!(Reply::decode(junk[..Reply::LEN].try_into().unwrap()), None);
        assert_eq!(
            OpSignature::decode(junk[..OpSignature::LEN].try_into().unwrap()),
            None
        );

        let hello = Hello {
            generation: 1,
            rank: 0,
            world_size: 2,
        };
        let mut other_version = hello.encode(b"key", [0; 16]);
        other_version[4] = 99;
        assert_eq!(
            Hello::decode(&other_version, b"key"),
            Err(Some(RejectReason::Protocol))
        );
        // Another key, or any byte changed after signing: not authenticated.
        let signed = hello.encode(b"key", [1; 16]);
        assert_eq!(
            Hello::decode(&signed, b"other key"),
            Err(Some(RejectReason::Unauthenticated))
        );
        let mut forged = signed;
        forged[16] = 1;
        assert_eq!(
            Hello::decode(&forged, b"key"),
            Err(Some(RejectReason::Unauthenticated))
        );

        let mut bad_kind = OpSignature {
            operation: Operation::Barrier,
            seq: 0,
            len: 0,
        }
        .encode();
        bad_kind[4] = 42;
        assert_eq!(OpSignature::decode(&bad_kind), None);
    }
}
