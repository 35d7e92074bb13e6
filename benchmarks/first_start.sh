#!/usr/bin/env bash
# The first start, timed as a new user meets it: a fresh clone of this repository's HEAD,
# `make serve` (creating .venv and installing without pip's cache, no models yet), then the
# seconds until gap answers a classify request and until all six demo models are served.
# Usage: benchmarks/first_start.sh [PORT]   (needs git, curl, python3 and network to PyPI)
set -euo pipefail
port=${1:-8123}
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d)
git clone -q "$root" "$work/convbridge"
cd "$work/convbridge"
# A held-out MNIST digit (28x28 PNG), so the script needs nothing installed to send one.
echo "iVBORw0KGgoAAAANSUhEUgAAABwAAAAcCAAAAABXZoBIAAABGElEQVR4nMWQL0gDcRTHH/69Q9hUFgYTBjNYXBFlTVCDzSxroiBYDIsGEZMgCMZNWByCekXbhsGwpGHhwoaOAx2nCAeyoMLnp+FuYb/dqr703vfD+/cV+e8Y3n1XqpQIQ3O5MgCHvWij9oHC3rF4ntHZCdA+n81IwuEs0IY68NFxrYptevLSmlroGRsXEWNCJFZnr9/BY1U+5/uwySIUwkD8qlK2IT8SBtdQwP1o6MhU8eny7UcdDGr69ErUT5LHsNnN9l9pLPpppKHbVwPawQNJxzMDeUBERFxxt7c8X3FakWxX59I3F0anqOpLj+AmY4iIjJ9+6Q6Z10CzkE6vP4Cl/xhdLjVBAeRTOhSRWO5Wwd1quEN/Fb/JL3fzQjCdtQAAAABJRU5ErkJggg==" | base64 -d > "$work/digit.png"
started=$(date +%s.%N)
PIP_NO_CACHE_DIR=1 setsid make serve PORT="$port" > "$work/serve.log" 2>&1 &
trap 'kill -- -$! 2>/dev/null || true' EXIT
elapsed() { python3 -c "import time; print(f'{time.time() - $started:.0f}')"; }
until curl -sf -o /dev/null -H 'Content-Type: image/png' --data-binary @"$work/digit.png" \
        "http://127.0.0.1:$port/models/gap/classify"; do sleep 0.5; done
echo "first classify answered after $(elapsed) s"
served() {
    curl -sf "http://127.0.0.1:$port/models" | python3 -c \
        'import json, sys; print(sum(m["served_version"] is not None for m in json.load(sys.stdin)["models"]))'
}
until [ "$(served 2>/dev/null)" = 6 ]; do sleep 1; done
echo "all six models served after $(elapsed) s (log: $work/serve.log)"
