//! Real data sets from the cache that `cargo xtask setup` fills.

pub mod rotten_tomatoes;
