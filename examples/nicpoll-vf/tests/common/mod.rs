//! What nicpoll-vf's tests share: the server as a child process (its
//! counters through SIGUSR1), a raw vfio-user client written here from the
//! protocol (QEMU's `docs/interop/vfio-user.rst`), and host network helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The server, started with `args`, its output collected.
pub struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub sockets: Vec<PathBuf>,
}

impl Server {
    /// Start nicpoll-vf serving one VF per socket in `dir` (`vf0.sock`, ...)
    /// plus `extra` arguments, and wait until it says it is ready.
    pub fn start(dir: &Path, vfs: usize, extra: &[&str]) -> Server {
        Self::start_bin(Path::new(env!("CARGO_BIN_EXE_nicpoll-vf")), dir, vfs, extra)
    }

    /// As [`start`](Self::start), with another build of the binary.
    pub fn start_bin(bin: &Path, dir: &Path, vfs: usize, extra: &[&str]) -> Server {
        let sockets: Vec<PathBuf> = (0..vfs).map(|i| dir.join(format!("vf{i}.sock"))).collect();
        let mut cmd = Command::new(bin);
        for s in &sockets {
            cmd.arg("--vf").arg(s);
        }
        cmd.args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting nicpoll-vf");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var_os("NICPOLL_VF_TEST_ECHO").is_some() {
                        eprintln!("[nicpoll-vf] {l}");
                    }
                    lines.lock().unwrap().push(l);
                }
            });
        }
        let s = Server {
            child,
            lines,
            sockets,
        };
        assert!(
            s.wait_line(|l| l.contains("ready"), Duration::from_secs(20)),
            "nicpoll-vf did not start:\n{}",
            s.output()
        );
        s
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Wait for a line after the first `from` ones that matches.
    fn wait_line_from(&self, from: usize, f: impl Fn(&str) -> bool, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            {
                let lines = self.lines.lock().unwrap();
                if lines[from.min(lines.len())..].iter().any(|l| f(l)) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Wait for a line that matches.
    pub fn wait_line(&self, f: impl Fn(&str) -> bool, t: Duration) -> bool {
        self.wait_line_from(0, f, t)
    }

    /// The names of the server's threads now (`/proc/PID/task/*/comm`).
    pub fn thread_names(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut names: Vec<String> = std::fs::read_dir(&tasks)
            .unwrap_or_else(|e| panic!("{tasks}: {e}"))
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim_end().to_string())
            .collect();
        names.sort();
        names
    }

    /// Send a signal to the server.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// The counter lines now (SIGUSR1): one per VF, then the switch's.
    pub fn counters(&self) -> Vec<String> {
        let from = self.count();
        self.signal("USR1");
        assert!(
            self.wait_line_from(from, |l| l.starts_with("switch:"), Duration::from_secs(10)),
            "no counters:\n{}",
            self.output()
        );
        let lines = self.lines.lock().unwrap();
        let mut out: Vec<String> = lines[from..]
            .iter()
            .filter(|l| l.starts_with("vf") || l.starts_with("switch:"))
            .cloned()
            .collect();
        if let Some(i) = out.iter().position(|l| l.starts_with("switch:")) {
            out.truncate(i + 1);
        }
        out
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, and its exit status and output.
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (st.code(), self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        (None, self.output())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value after `key ` in a counter line ("msgs 12" -> 12).
pub fn field(line: &str, key: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[0] == key)
        .and_then(|w| w[1].trim_end_matches([',', ')']).parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
}

/// The value of `key=N` in a counter line.
pub fn kv(line: &str, key: &str) -> u64 {
    line.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------ raw client

pub const VERSION: u16 = 1;
pub const DMA_MAP: u16 = 2;
pub const DMA_UNMAP: u16 = 3;
pub const DEVICE_GET_INFO: u16 = 4;
pub const DEVICE_GET_REGION_INFO: u16 = 5;
pub const DEVICE_SET_IRQS: u16 = 8;
pub const REGION_READ: u16 = 9;
pub const REGION_WRITE: u16 = 10;
pub const DEVICE_RESET: u16 = 13;
pub const REGION_WRITE_MULTI: u16 = 15;
pub const NO_REPLY: u32 = 0x10;
pub const ERROR: u32 = 0x20;

/// A reply: its header fields and payload.
#[derive(Debug)]
pub struct Reply {
    pub id: u16,
    pub command: u16,
    pub flags: u32,
    pub error: u32,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Reply {
    pub fn is_error(&self) -> bool {
        self.flags & ERROR != 0
    }
}

/// A vfio-user client of our own.
pub struct Client {
    pub s: UnixStream,
    next_id: u16,
}

impl Client {
    /// Connect (the server may still be setting the socket up).
    pub fn connect(path: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(path) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    return Client { s, next_id: 1 };
                }
                Err(e) if Instant::now() > deadline => panic!("connect {}: {e}", path.display()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Send raw bytes (a message of any shape).
    pub fn raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.s.write_all(bytes).unwrap();
    }

    /// A header.
    pub fn header(id: u16, command: u16, payload_len: usize, flags: u32) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[0..2].copy_from_slice(&id.to_le_bytes());
        h[2..4].copy_from_slice(&command.to_le_bytes());
        h[4..8].copy_from_slice(&((16 + payload_len) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&flags.to_le_bytes());
        h
    }

    /// Send a command; returns its id.
    pub fn send(
        &mut self,
        command: u16,
        flags: u32,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let h = Self::header(id, command, payload.len(), flags);
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() {
            assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(fds)));
        }
        let n = rustix::net::sendmsg(
            &self.s,
            &[IoSlice::new(&h), IoSlice::new(payload)],
            &mut control,
            rustix::net::SendFlags::NOSIGNAL,
        )
        .unwrap();
        assert_eq!(n, 16 + payload.len());
        id
    }

    /// Read one reply.
    pub fn recv(&mut self) -> Reply {
        let mut h = [0u8; 16];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let r = rustix::net::recvmsg(
            &self.s,
            &mut [IoSliceMut::new(&mut h)],
            &mut control,
            rustix::net::RecvFlags::CMSG_CLOEXEC | rustix::net::RecvFlags::WAITALL,
        )
        .expect("a reply");
        assert_eq!(r.bytes, 16, "a whole header");
        let mut fds = Vec::new();
        for m in control.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(f) = m {
                fds.extend(f);
            }
        }
        let size = u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize;
        let mut payload = vec![0u8; size - 16];
        (&self.s).read_exact(&mut payload).unwrap();
        Reply {
            id: u16::from_le_bytes([h[0], h[1]]),
            command: u16::from_le_bytes([h[2], h[3]]),
            flags: u32::from_le_bytes(h[8..12].try_into().unwrap()),
            error: u32::from_le_bytes(h[12..16].try_into().unwrap()),
            payload,
            fds,
        }
    }

    /// Send and read the reply, which must answer this message.
    pub fn call(&mut self, command: u16, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Reply {
        let id = self.send(command, 0, payload, fds);
        let r = self.recv();
        assert_eq!(
            (r.id, r.command),
            (id, command),
            "the reply to this message"
        );
        r
    }

    /// The VERSION handshake.
    pub fn version(&mut self) -> Reply {
        let mut p = vec![0u8; 4];
        p.extend_from_slice(br#"{"capabilities":{"max_msg_fds":16}}"#);
        p.push(0);
        let r = self.call(VERSION, &p, &[]);
        assert!(!r.is_error());
        r
    }

    pub fn access(offset: u64, region: u32, count: u32) -> Vec<u8> {
        let mut p = offset.to_le_bytes().to_vec();
        p.extend_from_slice(&region.to_le_bytes());
        p.extend_from_slice(&count.to_le_bytes());
        p
    }

    /// REGION_READ of 4 bytes.
    pub fn read32(&mut self, region: u32, offset: u64) -> Result<u32, u32> {
        let r = self.call(REGION_READ, &Self::access(offset, region, 4), &[]);
        if r.is_error() {
            return Err(r.error);
        }
        Ok(u32::from_le_bytes(r.payload[16..20].try_into().unwrap()))
    }

    /// REGION_WRITE of 4 bytes, posted.
    pub fn write32_posted(&mut self, region: u32, offset: u64, v: u32) {
        let mut p = Self::access(offset, region, 4);
        p.extend_from_slice(&v.to_le_bytes());
        self.send(REGION_WRITE, NO_REPLY, &p, &[]);
    }

    /// REGION_WRITE, waiting for the reply.
    pub fn write(&mut self, region: u32, offset: u64, data: &[u8]) -> Reply {
        let mut p = Self::access(offset, region, data.len() as u32);
        p.extend_from_slice(data);
        self.call(REGION_WRITE, &p, &[])
    }

    /// DMA_MAP of `fd` at `offset` to `iova`.
    pub fn dma_map(&mut self, fd: BorrowedFd<'_>, offset: u64, iova: u64, size: u64) -> Reply {
        let mut p = 32u32.to_le_bytes().to_vec();
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&iova.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        self.call(DMA_MAP, &p, &[fd])
    }
}

/// A memfd of `len` bytes, as QEMU's guest RAM.
pub fn memfd(len: u64) -> std::fs::File {
    let fd = rustix::fs::memfd_create(
        "guest-ram",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    let f = std::fs::File::from(fd);
    f.set_len(len).unwrap();
    f
}

pub fn as_fd(f: &impl AsFd) -> BorrowedFd<'_> {
    f.as_fd()
}
