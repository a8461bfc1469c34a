//! The records of one batch, decompressed with a bound. Keel stores and
//! serves batches as producers compressed them and opens one only where
//! Kafka's rules need its records (the keys of a compacted topic's batch,
//! ListOffsets by time); a batch whose records would take more than
//! `DECOMPRESSED_BYTES_MAX` is refused there rather than let a small
//! hostile batch expand into gigabytes.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

use crate::batch::BatchError;

/// The most bytes one batch's records may take decompressed: well over a
/// producer's batch (`batch.size` is 16 KiB by default, a record at most
/// `max.request.size`, 1 MiB).
pub const DECOMPRESSED_BYTES_MAX: u64 = 64 << 20;

/// Decodes the one batch in `bytes` with its records.
pub fn decode(bytes: &[u8]) -> Result<RecordSet, BatchError> {
    let mut buffer = Bytes::copy_from_slice(bytes);
    RecordBatchDecoder::decode_with_custom_compression(&mut buffer, Some(decompress))
        .map_err(|error| BatchError::Records(format!("{error:#}")))
}

/// Kafka's snappy framing (xerial's): a magic header, then blocks, each a
/// big-endian length and a raw snappy block.
const SNAPPY_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const SNAPPY_HEADER_BYTES: usize = 16;

fn decompress(compressed: &mut Bytes, compression: Compression) -> anyhow::Result<Bytes> {
    let input = compressed.copy_to_bytes(compressed.remaining());
    let bounded = |reader: &mut dyn Read| -> anyhow::Result<Bytes> {
        let mut out = Vec::new();
        reader.take(DECOMPRESSED_BYTES_MAX + 1).read_to_end(&mut out)?;
        anyhow::ensure!(
            out.len() as u64 <= DECOMPRESSED_BYTES_MAX,
            "the records take more than {DECOMPRESSED_BYTES_MAX} bytes decompressed"
        );
        Ok(out.into())
    };
    match compression {
        Compression::None => Ok(input),
        Compression::Gzip => bounded(&mut flate2::read::GzDecoder::new(&input[..])),
        Compression::Lz4 => bounded(&mut lz4::Decoder::new(&input[..])?),
        Compression::Zstd => bounded(&mut zstd::stream::read::Decoder::new(&input[..])?),
        Compression::Snappy => snappy(&input),
    }
}

fn snappy(input: &[u8]) -> anyhow::Result<Bytes> {
    let mut decoder = snap::raw::Decoder::new();
    if !input.starts_with(SNAPPY_MAGIC) {
        anyhow::ensure!(
            snap::raw::decompress_len(input)? as u64 <= DECOMPRESSED_BYTES_MAX,
            "the records take more than {DECOMPRESSED_BYTES_MAX} bytes decompressed"
        );
        return Ok(decoder.decompress_vec(input)?.into());
    }
    let mut rest = input.get(SNAPPY_HEADER_BYTES..).ok_or_else(|| anyhow::anyhow!("a cut snappy header"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        anyhow::ensure!(rest.len() >= 4, "a cut snappy block length");
        let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let block = rest.get(4..4 + length).ok_or_else(|| anyhow::anyhow!("a cut snappy block"))?;
        let size = snap::raw::decompress_len(block)?;
        anyhow::ensure!(
            (out.len() + size) as u64 <= DECOMPRESSED_BYTES_MAX,
            "the records take more than {DECOMPRESSED_BYTES_MAX} bytes decompressed"
        );
        let start = out.len();
        out.resize(start + size, 0);
        let written = decoder.decompress(block, &mut out[start..])?;
        out.truncate(start + written);
        rest = &rest[4 + length..];
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn batch(compression: Compression, value: &[u8], key: Option<&[u8]>) -> Vec<u8> {
        let record = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1_000,
            key: key.map(Bytes::copy_from_slice),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
            delete_horizon: false,
        };
        let mut out = bytes::BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression };
        RecordBatchEncoder::encode(&mut out, &[record], &options).unwrap();
        out.to_vec()
    }

    #[test]
    fn every_codec_decodes_within_the_bound() {
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let set = decode(&batch(compression, b"an order", Some(b"k"))).unwrap();
            assert_eq!(set.records[0].value.as_deref(), Some(&b"an order"[..]), "{compression:?}");
        }
    }

    #[test]
    fn a_batch_that_would_expand_past_the_bound_is_refused() {
        let zeros = vec![0u8; DECOMPRESSED_BYTES_MAX as usize + 1024];
        for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let bomb = batch(compression, &zeros, None);
            assert!(bomb.len() < 8 << 20, "{compression:?}: {} bytes compressed", bomb.len());
            let error = decode(&bomb).unwrap_err().to_string();
            assert!(error.contains("decompressed"), "{compression:?}: {error}");
        }
    }
}
