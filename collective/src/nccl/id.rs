//! NCCL's unique id, relayed between ranks as opaque bytes.

use std::ffi::c_char;
use std::fmt;

use cudarc::nccl::sys as nccl;

use super::comm::{nccl_error, require_nccl};
use crate::CollectiveError;

/// The length of an NCCL unique id.
const ID_BYTES: usize = 128;

/// The id that joins the ranks of one communicator: created by rank 0, passed to the others as
/// opaque bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NcclUniqueId([u8; ID_BYTES]);

impl NcclUniqueId {
    /// Creates a new id (on rank 0). Needs the NCCL library, not a GPU.
    pub fn new() -> Result<Self, CollectiveError> {
        require_nccl()?;
        let id = cudarc::nccl::result::get_uniqueid()
            .map_err(|e| nccl_error(0, "ncclGetUniqueId", e.0, None))?;
        Ok(Self(id.internal.map(|c| c as u8)))
    }

    /// The id's bytes, to relay to the other ranks.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Parses relayed bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CollectiveError> {
        let bytes: [u8; ID_BYTES] =
            bytes
                .try_into()
                .map_err(|_| CollectiveError::InvalidNcclId {
                    len: bytes.len(),
                    expected: ID_BYTES,
                })?;
        Ok(Self(bytes))
    }

    pub(super) fn to_sys(self) -> nccl::ncclUniqueId {
        nccl::ncclUniqueId {
            internal: self.0.map(|b| b as c_char),
        }
    }
}

impl fmt::Debug for NcclUniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NcclUniqueId({:02x?}..)", &self.0[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_wrong_lengths_are_refused() {
        let mut bytes = [0u8; ID_BYTES];
        bytes
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i * 37 % 256) as u8);
        let id = NcclUniqueId::from_bytes(&bytes).unwrap();
        assert_eq!(id.to_bytes(), bytes.to_vec());
        let sys = id.to_sys();
        assert!(sys.internal.iter().zip(&bytes).all(|(c, b)| *c as u8 == *b));
        for len in [0, 127, 129] {
            assert!(matches!(
                NcclUniqueId::from_bytes(&vec![0; len]),
                Err(CollectiveError::InvalidNcclId { len: l, expected: ID_BYTES }) if l == len
            ));
        }
    }
}
