#!/usr/bin/env bash
# Runs the libFuzzer target over Outcall's parsers for N seconds (default 60).
# cargo-fuzz needs nightly features; the stable toolchain provides them with RUSTC_BOOTSTRAP.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT/fuzz"
secs="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/parse_untrusted
# Seed corpus: real Reason headers and an SDP answer.
printf 'Q.850;cause=17;text="User busy"' > corpus/parse_untrusted/reason
printf 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n' > corpus/parse_untrusted/sdp
cargo fuzz run parse_untrusted corpus/parse_untrusted -- -max_total_time="$secs" -max_len=4096 -rss_limit_mb=2048
