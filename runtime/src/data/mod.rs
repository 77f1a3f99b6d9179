//! Real data sets from the cache that `cargo xtask setup` fills.

pub mod fashion_mnist;
pub mod partition;
pub mod rotten_tomatoes;
