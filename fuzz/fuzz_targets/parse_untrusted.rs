//! Everything Outcall parses from a carrier: `Reason` headers, SDP answers, RTP packets and
//! RFC 4733 events, plus the classifier and jitter buffer fed with what they produce. None of
//! it may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outcall_domain::classify::{Classifier, Evidence};
use outcall_domain::reason::{parse_reason_header, q850_cause};
use outcall_media::codec::Codec;
use outcall_media::dtmf::{Rfc4733Collector, TelephoneEvent};
use outcall_media::jitter::JitterBuffer;
use outcall_media::rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let reasons = parse_reason_header(&text);
    let cause = q850_cause([text.as_ref()]);
    let _ = outcall_media::sdp::parse_answer(&text, &[Codec::Pcmu, Codec::Pcma]);

    let status = data.first().map(|b| 100 + u16::from(*b) * 2);
    let e = Evidence {
        final_status: status,
        q850_cause: cause.or_else(|| reasons.first().and_then(|r| r.cause)),
        provisional_seen: data.get(1).is_some_and(|b| b & 1 == 1),
        early_media: data.get(1).is_some_and(|b| b & 2 == 2),
        answered: data.get(1).is_some_and(|b| b & 4 == 4),
        ..Evidence::default()
    };
    let _ = Classifier::default().classify(&e);

    let mut jb = JitterBuffer::new(50);
    let mut dtmf = Rfc4733Collector::new();
    for chunk in data.chunks(24) {
        if let Ok(p) = RtpPacket::parse(chunk) {
            if let Ok(ev) = TelephoneEvent::parse(p.payload) {
                let _ = dtmf.on_packet(p.timestamp, &ev);
            }
            jb.push(p.sequence, p.timestamp, p.payload.to_vec());
            while jb.pop().is_some() {}
        }
    }
    let _ = jb.drain();
});
