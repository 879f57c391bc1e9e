//! What the harness's own guest tests share: a host-side link partner on a unix
//! datagram socket (QEMU's `-netdev dgram` sends each frame as one datagram).

#![allow(dead_code)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nicpoll_guest::{Guest, Outcome};

/// The frames a [`Peer`] received.
#[derive(Debug, Default, Clone)]
pub struct Frames {
    pub frames: Vec<Vec<u8>>,
}

impl Frames {
    /// Frames of the given ethertype.
    pub fn of_type(&self, ethertype: u16) -> Vec<&Vec<u8>> {
        self.frames
            .iter()
            .filter(|f| f.len() >= 14 && u16::from_be_bytes([f[12], f[13]]) == ethertype)
            .collect()
    }
}

/// A unix datagram socket that collects every frame QEMU sends it.
pub struct Peer {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Frames>>,
    thread: Option<JoinHandle<()>>,
}

impl Peer {
    pub fn start(dir: &Path) -> Peer {
        let path = dir.join("peer.sock");
        let sock = UnixDatagram::bind(&path).expect("binding the peer socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Frames::default()));
        let (s, f) = (stop.clone(), frames.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    f.lock().unwrap().frames.push(buf[..n].to_vec());
                }
            }
        });
        Peer {
            path,
            stop,
            frames,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Frames {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.frames.lock().unwrap().clone()
    }
}

/// An executable `/bin/sh` script `name` in `dir` with `body`, for a guest to run.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Run `guest`, whose datagram NIC points at `dir/peer.sock`, with a [`Peer`]
/// there; the program must exit 0. Its outcome and the frames the peer got.
pub fn run_with_peer(guest: &Guest, dir: &Path) -> (Outcome, Frames) {
    let peer = Peer::start(dir);
    let out = guest.run().expect("the harness runs");
    let frames = peer.finish();
    assert_eq!(out.status, Some(0), "{}", out.report());
    (out, frames)
}

/// The word after `key` (`"group="`) in a guest's output; panics with the
/// output where there is none.
pub fn value_of<'a>(output: &'a str, key: &str) -> &'a str {
    output
        .split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {key} in: {output}"))
}

/// Whether anything is mounted under `dir` (in this process's namespace).
pub fn mounted_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// The records of a pcap file (classic format, as QEMU's filter-dump writes).
pub fn pcap_records(path: &Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() >= 24, "{} is no pcap file", path.display());
    assert_eq!(&b[..4], &0xa1b2c3d4u32.to_le_bytes(), "pcap magic");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(b[at + 16..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    out
}
