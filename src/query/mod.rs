//! `/query`: InfluxQL statements classified and filtered (`influxql`, `filter`), then planned onto
//! backends and answered by relaying or merging.

pub mod filter;
pub mod influxql;
