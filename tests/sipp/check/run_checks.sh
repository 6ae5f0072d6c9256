#!/usr/bin/env bash
# Validate every Outcall carrier scenario (tests/sipp/uas_*.xml) by running it
# as a SIPp UAS on 127.0.0.1 and driving it with a SIPp UAC (check/*.xml.in)
# that behaves like the Outcall dialer, over UDP (-t u1) and TCP (-t t1).
#
#   tests/sipp/check/run_checks.sh            # all cases, both transports
#   TRANSPORTS=u1 tests/sipp/check/run_checks.sh
#   ONLY=dtmf tests/sipp/check/run_checks.sh  # cases whose name contains "dtmf"
#   KEEP=1 ...                                # keep the work dir (logs, pcaps)
#
# Ports: SIP 15060.. (UAS) / 15061.. (UAC), media 16000.. on 127.0.0.1 only.
# Every sipp run is bounded by timeout(1). Exit status 0 iff all cases pass.
set -u

HERE=$(cd "$(dirname "$0")" && pwd)
SCEN=$(dirname "$HERE")
TRANSPORTS=${TRANSPORTS:-"u1 t1"}
ONLY=${ONLY:-}
CASE_TIMEOUT=${CASE_TIMEOUT:-30}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/outcall-sipp-checks.XXXXXX")
IP=127.0.0.1

SIP_PORT=15060
MEDIA_PORT=16000
PASS=0
FAIL=0
FAILED=()

have_tshark=0
if command -v tshark >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    have_tshark=1
fi

cleanup() {
    if [ -z "${KEEP:-}" ] && [ "$FAIL" = 0 ]; then
        rm -rf "$WORK"
    else
        echo "work dir kept: $WORK"
    fi
}
trap cleanup EXIT

# uac TEMPLATE OUT KEY=VALUE... : instantiate a check UAC from its template.
uac() {
    local tpl=$1 out=$2
    shift 2
    local args=(-e "")
    local kv
    local k v
    for kv in "$@"; do
        k=${kv%%=*}
        v=${kv#*=}
        v=${v//\\/\\\\}
        v=${v//&/\\&}
        v=${v//#/\\#}
        args+=(-e "s#@${k}@#${v}#g")
    done
    sed "${args[@]}" "$HERE/$tpl" >"$out"
}

REASON_NONE='<ereg regexp="^Reason:" search_in="msg" check_it_inverse="true" assign_to="noreason"/>'
reason() { # reason REGEXP -> ereg action asserting the Reason header
    echo "<ereg regexp=\"$1\" search_in=\"hdr\" header=\"Reason:\" check_it=\"true\" assign_to=\"reason\"/>"
}

CAP_PID=""
capture_start() { # capture_start FILE FILTER
    CAP_PID=""
    [ "$have_tshark" = 1 ] || return 0
    timeout $((CASE_TIMEOUT + 5)) tshark -q -i lo -f "$2" -w "$1" >"$1.log" 2>&1 &
    CAP_PID=$!
    local i
    for i in $(seq 1 50); do
        grep -q "Capturing on" "$1.log" 2>/dev/null && return 0
        sleep 0.1
    done
}
capture_stop() {
    if [ -n "$CAP_PID" ]; then
        sleep 0.3
        kill -INT "$CAP_PID" 2>/dev/null
        wait "$CAP_PID" 2>/dev/null
        CAP_PID=""
    fi
}

# run_case NAME TRANSPORT UAS_XML "UAS_ARGS" UAC_XML SERVICE "UAC_ARGS" [CHECK_FN]
# Passes if both sipp processes exit 0 and CHECK_FN (if any) succeeds.
run_case() {
    local name=$1 tr=$2 uas_xml=$3 uas_args=$4 uac_xml=$5 service=$6 uac_args=$7 check_fn=${8:-}
    local label="$name [$tr]"
    if [ -n "$ONLY" ] && [[ "$name" != *"$ONLY"* ]]; then
        return 0
    fi
    local dir="$WORK/${name}_$tr"
    mkdir -p "$dir"
    local p_uas=$SIP_PORT p_uac=$((SIP_PORT + 1))
    local m_uas=$MEDIA_PORT m_uac=$((MEDIA_PORT + 10))
    SIP_PORT=$((SIP_PORT + 2))
    MEDIA_PORT=$((MEDIA_PORT + 20))
    CASE_DIR=$dir CASE_M_UAS=$m_uas CASE_M_UAC=$m_uac

    if [ -n "$check_fn" ]; then
        capture_start "$dir/media.pcap" "udp and (port $m_uas or port $m_uac or portrange $m_uas-$((m_uas + 9)))"
    fi

    # shellcheck disable=SC2086
    (cd "$dir" && exec timeout "$CASE_TIMEOUT" sipp -sf "$SCEN/$uas_xml" -i $IP -p "$p_uas" \
        -mp "$m_uas" -t "$tr" -m 1 -nostdin -trace_err -error_file "$dir/uas_errors.log" \
        $uas_args >"$dir/uas.out" 2>&1)&
    local uas_pid=$!
    sleep 0.4
    # shellcheck disable=SC2086
    (cd "$dir" && exec timeout "$CASE_TIMEOUT" sipp -sf "$uac_xml" -i $IP -p "$p_uac" \
        -mp "$m_uac" -mi $IP -t "$tr" -m 1 -nostdin -s "$service" -trace_err \
        -error_file "$dir/uac_errors.log" -trace_logs -log_file "$dir/uac_logs.log" \
        $uac_args "$IP:$p_uas" >"$dir/uac.out" 2>&1)
    local uac_rc=$?
    wait "$uas_pid"
    local uas_rc=$?
    capture_stop

    local why=""
    [ "$uas_rc" = 0 ] || why="$why uas_rc=$uas_rc"
    [ "$uac_rc" = 0 ] || why="$why uac_rc=$uac_rc"
    if [ -z "$why" ] && [ -n "$check_fn" ]; then
        local msg
        if ! msg=$("$check_fn" 2>&1); then
            why=" check: $msg"
        fi
    fi
    if [ -z "$why" ]; then
        printf 'PASS  %s\n' "$label"
        PASS=$((PASS + 1))
    else
        printf 'FAIL  %s:%s  (logs: %s)\n' "$label" "$why" "$dir"
        FAIL=$((FAIL + 1))
        FAILED+=("$label")
    fi
}

# ---- post-run checks (run inside run_case; use CASE_* globals) -------------

rtp_fields() { # rtp_fields FIELDS... : RTP packets sent by the UAS media side
    tshark -r "$CASE_DIR/media.pcap" -d "udp.port==$CASE_M_UAS,rtp" -d "udp.port==$CASE_M_UAC,rtp" \
        -Y "rtp && udp.dstport==$CASE_M_UAC" -T fields "$@" 2>/dev/null
}

check_echo() {
    [ "$have_tshark" = 1 ] || return 0
    local n
    n=$(rtp_fields -e rtp.p_type | grep -c '^8$')
    [ "$n" -gt 20 ] || { echo "only $n echoed PCMA packets"; return 1; }
}

check_early_media() {
    [ "$have_tshark" = 1 ] || return 0
    local n
    n=$(rtp_fields -e rtp.p_type | grep -c '^8$')
    [ "$n" -gt 20 ] || { echo "only $n early-media PCMA packets"; return 1; }
}

check_dtmf() {
    [ "$have_tshark" = 1 ] || return 0
    local digits
    digits=$(rtp_fields -e rtp.p_type -e rtpevent.event_id | awk '$1==101 {print $2}' | uniq | tr -d '\n')
    [ "$digits" = "123" ] || { echo "RFC 4733 events seen: '$digits' (want 123)"; return 1; }
}

check_outcome_200() { grep -q "OUTCOME=200" "$CASE_DIR/uac_logs.log" || { echo "no 200 after auth"; return 1; }; }
check_outcome_403() { grep -q "OUTCOME=403" "$CASE_DIR/uac_logs.log" || { echo "no 403 after bad auth"; return 1; }; }

# ---- instantiate the check UACs --------------------------------------------

U=$WORK/uac
mkdir -p "$U"
uac uac_check_bye.xml.in "$U/bye_500.xml" HOLD=500
uac uac_check_bye.xml.in "$U/bye_200.xml" HOLD=200
uac uac_check_bye.xml.in "$U/bye_3000.xml" HOLD=3000
# caller plays PCMA (g711a.pcap) so the echo can be observed
sed 's|^  <pause milliseconds="2000"/>|  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/g711a.pcap"/></action></nop>\n  <pause milliseconds="2000"/>|' \
    <(uac uac_check_bye.xml.in /dev/stdout HOLD=2000) >"$U/bye_play.xml"
uac uac_check_callee_bye.xml.in "$U/callee_bye.xml"
uac uac_check_cancel.xml.in "$U/cancel.xml" HOLD=300
uac uac_check_reject.xml.in "$U/r486_17.xml" CODE=486 "REASON_ACTION=$(reason 'Q\.850;cause=17')" "REASON_VAR=reason=[\$reason]"
uac uac_check_reject.xml.in "$U/r404_1.xml" CODE=404 "REASON_ACTION=$(reason 'Q\.850;cause=1([^0-9]|$)')" "REASON_VAR=reason=[\$reason]"
uac uac_check_reject.xml.in "$U/r404_none.xml" CODE=404 "REASON_ACTION=$REASON_NONE" "REASON_VAR=no-reason=[\$noreason]"
uac uac_check_reject.xml.in "$U/r480_20.xml" CODE=480 "REASON_ACTION=$(reason 'Q\.850;cause=20')" "REASON_VAR=reason=[\$reason]"
uac uac_check_reject.xml.in "$U/r503_none.xml" CODE=503 "REASON_ACTION=$REASON_NONE" "REASON_VAR=no-reason=[\$noreason]"
uac uac_check_reject.xml.in "$U/r603_none.xml" CODE=603 "REASON_ACTION=$REASON_NONE" "REASON_VAR=no-reason=[\$noreason]"
uac uac_check_auth.xml.in "$U/auth401.xml" CODE=401 HOLD=200
uac uac_check_auth.xml.in "$U/auth407.xml" CODE=407 HOLD=200

echo "Outcall SIPp scenario checks (sipp: $(sipp -v 2>&1 | grep -o 'v[0-9][^ ]*' | head -1), tshark media checks: $have_tshark)"

MEDIA="-mi $IP"
for tr in $TRANSPORTS; do
    run_case answer_echo        "$tr" uas_answer_echo.xml       "-rtp_echo $MEDIA" "$U/bye_play.xml"   dialer "" check_echo
    run_case answer_wait_bye    "$tr" uas_answer_wait_bye.xml   "$MEDIA"           "$U/bye_500.xml"    dialer ""
    run_case callee_bye         "$tr" uas_callee_bye.xml        "$MEDIA"           "$U/callee_bye.xml" dialer ""
    run_case busy               "$tr" uas_busy.xml              ""                 "$U/r486_17.xml"    dialer ""
    run_case 404_cause1         "$tr" uas_404_cause1.xml        ""                 "$U/r404_1.xml"     dialer ""
    run_case 404_plain          "$tr" uas_404_plain.xml         ""                 "$U/r404_none.xml"  dialer ""
    run_case 480                "$tr" uas_480.xml               ""                 "$U/r480_20.xml"    dialer ""
    run_case 503                "$tr" uas_503.xml               ""                 "$U/r503_none.xml"  dialer ""
    run_case 603                "$tr" uas_603.xml               ""                 "$U/r603_none.xml"  dialer ""
    run_case ring_no_answer     "$tr" uas_ring_no_answer.xml    ""                 "$U/cancel.xml"     dialer ""
    run_case early_media_busy   "$tr" uas_early_media_busy.xml  "$MEDIA"           "$U/r486_17.xml"    dialer "" check_early_media
    run_case auth_401_ok        "$tr" uas_auth_401.xml          "$MEDIA"           "$U/auth401.xml"    dialer "-au trunkuser -ap trunkpass" check_outcome_200
    run_case auth_401_badpass   "$tr" uas_auth_401.xml          "$MEDIA"           "$U/auth401.xml"    dialer "-au trunkuser -ap wrongpass" check_outcome_403
    run_case auth_407_ok        "$tr" uas_auth_407.xml          "$MEDIA"           "$U/auth407.xml"    dialer "-au trunkuser -ap trunkpass" check_outcome_200
    run_case auth_407_baduser   "$tr" uas_auth_407.xml          "$MEDIA"           "$U/auth407.xml"    dialer "-au someoneelse -ap trunkpass" check_outcome_403
    run_case dtmf               "$tr" uas_dtmf.xml              "$MEDIA"           "$U/bye_3000.xml"   dialer "" check_dtmf
    run_case dtmf_early_bye     "$tr" uas_dtmf.xml              "$MEDIA"           "$U/bye_200.xml"    dialer ""
    run_case garbage_then_busy  "$tr" uas_garbage_then_busy.xml ""                 "$U/r486_17.xml"    dialer ""
    run_case missing_headers    "$tr" uas_missing_headers_then_busy.xml ""         "$U/r486_17.xml"    dialer ""
    run_case huge_header        "$tr" uas_huge_header_then_busy.xml ""             "$U/r486_17.xml"    dialer ""
    if [ "$tr" = t1 ]; then
        run_case huge_header_tcp "$tr" uas_huge_header_tcp_then_busy.xml ""        "$U/r486_17.xml"    dialer ""
    fi
    run_case bad_sdp            "$tr" uas_bad_sdp.xml           ""                 "$U/bye_200.xml"    dialer ""
    run_case mix_answer_0       "$tr" uas_mix.xml               "$MEDIA"           "$U/bye_200.xml"    15550000 ""
    run_case mix_answer_5       "$tr" uas_mix.xml               "$MEDIA"           "$U/bye_200.xml"    15550005 ""
    run_case mix_busy_6         "$tr" uas_mix.xml               ""                 "$U/r486_17.xml"    15550006 ""
    run_case mix_busy_7         "$tr" uas_mix.xml               ""                 "$U/r486_17.xml"    15550007 ""
    run_case mix_ring_8         "$tr" uas_mix.xml               ""                 "$U/cancel.xml"     15550008 ""
    run_case mix_empty_9        "$tr" uas_mix.xml               ""                 "$U/r404_1.xml"     15550009 ""
    run_case bench              "$tr" uas_bench.xml             ""                 "$SCEN/uac_bench.xml" bench ""
done

echo "----"
echo "passed: $PASS  failed: $FAIL"
for f in "${FAILED[@]+"${FAILED[@]}"}"; do
    echo "  failed: $f"
done
[ "$FAIL" = 0 ]
