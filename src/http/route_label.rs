//! Per-route request series kept where the route is registered (a leaf module: the route table
//! creates the labels, the metrics count through them).

use std::cell::RefCell;

use prometheus::{Histogram, IntCounter};

/// One route's request series, resolved once per HTTP worker thread: counting a request is
/// then a lookup in that thread's own map (no lock, no label hashing by Prometheus, no
/// allocation) and two atomic adds.
/// A route sees few methods and statuses, so these are scanned, not hashed.
#[derive(Default)]
pub struct RouteSeries {
    pub latency: Vec<(String, Histogram)>,
    pub counts: Vec<(String, u16, IntCounter)>,
}

/// The route label of one registered resource (its pattern) with this worker's series for it.
/// The route table puts one into each resource's app data (each HTTP worker builds its own
/// resources), so counting a request needs neither a re-match of its path against the route
/// table nor a lookup by name.
pub struct RouteLabel {
    pattern: Box<str>,
    series: RefCell<RouteSeries>,
}

impl RouteLabel {
    pub fn new(pattern: &str) -> Self {
        RouteLabel {
            pattern: pattern.into(),
            series: RefCell::default(),
        }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn series(&self) -> &RefCell<RouteSeries> {
        &self.series
    }
}
