//! Client caps: in total, per route and per client IP address (`limits:`).
//!
//! A subscriber takes a [`Permit`] before it subscribes and its stream holds it for as
//! long as it is open; dropping the stream gives the slot back. Over a cap the
//! subscriber is told to come back later ([`over_limit`]): by default `200`, a
//! `retry:` hint and the end of the stream, since a browser's `EventSource` gives up
//! for good on any other status; or `503` with `retry-after` where configured.
//!
//! Invariant: every count equals the number of live permits that counted it, and a
//! map entry whose count reaches zero is removed, so an address that came once
//! leaves nothing behind.

use std::fmt;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http::header::RETRY_AFTER;
use http::{HeaderValue, Response, StatusCode};

use super::stream::ResponseBody;
use super::{event_stream, plain};
use crate::config::{LimitsConfig, OverLimit};
use crate::hub;

/// Which cap a subscriber ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exceeded {
    Clients,
    Route,
    Ip,
}

impl Exceeded {
    /// The config key of the cap, as metrics and logs name it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Exceeded::Clients => "max_clients",
            Exceeded::Route => "max_clients_per_route",
            Exceeded::Ip => "max_clients_per_ip",
        }
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The counts behind the caps, shared by every connection of the public listeners.
#[derive(Debug)]
pub(crate) struct Limiter {
    config: LimitsConfig,
    total: AtomicUsize,
    per_route: DashMap<Arc<str>, usize>,
    per_ip: DashMap<IpAddr, usize>,
}

impl Limiter {
    pub(crate) fn new(config: LimitsConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            total: AtomicUsize::new(0),
            per_route: DashMap::new(),
            per_ip: DashMap::new(),
        })
    }

    /// The limits section this limiter enforces (connection timeouts included).
    pub(crate) fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// Takes a slot for one client stream on `route` from `ip`.
    ///
    /// # Errors
    /// The first cap that is full; then nothing is held.
    pub(crate) fn acquire(self: &Arc<Self>, route: &str, ip: IpAddr) -> Result<Permit, Exceeded> {
        // The total counts every stream (it is the cheap one), so a cap set later by
        // a reload would start from the truth; the maps count only when capped.
        let max = self.config.max_clients.unwrap_or(usize::MAX);
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Exceeded::Clients)?;
        let mut permit = Permit {
            limiter: Arc::clone(self),
            route: None,
            ip: None,
        };
        if let Some(cap) = self.config.max_clients_per_route {
            let route: Arc<str> = Arc::from(route);
            if !take(&self.per_route, route.clone(), cap) {
                return Err(Exceeded::Route); // `permit` gives the total back
            }
            permit.route = Some(route);
        }
        if let Some(cap) = self.config.max_clients_per_ip {
            // `::ffff:1.2.3.4` and `1.2.3.4` are one client.
            let ip = ip.to_canonical();
            if !take(&self.per_ip, ip, cap) {
                return Err(Exceeded::Ip);
            }
            permit.ip = Some(ip);
        }
        Ok(permit)
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize) {
        (
            self.total.load(Ordering::Acquire),
            self.per_route.len(),
            self.per_ip.len(),
        )
    }
}

/// Adds one to `key`'s count unless it is at `cap`.
fn take<K: Eq + Hash>(map: &DashMap<K, usize>, key: K, cap: usize) -> bool {
    // The entry holds its shard's lock, so check and increment are one step.
    let mut count = map.entry(key).or_insert(0);
    if *count >= cap {
        return false;
    }
    *count += 1;
    true
}

fn give_back<K: Eq + Hash>(map: &DashMap<K, usize>, key: &K) {
    if let Some(mut count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
    }
    map.remove_if(key, |_, count| *count == 0);
}

/// One client stream's slot; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    route: Option<Arc<str>>,
    ip: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let limiter = &self.limiter;
        if let Some(route) = &self.route {
            give_back(&limiter.per_route, route);
        }
        if let Some(ip) = &self.ip {
            give_back(&limiter.per_ip, ip);
        }
        limiter.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The answer to a subscriber over a cap. `retry` is the route's `client.retry`.
pub(crate) fn over_limit(how: OverLimit, retry: Duration) -> Response<ResponseBody> {
    match how {
        OverLimit::Retry => event_stream(ResponseBody::Full(Some(hub::retry_frame(retry)))),
        OverLimit::Unavailable => {
            let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "over capacity\n");
            // Whole seconds, rounded up, at least 1: `retry-after: 0` invites a storm.
            let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(total: usize, route: usize, ip: usize) -> Arc<Limiter> {
        let cap = |n: usize| (n > 0).then_some(n);
        Limiter::new(LimitsConfig {
            max_clients: cap(total),
            max_clients_per_route: cap(route),
            max_clients_per_ip: cap(ip),
            ..LimitsConfig::default()
        })
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_total_cap_refuses_the_next_and_frees_on_drop() {
        let l = limiter(2, 0, 0);
        let a = l.acquire("/a", ip("10.0.0.1")).unwrap();
        let _b = l.acquire("/b", ip("10.0.0.2")).unwrap();
        assert_eq!(
            l.acquire("/c", ip("10.0.0.3")).unwrap_err(),
            Exceeded::Clients
        );
        drop(a);
        assert!(l.acquire("/c", ip("10.0.0.3")).is_ok());
    }

    #[test]
    fn the_route_cap_counts_each_route_alone() {
        let l = limiter(0, 1, 0);
        let a = l.acquire("/a", ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.acquire("/a", ip("10.0.0.2")).unwrap_err(),
            Exceeded::Route
        );
        let b = l.acquire("/b", ip("10.0.0.2")).unwrap();
        // A refusal gives back what it took: the total is still two.
        assert_eq!(l.counts(), (2, 2, 0));
        drop((a, b));
        assert_eq!(l.counts(), (0, 0, 0));
    }

    #[test]
    fn the_ip_cap_treats_a_mapped_v4_address_as_the_same_client() {
        let l = limiter(0, 0, 1);
        let _a = l.acquire("/a", ip("10.0.0.1")).unwrap();
        assert_eq!(
            l.acquire("/b", ip("::ffff:10.0.0.1")).unwrap_err(),
            Exceeded::Ip
        );
        let b = l.acquire("/a", ip("10.0.0.2")).unwrap();
        assert_eq!(l.counts(), (2, 0, 2));
        drop(b);
        assert_eq!(
            l.counts(),
            (1, 0, 1),
            "an address that left leaves no entry"
        );
    }

    #[test]
    fn over_limit_answers_retry_and_end_or_503_with_retry_after() {
        let r = over_limit(OverLimit::Retry, Duration::from_millis(1500));
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let r = over_limit(OverLimit::Unavailable, Duration::from_millis(1500));
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "2");
        let r = over_limit(OverLimit::Unavailable, Duration::ZERO);
        assert_eq!(r.headers()["retry-after"], "1");
    }
}
