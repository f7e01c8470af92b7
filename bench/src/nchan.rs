//! nchan for `run --vs-nchan`: installs Debian's nginx and libnginx-mod-nchan when
//! asked (never from `cargo test`), and writes the nginx configuration the
//! comparison uses: one worker, a `nchan_publisher` location the origin POSTs to
//! and an eventsource `nchan_subscriber` location, both on one channel.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Where Debian's package puts the module.
const MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// Installs nginx and nchan with apt-get unless both are already there.
pub(crate) fn ensure_installed() -> anyhow::Result<()> {
    let installed = Command::new("dpkg")
        .args(["-s", "nginx", "libnginx-mod-nchan"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed && Path::new(MODULE).exists() {
        return Ok(());
    }
    eprintln!("run: installing nginx and libnginx-mod-nchan with apt-get");
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    if !update.success() {
        bail!("apt-get update failed");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "nginx", "libnginx-mod-nchan"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !install.success() {
        bail!("apt-get install nginx libnginx-mod-nchan failed");
    }
    // The package starts a system nginx on port 80; it is not ours to keep running,
    // and it would share the cores being measured.
    let _ = Command::new("service").args(["nginx", "stop"]).status();
    Ok(())
}

/// Versions for the report: `nginx -v` and the nchan package version.
pub(crate) fn versions() -> String {
    let nginx = Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();
    let nchan = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "libnginx-mod-nchan"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{nginx}; libnginx-mod-nchan {nchan}")
}

/// The nginx configuration: everything under `dir`, listening on `port`.
pub(crate) fn config(dir: &Path, port: u16) -> anyhow::Result<String> {
    let dir = dir.to_str().context("temp dir is not UTF-8")?;
    Ok(format!(
        r#"load_module {MODULE};
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{
    # nchan counts more than one connection per subscriber; 20,000 logs
    # "worker_connections are not enough" at 19,000 subscribers.
    worker_connections 65536;
}}
http {{
    access_log off;
    # The publisher pipelines every event on one connection: never close it.
    keepalive_requests 1000000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /pub {{
            nchan_publisher;
            nchan_channel_id bench;
            # Match the gateway's replay depth and let subscribers join live only.
            nchan_message_buffer_length 1024;
            nchan_message_timeout 10m;
        }}
        location = /sub {{
            nchan_subscriber eventsource;
            nchan_channel_id bench;
            nchan_subscriber_first_message newest;
        }}
    }}
}}
"#
    ))
}
