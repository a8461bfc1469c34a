//! The metadata image arranged for reads: per stream, its partition's start
//! offset and uploaded end, and its object ranges in offset order. Built
//! once per metadata version, so a fetch finds them without scanning every
//! topic and object of the image.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use keel_controller_client::{Image, ObjectId, ObjectRange, Offset, StreamId, Version};

/// One object range of a stream, with the object it is in.
#[derive(Clone, Debug)]
pub struct Located {
    pub object: ObjectId,
    pub key: Arc<str>,
    pub range: ObjectRange,
}

#[derive(Debug, Default)]
pub struct StreamFacts {
    pub start_offset: Offset,
    pub uploaded_end: Offset,
    /// In offset order.
    pub ranges: Vec<Located>,
}

impl StreamFacts {
    /// The ranges that reach past `offset`, in offset order.
    pub fn ranges_from(&self, offset: Offset) -> &[Located] {
        let first = self.ranges.partition_point(|located| located.range.end <= offset);
        &self.ranges[first..]
    }

    /// Where a search from `from` for the first record at or after
    /// `timestamp` may start: uploaded ranges whose newest record is older
    /// are passed over (the uploaded end, if all of them are), so a lookup by
    /// time reads objects only where the answer can be.
    pub fn search_start(&self, from: Offset, timestamp: i64) -> Offset {
        let later = self.ranges_from(from).iter().find(|located| located.range.max_ts >= timestamp);
        later.map_or(self.uploaded_end, |located| located.range.start).max(from)
    }

    /// Where a search from `from` for the newest record may start: the first
    /// uploaded range holding the newest timestamp of all of them (the WAL
    /// part after the uploaded end is searched in any case).
    pub fn newest_start(&self, from: Offset) -> Offset {
        let ranges = self.ranges_from(from);
        let newest = ranges.iter().map(|located| located.range.max_ts).max();
        let first = ranges.iter().find(|located| Some(located.range.max_ts) == newest);
        first.map_or(self.uploaded_end, |located| located.range.start).max(from)
    }
}

#[derive(Debug, Default)]
pub struct StreamIndex {
    version: Version,
    streams: HashMap<StreamId, StreamFacts>,
}

impl StreamIndex {
    pub fn build(image: &Image) -> StreamIndex {
        let mut streams: HashMap<StreamId, StreamFacts> = HashMap::new();
        for partition in image.topics.values().flat_map(|topic| &topic.partitions) {
            let facts = streams.entry(partition.stream_id).or_default();
            facts.start_offset = partition.start_offset;
            facts.uploaded_end = partition.uploaded_end;
        }
        for object in image.objects.values() {
            let key: Arc<str> = Arc::from(object.key.as_str());
            for range in &object.ranges {
                if let Some(facts) = streams.get_mut(&range.stream) {
                    facts.ranges.push(Located { object: object.id, key: key.clone(), range: range.clone() });
                }
            }
        }
        for facts in streams.values_mut() {
            facts.ranges.sort_by_key(|located| located.range.start);
        }
        StreamIndex { version: image.version, streams }
    }

    pub fn stream(&self, stream: StreamId) -> Option<&StreamFacts> {
        self.streams.get(&stream)
    }
}

/// The index of the newest image, rebuilt when the image has moved on.
#[derive(Debug, Default)]
pub struct IndexCache {
    current: Mutex<Arc<StreamIndex>>,
}

impl IndexCache {
    pub fn get(&self, image: &Image) -> Arc<StreamIndex> {
        let mut current = self.current.lock().expect("stream index lock");
        if current.version != image.version || (image.version.0 == 0 && current.streams.is_empty()) {
            *current = Arc::new(StreamIndex::build(image));
        }
        current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn located(start: i64, end: i64) -> Located {
        timed(start, end, 0)
    }

    fn timed(start: i64, end: i64, max_ts: i64) -> Located {
        let range = ObjectRange {
            stream: StreamId(1),
            start: Offset(start),
            end: Offset(end),
            pos: 0,
            len: 1,
            min_ts: 0,
            max_ts,
            snapshot_pos: 0,
            snapshot_len: 0,
        };
        Located { object: ObjectId(1), key: Arc::from("k"), range }
    }

    /// Issue 21: ListOffsets by time read the whole partition from the
    /// objects; ranges carry their newest timestamp, so the search starts
    /// at the first range that can hold the answer.
    #[test]
    fn a_search_by_time_starts_at_the_first_range_that_reaches_the_time() {
        let facts = StreamFacts {
            start_offset: Offset(0),
            uploaded_end: Offset(30),
            ranges: vec![timed(0, 10, 100), timed(10, 20, 300), timed(20, 30, 200)],
        };
        assert_eq!(facts.search_start(Offset(0), 50), Offset(0));
        assert_eq!(facts.search_start(Offset(0), 150), Offset(10));
        assert_eq!(facts.search_start(Offset(15), 150), Offset(15), "never before where the search starts");
        assert_eq!(facts.search_start(Offset(0), 301), Offset(30), "only the WAL part can hold it");
        assert_eq!(facts.newest_start(Offset(0)), Offset(10));
        assert_eq!(facts.newest_start(Offset(20)), Offset(20));
        let empty = StreamFacts { uploaded_end: Offset(0), ..StreamFacts::default() };
        assert_eq!((empty.search_start(Offset(0), 5), empty.newest_start(Offset(0))), (Offset(0), Offset(0)));
    }

    #[test]
    fn ranges_from_skips_the_ranges_that_end_at_or_before_the_offset() {
        let facts = StreamFacts {
            start_offset: Offset(0),
            uploaded_end: Offset(30),
            ranges: vec![located(0, 10), located(10, 20), located(20, 30)],
        };
        assert_eq!(facts.ranges_from(Offset(0)).len(), 3);
        assert_eq!(facts.ranges_from(Offset(10))[0].range.start, Offset(10));
        assert_eq!(facts.ranges_from(Offset(29)).len(), 1);
        assert!(facts.ranges_from(Offset(30)).is_empty());
    }
}
