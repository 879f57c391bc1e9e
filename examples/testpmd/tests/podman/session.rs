//! A podman session: what must be on the machine, the shared names held, the
//! network namespace, the base and test images; everything made is removed
//! when it drops.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::machine::{containers_conf, debian_archive, hugepage_kib, page_size_text, reachable};
use crate::manifest::{Manifest, containerfile_base};
use crate::{
    HUGEPAGE_BYTES_NEEDED, METRICS_PORT, NETNS, TEST_IMAGE, TEST_TAG_PREFIX, pod_file, read, text,
};

/// Why the podman tests cannot run here, decided before anything runs.
pub(crate) fn missing() -> Option<String> {
    if !nicpoll_testkit::is_root() {
        return Some(
            "root: the pods run rootful (privileged containers, hugetlbfs volumes, a network namespace)"
                .into(),
        );
    }
    let tools = [
        ("podman", "apt-get install podman"),
        ("runc", "apt-get install runc"),
        (
            "catatonit",
            "apt-get install catatonit (podman's pause process for pods)",
        ),
        ("nsenter", "apt-get install util-linux"),
        ("ip", "apt-get install iproute2"),
        (
            "iptables",
            "apt-get install iptables (podman's port publishing)",
        ),
        (
            "promtool",
            "apt-get install prometheus (promtool parses the metrics)",
        ),
        ("timeout", "apt-get install coreutils"),
        ("bash", "apt-get install bash"),
    ];
    for (tool, how) in tools {
        if !nicpoll_testkit::have_command(tool) {
            return Some(format!("{tool} ({how})"));
        }
    }
    // podman's network backend: CNI's bridge and portmap plugins (podman 4 on
    // Debian 12), or netavark.
    let backends = [
        "/usr/lib/cni/portmap",
        "/usr/libexec/cni/portmap",
        "/opt/cni/bin/portmap",
        "/usr/libexec/podman/netavark",
        "/usr/lib/podman/netavark",
    ];
    if !backends.iter().any(|b| Path::new(b).exists()) {
        return Some(
            "podman's network backend (apt-get install containernetworking-plugins)".into(),
        );
    }
    let Some(kib) = hugepage_kib() else {
        return Some("hugepages (no Hugepagesize in /proc/meminfo)".into());
    };
    let free = nicpoll_testkit::free_hugepages() * kib * 1024;
    if free < HUGEPAGE_BYTES_NEEDED {
        return Some(format!(
            "{} MiB of free {} hugepages ({} MiB free): echo N > /proc/sys/vm/nr_hugepages",
            HUGEPAGE_BYTES_NEEDED >> 20,
            page_size_text(kib),
            free >> 20
        ));
    }
    None
}

/// Podman run from this test's network namespace with its containers.conf.
/// Holds the names it uses; removes what it made when dropped.
pub(crate) struct Session {
    pub(crate) conf: tempfile::TempDir,
    /// Pods to remove at the end.
    pub(crate) pods: Vec<String>,
    /// Volumes to remove at the end.
    pub(crate) volumes: Vec<String>,
    /// The manifests' image name and what it named before this test, restored at the end.
    pub(crate) image: String,
    pub(crate) image_before: Option<String>,
    /// The test's image, once built and tagged `image`.
    pub(crate) test_image: Option<String>,
    pub(crate) _locks: Vec<nicpoll_testkit::NameLock>,
}

impl Session {
    /// Takes every shared name, makes the network namespace and builds the image
    /// (the base image first when the machine has none). `None` after a skip.
    pub(crate) fn start() -> Option<Session> {
        if let Some(why) = missing() {
            nicpoll_testkit::skip(why);
            return None;
        }
        let manifests = Manifest::shipped();
        let image = manifests[0].local_image();
        for m in &manifests {
            assert_eq!(
                m.local_image(),
                image,
                "{}: every manifest runs one image",
                m.file.display()
            );
        }
        let base = containerfile_base();
        // Every name, in one order, so two tests (or two checkouts) never wait on each other crosswise.
        let mut names: BTreeSet<String> = manifests
            .iter()
            .map(|m| format!("podman-pod-{}", m.pod))
            .chain(
                manifests
                    .iter()
                    .flat_map(|m| m.hugepage_volume.iter().chain(&m.empty_dirs))
                    .map(|v| format!("podman-volume-{v}")),
            )
            .collect();
        names.insert(format!("podman-image-{}", image.replace(['/', ':'], "_")));
        names.insert(format!("podman-image-{}", base.replace(['/', ':'], "_")));
        names.insert(format!(
            "podman-image-{}",
            format!("{TEST_IMAGE}_{TEST_TAG_PREFIX}").replace(['/', ':'], "_")
        ));
        names.insert(format!("netns-{NETNS}"));
        names.insert(format!("tcp-port-{METRICS_PORT}"));
        let locks = names
            .iter()
            .map(|n| nicpoll_testkit::lock_name(n))
            .collect();

        let conf = tempfile::tempdir().unwrap();
        std::fs::write(conf.path().join("containers.conf"), containers_conf()).unwrap();
        let mut s = Session {
            conf,
            pods: manifests.iter().map(|m| m.pod.clone()).collect(),
            // kube play makes a volume of the manifest's name for an emptyDir
            // (and a removal that fails can leave it).
            volumes: manifests
                .iter()
                .flat_map(|m| m.hugepage_volume.iter().chain(&m.empty_dirs).cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            image: image.clone(),
            image_before: None,
            test_image: None,
            _locks: locks,
        };
        // What a run that died left behind (we hold the names).
        s.remove_pods();
        s.remove_volumes();
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
        let netns_made = Command::new("ip")
            .args(["netns", "add", NETNS])
            .status()
            .unwrap();
        assert!(netns_made.success(), "ip netns add {NETNS} failed");
        assert!(
            Command::new("ip")
                .args(["-n", NETNS, "link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success()
        );

        let t = Instant::now();
        if !s.images(&["image", "exists", &base]).status.success() {
            let archive = debian_archive();
            if !nicpoll_testkit::have_command("debootstrap") {
                nicpoll_testkit::skip(format!(
                    "debootstrap (apt-get install debootstrap) to make the base image {base}, which this machine does not have"
                ));
                return None;
            }
            if !reachable(&archive) {
                nicpoll_testkit::skip(format!(
                    "the Debian archive {archive} (from the apt sources) to make the base image {base} with debootstrap"
                ));
                return None;
            }
            s.make_base_image(&base, &archive);
            eprintln!("podman test: made {base} in {:.1?}", t.elapsed());
        }
        s.image_before = s.image_id(&image);
        s.test_image = Some(s.build_image(&image, &base));
        eprintln!("podman test: image ready after {:.1?}", t.elapsed());
        Some(s)
    }

    /// podman in our network namespace (pods: their bridge, NAT and published
    /// ports are made and torn down there), bounded by timeout(1).
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args([
            "300",
            "nsenter",
            &format!("--net=/run/netns/{NETNS}"),
            "podman",
        ])
        .args(args)
        .env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        c
    }

    /// podman in the machine's network namespace, for images only (the RUN
    /// steps of a build reach the Debian archive).
    pub(crate) fn image_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["600", "podman"])
            .args(args)
            .env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        c
    }

    /// (Never panics: Drop uses it.) A timeout shows as exit status 124.
    pub(crate) fn podman(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// An image command: its output.
    pub(crate) fn images(&self, args: &[&str]) -> Output {
        self.image_command(args).output().unwrap()
    }

    /// An image command that must succeed.
    pub(crate) fn must_image(&self, args: &[&str]) {
        let out = self.images(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            text(&out)
        );
    }

    pub(crate) fn ok(&self, args: &[&str]) -> bool {
        self.podman(args).status.success()
    }

    /// Runs podman and returns its stdout; panics with its output if it failed.
    pub(crate) fn must(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn image_id(&self, name: &str) -> Option<String> {
        let out = self.images(&["image", "inspect", "--format", "{{.Id}}", name]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// debootstrap (minbase bookworm) from `archive`, imported as `base` with
    /// the PATH and command a Debian image has.
    pub(crate) fn make_base_image(&self, base: &str, archive: &str) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let out = Command::new("timeout")
            .args(["900", "debootstrap", "--variant=minbase", "bookworm"])
            .arg(&root)
            .arg(archive)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "debootstrap from {archive}: {}",
            text(&out)
        );
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = self
            .image_command(&[
                "import",
                "--change",
                "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "CMD=[\"bash\"]",
                "-",
                base,
            ])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        let tar_status = tar.wait().unwrap();
        assert!(
            out.status.success() && tar_status.success(),
            "tar -c {} | podman import - {base}: tar {tar_status}; podman {}",
            root.display(),
            text(&out)
        );
    }

    /// `podman build --target prebuilt` around this test's testpmd, tagged
    /// with a key of its inputs (kept as the cache of later runs: a build of
    /// the same inputs is skipped) and with `image` (the manifests' name). The
    /// context holds what that stage copies: pod/entrypoint.sh and the binary
    /// (`TESTPMD_BINARY`). Returns the keyed tag.
    pub(crate) fn build_image(&self, image: &str, base: &str) -> String {
        let bin = Path::new(env!("CARGO_BIN_EXE_testpmd"));
        let containerfile = pod_file("Containerfile");
        let key = build_inputs_key(&[
            read(&containerfile).as_bytes(),
            read(&pod_file("entrypoint.sh")).as_bytes(),
            file_identity(bin).as_bytes(),
            self.image_id(base).unwrap_or_default().as_bytes(),
        ]);
        let tag = format!("{TEST_TAG_PREFIX}-{key}");
        let test_image = format!("{TEST_IMAGE}:{tag}");
        if !self
            .images(&["image", "exists", &test_image])
            .status
            .success()
        {
            let context = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("podman-context");
            let _ = std::fs::remove_dir_all(&context);
            std::fs::create_dir_all(context.join("pod")).unwrap();
            std::fs::copy(pod_file("entrypoint.sh"), context.join("pod/entrypoint.sh")).unwrap();
            if std::fs::hard_link(bin, context.join("testpmd")).is_err() {
                std::fs::copy(bin, context.join("testpmd")).unwrap();
            }
            let out = self.images(&[
                "build",
                "--pull=never",
                "--target",
                "prebuilt",
                "--build-arg",
                "TESTPMD_BINARY=testpmd",
                "-f",
                containerfile.to_str().unwrap(),
                "-t",
                &test_image,
                context.to_str().unwrap(),
            ]);
            assert!(out.status.success(), "podman build: {}", text(&out));
            // Earlier runs' images go (the layers below the binary are shared
            // and stay as the cache).
            let out = self.images(&["images", "--format", "{{.Tag}}", TEST_IMAGE]);
            for old in String::from_utf8_lossy(&out.stdout).lines() {
                if old.starts_with(TEST_TAG_PREFIX) && old != tag {
                    let _ = self.images(&["rmi", &format!("{TEST_IMAGE}:{old}")]);
                }
            }
        }
        self.must_image(&["tag", &test_image, image]);
        test_image
    }

    /// A hugetlbfs volume named `name` of the machine's page size, removed at the end.
    pub(crate) fn hugetlbfs_volume(&mut self, name: &str) {
        let _ = self.podman(&["volume", "rm", "-f", name]);
        let kib = hugepage_kib().unwrap();
        self.must(&[
            "volume",
            "create",
            "--opt",
            "type=hugetlbfs",
            "--opt",
            "device=nodev",
            "--opt",
            &format!("o=pagesize={kib}K"),
            name,
        ]);
        if !self.volumes.iter().any(|v| v == name) {
            self.volumes.push(name.to_string());
        }
    }

    /// `podman kube play FILE`: its output and exit status.
    pub(crate) fn play(&self, file: &Path) -> Output {
        self.podman(&["kube", "play", file.to_str().unwrap()])
    }

    /// Everything the container printed (podman logs keeps stdout and stderr).
    pub(crate) fn logs(&self, container: &str) -> String {
        text(&self.podman(&["logs", container]))
    }

    /// Polls the logs until `done` holds (at most `secs`), and returns them.
    pub(crate) fn wait_logs(
        &self,
        container: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let logs = self.logs(container);
            if done(&logs) {
                return logs;
            }
            let state = self.inspect(container, "{{.State.Status}} {{.State.ExitCode}}");
            assert!(
                Instant::now() < deadline,
                "{container}: no {what} within {secs} s (state {state}); logs:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub(crate) fn inspect(&self, container: &str, format: &str) -> String {
        self.must(&["inspect", "--format", format, container])
            .trim()
            .to_string()
    }

    /// Removes every pod this session may have made, and their anonymous volumes.
    pub(crate) fn remove_pods(&self) {
        for pod in &self.pods {
            if let Err(e) = self.remove_pod(pod) {
                eprintln!("podman test: {e}");
            }
        }
    }

    /// Stops and removes `pod`. podman 4.3.1 restarts an OnFailure container
    /// at once, and a removal that meets a restart half done fails ("device or
    /// resource busy"): stop first, and try a few times.
    pub(crate) fn remove_pod(&self, pod: &str) -> Result<(), String> {
        let mut said = String::new();
        for _ in 0..10 {
            if !self.ok(&["pod", "exists", pod]) {
                return Ok(());
            }
            let _ = self.podman(&["pod", "stop", "-t", "0", pod]);
            let out = self.podman(&["pod", "rm", "-f", "-t", "0", pod]);
            said = text(&out);
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("cannot remove pod {pod}: {said}"))
    }

    /// Removes the volumes this session made or a manifest names.
    pub(crate) fn remove_volumes(&self) {
        for v in &self.volumes {
            if self.ok(&["volume", "exists", v]) {
                let out = self.podman(&["volume", "rm", "-f", v]);
                if !out.status.success() {
                    eprintln!("podman test: cannot remove volume {v}: {}", text(&out));
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.remove_pods();
        self.remove_volumes();
        // The manifests' image name goes back to what it named before.
        if let Some(test_image) = &self.test_image {
            let _ = match &self.image_before {
                Some(id) => self.images(&["tag", id, &self.image]),
                None => self.images(&["untag", test_image, &self.image]),
            };
        }
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
    }
}

/// A key of the image build's inputs, kept as the image's label.
pub(crate) fn build_inputs_key(inputs: &[&[u8]]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    inputs.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A file's size and modification time: cargo rewrites the binary when it changes.
pub(crate) fn file_identity(path: &Path) -> String {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mtime = m
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{} {}", m.len(), mtime.as_nanos())
}
