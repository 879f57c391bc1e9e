//! One guest run: prepare the cache for it, assemble its initramfs (init, busybox,
//! modules in load order, the program and its files), and start QEMU.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::apt::Apt;
use crate::cache::{self, Cache};
use crate::chroot::{self, Bind, Chroot};
use crate::console::RunningGuest;
use crate::error::{Error, Result};
use crate::initramfs::Initramfs;
use crate::kernel::{self, Kernel};
use crate::qemu::{self, QemuPlan};
use crate::{Driver, Emulator, Guest, Mode, Net, NicModel};

/// The vCPU model for DPDK when none is chosen: qemu64 with what DPDK 24.11's
/// x86 build requires (SSE4.2), cheaper to emulate than `max`.
const DPDK_CPU: &str = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt";

fn needs_chroot(g: &Guest) -> bool {
    g.resolved_emulator() == Emulator::Qemu11 || g.dpdk
}

/// Everything `g` needs is in the cache: its kernel, without taking the lock.
fn ready(g: &Guest, cache: &Cache) -> Option<Kernel> {
    let k = kernel::prepared(cache)?;
    let ok = cache.is_done("busybox")
        && (g.mode != Mode::NoIommu || cache.is_done(&format!("noiommu-{}", k.kabi)))
        && (!needs_chroot(g) || chroot::prepared(cache, g.dpdk));
    ok.then_some(k)
}

/// Download and build what `g` needs, under the cache lock.
pub(crate) fn prepare(g: &Guest, cache: &Cache) -> Result<Kernel> {
    if let Some(k) = ready(g, cache) {
        return Ok(k);
    }
    let _lock = cache.lock()?;
    // Another process may have prepared it while this one waited.
    if let Some(k) = ready(g, cache) {
        return Ok(k);
    }
    let t = Instant::now();
    let apt = Apt::new(cache);
    let k = kernel::prepare(cache, &apt)?;
    kernel::prepare_busybox(cache, &apt)?;
    if g.mode == Mode::NoIommu {
        kernel::prepare_noiommu(cache, &apt, &k)?;
    }
    if needs_chroot(g) {
        if !crate::check::is_root() {
            return Err(Error::new(
                "QEMU 11 and DPDK live in a chroot the harness makes and enters: run as root",
            ));
        }
        chroot::prepare(cache, g.dpdk)?;
    }
    crate::say(&format!(
        "cache {} prepared in {:.1} s",
        cache.root().display(),
        t.elapsed().as_secs_f64()
    ));
    Ok(k)
}

/// Shell single quotes around `s`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// An absolute path with its folder's symbolic links resolved (the chroot binds
/// real folders), for a file that may not exist yet.
fn real_path(p: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(p)
        .map_err(|e| Error::new(format!("cannot make {} absolute: {e}", p.display())))?;
    let (Some(dir), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(Error::new(format!("{} names no file", p.display())));
    };
    let dir = dir
        .canonicalize()
        .map_err(|e| Error::new(format!("no folder {}: {e}", dir.display())))?;
    Ok(dir.join(name))
}

/// The guest's modules: those loaded at boot, in order, with parameters; those
/// loaded after binding; and those only copied.
struct Modules {
    boot: Vec<(kernel::Module, String)>,
    late: Vec<kernel::Module>,
    copied: Vec<kernel::Module>,
}

fn modules(g: &Guest, k: &Kernel) -> Result<Modules> {
    let mut index = kernel::module_index(&k.modules_dir())?;
    if g.mode == Mode::NoIommu {
        let ko = k.noiommu_vfio();
        let bytes = std::fs::read(&ko)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", ko.display())))?;
        let depends = kernel::modinfo(&bytes, "depends")
            .next()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(kernel::module_name)
            .collect();
        index.insert(
            "vfio".into(),
            kernel::Module {
                name: "vfio".into(),
                path: ko,
                depends,
            },
        );
    }
    let mut wanted: Vec<String> = match g.mode {
        Mode::None => vec![],
        Mode::Type1 => vec!["vfio_iommu_type1".into(), "vfio_pci".into()],
        Mode::NoIommu => vec!["vfio".into(), "vfio_pci".into()],
    };
    for nic in g.nics.iter().filter(|n| n.driver == Driver::Kernel) {
        match nic.model {
            NicModel::E1000e => wanted.push("e1000e".into()),
            NicModel::Virtio => wanted.extend(["virtio_pci".into(), "virtio_net".into()]),
        }
    }
    // What the extra modules depend on loads at boot; they themselves later.
    for (name, _) in &g.kmods {
        let name = kernel::module_name(name);
        let m = index.get(&name).ok_or_else(|| {
            Error::new(format!(
                "kernel module {name} is not among the unpacked ones (VFIO, virtio, failover and Intel NIC drivers)"
            ))
        })?;
        wanted.extend(m.depends.iter().cloned());
    }
    let boot_order = kernel::load_order(&index, &wanted)?;
    let booted = |n: &str| boot_order.iter().any(|m| m.name == n);
    let mut late = Vec::new();
    let mut copied = Vec::new();
    for (name, load) in &g.kmods {
        let name = kernel::module_name(name);
        if booted(&name) {
            continue;
        }
        let m = index[&name].clone();
        if *load { late.push(m) } else { copied.push(m) }
    }
    let boot = boot_order
        .into_iter()
        .map(|m| {
            let params = if m.name == "vfio" && g.mode == Mode::NoIommu {
                "enable_unsafe_noiommu_mode=1".to_string()
            } else {
                String::new()
            };
            (m, params)
        })
        .collect();
    Ok(Modules { boot, late, copied })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The guest's root file system.
fn initramfs(
    g: &Guest,
    cache: &Cache,
    k: &Kernel,
    bind: &[String],
    kernel_bdfs: &[String],
    vu_bdfs: &[String],
) -> Result<Initramfs> {
    let mut fs = Initramfs::default();
    fs.bytes("/init", include_str!("init.sh"), 0o755);
    fs.host_file("/bin/busybox", &cache.path("busybox"))?;
    for d in ["/dev", "/proc", "/sys", "/tmp", "/run", "/lab"] {
        fs.dir(d);
    }
    let m = modules(g, k)?;
    let mut list = String::new();
    for (module, params) in &m.boot {
        let f = file_name(&module.path);
        fs.host_file(&format!("/lib/modules/{f}"), &module.path)?;
        list.push_str(&format!("{f} {params}\n"));
    }
    for module in m.late.iter().chain(&m.copied) {
        fs.host_file(
            &format!("/lib/modules/{}", file_name(&module.path)),
            &module.path,
        )?;
    }
    fs.bytes("/lab/modules", list, 0o644);
    let late: Vec<String> = m.late.iter().map(|m| file_name(&m.path)).collect();
    fs.bytes(
        "/lab/config",
        format!(
            "MODE={}\nBIND={}\nLATE={}\n",
            g.mode.name(),
            quote(&bind.join(" ")),
            quote(&late.join(" "))
        ),
        0o644,
    );
    let (program, args) = g
        .program
        .as_ref()
        .ok_or_else(|| Error::new("no program to run in the guest"))?;
    let name = file_name(program);
    fs.program(&format!("/lab/{name}"), program)
        .map_err(|e| Error::new(format!("the guest's program: {e}")))?;
    for f in &g.files {
        fs.program(&format!("/lab/{}", file_name(f)), f)
            .map_err(|e| Error::new(format!("a file for the guest: {e}")))?;
    }
    if g.dpdk {
        fs.tree("/", &cache.path("dpdk"))?;
    }
    let mut run = String::from("cd /lab\n");
    for (k, v) in [
        ("NICPOLL_GUEST_MODE", g.mode.name().to_string()),
        ("NICPOLL_GUEST_BDFS", bind.join(" ")),
        (
            "NICPOLL_GUEST_BDF",
            bind.first().cloned().unwrap_or_default(),
        ),
        ("NICPOLL_GUEST_KERNEL_BDFS", kernel_bdfs.join(" ")),
        ("NICPOLL_GUEST_VFIO_USER_BDFS", vu_bdfs.join(" ")),
    ] {
        run.push_str(&format!("export {k}={}\n", quote(&v)));
    }
    for (k, v) in &g.env {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::new(format!(
                "{k:?} is not an environment variable name"
            )));
        }
        run.push_str(&format!("export {k}={}\n", quote(v)));
    }
    run.push_str(&format!("exec ./{}", quote(&name)));
    for a in args {
        run.push(' ');
        run.push_str(&quote(a));
    }
    run.push('\n');
    fs.bytes("/lab/run", run, 0o755);
    Ok(fs)
}

/// A fresh folder for one run under `CACHE/run`, named after this process;
/// folders of processes that are gone (killed before they cleaned up) go.
fn run_dir(cache: &Cache) -> Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    if let Ok(entries) = std::fs::read_dir(cache.path("run")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().unwrap_or_default();
            if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = cache.path(&format!("run/{}-{n}", std::process::id()));
    cache::remove(&dir)?;
    cache::mkdir(&dir)?;
    Ok(dir)
}

/// Wait up to 10 s for a server's socket to appear.
fn wait_for_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let t = Instant::now();
    loop {
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err(Error::new(format!(
                "no socket at {} after 10 s: start the vfio-user server (listening there) before the guest",
                path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Assemble and boot.
pub(crate) fn spawn(g: &Guest, cache: &Cache, k: &Kernel) -> Result<RunningGuest> {
    let emulator = g.resolved_emulator();
    let mut bind = Vec::new();
    let mut kernel_bdfs = Vec::new();
    for (i, nic) in g.nics.iter().enumerate() {
        match nic.driver {
            Driver::VfioPci => bind.push(qemu::nic_bdf(i)),
            Driver::Kernel => kernel_bdfs.push(qemu::nic_bdf(i)),
        }
    }
    let mut vu_bdfs = Vec::new();
    let mut sockets = Vec::new();
    for (j, v) in g.vfio_user.iter().enumerate() {
        vu_bdfs.push(qemu::vfio_user_bdf(j));
        if v.driver == Driver::VfioPci {
            bind.push(qemu::vfio_user_bdf(j));
        }
        wait_for_socket(&v.socket)?;
        sockets.push((real_path(&v.socket)?, &v.props[..]));
    }
    let nics: Vec<crate::Nic> = g
        .nics
        .iter()
        .map(|n| {
            let mut n = n.clone();
            if let Net::Dgram(p) = &n.net {
                n.net = Net::Dgram(real_path(p)?);
            }
            Ok(n)
        })
        .collect::<Result<_>>()?;
    let pcap = match &g.pcap {
        Some(d) => {
            cache::mkdir(d)?;
            Some(
                d.canonicalize()
                    .map_err(|e| Error::new(format!("{}: {e}", d.display())))?,
            )
        }
        None => None,
    };
    let fs = initramfs(g, cache, k, &bind, &kernel_bdfs, &vu_bdfs)?;
    let dir = run_dir(cache)?;
    let initrd = dir.join("initrd.cpio");
    fs.write(&initrd)?;

    let chroot = Chroot::new(cache);
    let qboot = "/usr/share/qemu/qboot.rom";
    let bios_on_host = match emulator {
        Emulator::Host => PathBuf::from(qboot),
        Emulator::Qemu11 => chroot.root.join(qboot.trim_start_matches('/')),
    };
    let cpu = g
        .cpu
        .as_deref()
        .or(if g.dpdk { Some(DPDK_CPU) } else { None });
    let image = k.boot_image();
    let args = qemu::args(&QemuPlan {
        emulator,
        mode: g.mode,
        mem_mb: g.mem_mb,
        smp: g.smp,
        cpu,
        hugepages: g.hugepages,
        append: &g.append,
        nics: &nics,
        vfio_user: sockets.clone(),
        run_dir: &dir,
        pcap: pcap.as_deref(),
        kernel: &image,
        initrd: &initrd,
        bios: bios_on_host.is_file().then_some(Path::new(qboot)),
        extra: &g.qemu_args,
    });
    let cmd = match emulator {
        Emulator::Host => {
            let mut c = Command::new("qemu-system-x86_64");
            c.args(&args);
            c
        }
        Emulator::Qemu11 => {
            let mut binds = vec![
                Bind {
                    dir: dir.clone(),
                    writable: true,
                },
                Bind {
                    dir: k.dir.clone(),
                    writable: false,
                },
            ];
            for (s, _) in &sockets {
                binds.push(Bind {
                    dir: s.parent().unwrap_or(s).to_path_buf(),
                    writable: false,
                });
            }
            for n in &nics {
                if let Net::Dgram(p) = &n.net {
                    binds.push(Bind {
                        dir: p.parent().unwrap_or(p).to_path_buf(),
                        writable: false,
                    });
                }
            }
            if let Some(p) = &pcap {
                binds.push(Bind {
                    dir: p.clone(),
                    writable: true,
                });
            }
            let mut argv: Vec<OsString> = vec!["/usr/bin/qemu-system-x86_64".into()];
            argv.extend(args.iter().map(OsString::from));
            chroot.command(&binds, &argv)?
        }
    };
    let cmd = match g.netns() {
        Some(ns) => in_netns(ns, &cmd),
        None => cmd,
    };
    let mut cmd = dies_with_spawner(&cmd);
    let log = match &g.log {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| {
            Error::new(format!(
                "cannot create the console log {}: {e}",
                p.display()
            ))
        })?),
        None => None,
    };
    if std::env::var_os("NICPOLL_GUEST_SHOW_QEMU").is_some() {
        crate::say(&format!("QEMU: {}", crate::exec::describe(&cmd)));
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            Error::new(format!(
                "cannot start {}: {e}; {}",
                cmd.get_program().to_string_lossy(),
                "setpriv, nsenter and unshare come with util-linux"
            ))
        })?;
    Ok(RunningGuest::start(child, g.timeout, g.echo, log, dir))
}

/// `cmd` started through `program` and its `args` (each of which execs it).
fn wrapped(program: &str, args: &[String], cmd: &Command) -> Command {
    let mut c = Command::new(program);
    c.args(args)
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// `cmd` run in the network namespace `ns` (made with `ip netns add`).
fn in_netns(ns: &str, cmd: &Command) -> Command {
    wrapped("nsenter", &[format!("--net=/run/netns/{ns}")], cmd)
}

/// `cmd` killed by the kernel when the thread that started it ends (the
/// parent-death signal survives the execs down to QEMU), so a test that dies
/// leaves no guest running.
fn dies_with_spawner(cmd: &Command) -> Command {
    wrapped("setpriv", &["--pdeathsig".into(), "KILL".into()], cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quotes_survive_quotes() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn a_guest_process_dies_with_the_thread_that_started_it() {
        let pid = std::thread::spawn(|| {
            let mut c = Command::new("sleep");
            c.arg("30");
            let child = dies_with_spawner(&c).spawn().unwrap();
            // Give setpriv the time to exec sleep before this thread ends.
            std::thread::sleep(Duration::from_millis(300));
            let pid = child.id();
            std::mem::forget(child);
            pid
        })
        .join()
        .unwrap();
        let t = Instant::now();
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z'))
            })
        };
        while !gone() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "sleep {pid} outlived the thread that started it");
    }

    #[test]
    fn netns_wraps_the_whole_command_with_its_environment() {
        let mut c = Command::new("unshare");
        c.args(["--mount", "x"]).env("http_proxy", "http://p");
        let w = in_netns("lab", &c);
        assert_eq!(w.get_program(), "nsenter");
        let args: Vec<_> = w
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            ["--net=/run/netns/lab", "--", "unshare", "--mount", "x"]
        );
        assert_eq!(w.get_envs().count(), 1);
    }
}
