#!/usr/bin/env bash
# Runs a development hub on https://127.0.0.1:8443 with a local CA (in ./dev-hub/pki),
# creates tenant "acme" (3 levels) and prints enrollment tokens for a country "de" and a
# dealer "de-1" under it. Start the country with:
#   tiersync node serve --role country --db de.sqlite --data de-data --parent https://127.0.0.1:8443 \
#       --ca dev-hub/pki/ca.pem --dev-certs dev-hub/pki --port 9443 --enroll-token <de token>
# and the dealer with:
#   tiersync agent run --db de-1.sqlite --parent https://127.0.0.1:9443 --ca dev-hub/pki/ca.pem --enroll-token <de-1 token>
set -euo pipefail
data=${1:-./dev-hub}
bin=${TIERSYNC:-swift run tiersync}
$bin admin create-tenant --data "$data" --tenant acme --levels 3
echo "token for country de: $($bin admin enroll-token --data "$data" --tenant acme --node de)"
echo "token for dealer de-1: $($bin admin enroll-token --data "$data" --tenant acme --node de-1 --parent de)"
exec $bin hub serve --data "$data" --dev-certs "$data/pki" --port 8443
