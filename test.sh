#!/usr/bin/env bash
# The test suite, from a fresh Debian or Ubuntu machine: install what it needs, then run pytest.
#
#   ./test.sh [PYTEST ARGUMENTS...]        (CI runs exactly this: .ci/run)
#
# - Debian's `prometheus` package (prometheus and promtool, for tests/test_observability.py),
#   through apt-get as root or with sudo. Where it cannot be installed those tests are skipped,
#   saying how to get it; under CI=true they fail instead.
# - Debian's `nats-server` package (the stream server of follower shards, for tests/test_shards.py),
#   the same way and with the same rule: skipped where missing, a failure under CI=true.
# - The project and its test extras, into the Python that runs this (python3, or $PYTHON). When
#   that Python refuses pip installs (Debian's own, PEP 668) or has no pip, into ./.venv instead.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {  # apt_install PACKAGE...: succeeds only if apt-get installed them
  command -v apt-get >/dev/null 2>&1 || return 1
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || return 1
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "test.sh: installing Debian's prometheus package (prometheus, promtool)" >&2
  apt_install prometheus ||
    echo "test.sh: could not install the prometheus package: the observability tests will be skipped" >&2
fi

# Debian puts nats-server in /usr/sbin, not on every user's PATH: looked for there too, as
# tests/natsserver.py does ($NATS_SERVER_SEARCH replaces those folders)
if ! PATH="$PATH:${NATS_SERVER_SEARCH:-/usr/sbin:/usr/local/sbin}" command -v nats-server >/dev/null 2>&1; then
  echo "test.sh: installing Debian's nats-server package (the shard tests' stream server)" >&2
  apt_install nats-server ||
    echo "test.sh: could not install the nats-server package: the shard tests will be skipped" >&2
fi

python=${PYTHON:-python3}
if ! "$python" -m pip install -q -e '.[test]'; then
  echo "test.sh: $python refused the install; using a virtualenv in .venv instead" >&2
  if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv || { apt_install python3-venv && "$python" -m venv .venv; }
  fi
  python=.venv/bin/python
  "$python" -m pip install -q -e '.[test]'
fi
exec "$python" -m pytest "$@"
