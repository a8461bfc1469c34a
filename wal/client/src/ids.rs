//! Ids and positions of the WAL tier.

use std::fmt;

macro_rules! position_type {
    ($(#[$meta:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

position_type!(
    /// A WAL log's id, assigned by the controller when the log is opened.
    LogId(u64), "log"
);
position_type!(
    /// A WAL log's epoch. The writer that opened the log writes at epoch 1; each
    /// recovery bumps it, and a node that has seen epoch E refuses anything older.
    /// (Distinct from a node's registration `Epoch`.)
    LogEpoch(u64), "le"
);
position_type!(
    /// An entry's position in its log: 1, 2, 3, ... with no gaps. 0 means "none".
    Seq(u64), "#"
);
position_type!(
    /// A Kafka offset within a stream (a partition's log).
    Offset(i64), "@"
);

impl Seq {
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}
