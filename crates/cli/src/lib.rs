//! netdx command-line library: the labelled scenarios on the testbed, dataset generation,
//! the live demo.
pub mod dataset;
pub mod demo;
pub mod diagnose;
pub mod live;
pub mod scenarios;
pub mod table;
