//! Test support: a fake machine (`/proc`, `/sys`, `/dev`, `/etc`) under a
//! temporary root, and assertions on findings.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nicpoll::pci::PciAddress;

use super::devices::{INTEL, MELLANOX};
use super::vfio::{NOIOMMU_CONF, NOIOMMU_CONF_LINE, NOIOMMU_PARAM};
use super::{Env, Finding, Status, doctor_checks, render_text};

pub(super) const VF: &str = "0000:00:07.0";

/// A fake machine under a temporary root, removed on drop.
pub(super) struct Tree {
    dir: PathBuf,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One fake PCI device.
pub(super) struct FakeDev<'a> {
    pub(super) bdf: &'a str,
    pub(super) vendor: u16,
    pub(super) device: u16,
    pub(super) driver: Option<&'a str>,
    /// Group number and whether it is a no-IOMMU group.
    pub(super) group: Option<(u32, bool)>,
    pub(super) numa: i32,
}

impl Default for FakeDev<'_> {
    fn default() -> Self {
        FakeDev {
            bdf: VF,
            vendor: INTEL,
            device: 0x154c,
            driver: Some("vfio-pci"),
            group: Some((0, true)),
            numa: -1,
        }
    }
}

impl FakeDev<'_> {
    /// A ConnectX-5 VF at 3b:00.2 on its kernel driver, in no VFIO group.
    pub(super) fn mlx5() -> Self {
        FakeDev {
            bdf: "0000:3b:00.2",
            vendor: MELLANOX,
            device: 0x1018,
            driver: Some("mlx5_core"),
            group: None,
            ..FakeDev::default()
        }
    }
}

impl Tree {
    pub(super) fn empty() -> Tree {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nicpoll-doctor-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Tree { dir }
    }

    pub(super) fn root(&self) -> &Path {
        &self.dir
    }

    pub(super) fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel.trim_start_matches('/'))
    }

    pub(super) fn write(&self, rel: &str, text: &str) -> &Tree {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        self
    }

    pub(super) fn mkdir(&self, rel: &str) -> &Tree {
        fs::create_dir_all(self.p(rel)).unwrap();
        self
    }

    pub(super) fn rm(&self, rel: &str) -> &Tree {
        let p = self.p(rel);
        if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(p).unwrap();
        } else {
            let _ = fs::remove_file(p);
        }
        self
    }

    pub(super) fn link(&self, target_rel: &str, rel: &str) -> &Tree {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let _ = fs::remove_file(&p);
        symlink(self.p(target_rel), p).unwrap();
        self
    }

    /// /proc/self/status of a process holding `cap_eff` (also its bounding
    /// set), without a seccomp filter, on `cpus`.
    pub(super) fn status(&self, cap_eff: u64, cpus: &str) -> &Tree {
        self.write(
            "proc/self/status",
            &format!(
                "Name:\ttestpmd\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\nCapBnd:\t{cap_eff:016x}\nSeccomp:\t0\nCpus_allowed:\tff\nCpus_allowed_list:\t{cpus}\n"
            ),
        )
    }

    pub(super) fn meminfo(&self, total: u64, free: u64, kib: u64) -> &Tree {
        self.write(
            "proc/meminfo",
            &format!(
                "MemTotal: 16000000 kB\nHugePages_Total: {total}\nHugePages_Free: {free}\nHugePages_Rsvd: 0\nHugePages_Surp: 0\nHugepagesize: {kib} kB\n"
            ),
        )
    }

    pub(super) fn pool(&self, kib: u64, total: u64, free: u64) -> &Tree {
        let d = format!("sys/kernel/mm/hugepages/hugepages-{kib}kB");
        self.write(&format!("{d}/nr_hugepages"), &format!("{total}\n"))
            .write(&format!("{d}/free_hugepages"), &format!("{free}\n"))
    }

    pub(super) fn device(&self, d: &FakeDev<'_>) -> &Tree {
        let dir = format!("sys/bus/pci/devices/{}", d.bdf);
        self.write(&format!("{dir}/vendor"), &format!("0x{:04x}\n", d.vendor))
            .write(&format!("{dir}/device"), &format!("0x{:04x}\n", d.device))
            .write(&format!("{dir}/class"), "0x020000\n")
            .write(&format!("{dir}/numa_node"), &format!("{}\n", d.numa))
            .write(&format!("{dir}/driver_override"), "(null)\n");
        self.rm(&format!("{dir}/driver"))
            .rm(&format!("{dir}/iommu_group"));
        if let Some(drv) = d.driver {
            self.mkdir(&format!("sys/bus/pci/drivers/{drv}")).link(
                &format!("sys/bus/pci/drivers/{drv}"),
                &format!("{dir}/driver"),
            );
        }
        if let Some((g, noiommu)) = d.group {
            let gdir = format!("sys/kernel/iommu_groups/{g}");
            self.mkdir(&format!("{gdir}/devices"))
                .link(&dir, &format!("{gdir}/devices/{}", d.bdf))
                .link(&gdir, &format!("{dir}/iommu_group"));
            if noiommu {
                self.write(&format!("{gdir}/name"), "vfio-noiommu\n");
            }
        }
        self
    }

    /// A VM without an IOMMU, set up right: vfio in no-IOMMU mode (and in
    /// modprobe.d), an Intel VF on vfio-pci with its no-IOMMU group node, 1 GiB
    /// default hugepages mounted, privileged (every capability, no seccomp,
    /// the machine's disk in /dev), CPUs 2-4 of 0-7 with 3-7 isolated, one
    /// NUMA node.
    pub(super) fn good() -> Tree {
        let t = Tree::empty();
        t.status(0x1ff_ffff_ffff, "2-4")
            .write("proc/1/status", "Name:\tinit\nCapBnd:\t000001ffffffffff\n")
            .write("sys/dev/block/253:0/uevent", "MAJOR=253\nMINOR=0\nDEVNAME=vda\n")
            .write("dev/vda", "")
            .write("proc/sys/kernel/cap_last_cap", "40\n")
            .write("proc/self/uid_map", "         0          0 4294967295\n")
            .write(
                "proc/cmdline",
                "BOOT_IMAGE=/vmlinuz ro default_hugepagesz=1G hugepagesz=1G hugepages=8 \
                 isolcpus=managed_irq,domain,3-7 nohz_full=3-7 rcu_nocbs=3-7 -- isolcpus=0\n",
            )
            .meminfo(8, 8, 1048576)
            .pool(1048576, 8, 8)
            .pool(2048, 0, 0)
            .write(
                "proc/mounts",
                "/dev/vda1 / ext4 rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=1024M 0 0\n",
            )
            .mkdir("dev/hugepages")
            .write("sys/devices/system/cpu/online", "0-7\n")
            .write("sys/devices/system/node/node0/cpulist", "0-7\n")
            .write(
                "sys/devices/system/node/node0/hugepages/hugepages-1048576kB/free_hugepages",
                "8\n",
            )
            .write(NOIOMMU_PARAM, "Y\n")
            .mkdir("sys/module/vfio_pci")
            .write(NOIOMMU_CONF, &format!("# no IOMMU in this VM\n{NOIOMMU_CONF_LINE}\n"))
            .mkdir("sys/class/iommu")
            .write("dev/vfio/vfio", "")
            .write("dev/vfio/noiommu-0", "")
            .device(&FakeDev::default());
        t
    }

    pub(super) fn checks(&self, env: &Env, allow: &[&str]) -> Vec<Finding> {
        let allow: Vec<PciAddress> = allow.iter().map(|a| a.parse().unwrap()).collect();
        doctor_checks(self.root(), env, &allow)
    }

    /// Doctor with the VF given by -a and no environment.
    pub(super) fn vf(&self) -> Vec<Finding> {
        self.checks(&Env::new(), &[VF])
    }
}

pub(super) fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn pod() -> Env {
    env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")])
}

#[track_caller]
pub(super) fn get<'a>(fs: &'a [Finding], check: &str) -> &'a Finding {
    fs.iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check} in {}", render_text(fs, false)))
}

/// Assert a check's status and that its fix (empty for none) contains `fix`.
#[track_caller]
pub(super) fn expect(fs: &[Finding], check: &str, status: Status, fix: &str) -> Finding {
    let f = get(fs, check).clone();
    assert_eq!(f.status, status, "{check}: {f:?}");
    let got = f.fix.clone().unwrap_or_default();
    assert!(
        got.contains(fix),
        "{check}: fix {got:?} lacks {fix:?}; {f:?}"
    );
    f
}

/// [`expect`], and the finding's text contains `says`.
pub(super) fn expect_saying(
    fs: &[Finding],
    check: &str,
    status: Status,
    fix: &str,
    says: &str,
) -> Finding {
    let f = expect(fs, check, status, fix);
    assert!(
        f.finding.contains(says),
        "{check}: finding lacks {says:?}; {f:?}"
    );
    f
}
