#!/bin/sh
# Makes a self-signed certificate for local development: deploy/certs/server.pem and
# deploy/certs/server-key.pem (EC P-256, PKCS#8), valid for localhost, 127.0.0.1 and
# ::1 for 30 days. deploy/certs/ is git-ignored; never commit keys.
# Needs OpenSSL 1.1.1 or newer (for -addext).
set -eu
dir="$(dirname "$0")/certs"
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -keyout "$dir/server-key.pem" -out "$dir/server.pem"
chmod 600 "$dir/server-key.pem"
echo "wrote $dir/server.pem and $dir/server-key.pem"
