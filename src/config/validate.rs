//! Raw → validated: fills in the defaults and applies the rules that span fields.
//!
//! Single values were already checked while deserializing ([`super::raw`]). What is
//! left here needs more than one value at once: unique listener addresses, backoff
//! `initial` ≤ `max`, routes that would match the same paths, and a route's upstream
//! parameters against its path's. These errors carry the key path we build by hand
//! and no line:column, since the YAML parser is done by then.
//!
//! Per-route settings are resolved here, once: a `RouteConfig` holds its effective
//! values, so no later reader has to know about inheritance from the global keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::raw::{
    RawBackoff, RawClient, RawConfig, RawCors, RawLimits, RawListener, RawReplay, RawRoute,
    RawUpstream,
};
use super::{
    AdminConfig, BackoffConfig, ClientConfig, Config, ConfigError, CorsConfig, CorsOrigins,
    DrainConfig, LimitsConfig, ListenerConfig, OverLimit, ReplayConfig, RouteConfig, TlsConfig,
    UpstreamConfig, UpstreamTarget, DEFAULT_HEARTBEAT, DEFAULT_LISTEN, MIN_HEADER_SIZE,
};
use crate::config::units::{format_duration, format_size};

/// Builds the validated `Config` from the raw file (overrides already merged).
pub(super) fn build(raw: RawConfig, file: &Path) -> Result<Config, ConfigError> {
    let listen = listeners(raw.listen, file)?;
    let admin = AdminConfig {
        addr: raw
            .admin
            .and_then(|admin| admin.addr)
            .map_or(super::DEFAULT_ADMIN, |addr| addr.0),
    };
    if let Some(i) = clashing_listener(&listen, admin.addr) {
        return Err(ConfigError::rule(
            file,
            Some("admin.addr"),
            format!(
                "address {} is also public listener listen[{i}]; the admin listener must be separate",
                admin.addr
            ),
        ));
    }

    let heartbeat = raw.heartbeat.map_or(DEFAULT_HEARTBEAT, |d| d.0);
    let client = client(raw.client, &ClientConfig::default());
    let replay = replay(raw.replay, &ReplayConfig::default());
    let drain = raw.drain.map_or_else(DrainConfig::default, |drain| {
        let default = DrainConfig::default();
        DrainConfig {
            retry: drain.retry.map_or(default.retry, |d| d.0),
            retry_jitter: drain.retry_jitter.map_or(default.retry_jitter, |d| d.0),
            deadline: drain.deadline.map_or(default.deadline, |d| d.0),
        }
    });
    let upstream = upstream(raw.upstream, file)?;
    let limits = limits(raw.limits, file)?;

    let global = Inherited {
        heartbeat,
        client: &client,
        replay: &replay,
        over_limit: limits.over_limit,
    };
    let routes = routes(raw.routes, &global, file)?;

    Ok(Config {
        file: file.to_owned(),
        listen,
        admin,
        heartbeat,
        client,
        drain,
        replay,
        upstream,
        limits,
        routes,
    })
}

fn listeners(
    raw: Option<Vec<RawListener>>,
    file: &Path,
) -> Result<Vec<ListenerConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(vec![ListenerConfig {
            addr: DEFAULT_LISTEN,
            tls: None,
        }]);
    };
    if raw.is_empty() {
        return Err(ConfigError::rule(
            file,
            Some("listen"),
            format!("at least one listener is required (leave out `listen` for the default {DEFAULT_LISTEN})"),
        ));
    }
    // TLS paths are relative to the config file, not to the working directory.
    let base = file.parent().unwrap_or(Path::new(""));
    let mut listen: Vec<ListenerConfig> = Vec::with_capacity(raw.len());
    for (i, listener) in raw.into_iter().enumerate() {
        let addr = listener.addr.0;
        if let Some(j) = clashing_listener(&listen, addr) {
            return Err(ConfigError::rule(
                file,
                Some(&format!("listen[{i}].addr")),
                format!("address {addr} is already used by listen[{j}]"),
            ));
        }
        listen.push(ListenerConfig {
            addr,
            tls: listener.tls.map(|tls| TlsConfig {
                cert: resolve(base, tls.cert.0),
                key: resolve(base, tls.key.0),
            }),
        });
    }
    Ok(listen)
}

/// The index of a listener already bound to `addr`. Port 0 never clashes: each such
/// listener gets its own free port (tests pass `--listen 127.0.0.1:0` freely).
fn clashing_listener(listen: &[ListenerConfig], addr: SocketAddr) -> Option<usize> {
    if addr.port() == 0 {
        return None;
    }
    listen.iter().position(|l| l.addr == addr)
}

fn resolve(base: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

fn client(raw: Option<RawClient>, inherited: &ClientConfig) -> ClientConfig {
    let raw = raw.unwrap_or_default();
    ClientConfig {
        queue: raw.queue.map_or(inherited.queue, |c| c.0),
        retry: raw.retry.map_or(inherited.retry, |d| d.0),
    }
}

fn replay(raw: Option<RawReplay>, inherited: &ReplayConfig) -> ReplayConfig {
    let raw = raw.unwrap_or_default();
    ReplayConfig {
        events: raw.events.map_or(inherited.events, |c| c.0),
        gap_event: raw
            .gap_event
            .map_or_else(|| inherited.gap_event.clone(), |name| name.0),
    }
}

fn upstream(raw: Option<RawUpstream>, file: &Path) -> Result<UpstreamConfig, ConfigError> {
    let default = UpstreamConfig::default();
    let Some(raw) = raw else {
        return Ok(default);
    };
    let backoff = backoff(raw.backoff, file)?;
    Ok(UpstreamConfig {
        connect_timeout: raw.connect_timeout.map_or(default.connect_timeout, |d| d.0),
        backoff,
        linger: raw.linger.map_or(default.linger, |d| d.0),
        max_line: raw.max_line.map_or(default.max_line, |size| size.0),
    })
}

fn backoff(raw: Option<RawBackoff>, file: &Path) -> Result<BackoffConfig, ConfigError> {
    let default = BackoffConfig::default();
    let Some(raw) = raw else {
        return Ok(default);
    };
    let backoff = BackoffConfig {
        initial: raw.initial.map_or(default.initial, |d| d.0),
        max: raw.max.map_or(default.max, |d| d.0),
    };
    if backoff.initial > backoff.max {
        return Err(ConfigError::rule(
            file,
            Some("upstream.backoff"),
            format!(
                "initial ({}) must not be greater than max ({})",
                format_duration(backoff.initial),
                format_duration(backoff.max)
            ),
        ));
    }
    Ok(backoff)
}

fn limits(raw: Option<RawLimits>, file: &Path) -> Result<LimitsConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let default = LimitsConfig::default();
    let limits = LimitsConfig {
        max_clients: raw.max_clients.map_or(default.max_clients, |l| l.0),
        max_clients_per_route: raw
            .max_clients_per_route
            .map_or(default.max_clients_per_route, |l| l.0),
        max_clients_per_ip: raw
            .max_clients_per_ip
            .map_or(default.max_clients_per_ip, |l| l.0),
        over_limit: raw.over_limit.unwrap_or(default.over_limit),
        header_read_timeout: raw
            .header_read_timeout
            .map_or(default.header_read_timeout, |d| d.0),
        max_header_size: raw
            .max_header_size
            .map_or(default.max_header_size, |size| size.0),
        idle_timeout: raw.idle_timeout.map_or(default.idle_timeout, |d| d.0),
    };
    if limits.max_header_size < MIN_HEADER_SIZE {
        return Err(ConfigError::rule(
            file,
            Some("limits.max_header_size"),
            format!(
                "must be at least {} (got {})",
                format_size(MIN_HEADER_SIZE),
                format_size(limits.max_header_size)
            ),
        ));
    }
    Ok(limits)
}

/// `*` alone and without credentials, or a list of exact origins.
fn cors(raw: RawCors, i: usize, file: &Path) -> Result<CorsConfig, ConfigError> {
    let credentials = raw.credentials.unwrap_or(false);
    let any = raw.origins.iter().any(|o| o.0 == "*");
    let origins = if raw.origins.is_empty() {
        return Err(ConfigError::rule(
            file,
            Some(&format!("routes[{i}].cors.origins")),
            "at least one origin is required (or `*` for any)",
        ));
    } else if any && raw.origins.len() > 1 {
        return Err(ConfigError::rule(
            file,
            Some(&format!("routes[{i}].cors.origins")),
            "`*` already allows every origin; list it alone",
        ));
    } else if any {
        CorsOrigins::Any
    } else {
        CorsOrigins::List(raw.origins.into_iter().map(|o| o.0).collect())
    };
    if credentials && origins == CorsOrigins::Any {
        return Err(ConfigError::rule(
            file,
            Some(&format!("routes[{i}].cors")),
            "`credentials: true` needs a list of origins; browsers refuse `*` with credentials",
        ));
    }
    Ok(CorsConfig {
        origins,
        credentials,
    })
}

/// The global values a route inherits where it sets none.
struct Inherited<'a> {
    heartbeat: std::time::Duration,
    client: &'a ClientConfig,
    replay: &'a ReplayConfig,
    over_limit: OverLimit,
}

fn routes(
    raw: Option<Vec<RawRoute>>,
    global: &Inherited<'_>,
    file: &Path,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let Some(raw) = raw else {
        return Err(ConfigError::rule(
            file,
            None,
            "missing key `routes` (at least one route is required)",
        ));
    };
    if raw.is_empty() {
        return Err(ConfigError::rule(
            file,
            Some("routes"),
            "at least one route is required",
        ));
    }
    let mut routes: Vec<RouteConfig> = Vec::with_capacity(raw.len());
    for (i, route) in raw.into_iter().enumerate() {
        check_params(&route, i, file)?;
        let https = matches!(&route.upstream, UpstreamTarget::Http(url) if url.as_str().starts_with("https://"));
        if route.ca.is_some() && !https {
            return Err(ConfigError::rule(
                file,
                Some(&format!("routes[{i}].ca")),
                "`ca` applies to https:// upstreams only",
            ));
        }
        for (j, earlier) in routes.iter().enumerate() {
            let message = if earlier.path == route.path {
                format!(
                    "duplicate path {:?} (also routes[{j}])",
                    route.path.as_str()
                )
            } else if earlier.path.same_shape(&route.path) {
                format!(
                    "path {:?} matches the same requests as routes[{j}] {:?}",
                    route.path.as_str(),
                    earlier.path.as_str()
                )
            } else {
                continue;
            };
            return Err(ConfigError::rule(
                file,
                Some(&format!("routes[{i}].path")),
                message,
            ));
        }
        let cors = route.cors.map(|raw| cors(raw, i, file)).transpose()?;
        routes.push(RouteConfig {
            over_limit: route.over_limit.unwrap_or(global.over_limit),
            cors,
            replay: replay(route.replay, global.replay),
            heartbeat: route.heartbeat.map_or(global.heartbeat, |d| d.0),
            client: client(route.client, global.client),
            assign_ids: route.assign_ids.unwrap_or(false),
            // Backfill needs an upstream that honours Last-Event-ID, which only an
            // HTTP upstream can; on by default there.
            backfill: route
                .backfill
                .unwrap_or(matches!(route.upstream, UpstreamTarget::Http(_))),
            ca: route
                .ca
                .map(|ca| resolve(file.parent().unwrap_or(Path::new("")), ca.0)),
            headers: route.headers.0,
            path: route.path,
            upstream: route.upstream,
        });
    }
    Ok(routes)
}

/// A route's upstream must use exactly its path's parameters: an unknown one could not
/// be filled in, and an unused one would let distinct paths share one source.
fn check_params(route: &RawRoute, i: usize, file: &Path) -> Result<(), ConfigError> {
    let key_path = format!("routes[{i}].upstream");
    let path = &route.path;
    let error = |message: String| Err(ConfigError::rule(file, Some(&key_path), message));
    match &route.upstream {
        UpstreamTarget::Builtin(builtin) => {
            if let Some(name) = path.params().next() {
                return error(format!(
                    "builtin:{} takes no parameters, but path {:?} has {{{name}}}",
                    builtin.name(),
                    path.as_str()
                ));
            }
        }
        UpstreamTarget::Http(url) => {
            if let Some(name) = url.params().find(|&name| !path.params().any(|p| p == name)) {
                return error(format!(
                    "{{{name}}} is not a parameter of path {:?}",
                    path.as_str()
                ));
            }
            if let Some(name) = path.params().find(|&name| !url.params().any(|u| u == name)) {
                return error(format!(
                    "path parameter {{{name}}} is not used in upstream {:?} (each must appear, or distinct paths would share one source)",
                    url.as_str()
                ));
            }
        }
    }
    Ok(())
}
