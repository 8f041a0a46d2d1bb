#!/usr/bin/env bash
# Set up a fresh machine for cellinspect: a virtual environment in .venv with the package.
#   bash scripts/bootstrap.sh          runtime only (inspect, serve, line, fit-anomaly, ...)
#   bash scripts/bootstrap.sh --dev    + test/lint/docs tools, torch (CPU) for conversion/training
#                                      tests, the PostgreSQL driver, and the Debian packages
#                                      the tests drive (chromium, ffmpeg, systemd-analyze,
#                                      prometheus, postgresql)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "bootstrap.sh: unknown argument '$arg' (use --dev or nothing)" >&2; exit 2 ;;
  esac
done

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip

if [ "$dev" = 1 ]; then
  # torch==2.13.0 is pinned in the extras: that exact version is the CPU build here, while a
  # looser requirement would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet -e '.[dev,convert,train,eval,docs,postgres,s3]'
  # Debian packages the tests drive for real: chromium (review page), ffmpeg (video files and
  # an MJPEG-over-HTTP camera stream), systemd-analyze (the deploy unit).
  need=()
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
  # mosquitto: the MQTT tests start a private broker (tests/servers/mosquitto.py, /usr/sbin)
  # and read it with the third-party mosquitto_sub.
  [ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
  command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
  # postgresql: the store and fault tests start private servers (tests/servers/postgres.py);
  # Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin, off PATH.
  if ! command -v pg_ctl >/dev/null 2>&1 \
    && ! compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; then
    need+=(postgresql)
  fi
  if [ "${#need[@]}" -gt 0 ]; then
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_="sudo"
    if [[ " ${need[*]} " == *" postgresql "* ]]; then
      # The tests start their own servers: no system cluster listening on 5432.
      $sudo_ mkdir -p /etc/postgresql-common/createcluster.d
      echo 'create_main_cluster = false' |
        $sudo_ tee /etc/postgresql-common/createcluster.d/cellinspect.conf >/dev/null
    fi
    $sudo_ apt-get update -qq
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
else
  .venv/bin/python -m pip install --quiet -e .
fi
echo "bootstrap: ready (.venv)"
