//! nicpoll's QEMU guest harness: run a program inside a QEMU guest (TCG, so no
//! KVM is needed) whose PCI functions are bound to vfio-pci, so our VFIO drivers
//! meet the real Linux VFIO API; or whose vfio-user devices, served by a process
//! on the host, meet Linux's and DPDK's own drivers.
//!
//! ```no_run
//! use nicpoll_guest::{Guest, Mode, Nic, Net};
//! let guest = Guest::new()
//!     .mode(Mode::NoIommu)
//!     .nic(Nic::virtio().net(Net::Dgram("/tmp/peer.sock".into())))
//!     .program("target/release/testpmd", ["-a", "0000:00:03.0", "--", "--run-time=1"]);
//! if let Some(why) = guest.missing() {
//!     panic!("cannot run a guest here: {why}");
//! }
//! let out = guest.run().expect("the harness");
//! assert_eq!(out.status, Some(0), "{}", out.report());
//! ```
//!
//! **Guest.** Debian 12's kernel (`linux-image-amd64` of bookworm, booted as an
//! ELF through its PVH entry), a busybox initramfs whose init loads the modules in
//! dependency order, binds the chosen functions to vfio-pci, mounts hugetlbfs at
//! `/dev/hugepages` (64 × 2 MiB by default) and runs the program in `/lab` between
//! two marker lines; the program's exit status comes back from the second.
//! [`Mode::Type1`] puts an emulated Intel vIOMMU with interrupt remapping in front
//! (`/dev/vfio/N`); [`Mode::NoIommu`] loads a `vfio.ko` rebuilt with no-IOMMU
//! support (`/dev/vfio/noiommu-N`, DMA at physical addresses). The program sees
//! `NICPOLL_GUEST_MODE`, `NICPOLL_GUEST_BDFS` (functions bound to vfio-pci),
//! `NICPOLL_GUEST_BDF` (the first), `NICPOLL_GUEST_KERNEL_BDFS` and
//! `NICPOLL_GUEST_VFIO_USER_BDFS`. Emulated NIC i is at `0000:00:0(3+i).0`,
//! vfio-user device j at `0000:00:1j.0`.
//!
//! **Emulators.** [`Emulator::Host`] is the machine's `qemu-system-x86_64`
//! (Debian 12: QEMU 7.2). [`Emulator::Qemu11`] is QEMU 11 from trixie-backports in
//! a Debian trixie chroot the harness makes (root needed), with `vfio-user-pci`
//! devices ([`Guest::vfio_user`]) and DPDK 24.11's dpdk-testpmd for the guest
//! ([`Guest::dpdk`]).
//!
//! **Cache.** Everything downloaded or built lives in one folder ([`Cache`]),
//! prepared once under a lock (two tests starting on a cold cache take turns),
//! each piece renamed into place when whole, so an interrupted preparation
//! resumes. [`Guest::missing`] says, before anything is downloaded or booted,
//! what this machine lacks to run the guest.
//!
//! **A vfio-user server under test.** Start the server listening on a socket in
//! a folder of the test's own (a temporary folder: the harness shows that folder
//! to QEMU 11 in the chroot for the run), then boot a guest with one
//! [`VfioUser`] per socket; QEMU connects once per boot, so the server accepts
//! again for the next guest. Device j is `0000:00:1j.0` in the guest.
//!
//! ```no_run
//! use nicpoll_guest::{Driver, Guest, Mode, VfioUser};
//! use std::time::Duration;
//! let dir = std::path::Path::new("/tmp/my-test");          // the test's own folder
//! // ... the server listens on dir/vf0.sock and dir/vf1.sock ...
//! let guest = Guest::new()
//!     .mode(Mode::NoIommu)
//!     .vfio_user(VfioUser::new(dir.join("vf0.sock")))       // left to Linux's iavf
//!     .vfio_user(VfioUser::new(dir.join("vf1.sock")).driver(Driver::VfioPci))
//!     .kmod("iavf")
//!     .dpdk()
//!     .smp(2)
//!     .program("tests/guest/both.sh", ["--seconds", "5"]);
//! if let Some(why) = guest.missing() {
//!     return; // a test calls nicpoll_testkit::skip(why) here
//! }
//! let running = guest.spawn().expect("the harness");
//! assert!(running.wait_for_output("forwarding", Duration::from_secs(120)));
//! // ... act on the host side (a PF reset, traffic on the uplink) ...
//! let out = running.wait();
//! assert_eq!(out.status, Some(0), "{}", out.report());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apt;
mod boot;
mod cache;
mod check;
mod chroot;
mod console;
mod error;
mod exec;
mod initramfs;
mod kernel;
mod qemu;

use std::path::PathBuf;
use std::time::Duration;

pub use apt::mirror;
pub use cache::Cache;
pub use chroot::DPDK_GUEST_DIR;
pub use console::{Outcome, RunningGuest};
pub use error::{Error, Result};
pub use kernel::Kernel;

/// Print a harness progress line on standard error.
pub(crate) fn say(line: &str) {
    eprintln!("[nicpoll-guest] {line}");
}

/// Which QEMU boots the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emulator {
    /// The machine's `qemu-system-x86_64` (Debian 12's is 7.2; 7.2 or newer is
    /// needed for `-netdev dgram`).
    Host,
    /// QEMU 11 from trixie-backports, run in the harness's Debian trixie chroot:
    /// it has `vfio-user-pci`. Needs root (debootstrap, chroot, mount namespaces).
    Qemu11,
}

/// How VFIO is set up in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No VFIO modules: every device is left to the guest kernel's drivers.
    None,
    /// An emulated Intel vIOMMU with interrupt remapping; `/dev/vfio/N`,
    /// `VFIO_TYPE1v2_IOMMU` and `VFIO_IOMMU_MAP_DMA`.
    Type1,
    /// No vIOMMU; the rebuilt `vfio.ko` with `enable_unsafe_noiommu_mode=1`;
    /// `/dev/vfio/noiommu-N`, DMA at physical addresses (`/proc/self/pagemap`).
    NoIommu,
}

impl Mode {
    /// The name the guest's program sees in `NICPOLL_GUEST_MODE`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Type1 => "type1",
            Mode::NoIommu => "noiommu",
        }
    }
}

/// Who drives a PCI function in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Bound to vfio-pci before the program starts (needs [`Mode::Type1`] or
    /// [`Mode::NoIommu`]).
    VfioPci,
    /// Left to the guest kernel's own driver.
    Kernel,
}

/// The model of an emulated NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicModel {
    /// Intel 82574 (`8086:10d3`).
    E1000e,
    /// virtio-net 1.0, modern only (`1af4:1041`); behind the vIOMMU it takes
    /// `VIRTIO_F_ACCESS_PLATFORM`.
    Virtio,
}

/// The host side of an emulated NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// QEMU's user-mode network (slirp) with `restrict=on`: 10.0.2.2 answers ARP
    /// and ping, nothing reaches the host or beyond.
    User,
    /// Every frame is one datagram to the unix datagram socket at this path (a
    /// peer the test runs); QEMU's own end is a socket in the run's folder.
    Dgram(PathBuf),
    /// A tap interface that exists already, in the network namespace `netns`
    /// (created with `ip netns add`) or in the caller's when None.
    Tap {
        /// The tap interface's name.
        ifname: String,
        /// The network namespace it lives in.
        netns: Option<String>,
    },
    /// QEMU listens on 127.0.0.1:PORT for another QEMU's socket netdev.
    SocketListen(u16),
    /// QEMU connects to another QEMU listening on 127.0.0.1:PORT.
    SocketConnect(u16),
}

/// An emulated NIC of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    model: NicModel,
    driver: Driver,
    net: Net,
    props: Vec<String>,
}

impl Nic {
    /// An e1000e NIC on [`Net::User`], bound to vfio-pci.
    pub fn e1000e() -> Nic {
        Nic::new(NicModel::E1000e)
    }

    /// A virtio-net NIC on [`Net::User`], bound to vfio-pci.
    pub fn virtio() -> Nic {
        Nic::new(NicModel::Virtio)
    }

    fn new(model: NicModel) -> Nic {
        Nic {
            model,
            driver: Driver::VfioPci,
            net: Net::User,
            props: Vec::new(),
        }
    }

    /// Its host side.
    pub fn net(mut self, net: Net) -> Nic {
        self.net = net;
        self
    }

    /// Who drives it in the guest.
    pub fn driver(mut self, driver: Driver) -> Nic {
        self.driver = driver;
        self
    }

    /// A QEMU `-device` property (`mac=52:54:00:00:00:02`).
    pub fn prop(mut self, prop: impl Into<String>) -> Nic {
        self.props.push(prop.into());
        self
    }
}

/// A `vfio-user-pci` device: a PCI function served by a process on the host
/// over the unix socket `socket` ([`Emulator::Qemu11`] only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioUser {
    socket: PathBuf,
    driver: Driver,
    props: Vec<(String, String)>,
}

impl VfioUser {
    /// The device served on `socket`, left to the guest kernel's drivers (e.g.
    /// Linux's iavf, with [`Guest::kmod`]).
    pub fn new(socket: impl Into<PathBuf>) -> VfioUser {
        VfioUser {
            socket: socket.into(),
            driver: Driver::Kernel,
            props: Vec::new(),
        }
    }

    /// Who drives it in the guest.
    pub fn driver(mut self, driver: Driver) -> VfioUser {
        self.driver = driver;
        self
    }

    /// A QEMU `-device` property, its value as JSON (`"x-msg-timeout", "5000"`).
    pub fn prop(mut self, key: impl Into<String>, json_value: impl Into<String>) -> VfioUser {
        self.props.push((key.into(), json_value.into()));
        self
    }
}

/// What the harness shows while a guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// Nothing: the caller reads the [`Outcome`].
    Quiet,
    /// The program's lines on standard output, the guest's setup lines on
    /// standard error.
    Program,
    /// Every console line on standard output.
    Console,
}

/// One guest run: what it boots, what runs in it, and how it is reached.
#[derive(Debug, Clone)]
pub struct Guest {
    emulator: Option<Emulator>,
    mode: Mode,
    nics: Vec<Nic>,
    vfio_user: Vec<VfioUser>,
    kmods: Vec<(String, bool)>,
    dpdk: bool,
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    program: Option<(PathBuf, Vec<String>)>,
    timeout: Duration,
    mem_mb: u32,
    smp: u32,
    cpu: Option<String>,
    hugepages: u32,
    append: Vec<String>,
    qemu_args: Vec<String>,
    pcap: Option<PathBuf>,
    log: Option<PathBuf>,
    echo: Echo,
    cache: Option<PathBuf>,
}

impl Default for Guest {
    fn default() -> Self {
        Guest::new()
    }
}

impl Guest {
    /// A guest on the host's QEMU in [`Mode::None`] with no device, 1 GiB of
    /// memory, one vCPU, 64 hugepages and a 300 s limit.
    pub fn new() -> Guest {
        Guest {
            emulator: None,
            mode: Mode::None,
            nics: Vec::new(),
            vfio_user: Vec::new(),
            kmods: Vec::new(),
            dpdk: false,
            files: Vec::new(),
            env: Vec::new(),
            program: None,
            timeout: Duration::from_secs(300),
            mem_mb: 1024,
            smp: 1,
            cpu: None,
            hugepages: 64,
            append: Vec::new(),
            qemu_args: Vec::new(),
            pcap: None,
            log: None,
            echo: Echo::Quiet,
            cache: None,
        }
    }

    /// Which QEMU boots it (default: [`Emulator::Qemu11`] when a vfio-user device
    /// is given, [`Emulator::Host`] otherwise).
    pub fn emulator(mut self, emulator: Emulator) -> Guest {
        self.emulator = Some(emulator);
        self
    }

    /// How VFIO is set up.
    pub fn mode(mut self, mode: Mode) -> Guest {
        self.mode = mode;
        self
    }

    /// Add an emulated NIC (NIC i is at `0000:00:0(3+i).0`).
    pub fn nic(mut self, nic: Nic) -> Guest {
        self.nics.push(nic);
        self
    }

    /// Add a vfio-user device (device j is at `0000:00:1j.0`). The server must
    /// listen on the socket before the guest starts (the harness waits up to
    /// 10 s for it), and accepts one connection per guest run. The socket may lie
    /// anywhere except in a folder the chroot has itself (`/usr`, ...): its
    /// folder is shown to QEMU in the chroot for that run only.
    pub fn vfio_user(mut self, device: VfioUser) -> Guest {
        self.vfio_user.push(device);
        self
    }

    /// Put the kernel module NAME (from the guest kernel's VFIO, virtio and Intel
    /// NIC drivers, e.g. `iavf`) into the guest with what it depends on, and load
    /// it after binding, before the program.
    pub fn kmod(mut self, name: impl Into<String>) -> Guest {
        self.kmods.push((name.into(), true));
        self
    }

    /// As [`Guest::kmod`], but the program loads it (`insmod /lib/modules/NAME.ko`);
    /// what it depends on is loaded before the program.
    pub fn kmod_unloaded(mut self, name: impl Into<String>) -> Guest {
        self.kmods.push((name.into(), false));
        self
    }

    /// Put DPDK 24.11 into the guest under [`DPDK_GUEST_DIR`]:
    /// `/opt/dpdk/bin/dpdk-testpmd` with its own loader and libraries (so it runs
    /// beside programs copied from this host) and the iavf, virtio, e1000, null
    /// and ring PMDs. Without [`Guest::cpu`] the vCPU model becomes one with
    /// SSE4.2 (DPDK needs it); testpmd wants two lcores: [`Guest::smp`] 2.
    pub fn dpdk(mut self) -> Guest {
        self.dpdk = true;
        self
    }

    /// The program to run as root in the guest's `/lab` (a static or dynamically
    /// linked binary, or a busybox `sh` script) and its arguments.
    pub fn program<I, S>(mut self, path: impl Into<PathBuf>, args: I) -> Guest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.program = Some((path.into(), args.into_iter().map(Into::into).collect()));
        self
    }

    /// Copy a host file into the guest's `/lab` (a dynamically linked one brings
    /// its libraries).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Guest {
        self.files.push(path.into());
        self
    }

    /// An environment variable for the program.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Guest {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The limit on the whole guest run (boot, program, power-off).
    pub fn timeout(mut self, timeout: Duration) -> Guest {
        self.timeout = timeout;
        self
    }

    /// Guest memory in MiB.
    pub fn mem_mb(mut self, mb: u32) -> Guest {
        self.mem_mb = mb;
        self
    }

    /// Number of vCPUs.
    pub fn smp(mut self, n: u32) -> Guest {
        self.smp = n;
        self
    }

    /// QEMU's `-cpu` model (default QEMU's own, qemu64).
    pub fn cpu(mut self, model: impl Into<String>) -> Guest {
        self.cpu = Some(model.into());
        self
    }

    /// Number of 2 MiB hugepages the guest kernel reserves at boot.
    pub fn hugepages(mut self, n: u32) -> Guest {
        self.hugepages = n;
        self
    }

    /// An extra guest kernel command-line argument.
    pub fn append(mut self, arg: impl Into<String>) -> Guest {
        self.append.push(arg.into());
        self
    }

    /// An extra QEMU argument (`"-global"`, `"intel-iommu.aw-bits=48"`).
    pub fn qemu_arg(mut self, arg: impl Into<String>) -> Guest {
        self.qemu_args.push(arg.into());
        self
    }

    /// Write every emulated NIC's frames to `DIR/nicI.pcap`.
    pub fn pcap(mut self, dir: impl Into<PathBuf>) -> Guest {
        self.pcap = Some(dir.into());
        self
    }

    /// Also write the whole console to this file as it arrives.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Guest {
        self.log = Some(path.into());
        self
    }

    /// What to show while the guest runs (default [`Echo::Quiet`]).
    pub fn echo(mut self, echo: Echo) -> Guest {
        self.echo = echo;
        self
    }

    /// Use the cache at `dir` instead of the one the environment names.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Guest {
        self.cache = Some(dir.into());
        self
    }

    /// The QEMU this guest runs on.
    pub fn resolved_emulator(&self) -> Emulator {
        self.emulator.unwrap_or(if self.vfio_user.is_empty() {
            Emulator::Host
        } else {
            Emulator::Qemu11
        })
    }

    fn cache(&self) -> Result<Cache> {
        match &self.cache {
            Some(d) => Cache::at(d),
            None => Cache::from_env(),
        }
    }

    /// What this machine lacks to prepare and boot this guest, with how to get
    /// it; None when it can run. Decided from the host's tools, privileges, the
    /// cache and whether the Debian archive answers, before anything is
    /// downloaded or booted.
    pub fn missing(&self) -> Option<String> {
        if let Err(e) = self.validate() {
            return Some(e.to_string());
        }
        match self.cache() {
            Ok(cache) => check::missing(self, &cache),
            Err(e) => Some(e.to_string()),
        }
    }

    /// Download and build what this guest needs unless the cache has it.
    pub fn prepare(&self) -> Result<Kernel> {
        self.validate()?;
        boot::prepare(self, &self.cache()?)
    }

    /// Prepare, then boot the guest and return while it runs. QEMU is killed
    /// when the thread that called this ends: wait for it on the same thread.
    pub fn spawn(&self) -> Result<RunningGuest> {
        self.validate()?;
        let cache = self.cache()?;
        let kernel = boot::prepare(self, &cache)?;
        boot::spawn(self, &cache, &kernel)
    }

    /// Prepare, boot the guest and wait for it to end.
    pub fn run(&self) -> Result<Outcome> {
        Ok(self.spawn()?.wait())
    }

    /// Refuse settings that cannot work, before anything runs.
    fn validate(&self) -> Result<()> {
        let binds = self.nics.iter().any(|n| n.driver == Driver::VfioPci)
            || self.vfio_user.iter().any(|v| v.driver == Driver::VfioPci);
        if binds && self.mode == Mode::None {
            return Err(Error::new(
                "a device is to be bound to vfio-pci but the mode is none: choose Mode::Type1 or Mode::NoIommu \
                 (or Driver::Kernel for the device)",
            ));
        }
        if !self.vfio_user.is_empty() && self.emulator == Some(Emulator::Host) {
            return Err(Error::new(
                "vfio-user devices need QEMU 11 (Emulator::Qemu11): the host's QEMU has no vfio-user-pci",
            ));
        }
        if self.nics.len() > 13 || self.vfio_user.len() > 16 {
            return Err(Error::new(
                "at most 13 emulated NICs (slots 3..f) and 16 vfio-user devices (slots 10..1f)",
            ));
        }
        let netns: std::collections::BTreeSet<Option<&String>> = self
            .nics
            .iter()
            .filter_map(|n| match &n.net {
                Net::Tap { netns, .. } => Some(netns.as_ref()),
                _ => None,
            })
            .collect();
        if netns.len() > 1 {
            return Err(Error::new(
                "tap NICs in different network namespaces: QEMU runs in one, so all taps must share it",
            ));
        }
        Ok(())
    }

    /// The network namespace QEMU must run in (for its tap NICs).
    fn netns(&self) -> Option<&str> {
        self.nics.iter().find_map(|n| match &n.net {
            Net::Tap { netns, .. } => netns.as_deref(),
            _ => None,
        })
    }
}
