//! The call engine against SIPp playing the carrier, one scenario per behaviour.
//!
//! Each test starts a SIPp UAS with a scenario from `tests/sipp/`, places a real call through
//! [`SipUserAgent`] over loopback, and asserts the classified outcome, the CDR fields and that
//! SIPp itself saw the dialog it expected (its exit code is 0 only when every message of the
//! scenario matched). Tests need `sipp` (Debian package `sip-tester`).

use outcall_domain::{CallState, Classifier, HangupParty, Outcome};
use outcall_telephony::engine::AfterPrompt;
use outcall_telephony::{
    CallEngine, CallRequest, Prompt, SipTransport, SipUserAgent, TrunkConfig, UaConfig,
};
use outcall_testkit::{start_sipp, SippProcess, Transport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Sipp {
    /// Killed when dropped.
    sipp: SippProcess,
    port: u16,
    dir: tempfile::TempDir,
}

impl Sipp {
    async fn start(name: &str, transport: SipTransport, extra: &[&str]) -> Sipp {
        let dir = tempfile::tempdir().unwrap();
        let t = match transport {
            SipTransport::Udp => Transport::Udp,
            SipTransport::Tcp => Transport::Tcp,
        };
        let mut args = vec!["-m", "1", "-trace_err", "-timeout", "60s", "-timeout_error"];
        args.extend_from_slice(extra);
        let sipp = start_sipp(name, t, &args, dir.path());
        Sipp {
            port: sipp.port,
            sipp,
            dir,
        }
    }

    fn trunk(&self, transport: SipTransport) -> TrunkConfig {
        let mut t = TrunkConfig::new("sipp", "127.0.0.1", self.port, transport);
        t.caller_ids = vec!["02150000001".into(), "02150000002".into()];
        t
    }

    /// Waits for SIPp to end and returns whether every call of its scenario succeeded.
    async fn wait_success(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = self.sipp.child.try_wait().unwrap() {
                if !st.success() {
                    for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                        eprintln!(
                            "--- {}\n{}",
                            e.path().display(),
                            text.chars().take(4000).collect::<String>()
                        );
                    }
                }
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = self.sipp.child.kill();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn ua() -> SipUserAgent {
    let cfg = UaConfig {
        cancel_grace_ms: 5_000,
        ..UaConfig::default()
    };
    SipUserAgent::start(cfg, Classifier::default())
        .await
        .unwrap()
}

fn request(trunk: TrunkConfig, to: &str) -> CallRequest {
    let mut r = CallRequest::new("t-1", to, Arc::new(trunk));
    r.ring_timeout = Duration::from_secs(10);
    r.max_duration = Duration::from_secs(20);
    r
}

/// A 2-second 440 Hz + 880 Hz prompt, written as a 16 kHz WAV to exercise conversion.
fn prompt_file(dir: &Path) -> PathBuf {
    let path = dir.join("prompt.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..32000 {
        let t = i as f64 / 16000.0;
        // A chirp, so that the echo is recognisable at one lag only.
        let f = 300.0 + 900.0 * t;
        let v = (2.0 * std::f64::consts::PI * f * t).sin() * 9000.0;
        w.write_sample(v as i16).unwrap();
    }
    w.finalize().unwrap();
    path
}

async fn place(ua: &SipUserAgent, req: CallRequest) -> outcall_telephony::CallReport {
    tokio::time::timeout(Duration::from_secs(60), ua.place_call(req, None))
        .await
        .expect("call ended in time")
}

async fn rejected(name: &str, transport: SipTransport) -> outcall_telephony::CallReport {
    let sipp = Sipp::start(name, transport, &[]).await;
    let ua = ua().await;
    let rep = place(&ua, request(sipp.trunk(transport), "13800138000")).await;
    assert!(sipp.wait_success().await, "sipp scenario {name} failed");
    assert_eq!(rep.cdr.final_state, CallState::Unanswered);
    assert_eq!(rep.cdr.billsec, 0);
    assert_eq!(rep.cdr.answer_at_ms, None);
    assert_eq!(rep.cdr.callee, "138****8000");
    assert_eq!(ua.dialog_count(), 0, "no dialog left behind");
    rep
}

#[tokio::test]
async fn busy_486_with_cause_17_is_busy() {
    let rep = rejected("uas_busy.xml", SipTransport::Udp).await;
    assert_eq!(rep.cdr.outcome, Outcome::Busy);
    assert_eq!(
        (rep.cdr.sip_status, rep.cdr.q850_cause),
        (Some(486), Some(17))
    );
    assert_eq!(rep.cdr.caller_id, "02150000001");
}

#[tokio::test]
async fn busy_over_tcp() {
    let rep = rejected("uas_busy.xml", SipTransport::Tcp).await;
    assert_eq!(rep.cdr.outcome, Outcome::Busy);
    assert_eq!(rep.cdr.sip_status, Some(486));
}

#[tokio::test]
async fn not_found_with_cause_1_is_empty_number() {
    let rep = rejected("uas_404_cause1.xml", SipTransport::Udp).await;
    assert_eq!(rep.cdr.outcome, Outcome::EmptyNumber);
    assert_eq!(
        (rep.cdr.sip_status, rep.cdr.q850_cause),
        (Some(404), Some(1))
    );
}

#[tokio::test]
async fn bare_not_found_is_a_trunk_error_not_an_empty_number() {
    let rep = rejected("uas_404_plain.xml", SipTransport::Udp).await;
    assert_eq!(rep.cdr.outcome, Outcome::TrunkError);
    assert_eq!((rep.cdr.sip_status, rep.cdr.q850_cause), (Some(404), None));
}

#[tokio::test]
async fn temporarily_unavailable_with_cause_20_is_powered_off() {
    let rep = rejected("uas_480.xml", SipTransport::Udp).await;
    assert_eq!(rep.cdr.outcome, Outcome::PoweredOff);
    assert_eq!(
        (rep.cdr.sip_status, rep.cdr.q850_cause),
        (Some(480), Some(20))
    );
}

#[tokio::test]
async fn service_unavailable_is_congestion() {
    let rep = rejected("uas_503.xml", SipTransport::Udp).await;
    assert_eq!(rep.cdr.outcome, Outcome::Congestion);
    assert_eq!(rep.cdr.sip_status, Some(503));
}

#[tokio::test]
async fn decline_after_ringing_is_rejected() {
    let rep = rejected("uas_603.xml", SipTransport::Udp).await;
    assert_eq!(rep.cdr.outcome, Outcome::Rejected);
    assert_eq!(rep.cdr.sip_status, Some(603));
    assert!(rep.cdr.ring_at_ms.is_some());
    let states: Vec<_> = rep.transitions.iter().map(|t| t.to).collect();
    assert!(states.contains(&CallState::Ringing), "{states:?}");
}

#[tokio::test]
async fn early_media_then_busy_keeps_the_early_media_evidence() {
    let rep = rejected("uas_early_media_busy.xml", SipTransport::Udp).await;
    assert_eq!(rep.cdr.outcome, Outcome::Busy);
    assert!(rep.cdr.early_media);
    assert!(rep.cdr.early_media_at_ms.is_some());
    assert!(
        rep.cdr.rtp_packets_received > 10,
        "early media RTP was received"
    );
    let states: Vec<_> = rep.transitions.iter().map(|t| t.to).collect();
    assert!(states.contains(&CallState::EarlyMedia), "{states:?}");
}

#[tokio::test]
async fn ring_timeout_sends_cancel_and_is_no_answer() {
    let sipp = Sipp::start("uas_ring_no_answer.xml", SipTransport::Udp, &[]).await;
    let ua = ua().await;
    let mut req = request(sipp.trunk(SipTransport::Udp), "13800138000");
    req.ring_timeout = Duration::from_millis(1500);
    let t0 = Instant::now();
    let rep = place(&ua, req).await;
    let took = t0.elapsed();
    assert!(
        sipp.wait_success().await,
        "sipp saw our CANCEL and sent 487"
    );
    assert_eq!(rep.cdr.outcome, Outcome::NoAnswer);
    assert_eq!(rep.cdr.final_state, CallState::Canceled);
    assert_eq!(rep.cdr.sip_status, Some(487));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(ua.dialog_count(), 0);
}

async fn answered(
    name: &str,
    transport: SipTransport,
    extra: &[&str],
    setup: impl FnOnce(&mut CallRequest),
) -> outcall_telephony::CallReport {
    let sipp = Sipp::start(name, transport, extra).await;
    let ua = ua().await;
    let mut req = request(sipp.trunk(transport), "13800138000");
    setup(&mut req);
    let rep = place(&ua, req).await;
    assert!(sipp.wait_success().await, "sipp scenario {name} failed");
    assert_eq!(ua.dialog_count(), 0, "the finished dialog was released");
    rep
}

#[tokio::test]
async fn answered_call_echo_is_recorded_and_contains_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let prompt_path = prompt_file(dir.path());
    let rec = dir.path().join("rec.wav");
    let rec2 = rec.clone();
    let rep = answered(
        "uas_answer_echo.xml",
        SipTransport::Udp,
        &["-rtp_echo"],
        move |r| {
            r.prompt = Some(Prompt::load(&prompt_path).unwrap());
            r.record_to = Some(rec2);
        },
    )
    .await;
    assert_eq!(rep.cdr.outcome, Outcome::AnsweredHuman);
    assert_eq!(rep.cdr.final_state, CallState::Completed);
    assert_eq!(rep.cdr.hangup_by, Some(HangupParty::Local));
    assert_eq!(rep.cdr.sip_status, Some(200));
    assert_eq!(
        rep.cdr.rtp_packets_sent, 100,
        "2 s of prompt in 20 ms packets"
    );
    assert!(
        rep.cdr.rtp_packets_received >= 95,
        "echo came back: {}",
        rep.cdr.rtp_packets_received
    );
    assert!(rep.cdr.billsec >= 2);
    // The recording holds what we sent on the left and the echo on the right.
    let mut r = hound::WavReader::open(&rec).unwrap();
    assert_eq!(r.spec().channels, 2);
    assert_eq!(r.spec().sample_rate, 8000);
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    let left: Vec<i16> = s.iter().step_by(2).copied().collect();
    let right: Vec<i16> = s.iter().skip(1).step_by(2).copied().collect();
    let prompt = Prompt::load(&dir.path().join("prompt.wav")).unwrap();
    let c_left = outcall_media::recorder::correlate(&prompt.samples, &left);
    let c_right = outcall_media::recorder::correlate(&prompt.samples, &right);
    assert!(c_left > 0.9, "left channel is the prompt: {c_left}");
    assert!(
        c_right > 0.8,
        "right channel is the echoed prompt: {c_right}"
    );
    assert_eq!(rep.cdr.recording.as_deref(), Some(rec.to_str().unwrap()));
}

#[tokio::test]
async fn answered_call_over_tcp_hangs_up_at_max_duration() {
    let t0 = Instant::now();
    let rep = answered("uas_answer_wait_bye.xml", SipTransport::Tcp, &[], |r| {
        r.after_prompt = AfterPrompt::Stay;
        r.max_duration = Duration::from_millis(1500);
    })
    .await;
    assert_eq!(rep.cdr.outcome, Outcome::AnsweredHuman);
    assert_eq!(rep.cdr.hangup_by, Some(HangupParty::Local));
    let talk = rep.cdr.end_at_ms.unwrap() - rep.cdr.answer_at_ms.unwrap();
    assert!((1400..3000).contains(&talk), "talk time {talk} ms");
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn callee_bye_ends_the_call_with_its_cause() {
    let rep = answered("uas_callee_bye.xml", SipTransport::Udp, &[], |r| {
        r.after_prompt = AfterPrompt::Stay;
    })
    .await;
    assert_eq!(rep.cdr.outcome, Outcome::AnsweredHuman);
    assert_eq!(rep.cdr.hangup_by, Some(HangupParty::Remote));
    assert_eq!(rep.cdr.q850_cause, Some(16));
    assert_eq!(rep.cdr.final_state, CallState::Completed);
}

#[tokio::test]
async fn callee_bye_over_tcp() {
    let rep = answered("uas_callee_bye.xml", SipTransport::Tcp, &[], |r| {
        r.after_prompt = AfterPrompt::Stay;
    })
    .await;
    assert_eq!(rep.cdr.hangup_by, Some(HangupParty::Remote));
}

async fn auth(name: &str, user: &str, password: &str) -> (outcall_telephony::CallReport, bool) {
    let sipp = Sipp::start(name, SipTransport::Udp, &[]).await;
    let ua = ua().await;
    let mut trunk = sipp.trunk(SipTransport::Udp);
    trunk.username = Some(user.into());
    trunk.password = Some(password.into());
    let mut req = request(trunk, "13800138000");
    req.after_prompt = AfterPrompt::Stay;
    req.max_duration = Duration::from_millis(300);
    let rep = place(&ua, req).await;
    let ok = sipp.wait_success().await;
    assert_eq!(ua.dialog_count(), 0);
    (rep, ok)
}

#[tokio::test]
async fn digest_401_with_the_right_password_connects() {
    let (rep, ok) = auth("uas_auth_401.xml", "trunkuser", "trunkpass").await;
    assert!(ok);
    assert_eq!(rep.cdr.outcome, Outcome::AnsweredHuman);
}

#[tokio::test]
async fn digest_407_with_the_right_password_connects() {
    let (rep, ok) = auth("uas_auth_407.xml", "trunkuser", "trunkpass").await;
    assert!(ok);
    assert_eq!(rep.cdr.outcome, Outcome::AnsweredHuman);
}

#[tokio::test]
async fn digest_401_with_a_wrong_password_is_a_trunk_error() {
    let (rep, ok) = auth("uas_auth_401.xml", "trunkuser", "wrong").await;
    assert!(ok);
    assert_eq!(rep.cdr.outcome, Outcome::TrunkError);
    assert_eq!(rep.cdr.final_state, CallState::Unanswered);
}

/// SIPp's `verifyauth` reads only `Authorization`, so the 407 scenario checks the structure of
/// our `Proxy-Authorization` (user, realm, nonce, cnonce, response) and refuses a wrong user;
/// the password itself is verified through the 401 scenario (same digest code).
#[tokio::test]
async fn digest_407_with_wrong_credentials_is_a_trunk_error() {
    let (rep, ok) = auth("uas_auth_407.xml", "someoneelse", "trunkpass").await;
    assert!(ok);
    assert_eq!(rep.cdr.outcome, Outcome::TrunkError);
}

#[tokio::test]
async fn rfc4733_digits_from_sipp_pcaps_are_collected_in_order() {
    let rep = answered("uas_dtmf.xml", SipTransport::Udp, &[], |r| {
        r.after_prompt = AfterPrompt::Stay;
        r.max_duration = Duration::from_secs(15);
        r.dtmf = outcall_domain::dtmf::DtmfRules::parse("3=confirm").unwrap();
    })
    .await;
    assert_eq!(rep.cdr.dtmf, "123");
    assert_eq!(rep.cdr.outcome, Outcome::AnsweredHuman);
    // `3=confirm` hung up the call as soon as the third digit arrived.
    assert_eq!(rep.cdr.hangup_by, Some(HangupParty::Local));
}

/// Hostile carriers: garbage, a 180 without To/Call-ID, a huge header. The node must not
/// crash, must ignore what it cannot parse, and must still classify the real final response.
async fn hostile_then_busy(name: &str, transport: SipTransport) {
    let sipp = Sipp::start(name, transport, &[]).await;
    let ua = ua().await;
    let rep = place(&ua, request(sipp.trunk(transport), "13800138000")).await;
    let _ = sipp.wait_success().await;
    assert_eq!(rep.cdr.outcome, Outcome::Busy, "{name}");
    assert_eq!(rep.cdr.sip_status, Some(486), "{name}");
    // The same user agent still places calls afterwards.
    let sipp2 = Sipp::start("uas_busy.xml", transport, &[]).await;
    let rep2 = place(&ua, request(sipp2.trunk(transport), "13800138000")).await;
    assert!(sipp2.wait_success().await);
    assert_eq!(rep2.cdr.outcome, Outcome::Busy);
    assert_eq!(ua.dialog_count(), 0);
}

#[tokio::test]
async fn garbage_response_is_ignored() {
    hostile_then_busy("uas_garbage_then_busy.xml", SipTransport::Udp).await;
}

#[tokio::test]
async fn provisional_without_mandatory_headers_is_ignored() {
    hostile_then_busy("uas_missing_headers_then_busy.xml", SipTransport::Udp).await;
}

#[tokio::test]
async fn huge_header_is_survived_over_udp() {
    hostile_then_busy("uas_huge_header_then_busy.xml", SipTransport::Udp).await;
}

#[tokio::test]
async fn huge_header_is_survived_over_tcp() {
    hostile_then_busy("uas_huge_header_tcp_then_busy.xml", SipTransport::Tcp).await;
}

#[tokio::test]
async fn unusable_sdp_in_the_answer_fails_the_call_and_hangs_up() {
    let rep = answered("uas_bad_sdp.xml", SipTransport::Udp, &[], |_| {}).await;
    assert_eq!(rep.cdr.outcome, Outcome::Failed);
    assert_eq!(rep.cdr.final_state, CallState::Failed);
    assert_eq!(rep.cdr.sip_status, Some(200));
}

#[tokio::test]
async fn invite_carries_caller_id_pai_custom_headers_through_the_outbound_proxy() {
    let sipp = Sipp::start("uas_check_headers.xml", SipTransport::Udp, &[]).await;
    let ua = ua().await;
    let mut trunk = TrunkConfig::new("carrier", "carrier.test", 5060, SipTransport::Udp);
    trunk.outbound_proxy = Some(format!("127.0.0.1:{}", sipp.port));
    trunk.caller_ids = vec!["02150000007".into()];
    trunk.p_asserted_identity = true;
    trunk.headers = vec![("X-Campaign".into(), "demo".into())];
    let rep = place(&ua, request(trunk, "13800138000")).await;
    assert!(
        sipp.wait_success().await,
        "sipp found every expected header"
    );
    assert_eq!(rep.cdr.outcome, Outcome::Busy);
    assert_eq!(rep.cdr.caller_id, "02150000007");
}

/// A prompt of silence and DTMF tones (8 kHz).
fn dtmf_prompt(parts: &[(Option<char>, u32)]) -> Prompt {
    let mut s = Vec::new();
    for (digit, ms) in parts {
        match digit {
            Some(d) => s.extend(outcall_media::dtmf::generate_dtmf(*d, *ms, 8000)),
            None => s.extend(std::iter::repeat_n(0i16, (*ms * 8) as usize)),
        }
    }
    Prompt {
        name: "dtmf".into(),
        samples: Arc::new(s),
    }
}

#[tokio::test]
async fn in_band_dtmf_in_the_received_audio_is_detected() {
    // SIPp echoes our RTP: the tones we send come back in-band, in G.711.
    let prompt = dtmf_prompt(&[
        (None, 300),
        (Some('5'), 120),
        (None, 200),
        (Some('9'), 120),
        (None, 400),
    ]);
    let rep = answered(
        "uas_answer_echo.xml",
        SipTransport::Udp,
        &["-rtp_echo"],
        move |r| {
            r.prompt = Some(prompt);
        },
    )
    .await;
    assert_eq!(rep.cdr.dtmf, "59");
    assert_eq!(rep.cdr.hangup_by, Some(HangupParty::Local));
}

#[tokio::test]
async fn dtmf_repeat_rule_replays_the_prompt_and_confirm_hangs_up() {
    let prompt = dtmf_prompt(&[(None, 200), (Some('2'), 120), (None, 600)]);
    let frames = prompt.samples.len() as u64 / 160;
    let rep = answered(
        "uas_answer_echo.xml",
        SipTransport::Udp,
        &["-rtp_echo"],
        move |r| {
            r.prompt = Some(prompt);
            r.dtmf = outcall_domain::dtmf::DtmfRules::parse("2=repeat").unwrap();
        },
    )
    .await;
    // Heard once, then repeated three times (the default limit), then played to its end.
    assert_eq!(rep.cdr.dtmf, "2222");
    assert!(
        rep.cdr.rtp_packets_sent > frames,
        "{} > {frames}",
        rep.cdr.rtp_packets_sent
    );

    let prompt = dtmf_prompt(&[(None, 200), (Some('1'), 120), (None, 3000)]);
    let frames = prompt.samples.len() as u64 / 160;
    let rep = answered(
        "uas_answer_echo.xml",
        SipTransport::Udp,
        &["-rtp_echo"],
        move |r| {
            r.prompt = Some(prompt);
            r.dtmf = outcall_domain::dtmf::DtmfRules::parse("1=confirm,2=repeat").unwrap();
        },
    )
    .await;
    assert_eq!(rep.cdr.dtmf, "1");
    assert!(
        rep.cdr.rtp_packets_sent < frames / 2,
        "confirm cut the prompt short"
    );
    assert_eq!(rep.cdr.hangup_by, Some(HangupParty::Local));
}
