//! What Outcall's integration tests share: free loopback ports, the SIPp scenarios of
//! `tests/sipp/`, and starting a SIPp carrier and waiting until it listens. Only tests use it.
#![allow(clippy::disallowed_methods)] // plain threads: no tokio runtime here

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A scenario file of `tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    repo().join("tests/sipp").join(name)
}

/// A port free on 127.0.0.1 for both UDP and TCP (best effort).
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind a udp port");
        let p = u.local_addr().expect("local addr").port();
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// SIP transport of a SIPp carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A SIPp UAS on 127.0.0.1: `scenario` from `tests/sipp/`, `args` added to the command line, run
/// in `dir` (SIPp writes its logs there). Returns once SIPp listens on its port. The process is
/// killed when the returned handle drops.
pub fn start_sipp(
    scenario_name: &str,
    transport: Transport,
    args: &[&str],
    dir: &Path,
) -> SippProcess {
    start_sipp_at(free_port(), scenario_name, transport, args, dir)
}

/// [`start_sipp`] on a given port (a carrier that comes back with another scenario).
pub fn start_sipp_at(
    port: u16,
    scenario_name: &str,
    transport: Transport,
    args: &[&str],
    dir: &Path,
) -> SippProcess {
    let t = match transport {
        Transport::Udp => "u1",
        Transport::Tcp => "t1",
    };
    let child = Command::new("sipp")
        .arg("-sf")
        .arg(scenario(scenario_name))
        .args([
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            t,
        ])
        .arg("-nostdin")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp is installed (apt-get install sip-tester)");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let listening = match transport {
            Transport::Udp => UdpSocket::bind(("127.0.0.1", port)).is_err(),
            Transport::Tcp => TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        if listening {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    SippProcess { child, port }
}

/// A running SIPp.
pub struct SippProcess {
    pub child: Child,
    pub port: u16,
}

impl SippProcess {
    /// Asks SIPp to quit (SIGINT, as Ctrl-C) so that it flushes and closes its trace files,
    /// and waits up to 10 s for it; kills it if it is still there.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes, in `dir`, a private CA (`ca.pem`, `ca.key`) and a server certificate it signed for
/// 127.0.0.1 and localhost (`cert.pem`, `key.pem`), with the `openssl` command. A certificate
/// that is its own CA would be refused by webpki as an end entity, hence the two levels.
pub fn private_ca(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend(["-days", "2", "-subj", "/CN=Outcall test CA"]);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    );
}
