//! The guest kernel: Debian 12's `linux-image-KABI` unpacked into the cache (its
//! VFIO, virtio, failover and Intel NIC modules), its ELF `vmlinux` taken out of
//! the compressed bzImage so QEMU boots it through the PVH entry (decompressing
//! XZ under TCG costs about 5 s per boot), busybox-static for the initramfs, and
//! the no-IOMMU `vfio.ko`.
//!
//! Debian 12 builds VFIO without `CONFIG_VFIO_NOIOMMU`. Every use of that option
//! in Linux 6.1 is inside `vfio.ko` (drivers/vfio/container.c: the module
//! parameter and the no-IOMMU backend; drivers/vfio/vfio_main.c: the fake group),
//! and no structure layout depends on it, so the harness rebuilds only `vfio.ko`
//! from `linux-source-6.1` of the image's exact version, against Debian's headers,
//! once; Debian's own type1 and vfio-pci modules load on top of it.
//!
//! Unpacked modules have no `modules.dep` (depmod runs in the package's
//! postinst), so the load order comes from each module's `depends=` in its
//! `.modinfo` section.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::apt::{self, Apt};
use crate::cache::{self, Cache};
use crate::error::{Error, Result};
use crate::exec;

/// The kernel folders unpacked from the image: what the guests load.
const MODULE_DIRS: &[&str] = &[
    "drivers/vfio",
    "virt/lib",
    "drivers/virtio",
    "drivers/net/virtio_net.ko",
    "drivers/net/net_failover.ko",
    "net/core/failover.ko",
    "drivers/net/ethernet/intel",
];

/// An unpacked guest kernel in the cache.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The ABI name, e.g. `6.1.0-50-amd64`.
    pub kabi: String,
    /// The package version, e.g. `6.1.176-1`.
    pub version: String,
    /// `CACHE/kernel/KABI`.
    pub dir: PathBuf,
}

impl Kernel {
    /// The image QEMU boots: the ELF vmlinux when it could be taken out of the
    /// bzImage, the bzImage otherwise.
    pub fn boot_image(&self) -> PathBuf {
        let elf = self.dir.join("vmlinux");
        if elf.is_file() {
            elf
        } else {
            self.dir.join(format!("root/boot/vmlinuz-{}", self.kabi))
        }
    }

    /// Where the unpacked modules are.
    pub fn modules_dir(&self) -> PathBuf {
        self.dir
            .join(format!("root/lib/modules/{}/kernel", self.kabi))
    }

    /// The rebuilt no-IOMMU `vfio.ko`, once prepared.
    pub fn noiommu_vfio(&self) -> PathBuf {
        self.dir.join("noiommu/vfio.ko")
    }
}

/// The ABI this cache uses: `NICPOLL_GUEST_KABI`, else the one remembered in the
/// cache, else the one Debian 12's `linux-image-amd64` points to (remembered).
fn kabi(cache: &Cache, apt: &Apt) -> Result<String> {
    if let Ok(k) = std::env::var("NICPOLL_GUEST_KABI")
        && !k.trim().is_empty()
    {
        return Ok(k.trim().to_string());
    }
    let remembered = cache.path("kernel/kabi");
    if let Ok(k) = std::fs::read_to_string(&remembered)
        && !k.trim().is_empty()
    {
        return Ok(k.trim().to_string());
    }
    let k = apt.current_kabi()?;
    cache::write_atomic(&remembered, format!("{k}\n").as_bytes())?;
    Ok(k)
}

/// The kernel, if this cache holds a complete one (no download, no lock).
pub(crate) fn prepared(cache: &Cache) -> Option<Kernel> {
    let kabi = std::env::var("NICPOLL_GUEST_KABI")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .or_else(|| std::fs::read_to_string(cache.path("kernel/kabi")).ok())?;
    let kabi = kabi.trim().to_string();
    if !cache.is_done(&format!("kernel-{kabi}")) {
        return None;
    }
    let dir = cache.path(&format!("kernel/{kabi}"));
    let version = std::fs::read_to_string(dir.join("version")).ok()?;
    Some(Kernel {
        kabi,
        version: version.trim().to_string(),
        dir,
    })
}

/// Download and unpack the guest kernel unless the cache has it. The caller holds
/// the cache lock.
pub(crate) fn prepare(cache: &Cache, apt: &Apt) -> Result<Kernel> {
    if let Some(k) = prepared(cache) {
        return Ok(k);
    }
    let kabi = kabi(cache, apt)?;
    let t = std::time::Instant::now();
    let debs = cache.path("debs");
    let image = apt
        .download(&[format!("linux-image-{kabi}")], &debs)
        .map_err(|e| {
            Error::new(format!(
                "{e}\n(the archive may have dropped {kabi}: remove {} to take the current kernel, \
                 or set NICPOLL_GUEST_KABI)",
                cache.path("kernel/kabi").display()
            ))
        })?
        .remove(0);
    let dir = cache.path(&format!("kernel/{kabi}"));
    cache::remove(&dir)?;
    let root = dir.join("root");
    cache::mkdir(&root)?;
    let log = cache.logs().join("kernel.log");
    crate::say(&format!(
        "unpacking {}",
        image.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut members = vec![format!("./boot/vmlinuz-{kabi}")];
    members.extend(
        MODULE_DIRS
            .iter()
            .map(|m| format!("./lib/modules/{kabi}/kernel/{m}")),
    );
    exec::pipe(
        Command::new("dpkg-deb").arg("--fsys-tarfile").arg(&image),
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&root)
            .args(&members),
        &log,
        "the kernel package's layout is not the one this harness knows (Debian 12's)",
    )?;
    let version = String::from_utf8_lossy(&exec::output(
        Command::new("dpkg-deb")
            .arg("-f")
            .arg(&image)
            .arg("Version"),
        &log,
        "",
    )?)
    .trim()
    .to_string();
    cache::write_atomic(&dir.join("version"), format!("{version}\n").as_bytes())?;
    let bz = std::fs::read(root.join(format!("boot/vmlinuz-{kabi}")))
        .map_err(|e| Error::new(format!("cannot read the unpacked vmlinuz: {e}")))?;
    match extract_vmlinux(&bz)? {
        Some(elf) => cache::write_atomic(&dir.join("vmlinux"), &elf)?,
        None => crate::say(
            "no XZ-compressed ELF in the bzImage: guests boot the bzImage (about 5 s slower)",
        ),
    }
    cache.mark_done(&format!("kernel-{kabi}"), &format!("{kabi} {version}"))?;
    crate::say(&format!(
        "guest kernel {kabi} ({version}) ready in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(Kernel { kabi, version, dir })
}

/// The ELF kernel inside a bzImage whose payload is XZ-compressed (Debian's), or
/// None when there is no such payload. `xz --single-stream` stops at the end of
/// the stream and ignores the bzImage's trailer.
fn extract_vmlinux(bz: &[u8]) -> Result<Option<Vec<u8>>> {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let Some(off) = bz.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) else {
        return Ok(None);
    };
    let mut xz = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::new(format!("cannot run xz: {e}; apt-get install xz-utils")))?;
    let mut stdin = xz.stdin.take().expect("piped stdin");
    let payload = bz[off..].to_vec();
    let writer = std::thread::spawn(move || {
        // xz stops reading at the stream's end: a broken pipe after that is fine.
        let _ = stdin.write_all(&payload);
    });
    let mut elf = Vec::new();
    xz.stdout
        .take()
        .expect("piped stdout")
        .read_to_end(&mut elf)
        .map_err(|e| Error::new(format!("reading xz's output: {e}")))?;
    let _ = writer.join();
    let status = xz
        .wait()
        .map_err(|e| Error::new(format!("waiting for xz: {e}")))?;
    if status.success() && elf.starts_with(b"\x7fELF") {
        Ok(Some(elf))
    } else {
        Ok(None)
    }
}

/// Download busybox-static and keep its binary as `CACHE/busybox`.
pub(crate) fn prepare_busybox(cache: &Cache, apt: &Apt) -> Result<PathBuf> {
    let out = cache.path("busybox");
    if cache.is_done("busybox") && out.is_file() {
        return Ok(out);
    }
    let deb = apt
        .download(&["busybox-static".to_string()], &cache.path("debs"))?
        .remove(0);
    apt::unpack_executable(
        &deb,
        "./bin/busybox",
        &out,
        &cache.logs().join("busybox.log"),
        "busybox-static's layout is not the one this harness knows (Debian 12's)",
    )?;
    cache.mark_done("busybox", &deb.display().to_string())?;
    Ok(out)
}

/// Build the no-IOMMU `vfio.ko` for `kernel` unless the cache has it. The caller
/// holds the cache lock. About 30 s and 160 MB of downloads, once.
pub(crate) fn prepare_noiommu(cache: &Cache, apt: &Apt, kernel: &Kernel) -> Result<PathBuf> {
    let out = kernel.noiommu_vfio();
    if cache.is_done(&format!("noiommu-{}", kernel.kabi)) && out.is_file() {
        return Ok(out);
    }
    let t = std::time::Instant::now();
    let (kabi, version) = (&kernel.kabi, &kernel.version);
    let series: String = version.split('.').take(2).collect::<Vec<_>>().join("."); // 6.1
    let flavourless = kabi.strip_suffix("-amd64").unwrap_or(kabi); // 6.1.0-50
    let headers = format!("linux-headers-{kabi}");
    let common = format!("linux-headers-{flavourless}-common");
    let kbuild = format!("linux-kbuild-{series}");
    let source = format!("linux-source-{series}");
    let debs = apt.download(
        &[&headers, &common, &kbuild, &source].map(|p| format!("{p}={version}")),
        &cache.path("debs"),
    )?;
    let log = cache.logs().join("noiommu-build.log");
    let build = kernel.dir.join("noiommu-build");
    cache::remove(&build)?;
    let kb = build.join("kb");
    cache::mkdir(&kb)?;
    crate::say("building the no-IOMMU vfio.ko from linux-source (about 30 s, once)");
    for deb in &debs[..3] {
        exec::run_logged(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&kb),
            &log,
            "",
        )?;
    }
    // The flavour's Makefile includes the common headers by absolute path.
    let hdr = kb.join(format!("usr/src/{headers}"));
    let makefile = hdr.join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .map_err(|e| Error::new(format!("cannot read {}: {e}", makefile.display())))?;
    let fixed = text.replace(
        "include /usr/src/",
        &format!("include {}/usr/src/", kb.display()),
    );
    cache::write_atomic(&makefile, fixed.as_bytes())?;
    // drivers/vfio from the source tarball inside linux-source's .deb.
    let tarball = format!("./usr/src/{source}.tar.xz");
    exec::pipe(
        Command::new("dpkg-deb").arg("--fsys-tarfile").arg(&debs[3]),
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&build)
            .arg(&tarball),
        &log,
        "",
    )?;
    let src = build.join("src");
    cache::mkdir(&src)?;
    exec::run_logged(
        Command::new("tar")
            .arg("-xJf")
            .arg(build.join(&tarball))
            .arg("-C")
            .arg(&src)
            .arg("--strip-components=1")
            .arg(format!("{source}/drivers/vfio")),
        &log,
        "",
    )?;
    let vfio = src.join("drivers/vfio");
    cache::rename(&vfio.join("Makefile"), &vfio.join("Makefile.linux"))?;
    cache::write_atomic(
        &vfio.join("Kbuild"),
        b"# drivers/vfio as Linux builds it, with the no-IOMMU backend compiled in,\n\
          # and only vfio.ko out of it (nicpoll-guest).\n\
          ccflags-y += -DCONFIG_VFIO_NOIOMMU=1\n\
          include $(src)/Makefile.linux\n\
          obj-m := vfio.o\n",
    )?;
    exec::run_logged(
        Command::new("make")
            .arg("-C")
            .arg(&hdr)
            .arg(format!("M={}", vfio.display()))
            .arg("modules"),
        &log,
        "the module build needs make, gcc-12 and libelf1 (apt-get install make gcc-12 libelf1)",
    )?;
    let ko = std::fs::read(vfio.join("vfio.ko")).map_err(|e| {
        Error::new(format!(
            "the build left no vfio.ko (see {}): {e}",
            log.display()
        ))
    })?;
    if modinfo(&ko, "parm").all(|p| !p.starts_with("enable_unsafe_noiommu_mode:")) {
        return Err(Error::new(format!(
            "the rebuilt vfio.ko has no enable_unsafe_noiommu_mode parameter (see {})",
            log.display()
        )));
    }
    cache::write_atomic(&out, &ko)?;
    // Keep only the module: the build tree and the source package are 350 MB.
    cache::remove(&build)?;
    cache::remove(&debs[3])?;
    cache.mark_done(&format!("noiommu-{kabi}"), &format!("{kabi} {version}"))?;
    crate::say(&format!(
        "no-IOMMU vfio.ko built in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(out)
}

/// The values of `key` in a module's `.modinfo` (NUL-separated `key=value`).
pub(crate) fn modinfo<'a>(ko: &'a [u8], key: &'a str) -> impl Iterator<Item = String> + 'a {
    let needle = format!("{key}=").into_bytes();
    ko.split(|&b| b == 0).filter_map(move |field| {
        field
            .strip_prefix(needle.as_slice())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// A kernel module of the unpacked tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    /// The module's name as the kernel knows it (`vfio_pci`).
    pub name: String,
    pub path: PathBuf,
    pub depends: Vec<String>,
}

/// A module name as the kernel compares them: `-` and `_` are the same.
pub(crate) fn module_name(s: &str) -> String {
    s.trim_end_matches(".ko").replace('-', "_")
}

/// Every module under `dir`, by name.
pub(crate) fn module_index(dir: &Path) -> Result<BTreeMap<String, Module>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", d.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            let f = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if f.ends_with(".ko") {
                let bytes = std::fs::read(&p)
                    .map_err(|e| Error::new(format!("cannot read {}: {e}", p.display())))?;
                let depends = modinfo(&bytes, "depends")
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(module_name)
                    .collect();
                let name = module_name(&f);
                out.insert(
                    name.clone(),
                    Module {
                        name,
                        path: p,
                        depends,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// `wanted` and everything they depend on, each after its dependencies.
pub(crate) fn load_order(
    index: &BTreeMap<String, Module>,
    wanted: &[String],
) -> Result<Vec<Module>> {
    fn visit(
        index: &BTreeMap<String, Module>,
        name: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<Module>,
    ) -> Result<()> {
        if done.contains(name) {
            return Ok(());
        }
        if path.iter().any(|p| p == name) {
            return Err(Error::new(format!(
                "kernel modules depend on each other in a loop: {} -> {name}",
                path.join(" -> ")
            )));
        }
        let m = index.get(name).ok_or_else(|| {
            Error::new(format!(
                "kernel module {name} is not among the unpacked ones{} (the harness unpacks {})",
                match path.last() {
                    Some(p) => format!(" ({p} depends on it)"),
                    None => String::new(),
                },
                MODULE_DIRS.join(", ")
            ))
        })?;
        path.push(name.to_string());
        for d in &m.depends {
            visit(index, d, path, done, out)?;
        }
        path.pop();
        done.insert(name.to_string());
        out.push(m.clone());
        Ok(())
    }
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for w in wanted {
        visit(index, &module_name(w), &mut Vec::new(), &mut done, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ko(dir: &Path, rel: &str, depends: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut bytes = b"\x7fELF\0\0junk\0license=GPL\0".to_vec();
        bytes.extend_from_slice(format!("depends={depends}\0vermagic=6.1.0\0").as_bytes());
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn modules_load_after_their_dependencies_read_from_modinfo() {
        let d = tempfile::tempdir().unwrap();
        ko(d.path(), "drivers/vfio/vfio.ko", "");
        ko(d.path(), "drivers/vfio/vfio_iommu_type1.ko", "vfio");
        ko(d.path(), "drivers/vfio/vfio_virqfd.ko", "");
        ko(d.path(), "virt/lib/irqbypass.ko", "");
        ko(
            d.path(),
            "drivers/vfio/pci/vfio-pci-core.ko",
            "vfio,vfio_virqfd,irqbypass",
        );
        ko(
            d.path(),
            "drivers/vfio/pci/vfio-pci.ko",
            "vfio-pci-core,vfio",
        );
        let index = module_index(d.path()).unwrap();
        let order: Vec<String> =
            load_order(&index, &["vfio-pci".into(), "vfio_iommu_type1".into()])
                .unwrap()
                .into_iter()
                .map(|m| m.name)
                .collect();
        assert_eq!(
            order,
            [
                "vfio",
                "vfio_virqfd",
                "irqbypass",
                "vfio_pci_core",
                "vfio_pci",
                "vfio_iommu_type1"
            ]
        );
        let e = load_order(&index, &["iavf".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("iavf is not among the unpacked ones"), "{e}");
    }

    #[test]
    fn dependency_loops_are_reported() {
        let d = tempfile::tempdir().unwrap();
        ko(d.path(), "a.ko", "b");
        ko(d.path(), "b.ko", "a");
        let index = module_index(d.path()).unwrap();
        let e = load_order(&index, &["a".into()]).unwrap_err().to_string();
        assert!(e.contains("a -> b -> a"), "{e}");
    }

    #[test]
    fn modinfo_fields_are_read_whole() {
        let bytes = b"x\0parm=enable_unsafe_noiommu_mode:Enable UNSAFE\0parm=other:y\0depends=\0";
        let parms: Vec<String> = modinfo(bytes, "parm").collect();
        assert_eq!(parms.len(), 2);
        assert!(parms[0].starts_with("enable_unsafe_noiommu_mode:"));
        assert_eq!(modinfo(bytes, "depends").next().as_deref(), Some(""));
    }

    #[test]
    fn a_bzimage_without_an_xz_payload_is_booted_as_it_is() {
        assert!(extract_vmlinux(b"MZ no payload here").unwrap().is_none());
    }
}
