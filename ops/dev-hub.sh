#!/usr/bin/env bash
# Runs a development hub on https://127.0.0.1:8443 with a local CA (in ./dev-hub/pki),
# creates tenant "acme" and prints an enrollment token for node "dealer-1".
set -euo pipefail
data=${1:-./dev-hub}
bin=${TIERSYNC:-swift run tiersync}
$bin admin create-tenant --data "$data" --tenant acme
echo "enrollment token for dealer-1: $($bin admin enroll-token --data "$data" --tenant acme --node dealer-1)"
echo "agents trust: $data/pki/ca.pem"
exec $bin hub serve --data "$data" --dev-certs --port 8443
