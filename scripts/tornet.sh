#!/usr/bin/env bash
# tornet.sh -- build and run a private Tor network on 127.0.0.1.
#
# The network has 3 directory authorities (which are also relays) plus N
# ordinary relays (default 4), all C tor, all on loopback, all state under one
# directory.  It is meant for testing rdv (which reaches the network through
# arti) without the public Tor network: `start` also writes an arti.toml that
# points arti-client 0.47 at this network.
#
# Subcommands (see usage() below):
#   start   generate fresh keys, write torrcs + arti.toml + env, launch, and
#           wait until the consensus lists every relay with Guard and HSDir
#   stop    kill exactly the processes recorded in DIR/pids
#   hs      run a C tor onion service that forwards to a local port
#   client  run a C tor client with a SOCKS port on 127.0.0.1
#   ob-key  create an Onionbalance front key (its .onion address is the front address)
#   ob      publish backend onion services under the front address with Onionbalance
#   stop-relays  stop the authorities and relays only (an outage)
#   status  show recorded processes and the latest consensus
#
# Design notes (measured on a private network like this one; figures in BENCHMARKS.md):
# * Every key is generated before anything starts (tor-gencert for the
#   authority keys, `tor --list-fingerprint` for relay identities), so all
#   DirAuthority lines and arti's fallback list can be written up front.
# * Processes run in the foreground (RunAsDaemon 0) in the background of this
#   script, so `$!` is the real tor PID.  Their stdin/stdout/stderr are
#   redirected to files: a caller doing `onion=$(tornet.sh hs ...)` must not
#   be kept waiting by a tor process holding its pipe open.
# * `stop` only ever signals PIDs listed in DIR/pids whose command line is a
#   tor started with a file under DIR, or Onionbalance running in a directory
#   under DIR (guards against PID reuse).
# * Onionbalance runs with --is-testnet, which hard-codes a 20 s voting
#   interval: keep V3AuthVotingInterval at 20 below, or its blinded keys and
#   HSDir choices stop matching tor's.
#
# Port layout, relative to the base port P (default 15000):
#   P+0   .. P+2      authority ORPorts
#   P+10  .. P+10+N-1 relay ORPorts
#   P+100 .. P+102    authority DirPorts
#   P+200 ..          default SOCKS ports for `client`
set -euo pipefail

PROG=${0##*/}
TOR_BIN=${TOR_BIN:-$(command -v tor || echo /usr/sbin/tor)}
GENCERT_BIN=${TOR_GENCERT_BIN:-$(command -v tor-gencert || echo /usr/bin/tor-gencert)}
MARKER=.tornet-marker        # presence of this file means "DIR is ours, may be wiped"
NUM_AUTHS=3

usage() {
    cat <<EOF
Usage:
  $PROG start DIR [--base-port P] [--relays N] [--timeout SECS]
      Create DIR (must be empty, absent, or a previous tornet directory, which
      is stopped and wiped), generate fresh keys for $NUM_AUTHS authorities and N relays
      (default 4), start them and wait (default 120 s) until the consensus
      lists every relay with the Guard and HSDir flags.  Writes DIR/arti.toml
      (arti-client config for this network), DIR/env (shell-sourceable
      variables) and DIR/pids.  Prints the path of DIR/env on stdout.
      Default base port: 15000 (uses P .. P+299, 127.0.0.1 only).
  $PROG stop DIR
      Stop every process recorded in DIR/pids (TERM, then KILL after 10 s).
      Idempotent.
  $PROG hs DIR NAME TARGET_PORT [VIRTUAL_PORT] [--ob-master FRONT.onion]
      Start a C tor onion service (state in DIR/hs-NAME, keys in
      DIR/hs-NAME/hs, kept across restarts) forwarding VIRTUAL_PORT
      (default TARGET_PORT) to 127.0.0.1:TARGET_PORT.  Prints the .onion
      hostname once it exists (timeout 60 s).  With --ob-master, it is an
      Onionbalance instance (backend) of that front address.
  $PROG ob-key DIR NAME
      Create the key of an Onionbalance front (DIR/ob-NAME/key, kept) and
      print its .onion address.  Needs onionbalance-config (from
      scripts/onionbalance-install.sh; ONIONBALANCE_BIN names its directory).
  $PROG ob DIR NAME CONTROL_PORT BACKEND...
      Start a C tor with a control port on 127.0.0.1:CONTROL_PORT and
      Onionbalance (--is-testnet) publishing the backends (names given to
      'hs ... --ob-master') under ob-NAME's front address.  Waits until
      Onionbalance has uploaded a front descriptor (timeout 180 s) and prints
      the front .onion address.
  $PROG client DIR NAME [SOCKS_PORT] [--control-port PORT]
      Start a C tor client (state in DIR/client-NAME) with a SOCKS port on
      127.0.0.1 (default: P+200+k) and, if asked, an unauthenticated control
      port on 127.0.0.1:PORT.  Waits for "Bootstrapped 100%" (timeout 60 s)
      and prints 127.0.0.1:SOCKS_PORT.
  $PROG stop-relays DIR
      Stop the authorities and relays only; clients and onion services keep
      running (an outage, as they see it).
  $PROG status DIR
      Show whether each recorded process is alive and what the latest
      consensus (as seen by auth0) lists.
  $PROG --help

Environment: TOR_BIN, TOR_GENCERT_BIN override the tor / tor-gencert paths;
ONIONBALANCE_BIN the directory of onionbalance and onionbalance-config.
Example:
  $PROG start /tmp/tornet && . /tmp/tornet/env
  onion=\$($PROG hs /tmp/tornet web 8080 80)
  $PROG client /tmp/tornet c1 15200
  curl --socks5-hostname 127.0.0.1:15200 http://\$onion/
  $PROG stop /tmp/tornet
EOF
}

# ---------------------------------------------------------------- helpers --

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Milliseconds since the epoch, and a formatter for durations in ms.
now_ms() { date +%s%3N; }
fmt_ms() { printf '%d.%01ds' $(($1 / 1000)) $((($1 % 1000) / 100)); }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
check_port() { is_uint "$1" && (($1 >= 1 && $1 <= 65535)) || die "bad port: $1"; }
check_name() { [[ $1 =~ ^[A-Za-z0-9_-]{1,32}$ ]] || die "bad NAME '$1' (use [A-Za-z0-9_-], max 32)"; }

# Absolute path of $1 (which may not exist yet).
abspath() { realpath -m -- "$1"; }

# True if something accepts TCP connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True if PID $1 exists and is not a zombie.
pid_alive() {
    local state
    [[ -r /proc/$1/stat ]] || return 1
    # Field 3 of /proc/PID/stat is the state; the command name (field 2) is
    # parenthesised and may contain spaces, so cut after the last ')'.
    state=$(sed -e 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [[ -n $state && $state != Z ]]
}

# True if PID $1 is a tor process that we started for directory $2: its
# argv[0] ends in "tor" and its arguments name a torrc under $2.  This protects
# against signalling an unrelated process that reused a recorded PID.
pid_is_our_tor() {
    local -a args=()
    local a
    mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
    ((${#args[@]} > 0)) || return 1
    # Onionbalance rewrites its command line to "onionbalance" (setproctitle): recognise it by
    # that and by its working directory, which `ob` sets inside DIR.
    if [[ ${args[0]##*/} == onionbalance* || ${args[1]:-} == */onionbalance ]]; then
        local cwd
        cwd=$(readlink "/proc/$1/cwd" 2>/dev/null) || return 1
        [[ $cwd == "$2/"* ]]
        return
    fi
    ((${#args[@]} > 1)) || return 1
    [[ ${args[0]##*/} == *tor* ]] || return 1
    for a in "${args[@]:1}"; do
        if [[ $a == "$2/"* ]]; then return 0; fi
    done
    return 1
}

# Require DIR to be a tornet directory; sets DIR to its absolute path and
# sources DIR/env (for TORNET_BASE_PORT etc.).
load_dir() {
    DIR=$(abspath "$1")
    [[ -f $DIR/$MARKER ]] || die "$DIR is not a tornet directory (no $MARKER)"
    [[ -f $DIR/env ]] || die "$DIR/env missing (was 'start' interrupted?)"
    # shellcheck disable=SC1091
    . "$DIR/env"
}

# Append "PID NAME" to DIR/pids.
record_pid() { echo "$1 $2" >>"$DIR/pids"; }

# Launch tor with torrc $1, logging its stdout/stderr to $2; sets LAUNCHED_PID.
# An empty defaults file keeps /etc/tor/torrc-defaults out of the picture.
launch_tor() {
    "$TOR_BIN" --defaults-torrc "$DIR/empty.torrc" -f "$1" </dev/null >"$2" 2>&1 &
    LAUNCHED_PID=$!
}

# Print the last lines of a node's notice.log (used when something fails).
show_log_tail() {
    local f=$1/notice.log
    if [[ -f $f ]]; then
        echo "----- tail of $f -----" >&2
        tail -n 15 "$f" >&2
    elif [[ -f $1/stdout.log ]]; then
        echo "----- tail of $1/stdout.log -----" >&2
        tail -n 15 "$1/stdout.log" >&2
    fi
}

# Lines shared by every torrc: the network definition.
common_torrc() {
    cat <<EOF
TestingTorNetwork 1
AssumeReachable 1
PathsNeededToBuildCircuits 0.67
RunAsDaemon 0
SafeLogging 0
ControlPort 0
EOF
    cat "$DIR/dirauth.torrc"
}

# Copy auth0's directory documents into a new client's data dir $1, so it
# does not wait on directory caches that have not fetched the consensus yet.
seed_directory_cache() {
    local f
    for f in cached-certs cached-microdesc-consensus cached-microdescs cached-microdescs.new; do
        if [[ -f $DIR/auth0/$f ]]; then cp -- "$DIR/auth0/$f" "$1/$f"; fi
    done
}

# Refuse to start a second process for the same hs/client NAME.
check_not_running() {
    local pid name
    [[ -f $DIR/pids ]] || return 0
    while read -r pid name; do
        if [[ $name == "$1" ]] && pid_alive "$pid" && pid_is_our_tor "$pid" "$DIR"; then
            die "$1 is already running (pid $pid)"
        fi
    done <"$DIR/pids"
}

# Summarise a consensus file: "<relays> <relays with Guard and HSDir>".
consensus_counts() {
    awk '/^r /{r++}
         /^s /{g = 0; h = 0
               for (i = 2; i <= NF; i++) { if ($i == "Guard") g = 1; if ($i == "HSDir") h = 1 }
               if (g && h) ok++}
         END {print r + 0, ok + 0}' "$1"
}

# The consensus auth0 holds (microdesc flavour is what clients use).
auth0_consensus() {
    local f
    for f in "$DIR/auth0/cached-microdesc-consensus" "$DIR/auth0/cached-consensus"; do
        if [[ -s $f ]]; then echo "$f"; return 0; fi
    done
    return 1
}

# ------------------------------------------------------------------- stop --

# Stop every recorded process of $DIR (absolute).  TERM, wait up to 10 s,
# then KILL.  Never touches a PID that is not one of our tor processes.
stop_recorded() {
    local pidfile=$DIR/pids pid name only=${1:-}
    local -a victims=()
    [[ -f $pidfile ]] || return 0
    while read -r pid name; do
        is_uint "${pid:-x}" || continue
        [[ -z $only || $name =~ $only ]] || continue
        if pid_alive "$pid"; then
            if pid_is_our_tor "$pid" "$DIR"; then
                log "stopping $name (pid $pid)"
                kill -TERM "$pid" 2>/dev/null || true
                victims+=("$pid")
            else
                log "pid $pid ($name) is no longer our tor; not touching it"
            fi
        fi
    done <"$pidfile"

    local deadline=$(($(date +%s) + 10)) remaining
    while :; do
        remaining=()
        for pid in "${victims[@]}"; do
            # Our own children (when called from `start`) become zombies
            # until reaped; pid_alive treats zombies as dead.
            if pid_alive "$pid"; then remaining+=("$pid"); fi
        done
        ((${#remaining[@]} == 0)) && break
        if (($(date +%s) >= deadline)); then
            for pid in "${remaining[@]}"; do
                if pid_is_our_tor "$pid" "$DIR"; then
                    log "pid $pid ignored TERM; sending KILL"
                    kill -KILL "$pid" 2>/dev/null || true
                fi
            done
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    # Reap any children of this shell (only relevant inside `start`).
    wait 2>/dev/null || true
    # What was stopped is gone: forget it, so a later `stop` is a no-op; keep the others.
    if [[ -n $only ]]; then
        local keep
        keep=$(while read -r pid name; do [[ $name =~ $only ]] || echo "$pid $name"; done <"$pidfile")
        printf '%s\n' "$keep" | sed '/^$/d' >"$pidfile"
    else
        : >"$pidfile"
    fi
}

cmd_stop() {
    (($# == 1)) || die "usage: $PROG stop DIR"
    DIR=$(abspath "$1")
    if [[ ! -e $DIR ]]; then log "$DIR does not exist; nothing to stop"; return 0; fi
    [[ -f $DIR/$MARKER ]] || die "$DIR is not a tornet directory (no $MARKER)"
    stop_recorded
    log "stopped"
}

# Stop the network itself (authorities and relays), leaving clients and onion
# services running: what an outage looks like to them.
cmd_stop_relays() {
    (($# == 1)) || die "usage: $PROG stop-relays DIR"
    DIR=$(abspath "$1")
    [[ -f $DIR/$MARKER ]] || die "$DIR is not a tornet directory (no $MARKER)"
    stop_recorded '^(auth|relay)[0-9]+$'
    log "authorities and relays stopped"
}

# ------------------------------------------------------------------ start --

# Generate keys for node $1 (data dir $DIR/$1, ORPort $2, DirPort $3 for
# authorities, empty for relays).  Runs in the background during `start`.
keygen_node() {
    local name=$1 orport=$2 dirport=$3 d=$DIR/$1
    {
        if [[ -n $dirport ]]; then
            # Authority v3 identity + signing key + certificate, 12 months.
            # --passphrase-fd 0 with an empty line: no passphrase, no prompt.
            mkdir -m 700 -p "$d/keys"
            (cd "$d/keys" && echo "" | "$GENCERT_BIN" --create-identity-key \
                --passphrase-fd 0 -m 12 -a "127.0.0.1:$dirport" \
                -i authority_identity_key -s authority_signing_key \
                -c authority_certificate)
        fi
        # Relay identity keys; writes $d/fingerprint and $d/fingerprint-ed25519.
        "$TOR_BIN" --defaults-torrc "$DIR/empty.torrc" -f "$DIR/empty.torrc" \
            --list-fingerprint --DataDirectory "$d" --ORPort "127.0.0.1:$orport" \
            --Nickname "$name" --ContactInfo tornet --ExitRelay 0 --Log "warn stderr"
    } >"$d/keygen.log" 2>&1
}

cmd_start() {
    local base=15000 relays=4 timeout=120
    [[ $# -ge 1 ]] || die "usage: $PROG start DIR [--base-port P] [--relays N] [--timeout SECS]"
    local dir_arg=$1; shift
    while (($#)); do
        case $1 in
            --base-port) base=${2:?--base-port needs a value}; shift 2 ;;
            --relays)    relays=${2:?--relays needs a value}; shift 2 ;;
            --timeout)   timeout=${2:?--timeout needs a value}; shift 2 ;;
            *) die "unknown option for start: $1" ;;
        esac
    done
    is_uint "$base" && ((base >= 1024 && base <= 65535 - 300)) || die "bad --base-port $base"
    is_uint "$relays" && ((relays <= 90)) || die "bad --relays $relays (0..90)"
    is_uint "$timeout" && ((timeout > 0)) || die "bad --timeout $timeout"
    command -v "$TOR_BIN" >/dev/null || die "tor not found ($TOR_BIN)"
    command -v "$GENCERT_BIN" >/dev/null || die "tor-gencert not found ($GENCERT_BIN)"

    DIR=$(abspath "$dir_arg")
    [[ $DIR != / ]] || die "refusing to use /"

    # --- prepare the directory: absent, empty, or a previous tornet dir.
    if [[ -e $DIR ]]; then
        [[ -d $DIR ]] || die "$DIR exists and is not a directory"
        if [[ -f $DIR/$MARKER ]]; then
            log "wiping previous tornet directory $DIR"
            stop_recorded
            rm -rf -- "$DIR"
        elif [[ -n $(ls -A -- "$DIR") ]]; then
            die "$DIR is not empty and not a tornet directory"
        fi
    fi
    mkdir -p -m 700 -- "$DIR"
    echo "tornet directory; created $(date -u +%FT%TZ); base-port $base; relays $relays" >"$DIR/$MARKER"
    : >"$DIR/pids"
    : >"$DIR/empty.torrc"

    # --- node names and ports.
    local -a nodes=() orports=() dirports=()
    local i
    for ((i = 0; i < NUM_AUTHS; i++)); do
        nodes+=("auth$i"); orports+=($((base + i))); dirports+=($((base + 100 + i)))
    done
    for ((i = 0; i < relays; i++)); do
        nodes+=("relay$i"); orports+=($((base + 10 + i))); dirports+=("")
    done
    local total=${#nodes[@]}

    local p
    for p in "${orports[@]}" "${dirports[@]}"; do
        [[ -z $p ]] && continue
        if port_in_use "$p"; then die "port 127.0.0.1:$p is already in use (try --base-port)"; fi
    done

    # From here on, anything that goes wrong stops what we started.
    trap 'log "start failed or interrupted; stopping"; stop_recorded; exit 1' INT TERM
    trap 'rc=$?; if ((rc != 0)); then stop_recorded; fi' EXIT

    # --- keys, in parallel (tor-gencert takes ~1 s, list-fingerprint ~0.2 s).
    local t0 t1 t2
    t0=$(now_ms)
    local -a kpids=()
    for ((i = 0; i < total; i++)); do
        mkdir -m 700 -p "$DIR/${nodes[i]}"
        keygen_node "${nodes[i]}" "${orports[i]}" "${dirports[i]}" &
        kpids+=($!)
    done
    for ((i = 0; i < total; i++)); do
        if ! wait "${kpids[i]}"; then
            cat "$DIR/${nodes[i]}/keygen.log" >&2
            die "key generation failed for ${nodes[i]}"
        fi
    done

    # --- read identities.
    local -a rsa=() ed=() v3=()
    for ((i = 0; i < total; i++)); do
        local d=$DIR/${nodes[i]}
        [[ -s $d/fingerprint && -s $d/fingerprint-ed25519 ]] ||
            { cat "$d/keygen.log" >&2; die "no fingerprint for ${nodes[i]}"; }
        # Files are "Nickname FINGERPRINT"; strip any spaces inside the hex.
        rsa+=("$(cut -d' ' -f2- "$d/fingerprint" | tr -d ' \n')")
        ed+=("$(cut -d' ' -f2- "$d/fingerprint-ed25519" | tr -d ' \n')")
        if ((i < NUM_AUTHS)); then
            v3+=("$(awk '$1 == "fingerprint" {print $2}' "$d/keys/authority_certificate")")
            [[ ${v3[i]} =~ ^[0-9A-F]{40}$ ]] || die "bad v3ident for ${nodes[i]}"
        fi
        [[ ${rsa[i]} =~ ^[0-9A-F]{40}$ ]] || die "bad RSA fingerprint for ${nodes[i]}: ${rsa[i]}"
        [[ ${ed[i]} =~ ^[A-Za-z0-9+/]{43}$ ]] || die "bad ed25519 id for ${nodes[i]}: ${ed[i]}"
    done
    t1=$(now_ms)
    log "key generation: $(fmt_ms $((t1 - t0)))"

    # --- the network definition, shared by every torrc.
    for ((i = 0; i < NUM_AUTHS; i++)); do
        echo "DirAuthority ${nodes[i]} orport=${orports[i]} no-v2 v3ident=${v3[i]} 127.0.0.1:${dirports[i]} ${rsa[i]}"
    done >"$DIR/dirauth.torrc"

    # --- torrc for every relay (authorities get extra lines).
    for ((i = 0; i < total; i++)); do
        local d=$DIR/${nodes[i]}
        {
            echo "# generated by $PROG for node ${nodes[i]}"
            common_torrc
            cat <<EOF
DataDirectory $d
Nickname ${nodes[i]}
ContactInfo tornet-${nodes[i]}@localhost
Log notice file $d/notice.log
Address 127.0.0.1
ORPort 127.0.0.1:${orports[i]}
SocksPort 0
ExitRelay 0
ExitPolicy reject *:*
ShutdownWaitLength 0
EOF
            if ((i < NUM_AUTHS)); then
                cat <<EOF
DirPort 127.0.0.1:${dirports[i]}
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
# All relays share 127.0.0.1; the default would list only 2 per address.
AuthDirMaxServersPerAddr 0
# A young network never earns these flags; hand them out.
TestingDirAuthVoteGuard *
TestingDirAuthVoteHSDir *
# Fast voting.  (A 5 s initial interval with 4+4 s delays lost consensuses.)
TestingV3AuthInitialVotingInterval 10
TestingV3AuthInitialVoteDelay 2
TestingV3AuthInitialDistDelay 2
V3AuthVotingInterval 20
V3AuthVoteDelay 4
V3AuthDistDelay 4
V3AuthNIntervalsValid 2
# C tor's onion time period here is 24 x voting interval = 480 s = 8 min;
# arti reads hsdir_interval (minutes) from the consensus: keep them equal.
ConsensusParams hsdir_interval=8
EOF
            fi
        } >"$d/torrc"
    done

    # --- arti.toml (arti-client 0.47).  uploads/downloads/votes are one list
    # of socket addresses per authority (Vec<Vec<SocketAddr>>); if left out
    # they default to the public authorities.  Every relay is a fallback.
    {
        echo "# arti-client 0.47 configuration for the private Tor network in $DIR"
        echo "# generated by $PROG; storage dirs deliberately not set here."
        echo
        echo "[tor_network]"
        echo "fallback_caches = ["
        for ((i = 0; i < total; i++)); do
            echo "    { rsa_identity = \"${rsa[i]}\", ed_identity = \"${ed[i]}\", orports = [\"127.0.0.1:${orports[i]}\"] },"
        done
        echo "]"
        echo
        echo "[tor_network.authorities]"
        local q='' a
        for a in "${v3[@]}"; do q+="${q:+, }\"$a\""; done
        echo "v3idents = [$q]"
        q=''
        for ((i = 0; i < NUM_AUTHS; i++)); do q+="${q:+, }[\"127.0.0.1:${dirports[i]}\"]"; done
        echo "uploads = [$q]"
        echo "downloads = [$q]"
        echo "votes = [$q]"
        cat <<'EOF'

[override_net_params]
# Onion-service time period in minutes; must match C tor's 24 x 20 s.
hsdir_interval = 8
# On loopback arti learns circuit-build timeouts of 50-70 ms and keeps them in
# its state directory; under CPU load it then gives up onion-service circuits
# (lost rendezvous, failed self-probes). A 2 s floor fixes it.
cbtmintimeout = 2000

[path_rules]
# All relays share 127.0.0.1: disable "same subnet => same family".
ipv4_subnet_family_prefix = 33
ipv6_subnet_family_prefix = 129

[address_filter]
allow_local_addrs = true
EOF
    } >"$DIR/arti.toml"

    # --- env: shell-sourceable description of the network.
    {
        echo "# generated by $PROG; source this file"
        printf 'export TORNET_DIR=%q\n' "$DIR"
        printf 'export TORNET_BASE_PORT=%q\n' "$base"
        printf 'export TORNET_ARTI_TOML=%q\n' "$DIR/arti.toml"
        printf 'export TORNET_AUTH0_DATADIR=%q\n' "$DIR/auth0"
        printf 'export TORNET_NODES=%q\n' "${nodes[*]}"
        for ((i = 0; i < total; i++)); do
            local up=${nodes[i]^^}
            printf 'export TORNET_%s_DATADIR=%q TORNET_%s_ORPORT=%q TORNET_%s_RSA=%q TORNET_%s_ED=%q\n' \
                "$up" "$DIR/${nodes[i]}" "$up" "${orports[i]}" "$up" "${rsa[i]}" "$up" "${ed[i]}"
            if ((i < NUM_AUTHS)); then
                printf 'export TORNET_%s_DIRPORT=%q TORNET_%s_V3IDENT=%q\n' \
                    "$up" "${dirports[i]}" "$up" "${v3[i]}"
            fi
        done
    } >"$DIR/env"

    # --- launch: authorities first, then relays.
    local -a tpids=()
    for ((i = 0; i < total; i++)); do
        local d=$DIR/${nodes[i]}
        launch_tor "$d/torrc" "$d/stdout.log"
        record_pid "$LAUNCHED_PID" "${nodes[i]}"
        tpids+=("$LAUNCHED_PID")
    done
    t2=$(now_ms)

    # --- wait for a consensus listing every relay with Guard and HSDir.
    local deadline=$(($(date +%s) + timeout)) counts="0 0" last="" f
    while :; do
        for ((i = 0; i < total; i++)); do
            if ! pid_alive "${tpids[i]}"; then
                show_log_tail "$DIR/${nodes[i]}"
                die "${nodes[i]} (pid ${tpids[i]}) exited during startup"
            fi
        done
        if f=$(auth0_consensus); then
            counts=$(consensus_counts "$f")
            if [[ $counts != "$last" ]]; then
                log "consensus: $counts (relays, with Guard+HSDir) of $total after $(fmt_ms $(($(now_ms) - t2)))"
                last=$counts
            fi
            [[ $counts == "$total $total" ]] && break
        fi
        if (($(date +%s) >= deadline)); then
            log "timeout after ${timeout}s waiting for a complete consensus (have: $counts)"
            for ((i = 0; i < total; i++)); do show_log_tail "$DIR/${nodes[i]}"; done
            exit 1   # EXIT trap stops everything
        fi
        sleep 0.5
    done
    local t3
    t3=$(now_ms)
    log "consensus complete: $(fmt_ms $((t3 - t2))) after launch, $(fmt_ms $((t3 - t0))) in total"
    trap - INT TERM EXIT
    echo "$DIR/env"
}

# --------------------------------------------------------------- hs/client --

cmd_hs() {
    local master=''
    if (($# >= 2)) && [[ ${*: -2:1} == --ob-master ]]; then
        master=${*: -1}
        set -- "${@:1:$#-2}"
        [[ $master =~ ^[a-z2-7]{56}\.onion$ ]] || die "--ob-master needs a v3 .onion address"
    fi
    (($# == 3 || $# == 4)) || die "usage: $PROG hs DIR NAME TARGET_PORT [VIRTUAL_PORT] [--ob-master FRONT.onion]"
    load_dir "$1"
    local name=$2 target=$3 vport=${4:-$3}
    check_name "$name"; check_port "$target"; check_port "$vport"
    check_not_running "hs-$name"
    local d=$DIR/hs-$name t0
    t0=$(now_ms)
    # Keep an existing hs/ (its keys give the same .onion address again).
    mkdir -p -m 700 "$d" "$d/hs"
    chmod 700 "$d" "$d/hs"
    seed_directory_cache "$d"
    {
        echo "# generated by $PROG for onion service $name"
        common_torrc
        cat <<EOF
DataDirectory $d
Log notice file $d/notice.log
SocksPort 0
HiddenServiceDir $d/hs
HiddenServicePort $vport 127.0.0.1:$target
EOF
        if [[ -n $master ]]; then
            echo "HiddenServiceOnionbalanceInstance 1"
        fi
    } >"$d/torrc"
    if [[ -n $master ]]; then
        echo "MasterOnionAddress $master" >"$d/hs/ob_config"
    else
        rm -f "$d/hs/ob_config"
    fi
    launch_tor "$d/torrc" "$d/stdout.log"
    local pid=$LAUNCHED_PID
    record_pid "$pid" "hs-$name"

    local deadline=$(($(date +%s) + 60))
    until [[ -s $d/hs/hostname ]]; do
        if ! pid_alive "$pid"; then show_log_tail "$d"; die "onion service $name exited"; fi
        (($(date +%s) < deadline)) || { show_log_tail "$d"; die "no hostname after 60 s"; }
        sleep 0.2
    done
    log "hs $name (pid $pid): hostname after $(fmt_ms $(($(now_ms) - t0))); port $vport -> 127.0.0.1:$target"
    cat "$d/hs/hostname"
}

cmd_client() {
    local control=''
    if (($# >= 2)) && [[ ${*: -2:1} == --control-port ]]; then
        control=${*: -1}
        set -- "${@:1:$#-2}"
        is_uint "$control" || die "--control-port needs a port number"
    fi
    (($# == 2 || $# == 3)) || die "usage: $PROG client DIR NAME [SOCKS_PORT] [--control-port PORT]"
    load_dir "$1"
    local name=$2 port=${3:-}
    check_name "$name"
    check_not_running "client-$name"
    if [[ -z $port ]]; then
        # First free slot at base+200.. (one per client directory).
        local k=0
        port=$((TORNET_BASE_PORT + 200))
        while port_in_use "$port"; do port=$((port + 1)); k=$((k + 1)); ((k < 100)) || die "no free SOCKS port"; done
    fi
    check_port "$port"
    port_in_use "$port" && die "port 127.0.0.1:$port is already in use"
    local d=$DIR/client-$name t0
    t0=$(now_ms)
    mkdir -p -m 700 "$d"
    chmod 700 "$d"
    seed_directory_cache "$d"
    {
        echo "# generated by $PROG for client $name"
        if [[ -n $control ]]; then
            # An unauthenticated control port on loopback, for tests that watch circuits.
            common_torrc | grep -v '^ControlPort 0$'
            echo "ControlPort 127.0.0.1:$control"
        else
            common_torrc
        fi
        cat <<EOF
DataDirectory $d
Log notice file $d/notice.log
Log info file $d/info.log
SocksPort 127.0.0.1:$port ExtendedErrors
EOF
    } >"$d/torrc"
    rm -f "$d/notice.log"   # so the bootstrap check below sees only this run
    launch_tor "$d/torrc" "$d/stdout.log"
    local pid=$LAUNCHED_PID
    record_pid "$pid" "client-$name"

    local deadline=$(($(date +%s) + 60))
    until grep -q 'Bootstrapped 100%' "$d/notice.log" 2>/dev/null; do
        if ! pid_alive "$pid"; then show_log_tail "$d"; die "client $name exited"; fi
        (($(date +%s) < deadline)) || { show_log_tail "$d"; die "client not bootstrapped after 60 s"; }
        sleep 0.2
    done
    log "client $name (pid $pid): bootstrapped after $(fmt_ms $(($(now_ms) - t0)))"
    echo "127.0.0.1:$port"
}

# ------------------------------------------------------------- onionbalance --

ob_bin() {
    local dir=${ONIONBALANCE_BIN:-}
    if [[ -z $dir ]]; then
        if command -v onionbalance >/dev/null 2>&1; then
            dir=$(dirname "$(command -v onionbalance)")
        else
            dir=${HOME:-/root}/.cache/rdv/onionbalance-0.2.4/bin
        fi
    fi
    [[ -x $dir/$1 ]] || die "$1 not found in $dir (run scripts/onionbalance-install.sh, or set ONIONBALANCE_BIN)"
    echo "$dir/$1"
}

cmd_ob_key() {
    (($# == 2)) || die "usage: $PROG ob-key DIR NAME"
    load_dir "$1"
    local name=$2
    check_name "$name"
    local d=$DIR/ob-$name
    mkdir -p -m 700 "$d"
    if [[ ! -s $d/address ]]; then
        local cfg tmp key addr
        cfg=$(ob_bin onionbalance-config)
        tmp=$(mktemp -d "$d/gen.XXXXXX")
        "$cfg" --no-interactive -n 1 --output "$tmp/out" >"$d/ob-config.log" 2>&1 ||
            { cat "$d/ob-config.log" >&2; die "onionbalance-config failed"; }
        key=$(find "$tmp/out" -maxdepth 1 -name '*.key' | head -n 1)
        [[ -n $key ]] || die "onionbalance-config wrote no key"
        addr=${key##*/}
        addr=${addr%.key}
        mv -- "$key" "$d/key"
        chmod 600 "$d/key"
        rm -rf -- "$tmp"
        echo "$addr.onion" >"$d/address"
    fi
    cat "$d/address"
}

cmd_ob() {
    (($# >= 4)) || die "usage: $PROG ob DIR NAME CONTROL_PORT BACKEND..."
    load_dir "$1"
    local name=$2 control=$3
    shift 3
    check_name "$name"; check_port "$control"
    local d=$DIR/ob-$name
    [[ -s $d/address && -s $d/key ]] || die "no front key for $name (run: $PROG ob-key DIR $name)"
    check_not_running "ob-$name"
    check_not_running "obtor-$name"
    port_in_use "$control" && die "port 127.0.0.1:$control is already in use"
    local ob master be host
    ob=$(ob_bin onionbalance)
    master=$(cat "$d/address")
    {
        echo "# generated by $PROG for Onionbalance front $name"
        echo "services:"
        echo "- key: $d/key"
        echo "  instances:"
        for be in "$@"; do
            check_name "$be"
            host=$DIR/hs-$be/hs/hostname
            [[ -s $host ]] || die "backend $be has no hostname (start it with: $PROG hs DIR $be PORT VPORT --ob-master $master)"
            grep -qx "MasterOnionAddress $master" "$DIR/hs-$be/hs/ob_config" 2>/dev/null ||
                die "backend $be is not an instance of $master (start it with --ob-master $master)"
            echo "  - address: $(sed 's/\.onion$//' "$host")"
            echo "    name: $be"
        done
    } >"$d/config.yaml"

    # Onionbalance's own tor: a client with an unauthenticated control port on loopback.
    local td=$DIR/obtor-$name t0
    t0=$(now_ms)
    mkdir -p -m 700 "$td"
    seed_directory_cache "$td"
    {
        echo "# generated by $PROG for Onionbalance front $name"
        common_torrc | grep -v '^ControlPort 0$'
        cat <<EOF
DataDirectory $td
Log notice file $td/notice.log
SocksPort 0
ControlPort 127.0.0.1:$control
CookieAuthentication 0
EOF
    } >"$td/torrc"
    rm -f "$td/notice.log"
    launch_tor "$td/torrc" "$td/stdout.log"
    local tpid=$LAUNCHED_PID
    record_pid "$tpid" "obtor-$name"
    local deadline=$(($(date +%s) + 60))
    until grep -q 'Bootstrapped 100%' "$td/notice.log" 2>/dev/null; do
        if ! pid_alive "$tpid"; then show_log_tail "$td"; die "Onionbalance's tor exited"; fi
        (($(date +%s) < deadline)) || { show_log_tail "$td"; die "Onionbalance's tor not bootstrapped after 60 s"; }
        sleep 0.2
    done

    # -s /nonexistent: never the system's control socket, only our port.
    (cd "$d" && exec "$ob" --is-testnet -i 127.0.0.1 -p "$control" -s /nonexistent \
        -c "$d/config.yaml" -v debug </dev/null >"$d/onionbalance.log" 2>&1) &
    local pid=$!
    record_pid "$pid" "ob-$name"
    deadline=$(($(date +%s) + 180))
    until grep -q 'Successfully uploaded descriptor' "$d/onionbalance.log" 2>/dev/null; do
        if ! pid_alive "$pid"; then tail -n 20 "$d/onionbalance.log" >&2; die "Onionbalance exited"; fi
        (($(date +%s) < deadline)) || { tail -n 20 "$d/onionbalance.log" >&2; die "Onionbalance uploaded no front descriptor after 180 s"; }
        sleep 0.5
    done
    log "ob $name (pid $pid): front descriptor uploaded after $(fmt_ms $(($(now_ms) - t0))); backends: $*"
    echo "$master"
}

# ----------------------------------------------------------------- status --

cmd_status() {
    (($# == 1)) || die "usage: $PROG status DIR"
    load_dir "$1"
    local pid name state
    if [[ -s $DIR/pids ]]; then
        while read -r pid name; do
            if pid_alive "$pid" && pid_is_our_tor "$pid" "$DIR"; then state=alive; else state=dead; fi
            printf '%-16s pid %-8s %s\n' "$name" "$pid" "$state"
        done <"$DIR/pids"
    else
        echo "no recorded processes"
    fi
    local f counts
    if f=$(auth0_consensus); then
        counts=$(consensus_counts "$f")
        printf 'consensus (%s): %s relays, %s with Guard+HSDir; %s\n' "${f##*/}" \
            "${counts% *}" "${counts#* }" "$(grep -m1 '^valid-after' "$f" || echo 'no valid-after')"
    else
        echo "no consensus yet in $DIR/auth0"
    fi
    local h
    for h in "$DIR"/hs-*/hs/hostname; do
        [[ -f $h ]] || continue
        local hd=${h%/hs/hostname}
        printf '%-16s %s\n' "${hd##*/}" "$(cat "$h")"
    done
}

# ------------------------------------------------------------------- main --

main() {
    (($#)) || { usage >&2; exit 2; }
    local cmd=$1; shift
    case $cmd in
        -h | --help | help) usage ;;
        start)  cmd_start "$@" ;;
        stop)   cmd_stop "$@" ;;
        hs)     cmd_hs "$@" ;;
        client) cmd_client "$@" ;;
        ob-key) cmd_ob_key "$@" ;;
        ob)     cmd_ob "$@" ;;
        stop-relays) cmd_stop_relays "$@" ;;
        status) cmd_status "$@" ;;
        *) usage >&2; exit 2 ;;
    esac
}

main "$@"
