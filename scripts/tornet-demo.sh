#!/usr/bin/env bash
# tornet-demo.sh -- a complete rdv rendezvous over a private Tor network, in one command.
#
# Steps, each timed:
#   1. network start   scripts/tornet.sh start: 3 authorities + relays on 127.0.0.1
#   2. onion reachable `rdv serve` as an arti onion service, until its own
#                      self-check reaches it through Tor
#   3. offer           `rdv offer --two-channel --kdf moderate` over arti
#   4. accept          `rdv accept` over arti (a separate arti state dir), and a
#                      check that the payload came back unchanged
# Everything lives in one temporary directory under ${TMPDIR:-/tmp}. On exit the
# script stops exactly what it started (the rdv server by its PID, the Tor
# network through `tornet.sh stop`), unless --keep is given.
set -euo pipefail

PROG=${0##*/}
SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
TORNET=$SCRIPT_DIR/tornet.sh
REACH_TIMEOUT=180     # seconds to wait for "onion service reachable:"
CLIENT_TIMEOUT=420    # seconds allowed for each of offer and accept

usage() {
    cat <<EOF
Usage: $PROG [--keep] [--base-port P] [--relays N] [--payload TEXT]

Bring up a private Tor network on 127.0.0.1, run an rdv server as an arti
onion service on it, offer a payload (two-channel mode, 'moderate' KDF) and
accept it again over Tor; check the payload and print the wall time of each
stage (network start, onion reachable, offer, accept).

Options:
  --keep          leave the network and the server running at the end and
                  print how to stop them (default: stop everything)
  --base-port P   first port of the private network (default 15000; it uses
                  P .. P+299 on 127.0.0.1)
  --relays N      relays besides the 3 authorities (default 4)
  --payload TEXT  the payload to offer (default: a made-up connection link)
  -h, --help      this text

Environment:
  RDV     the rdv binary (default: target/release/rdv, which is built or
          brought up to date with 'cargo build --release' first; relative
          paths are taken from the current directory if they exist there,
          else from the repository root).
  TMPDIR  where the temporary directory is created (default /tmp).

Needs Debian's tor and tor-gencert (see scripts/tornet.sh --help).
Example:
  RDV=target/debug/rdv scripts/$PROG
EOF
}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

now_ms() { date +%s%3N; }
secs() { printf '%d.%01d s' $(($1 / 1000)) $((($1 % 1000) / 100)); }

# Print the last lines of a log file to stderr.
tail_log() {
    if [[ -s $1 ]]; then
        echo "----- last lines of $1 -----" >&2
        tail -n "${2:-20}" -- "$1" >&2
    fi
}

# ------------------------------------------------------------------ options --

KEEP=0
BASE_PORT=15000
RELAYS=4
PAYLOAD=
while (($#)); do
    case $1 in
        --keep) KEEP=1; shift ;;
        --base-port) BASE_PORT=${2:?--base-port needs a value}; shift 2 ;;
        --relays) RELAYS=${2:?--relays needs a value}; shift 2 ;;
        --payload) PAYLOAD=${2?--payload needs a value}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
done
[[ $BASE_PORT =~ ^[0-9]+$ ]] || die "bad --base-port $BASE_PORT"
[[ $RELAYS =~ ^[0-9]+$ ]] || die "bad --relays $RELAYS"
if [[ -z $PAYLOAD ]]; then
    PAYLOAD="smp://demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n').example/queue#demo-link"
fi
[[ $PAYLOAD != *$'\n'* ]] || die "the payload must be one line"

# ------------------------------------------------------------------ binary --

if [[ -z ${RDV:-} ]]; then
    # The default binary is (re)built so the demo never runs stale code; a no-op when up to date.
    log "building target/release/rdv ('cargo build --release'; several minutes the first time)"
    (cd -- "$REPO" && cargo build --release --bin rdv)
fi
RDV=${RDV:-target/release/rdv}
if [[ $RDV != /* ]]; then
    if [[ -e $RDV ]]; then RDV=$(realpath -- "$RDV"); else RDV=$REPO/$RDV; fi
fi
if [[ ! -x $RDV ]]; then
    log "$RDV not found: building it with 'cargo build --release' (several minutes)"
    (cd -- "$REPO" && cargo build --release)
    [[ -x $RDV ]] || die "$RDV still does not exist after 'cargo build --release' (set RDV to the binary)"
fi
command -v timeout >/dev/null || die "'timeout' (coreutils) not found"

# --------------------------------------------------------- state and cleanup --

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rdv-tornet-demo.XXXXXX")
NET=$WORK/tornet
SERVER_PID=
NET_STARTED=0
SUCCESS=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((KEEP)); then
        echo
        echo "Left running (--keep):"
        [[ -n $SERVER_PID ]] && echo "  rdv server  pid $SERVER_PID (stdout $WORK/serve.out, log $WORK/serve.log)"
        ((NET_STARTED)) && echo "  Tor network $NET"
        echo "Stop them with:"
        [[ -n $SERVER_PID ]] && echo "  kill $SERVER_PID"
        ((NET_STARTED)) && echo "  $TORNET stop $NET"
        echo "  rm -rf $WORK"
        exit "$rc"
    fi
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        log "stopping the rdv server (pid $SERVER_PID)"
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 100; i++)); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            log "the rdv server ignored TERM; sending KILL"
            kill -KILL "$SERVER_PID" 2>/dev/null || true
        fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if ((NET_STARTED)); then
        "$TORNET" stop "$NET" || log "stopping the Tor network failed; see $NET"
    fi
    if ((SUCCESS)); then
        rm -rf -- "$WORK"
    else
        log "logs kept in $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

log "working directory $WORK"
log "rdv binary $RDV"

# ------------------------------------------------------- 1. network start --

t0=$(now_ms)
log "1/4 starting the private Tor network (base port $BASE_PORT, $RELAYS relays)"
NET_STARTED=1   # tornet.sh cleans up after a failed start; stop is idempotent
"$TORNET" start "$NET" --base-port "$BASE_PORT" --relays "$RELAYS" >/dev/null
ARTI_TOML=$NET/arti.toml
[[ -s $ARTI_TOML ]] || die "$ARTI_TOML missing after tornet.sh start"
t1=$(now_ms)
T_NET=$((t1 - t0))
log "network up after $(secs "$T_NET")"

# ----------------------------------------------------- 2. onion reachable --

log "2/4 starting rdv serve as an onion service (log: $WORK/serve.log)"
"$RDV" serve --data "$WORK/srv" --tor-config "$ARTI_TOML" \
    </dev/null >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER_PID=$!

ONION=
deadline=$(($(date +%s) + REACH_TIMEOUT))
while :; do
    line=$(grep -m1 '^onion service reachable: ' "$WORK/serve.out" || true)
    if [[ -n $line ]]; then
        ONION=$(awk '{print $4}' <<<"$line")
        break
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        tail_log "$WORK/serve.out"
        tail_log "$WORK/serve.log"
        die "rdv serve exited before its onion service became reachable"
    fi
    if (($(date +%s) >= deadline)); then
        tail_log "$WORK/serve.out"
        tail_log "$WORK/serve.log"
        die "the onion service was not reachable within $REACH_TIMEOUT s"
    fi
    sleep 0.5
done
[[ $ONION =~ ^[a-z2-7]{56}\.onion:[0-9]+$ ]] || die "unexpected server output: $line"
t2=$(now_ms)
T_ONION=$((t2 - t1))
log "$line; $(secs "$T_ONION") after launching rdv serve"

# ---------------------------------------------------------------- 3. offer --

log "3/4 rdv offer --two-channel --kdf moderate (log: $WORK/offer.log)"
if ! timeout "$CLIENT_TIMEOUT" "$RDV" offer --server "$ONION" --payload "$PAYLOAD" \
    --two-channel --kdf moderate --tor-config "$ARTI_TOML" --tor-dir "$WORK/offerer" \
    </dev/null >"$WORK/offer.out" 2>"$WORK/offer.log"; then
    tail_log "$WORK/offer.log"
    die "rdv offer failed"
fi
LINK=$(sed -n 's/^link: //p' "$WORK/offer.out")
PASS=$(sed -n 's/^passphrase: //p' "$WORK/offer.out")
[[ $LINK == rdv1:* ]] || die "no 'link: rdv1:...' line in the offer's output"
[[ -n $PASS ]] || die "no 'passphrase: ' line in the offer's output"
[[ $LINK != *'&p='* ]] || die "two-channel link unexpectedly carries the passphrase"
t3=$(now_ms)
T_OFFER=$((t3 - t2))
log "offered after $(secs "$T_OFFER")"
echo "link:       $LINK"
echo "passphrase: $PASS"

# --------------------------------------------------------------- 4. accept --

log "4/4 rdv accept (separate arti state; log: $WORK/accept.log)"
if ! timeout "$CLIENT_TIMEOUT" "$RDV" accept "$LINK" --passphrase "$PASS" \
    --tor-config "$ARTI_TOML" --tor-dir "$WORK/accepter" \
    </dev/null >"$WORK/accept.out" 2>"$WORK/accept.log"; then
    tail_log "$WORK/accept.log"
    die "rdv accept failed"
fi
GOT=$(cat -- "$WORK/accept.out")
t4=$(now_ms)
T_ACCEPT=$((t4 - t3))
if [[ $GOT != "$PAYLOAD" ]]; then
    log "offered:  $PAYLOAD"
    log "accepted: $GOT"
    die "the accepted payload differs from the offered one"
fi
echo "payload:    $GOT (identical to the offered one)"

# --------------------------------------------------------------- summary --

echo
echo "wall times:"
printf '  %-18s %s\n' "network start" "$(secs "$T_NET")" \
    "onion reachable" "$(secs "$T_ONION")" \
    "offer" "$(secs "$T_OFFER")" \
    "accept" "$(secs "$T_ACCEPT")" \
    "total" "$(secs $((t4 - t0)))"
SUCCESS=1
