//! A Manager served over TCP (API.md §7, §9): the right key, a wrong key,
//! no key, garbage and oversized frames; the server keeps serving the
//! others through all of it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{wait_gone, LIMIT};
use hmac::{Hmac, Mac};
use mproc::prelude::*;
use mproc::{ClientTls, ServerTls};
use sha2::Sha256;

const KEY: &[u8] = b"correct horse battery staple";

#[mproc::task]
#[allow(deprecated)] // a short key: `Vec<u8>` costs nothing here
fn remote_client(addr: String, key: Vec<u8>, n: u32) -> usize {
    let m = Manager::connect(addr.as_str(), &key).unwrap();
    let d: DictProxy<String, u32> = m.dict_named("shared").unwrap();
    for i in 0..n {
        d.insert(format!("child-{i}"), i).unwrap();
    }
    d.len().unwrap()
}

#[mproc::task]
fn wrong_key_is_auth(addr: String) {
    let e = Manager::connect(addr.as_str(), b"not the key").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth);
}

fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let mut b = vec![0u8; u32::from_le_bytes(h) as usize];
    s.read_exact(&mut b)?;
    Ok(b)
}

/// True when the server closes the connection (end of stream or reset)
/// before the read timeout.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// The client side of the handshake, written out from the protocol's
/// description, so a test can speak after authenticating.
fn authenticate(s: &mut TcpStream, key: &[u8]) {
    let challenge = read_frame(s).unwrap();
    assert_eq!(&challenge[..4], b"MPMG");
    let ns: [u8; 32] = challenge[challenge.len() - 32..].try_into().unwrap();
    let nc = [7u8; 32];
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(b"mproc client");
    // The listener's purpose is inside the MAC (a Manager's: "manager").
    m.update(b"manager");
    m.update(&ns);
    m.update(&nc);
    let mut answer = Vec::new();
    answer.extend_from_slice(&64u32.to_le_bytes());
    answer.extend_from_slice(&m.finalize().into_bytes());
    answer.extend_from_slice(&nc);
    s.write_all(&answer).unwrap();
    let verdict = read_frame(s).unwrap();
    assert_eq!(verdict[0], 0, "accepted");
}

fn still_serves(addr: SocketAddr) {
    let m = Manager::connect(addr, KEY).unwrap();
    let d: DictProxy<String, u32> = m.dict_named("shared").unwrap();
    d.insert("probe".into(), 1).unwrap();
    assert_eq!(d.get(&"probe".to_string()).unwrap(), Some(1));
}

#[test]
fn served_manager_with_the_right_key() {
    let m = Manager::serve("127.0.0.1:0", KEY).unwrap();
    let addr = m.address();
    assert_ne!(addr.port(), 0);
    let d: DictProxy<String, u32> = m.dict_named("shared").unwrap();
    d.insert("parent".into(), 0).unwrap();
    let p = Process::new(remote_client, (addr.to_string(), KEY.to_vec(), 5))
        .start()
        .unwrap();
    assert!(p.join_timeout(LIMIT).unwrap());
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(d.len().unwrap(), 6);
    // A connected manager's proxies are handles too.
    let c = Manager::connect(addr, KEY).unwrap();
    assert_eq!(c.address(), addr);
    let cd: DictProxy<String, u32> = c.dict_named("shared").unwrap();
    assert_eq!(cd.get(&"child-4".into()).unwrap(), Some(4));
    let pid = m.server_pid().unwrap();
    drop(m);
    assert!(wait_gone(&[pid], Duration::from_secs(5)));
    assert_eq!(cd.len().unwrap_err().kind(), ErrorKind::Disconnected);
}

#[test]
fn a_wrong_key_gets_auth_and_nothing_else() {
    let m = Manager::serve("127.0.0.1:0", KEY).unwrap();
    let addr = m.address();
    let e = Manager::connect(addr, b"guess").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert_eq!(
        Manager::connect(addr, b"").unwrap_err().kind(),
        ErrorKind::Auth
    );
    assert_eq!(
        Manager::serve("127.0.0.1:0", b"").unwrap_err().kind(),
        ErrorKind::Auth
    );
    // From another process too.
    let p = Process::new(wrong_key_is_auth, addr.to_string())
        .start()
        .unwrap();
    assert!(p.join_timeout(LIMIT).unwrap());
    assert_eq!(p.exitcode(), Some(0));
    still_serves(addr);

    // A wrong answer by hand: the verdict is a refusal, then the end.
    let mut s = raw(addr);
    let challenge = read_frame(&mut s).unwrap();
    assert!(challenge.len() < 256);
    let mut answer = 64u32.to_le_bytes().to_vec();
    answer.extend_from_slice(&[0u8; 64]);
    s.write_all(&answer).unwrap();
    let verdict = read_frame(&mut s).unwrap();
    assert_eq!(verdict, vec![1], "refused");
    assert!(closed_by_server(&mut s));
    still_serves(addr);
}

#[test]
fn no_key_garbage_and_oversized_frames_are_cut_off_alone() {
    let m = Manager::serve("127.0.0.1:0", KEY).unwrap();
    let addr = m.address();
    let d: DictProxy<String, u32> = m.dict_named("shared").unwrap();

    // No key: a request sent straight away is not read as one.
    let mut s = raw(addr);
    let _challenge = read_frame(&mut s).unwrap();
    let mut req = 300u32.to_le_bytes().to_vec();
    req.extend_from_slice(&[0u8; 300]);
    let _ = s.write_all(&req);
    assert!(closed_by_server(&mut s));

    // An oversized length before authentication.
    let mut s = raw(addr);
    let _ = s.write_all(&(1u32 << 31).to_le_bytes());
    assert!(closed_by_server(&mut s));

    // Garbage before authentication.
    let mut s = raw(addr);
    let _ = s.write_all(&[0xff; 64]);
    assert!(closed_by_server(&mut s));

    // Garbage and an oversized frame after authenticating.
    let mut s = raw(addr);
    authenticate(&mut s, KEY);
    s.write_all(&[5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(closed_by_server(&mut s));
    let mut s = raw(addr);
    authenticate(&mut s, KEY);
    s.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert!(closed_by_server(&mut s));

    // Silence after connecting: cut off at the 10 s auth deadline.
    let mut s = raw(addr);
    let t = std::time::Instant::now();
    assert!(closed_by_server(&mut s));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(14),
        "{waited:?}"
    );

    d.insert("after".into(), 2).unwrap();
    assert_eq!(d.get(&"after".into()).unwrap(), Some(2));
    still_serves(addr);
}

#[mproc::task]
fn tls_client(addr: String, tls: ClientTls) -> u32 {
    let m = Manager::connect_tls(addr.as_str(), KEY, tls).unwrap();
    let d: DictProxy<String, u32> = m.dict_named("shared").unwrap();
    d.insert("from a child".into(), 42).unwrap();
    42
}

#[test]
fn tls_on_both_sides_with_a_generated_certificate() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().to_vec();
    let server_tls = ServerTls::new(vec![cert.clone()], ck.signing_key.serialize_der());
    let m = Manager::serve_tls("127.0.0.1:0", KEY, server_tls).unwrap();
    let addr = m.address();
    let trust = ClientTls::new(cert, "localhost");

    let c = Manager::connect_tls(addr, KEY, trust.clone()).unwrap();
    let d: DictProxy<String, u32> = c.dict_named("shared").unwrap();
    d.insert("over tls".into(), 1).unwrap();
    // A proxy of a TLS manager passed to another process uses TLS there.
    let p = Process::new(tls_client, (addr.to_string(), trust.clone()))
        .start()
        .unwrap();
    assert!(p.join_timeout(LIMIT).unwrap());
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(d.get(&"from a child".into()).unwrap(), Some(42));
    assert_eq!(d.len().unwrap(), 2);

    // The wrong key inside TLS is still refused. Plain TCP gets nowhere:
    // each side waits for the other until the 10 s auth deadline ends it.
    assert_eq!(
        Manager::connect_tls(addr, b"guess", trust)
            .unwrap_err()
            .kind(),
        ErrorKind::Auth
    );
    assert!(Manager::connect(addr, KEY).is_err());
    // A certificate we do not trust is refused.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let distrust = ClientTls::new(other.cert.der().to_vec(), "localhost");
    assert_eq!(
        Manager::connect_tls(addr, KEY, distrust)
            .unwrap_err()
            .kind(),
        ErrorKind::Auth
    );
    assert_eq!(d.len().unwrap(), 2);
    let pid = m.server_pid().unwrap();
    drop(m);
    assert!(wait_gone(&[pid], Duration::from_secs(5)));
}

#[test]
fn a_client_that_trickles_its_answer_is_cut_off_at_the_deadline() {
    let m = Manager::serve("127.0.0.1:0", KEY).unwrap();
    let addr = m.address();
    let mut s = raw(addr);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _challenge = read_frame(&mut s).unwrap();
    // A plausible length, then the answer one byte every 800 ms: each byte
    // comes well within a bound per read, the whole answer does not.
    let started = std::time::Instant::now();
    let mut bytes = 64u32.to_le_bytes().into_iter().chain(std::iter::repeat(0));
    let mut buf = [0u8; 64];
    let cut = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the trickling client was still connected after 20 s"
        );
        if s.write_all(&[bytes.next().unwrap()]).is_err() {
            break started.elapsed();
        }
        match s.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break started.elapsed(),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(800));
    };
    assert!(
        cut >= Duration::from_secs(9),
        "cut off after {cut:?}, before the deadline"
    );
    still_serves(addr);
}
