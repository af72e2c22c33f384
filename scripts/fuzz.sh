#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 60), starting from the committed seeds.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs cargo-fuzz (cargo install cargo-fuzz); runs on the stable toolchain via RUSTC_BOOTSTRAP=1.
# New corpus entries go to fuzz/corpus/TARGET (not committed); crashes to fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(request_frame response_frame link_parse sealed_open store_model server_stream agent_request pending_text)
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    log=$(mktemp)
    if ! cargo fuzz run -s none "$t" "${dirs[@]}" -- -max_total_time="$secs" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $t FAILED (see fuzz/artifacts/$t)" >&2
        rm -f "$log"
        exit 1
    fi
    echo "fuzz $t: $(grep -E 'DONE' "$log" | tail -n 1)"
    rm -f "$log"
done
