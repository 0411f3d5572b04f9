#!/usr/bin/env bash
# A private Cyrus IMAP (Debian's cyrus-imapd 3.6 with cyrus-caldav: the CardDAV server
# software Fastmail runs) for the tests, on loopback, with every path inside one folder of
# its own: the machine's own Cyrus, if any, is not touched.
#
#   scripts/cyrus.sh install                 apt-get install the packages (idempotent; root)
#   CYRUS_PASSWORD=… scripts/cyrus.sh start DIR HTTP_PORT IMAP_PORT USER...
#                                            configure DIR, add USERs with that password,
#                                            start, and make each user's address book
#                                            (/dav/addressbooks/user/USER/Default/);
#                                            with CYRUS_OWNER_PID set, the instance also
#                                            stops when that process is gone (a test
#                                            killed before it could stop it)
#   scripts/cyrus.sh expire DIR              purge what deletions left behind (cyr_expire):
#                                            every sync token given before a deletion is
#                                            then stale (403 DAV:valid-sync-token)
#   scripts/cyrus.sh stop DIR                stop the instance started in DIR
#
# Why each step (see also the notes on running Cyrus as a CardDAV test server):
# cyrmaster does not hand its -C to the services, so each service's cmd names the config;
# a user's address book exists only after the user's INBOX does, which an IMAP login
# creates (autocreate), and the first authenticated DAV request then creates the book.
set -euo pipefail

PACKAGES=(cyrus-imapd cyrus-caldav cyrus-admin sasl2-bin)
BIN=/usr/lib/cyrus/bin

install() {
  if [ -x /usr/sbin/cyrmaster ] && [ -x "$BIN/httpd" ] && [ -x /usr/sbin/saslpasswd2 ] \
    && dpkg -s cyrus-caldav >/dev/null 2>&1; then
    return 0
  fi
  echo "installing ${PACKAGES[*]}"
  # The packages' own service must not start (the tests start private instances):
  # Debian's policy-rc.d hook, put in place only for the install when none exists.
  local policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy"
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
}

start() {
  local dir=$1 http=$2 imap=$3
  shift 3
  local users=("$@")
  : "${CYRUS_PASSWORD:?the users password goes in CYRUS_PASSWORD}"
  [ "$(id -u)" = 0 ] || { echo "cyrus.sh start: needs root (Cyrus drops to the cyrus user)" >&2; exit 1; }
  dir=$(cd "$dir" && pwd)
  mkdir -p "$dir"/{conf,spool,proc,lock,socket,sieve}
  cat > "$dir/imapd.conf" <<EOF
configdirectory: $dir/conf
defaultpartition: default
partition-default: $dir/spool
proc_path: $dir/proc
mboxname_lockpath: $dir/lock
sievedir: $dir/sieve
lmtpsocket: $dir/socket/lmtp
idlesocket: $dir/socket/idle
notifysocket: $dir/socket/notify
servername: localhost
admins: cyrus
altnamespace: no
unixhierarchysep: no
autocreate_quota: 0
httpmodules: carddav
httpallowcompress: no
allowplaintext: yes
sasl_pwcheck_method: auxprop
sasl_auxprop_plugin: sasldb
sasl_sasldb_path: $dir/sasldb2
sasl_mech_list: PLAIN
syslog_prefix: cyrus-test
EOF
  cat > "$dir/cyrus.conf" <<EOF
START {
  recover cmd="$BIN/ctl_cyrusdb -C $dir/imapd.conf -r"
}
SERVICES {
  imap cmd="$BIN/imapd -C $dir/imapd.conf" listen="127.0.0.1:$imap" prefork=0 maxchild=10
  http cmd="$BIN/httpd -C $dir/imapd.conf" listen="127.0.0.1:$http" prefork=1 maxchild=20
}
EVENTS {
}
EOF
  for u in "${users[@]}"; do
    printf '%s' "$CYRUS_PASSWORD" | saslpasswd2 -p -c -f "$dir/sasldb2" -u localhost "$u"
  done
  # The folder a tempdir makes is root's alone; the services run as cyrus.
  chmod 755 "$dir"
  chown -R cyrus:mail "$dir"
  /usr/sbin/cyrmaster -C "$dir/imapd.conf" -M "$dir/cyrus.conf" -p "$dir/master.pid" -d
  local i
  for i in $(seq 200); do
    if curl -s -o /dev/null "http://127.0.0.1:$http/"; then break; fi
    [ "$i" = 200 ] && { echo "cyrus.sh: httpd did not answer on 127.0.0.1:$http" >&2; exit 1; }
    sleep 0.05
  done
  if [ -n "${CYRUS_OWNER_PID:-}" ]; then
    # Detached, its output nowhere: the caller reads this script's output to its end.
    nohup "$0" watch "$dir" "$CYRUS_OWNER_PID" </dev/null >/dev/null 2>&1 &
  fi
  for u in "${users[@]}"; do
    # The IMAP login creates the user's INBOX (autocreate); the DAV request the book.
    curl -sS --fail -o /dev/null -u "$u:$CYRUS_PASSWORD" "imap://127.0.0.1:$imap/" -X 'LIST "" "*"'
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' -u "$u:$CYRUS_PASSWORD" -X PROPFIND -H 'Depth: 0' \
      "http://127.0.0.1:$http/dav/addressbooks/user/$u/Default/")
    [ "$code" = 207 ] || { echo "cyrus.sh: $u's address book: PROPFIND answered $code" >&2; exit 1; }
  done
}

expire() {
  local dir
  dir=$(cd "$1" && pwd)
  runuser -u cyrus -- "$BIN/cyr_expire" -C "$dir/imapd.conf" -E 0 -X 0 -D 0
}

watch() {
  local dir=$1 owner=$2
  while kill -0 "$owner" 2>/dev/null && [ -e "$dir/master.pid" ]; do sleep 1; done
  stop "$dir"
}

stop() {
  local dir=$1 pid i
  pid=$(cat "$dir/master.pid" 2>/dev/null) || return 0
  rm -f "$dir/master.pid"
  # Only the master of this instance (a pid file can outlive its process).
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "cyrmaster -C $dir/imapd.conf" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cmd=${1:-}
shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  expire) expire "$@" ;;
  stop) stop "$@" ;;
  watch) watch "$@" ;;
  *) echo "usage: $0 install | start DIR HTTP_PORT IMAP_PORT USER... | expire DIR | stop DIR" >&2; exit 2 ;;
esac
