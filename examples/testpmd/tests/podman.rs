//! The pod in a real container runtime: podman (4.3.1 on Debian 12) builds the
//! image from `pod/Containerfile` offline and plays the manifests of `pod/` as
//! Kubernetes Pod manifests (`podman kube play`).
//!
//! - The base image the Containerfile's runtime stage starts `FROM` is used when
//!   the machine has it; otherwise it is made with `debootstrap --variant=minbase
//!   bookworm` from the Debian archive of the machine's apt sources, imported and
//!   tagged with that name, and stays as the cache of later runs. The image is
//!   built with `--target prebuilt` around the testpmd cargo built for this test.
//! - `pod/pod_testpmd_virt.yaml` plays through an overlay that changes only what
//!   a runtime without the SR-IOV device plugin forces: a hugetlbfs volume of
//!   the machine's page size under the manifest's volume name (podman mounts a
//!   volume of that name for the `emptyDir`), software ports in
//!   `NICPOLL_EAL_ARGS`, and `restartPolicy: Never`.
//! - Safety: every pod is played from a network namespace this test makes
//!   (`nsenter --net`): podman's bridge, its NAT rules and the published port
//!   9100 live there, so no container reaches the machine's own NIC and nothing
//!   listens on the machine's addresses. The metrics are scraped from that
//!   namespace, the node's side of the published port.
//! - Podman's own settings for this machine come from a containers.conf given
//!   with `CONTAINERS_CONF`: runc (crun refuses a hybrid cgroup layout), no
//!   default ulimit above the machine's hard limits, cgroupfs, events to a file.
//! - Names podman shares machine-wide (image tags, the volume, the pods, the
//!   network namespace, the port) are held with `nicpoll_testkit::lock_name`;
//!   pods, volumes and the namespace made here are removed, also on failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NETNS: &str = "nicpoll-podman";
/// The published metrics port of the manifests (inside `NETNS` only).
const METRICS_PORT: u16 = 9100;
/// The test's images: `TEST_IMAGE:podman-test-KEY`, KEY naming the build's
/// inputs; the last one stays as the cache of later runs.
const TEST_IMAGE: &str = "localhost/nicpoll-testpmd";
const TEST_TAG_PREFIX: &str = "podman-test";
/// The software ports the overlay gives (DPDK's net_null: receive as fast as
/// the mempool allows, drop what is sent).
const SOFTWARE_PORTS: &str = "--vdev net_null0 --vdev net_null1";
/// Free hugepage memory a run needs (its mempool and rings; about 80 MiB).
const HUGEPAGE_BYTES_NEEDED: u64 = 128 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn pod_file(name: &str) -> PathBuf {
    repo().join("pod").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------
// What the repository's files say (read as text: they are ours and simple).

/// The image the Containerfile's `runtime` stage starts from.
fn containerfile_base() -> String {
    let cf = read(&pod_file("Containerfile"));
    cf.lines()
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 4 && w[0] == "FROM" && w[2].eq_ignore_ascii_case("AS") && w[3] == "runtime")
                .then(|| w[1].to_string())
        })
        .expect("pod/Containerfile has a `FROM IMAGE AS runtime` line")
}

/// The facts of one Pod manifest the test needs.
#[derive(Debug)]
struct Manifest {
    file: PathBuf,
    text: String,
    pod: String,
    container: String,
    image: String,
    /// The volume mounted at /dev/hugepages.
    hugepage_volume: Option<String>,
    /// securityContext.capabilities.add.
    caps_added: Vec<String>,
    privileged: bool,
}

impl Manifest {
    fn read(file: PathBuf) -> Manifest {
        let text = read(&file);
        let value = |key: &str, indent: usize| -> Vec<String> {
            let prefix = format!("{}{key}", " ".repeat(indent));
            text.lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|v| v.trim().trim_matches('"').to_string())
                .collect()
        };
        let pod = value("name: ", 2).first().cloned().expect("metadata.name");
        let container = value("- name: ", 4).first().cloned().expect("a container");
        let image = value("image: ", 6).first().cloned().expect("an image");
        let lines: Vec<&str> = text.lines().collect();
        let hugepage_volume = lines
            .iter()
            .position(|l| l.trim() == "- mountPath: /dev/hugepages")
            .and_then(|i| lines.get(i + 1))
            .and_then(|l| l.trim().strip_prefix("name: "))
            .map(str::to_string);
        let caps_added = value("add: ", 10)
            .first()
            .map(|list| {
                list.trim_matches(|c| c == '[' || c == ']')
                    .split(',')
                    .map(|c| c.trim().trim_matches('"').to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let privileged = value("privileged: ", 8)
            .first()
            .is_some_and(|v| v == "true");
        Manifest {
            file,
            text,
            pod,
            container,
            image,
            hugepage_volume,
            caps_added,
            privileged,
        }
    }

    /// Every Pod manifest of pod/.
    fn all() -> Vec<Manifest> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("pod"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .filter(|p| read(p).lines().any(|l| l.trim() == "kind: Pod"))
            .collect();
        files.sort();
        files.into_iter().map(Manifest::read).collect()
    }

    /// podman's name of the container kube play makes.
    fn container_name(&self) -> String {
        format!("{}-{}", self.pod, self.container)
    }

    /// The image as podman names a local short name.
    fn local_image(&self) -> String {
        if self.image.contains('/') {
            self.image.clone()
        } else {
            format!("localhost/{}", self.image)
        }
    }
}

/// The test overlay of a manifest: `restartPolicy: Never` and
/// `NICPOLL_EAL_ARGS` added to the first container's env; nothing else.
fn overlay(m: &Manifest, eal_args: &str) -> String {
    assert!(
        !m.text.contains("NICPOLL_EAL_ARGS"),
        "{}: the overlay adds NICPOLL_EAL_ARGS itself",
        m.file.display()
    );
    let mut out = Vec::new();
    let mut policy_done = false;
    let mut env_done = false;
    let lines: Vec<&str> = m.text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("  restartPolicy:") {
            out.push("  restartPolicy: Never".to_string());
            policy_done = true;
            continue;
        }
        out.push(line.to_string());
        if *line == "spec:" && !lines.iter().any(|l| l.starts_with("  restartPolicy:")) {
            out.push("  restartPolicy: Never".to_string());
            policy_done = true;
        }
        if !env_done && line.trim_end() == "      env:" {
            let item = lines[i + 1];
            let indent = &item[..item.len() - item.trim_start().len()];
            out.push(format!("{indent}- name: NICPOLL_EAL_ARGS"));
            out.push(format!("{indent}  value: \"{eal_args}\""));
            env_done = true;
        }
    }
    assert!(
        policy_done && env_done,
        "{}: no spec: or env:",
        m.file.display()
    );
    out.join("\n") + "\n"
}

// ---------------------------------------------------------------------------
// The machine.

/// The default hugepage size in KiB, from /proc/meminfo.
fn hugepage_kib() -> Option<u64> {
    nicpoll_testkit::meminfo_field("Hugepagesize")
}

/// How testpmd names a page size ("2 MiB", "1 GiB").
fn page_size_text(kib: u64) -> String {
    if kib >= 1 << 20 {
        format!("{} GiB", kib >> 20)
    } else {
        format!("{} MiB", kib >> 10)
    }
}

/// The hard limits the container's default ulimits must stay within
/// (runc fails to raise one above them: "error setting rlimit").
fn hard_limit(name: &str) -> Option<String> {
    let limits = read(Path::new("/proc/self/limits"));
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let hard = line[name.len()..].split_whitespace().nth(1)?;
    (hard != "unlimited").then(|| hard.to_string())
}

fn containers_conf() -> String {
    let mut ulimits = Vec::new();
    if let Some(h) = hard_limit("Max open files") {
        ulimits.push(format!("\"nofile={h}:{h}\""));
    }
    // podman's conmon, whose limits the container starts from, ran with
    // RLIMIT_NPROC = kernel.pid_max (32768) on a Debian 12 machine whose hard
    // limit was higher: the lower of the two.
    let pid_max: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let hard: Option<u64> = hard_limit("Max processes").and_then(|h| h.parse().ok());
    if let Some(n) = match (hard, pid_max) {
        (Some(h), Some(p)) => Some(h.min(p)),
        (h, p) => h.or(p),
    } {
        ulimits.push(format!("\"nproc={n}:{n}\""));
    }
    format!(
        "[containers]\ndefault_ulimits = [{}]\n\n[engine]\nruntime = \"runc\"\n\
         cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        ulimits.join(", ")
    )
}

/// The Debian archive of the machine's apt sources (one-line and deb822
/// formats), the public one when there is none.
fn debian_archive() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Ok(t) = std::fs::read_to_string(f) {
                texts.push(t);
            }
        }
    }
    let is_archive = |uri: &str| {
        let u = uri.trim_end_matches('/');
        (u.starts_with("http://") || u.starts_with("https://")) && u.ends_with("/debian")
    };
    for t in &texts {
        for l in t.lines().map(str::trim) {
            let uri = if let Some(rest) = l.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                l.strip_prefix("URIs:")
                    .and_then(|u| u.split_whitespace().next())
            };
            if let Some(u) = uri.filter(|u| is_archive(u)) {
                return u.trim_end_matches('/').to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// Whether `url`'s host answers on its port within a few seconds (checked
/// before debootstrap, with the standard library only).
fn reachable(url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{}", if scheme == "https" { 443 } else { 80 })
    };
    addr.to_socket_addrs().is_ok_and(|mut a| {
        a.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
    })
}

/// A key of the image build's inputs, kept as the image's label.
fn build_inputs_key(inputs: &[&[u8]]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    inputs.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A file's size and modification time: cargo rewrites the binary when it changes.
fn file_identity(path: &Path) -> String {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mtime = m
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{} {}", m.len(), mtime.as_nanos())
}

/// The CPUs this process may use (`Cpus_allowed_list`); a container podman
/// starts from here inherits them, and podman gives it no cpuset of its own.
fn allowed_cpus() -> BTreeSet<usize> {
    let status = read(Path::new("/proc/self/status"));
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    parse_cpus(&list)
}

fn parse_cpus(list: &str) -> BTreeSet<usize> {
    let mut cpus = BTreeSet::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => {
                cpus.insert(part.parse().unwrap());
            }
        }
    }
    cpus
}

// ---------------------------------------------------------------------------
// A podman session.

/// Why the tests of this file cannot run here, decided before anything runs.
fn missing() -> Option<String> {
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
struct Session {
    conf: tempfile::TempDir,
    /// Pods to remove at the end.
    pods: Vec<String>,
    /// Volumes to remove at the end.
    volumes: Vec<String>,
    /// The manifests' image name and what it named before this test, restored at the end.
    image: String,
    image_before: Option<String>,
    /// The test's image, once built and tagged `image`.
    test_image: Option<String>,
    _locks: Vec<nicpoll_testkit::NameLock>,
}

impl Session {
    /// Takes every shared name, makes the network namespace and builds the image
    /// (the base image first when the machine has none). `None` after a skip.
    fn start() -> Option<Session> {
        if let Some(why) = missing() {
            nicpoll_testkit::skip(why);
            return None;
        }
        let manifests = Manifest::all();
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
                    .filter_map(|m| m.hugepage_volume.as_ref())
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
                .filter_map(|m| m.hugepage_volume.clone())
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
    fn command(&self, args: &[&str]) -> Command {
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
    fn image_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("timeout");
        c.args(["600", "podman"])
            .args(args)
            .env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        c
    }

    /// (Never panics: Drop uses it.) A timeout shows as exit status 124.
    fn podman(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// An image command: its output.
    fn images(&self, args: &[&str]) -> Output {
        self.image_command(args).output().unwrap()
    }

    /// An image command that must succeed.
    fn must_image(&self, args: &[&str]) {
        let out = self.images(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            text(&out)
        );
    }

    fn ok(&self, args: &[&str]) -> bool {
        self.podman(args).status.success()
    }

    /// Runs podman and returns its stdout; panics with its output if it failed.
    fn must(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn image_id(&self, name: &str) -> Option<String> {
        let out = self.images(&["image", "inspect", "--format", "{{.Id}}", name]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// debootstrap (minbase bookworm) from `archive`, imported as `base` with
    /// the PATH and command a Debian image has.
    fn make_base_image(&self, base: &str, archive: &str) {
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
    fn build_image(&self, image: &str, base: &str) -> String {
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
    fn hugetlbfs_volume(&mut self, name: &str) {
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
    fn play(&self, file: &Path) -> Output {
        self.podman(&["kube", "play", file.to_str().unwrap()])
    }

    /// Everything the container printed (podman logs keeps stdout and stderr).
    fn logs(&self, container: &str) -> String {
        text(&self.podman(&["logs", container]))
    }

    /// Polls the logs until `done` holds (at most `secs`), and returns them.
    fn wait_logs(
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

    fn inspect(&self, container: &str, format: &str) -> String {
        self.must(&["inspect", "--format", format, container])
            .trim()
            .to_string()
    }

    /// Removes every pod this session may have made, and their anonymous volumes.
    fn remove_pods(&self) {
        for pod in &self.pods {
            if let Err(e) = self.remove_pod(pod) {
                eprintln!("podman test: {e}");
            }
        }
    }

    /// Stops and removes `pod`. podman 4.3.1 restarts an OnFailure container
    /// at once, and a removal that meets a restart half done fails ("device or
    /// resource busy"): stop first, and try a few times.
    fn remove_pod(&self, pod: &str) -> Result<(), String> {
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
    fn remove_volumes(&self) {
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

// ---------------------------------------------------------------------------
// Reading testpmd's output.

/// The number after `label` in the last line of `logs` that has it.
fn last_count(logs: &str, label: &str) -> u64 {
    logs.lines()
        .rev()
        .find_map(|l| {
            let rest = &l[l.find(label)? + label.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {label:?} in the logs:\n{logs}"))
}

/// The last block that starts with `header` (to the next blank line).
fn block<'a>(logs: &'a str, header: &str) -> &'a str {
    let start = logs
        .rfind(header)
        .unwrap_or_else(|| panic!("no {header:?} in:\n{logs}"));
    let rest = &logs[start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    &rest[..end]
}

/// Sample values of a metric family in Prometheus text.
fn samples(metrics: &str, name: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// GET /metrics on the published port, from the test's namespace (the node's
/// side): bash's /dev/tcp, so nothing of ours speaks HTTP on the client side.
fn scrape(port: u16) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET /metrics HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let out = Command::new("timeout")
        .args([
            "10",
            "nsenter",
            &format!("--net=/run/netns/{NETNS}"),
            "bash",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    let response = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "GET http://127.0.0.1:{port}/metrics: {}",
        text(&out)
    );
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP header");
    body.to_string()
}

/// `promtool check metrics` on `metrics`: Prometheus's own parser and linter.
fn promtool_check(metrics: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n--- the metrics:\n{metrics}",
        text(&out)
    );
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn the_virt_pod_forwards_in_podman_serves_metrics_and_stops_cleanly_on_sigterm() {
    let Some(mut s) = Session::start() else {
        return;
    };
    let started = Instant::now();
    let m = Manifest::read(pod_file("pod_testpmd_virt.yaml"));
    let volume = m
        .hugepage_volume
        .clone()
        .expect("the manifest mounts hugepages");
    s.hugetlbfs_volume(&volume);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod_testpmd_virt.podman.yaml");
    std::fs::write(&file, overlay(&m, SOFTWARE_PORTS)).unwrap();
    let out = s.play(&file);
    assert!(out.status.success(), "podman kube play: {}", text(&out));
    let ctr = m.container_name();

    // podman kept what it honours: privileged, the env, the memory limit, the policy.
    let settings = s.inspect(
        &ctr,
        "{{.HostConfig.Privileged}} {{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}",
    );
    assert_eq!(
        settings, "true 1073741824 no",
        "privileged, memory limit (1Gi), restartPolicy: Never"
    );

    // The first statistics period: everything the start printed is there.
    let logs = s.wait_logs(&ctr, 30, "statistics block", |l| {
        l.contains("NIC statistics for port 1")
    });
    // Entrypoint mode: no device plugin, the overlay's ports, the CPUs podman
    // gave (no cpuset: every CPU we may use), the hugetlbfs volume.
    let derived = block(&logs, "Entrypoint mode: configuration derived from the pod");
    assert!(
        derived.contains("devices: none in PCIDEVICE_* variables"),
        "{derived}"
    );
    for port in ["net_null0", "net_null1"] {
        assert!(
            derived.contains(&format!(
                "port --vdev {port} from the command line (NICPOLL_EAL_ARGS)"
            )),
            "{derived}"
        );
    }
    let cores_line = derived
        .lines()
        .find(|l| l.trim().starts_with("cores: "))
        .unwrap();
    let cores = cores_line.trim()["cores: ".len()..]
        .split(' ')
        .next()
        .unwrap();
    let cpus = allowed_cpus();
    assert_eq!(parse_cpus(cores), cpus, "{derived}");
    assert!(
        cores_line.contains(&format!("main lcore {}", cpus.first().unwrap())),
        "{derived}"
    );
    let pages = page_size_text(hugepage_kib().unwrap());
    assert!(
        derived.contains(&format!("hugepages: {pages} pages at /dev/hugepages")),
        "{derived}"
    );
    assert!(
        logs.contains(&format!("EAL: hugepages: {pages} pages at /dev/hugepages")),
        "the mempool is in the volume's hugepages:\n{logs}"
    );
    // The entrypoint's doctor (NICPOLL_DOCTOR=warn): what a node without the
    // device plugin and CPU manager lacks, nothing failing (hugepages are there).
    assert!(logs.contains("WARN  devices: no PCI device"), "{logs}");
    assert!(logs.contains("WARN  cpu-set: "), "{logs}");
    let summary = logs
        .lines()
        .find(|l| l.starts_with("doctor: "))
        .unwrap_or_else(|| panic!("no doctor summary:\n{logs}"));
    assert!(summary.ends_with(" 0 FAIL"), "{summary}");

    // Forwarding: both null ports receive and send.
    for port in ["0", "1"] {
        let stats = block(&logs, &format!("NIC statistics for port {port}"));
        assert!(last_count(stats, "RX-packets:") > 0, "{stats}");
        assert!(last_count(stats, "TX-packets:") > 0, "{stats}");
    }

    // The metrics, from the node's side of the published port, through Prometheus's parser.
    let metrics = scrape(METRICS_PORT);
    promtool_check(&metrics);
    let rx = samples(&metrics, "nicpoll_port_rx_packets_total");
    assert_eq!(rx.len(), 2, "{metrics}");
    assert!(rx.iter().all(|&v| v > 0.0), "{metrics}");
    assert_eq!(
        samples(&metrics, "nicpoll_forwarding"),
        vec![1.0],
        "{metrics}"
    );

    // podman pod stop -t 30: SIGTERM to testpmd (PID 1), the final statistics,
    // every mbuf back, exit status 0, well within the grace period.
    let stop = Instant::now();
    s.must(&["pod", "stop", "-t", "30", &m.pod]);
    let stop_time = stop.elapsed();
    assert!(
        stop_time < Duration::from_secs(25),
        "pod stop took {stop_time:?}: SIGTERM not honoured?"
    );
    assert_eq!(
        s.inspect(&ctr, "{{.State.ExitCode}}"),
        "0",
        "{}",
        s.logs(&ctr)
    );
    let logs = s.logs(&ctr);
    assert!(logs.contains("Telling cores to stop (signal)"), "{logs}");
    let total = block(&logs, "Accumulated forward statistics for all ports");
    let (rx, tx) = (
        last_count(total, "RX-packets:"),
        last_count(total, "TX-packets:"),
    );
    let dropped = last_count(total, "TX-dropped:");
    assert!(rx > 0, "{total}");
    assert_eq!(
        tx + dropped,
        rx,
        "io forwards or drops every packet it receives:\n{total}"
    );
    let mempool = logs
        .lines()
        .find(|l| l.starts_with("Mempool "))
        .unwrap_or_else(|| panic!("no mempool line:\n{logs}"));
    assert!(
        mempool.contains(": all ") && mempool.ends_with(" mbufs back in the pool"),
        "{mempool}"
    );
    assert!(logs.contains("\nBye..."), "{logs}");
    eprintln!(
        "podman test: the virt pod ran and stopped in {:.1?}",
        started.elapsed()
    );
}

#[test]
fn the_shipped_virt_manifest_played_unchanged_says_no_devices() {
    let Some(s) = Session::start() else { return };
    let m = Manifest::read(pod_file("pod_testpmd_virt.yaml"));
    let out = s.play(&m.file);
    assert!(
        out.status.success(),
        "podman kube play {}: {}",
        m.file.display(),
        text(&out)
    );
    let ctr = m.container_name();
    let logs = s.wait_logs(&ctr, 30, "'no devices' message", |l| {
        l.contains("testpmd: entrypoint mode: no devices:")
    });
    assert!(
        logs.contains("resources.requests"),
        "the message says what to request:\n{logs}"
    );
    // Without the device plugin's volume type, podman gives a plain directory:
    // doctor says so before testpmd starts.
    assert!(logs.contains("FAIL  hugetlbfs: "), "{logs}");
    // A usage error: exit status 2 (podman restarts it at once: OnFailure,
    // without the kubelet's backoff).
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.inspect(&ctr, "{{.State.ExitCode}}") != "2" {
        assert!(
            Instant::now() < deadline,
            "exit status: {}",
            s.inspect(&ctr, "{{.State.ExitCode}}")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        s.inspect(&ctr, "{{.HostConfig.RestartPolicy.Name}}"),
        "on-failure"
    );
}

#[test]
fn the_other_manifests_play_in_podman_without_a_rejected_field() {
    let Some(s) = Session::start() else { return };
    let others: Vec<Manifest> = Manifest::all()
        .into_iter()
        .filter(|m| !m.file.ends_with("pod_testpmd_virt.yaml"))
        .collect();
    assert!(others.len() >= 2, "{others:?}");
    for m in &others {
        let out = s.play(&m.file);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "podman kube play {}: {}",
            m.file.display(),
            text(&out)
        );
        // podman warns on stderr about what it does not take.
        assert!(
            said.trim().is_empty(),
            "podman kube play {}: {said}",
            m.file.display()
        );
        let ctr = m.container_name();
        // testpmd ran: the entrypoint's doctor summary, then testpmd's own words.
        let logs = s.wait_logs(&ctr, 30, "testpmd's start", |l| {
            l.lines().any(|l| l.starts_with("doctor: "))
                && l.lines()
                    .any(|l| l.starts_with("testpmd: ") || l.starts_with("Entrypoint mode"))
        });
        assert!(logs.contains("doctor: "), "{logs}");
        let caps = s.inspect(&ctr, "{{.EffectiveCaps}}");
        for cap in &m.caps_added {
            assert!(
                caps.contains(&format!("CAP_{cap}")),
                "{}: {cap} not in {caps}",
                m.file.display()
            );
        }
        assert_eq!(
            s.inspect(&ctr, "{{.HostConfig.Privileged}}"),
            m.privileged.to_string(),
            "{}",
            m.file.display()
        );
        s.remove_pod(&m.pod).unwrap();
    }
}

#[test]
fn the_build_context_leaves_out_target_and_git() {
    let Some(s) = Session::start() else { return };
    // What `COPY . .` of the source stage receives from the repository root.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Containerfile");
    std::fs::write(
        &file,
        format!(
            "FROM {}\nCOPY . /context\nRUN echo CONTEXT-BEGIN && cd /context && find . -path ./src -prune -o -path ./drivers -prune -o -print | sort && du -sk . && echo CONTEXT-END\n",
            containerfile_base()
        ),
    )
    .unwrap();
    let tag = "localhost/nicpoll-context-check:podman-test";
    let out = s.images(&[
        "build",
        "--pull=never",
        "--no-cache",
        "-f",
        file.to_str().unwrap(),
        "-t",
        tag,
        repo().to_str().unwrap(),
    ]);
    let _ = s.images(&["rmi", "-f", tag]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let listing =
        &said[said.find("\nCONTEXT-BEGIN\n").unwrap() + 15..said.rfind("\nCONTEXT-END").unwrap()];
    let paths: Vec<&str> = listing.lines().collect();
    assert!(
        paths.contains(&"./Cargo.toml") && paths.contains(&"./pod/Containerfile"),
        "{listing}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| *p == "./.git" || p.starts_with("./.git/")),
        "{listing}"
    );
    for p in paths.iter().filter(|p| p.starts_with("./target/")) {
        assert!(
            [
                "./target/debug",
                "./target/release",
                "./target/debug/testpmd",
                "./target/release/testpmd"
            ]
            .contains(p),
            "only the testpmd binaries come out of target/: {p}\n{listing}"
        );
    }
}

/// `testpmd doctor --json` in a container of the test's image run with
/// `options`: the `privileged` finding.
fn doctor_privileged(s: &Session, options: &[&str]) -> (String, String) {
    let image = s.test_image.clone().unwrap();
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "testpmd",
    ];
    args.extend_from_slice(options);
    args.extend_from_slice(&[image.as_str(), "doctor", "--json"]);
    let out = s.podman(&args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("podman {}: {e}: {}", args.join(" "), text(&out)));
    let f = json
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "privileged")
        .unwrap_or_else(|| panic!("no privileged finding: {json}"));
    (
        f["status"].as_str().unwrap().to_string(),
        f["finding"].as_str().unwrap().to_string(),
    )
}

#[test]
fn doctor_tells_a_privileged_container_from_one_with_every_capability() {
    let Some(s) = Session::start() else { return };
    // What podman makes of --privileged on this machine, whatever its bounding set.
    let (status, finding) = doctor_privileged(&s, &["--privileged"]);
    assert_eq!(status, "PASS", "{finding}");
    assert!(
        finding.starts_with("a privileged container: no seccomp filter, "),
        "{finding}"
    );
    // The runtime's defaults: seccomp on, no devices of the machine, a short set.
    let (status, finding) = doctor_privileged(&s, &[]);
    assert_eq!(
        status, "PASS",
        "not needed without no-IOMMU devices: {finding}"
    );
    assert!(
        finding.starts_with(
            "not privileged: a seccomp filter is on (Seccomp: 2); 0 of the machine's "
        ),
        "{finding}"
    );
    assert!(finding.contains("lacks CAP_SYS_ADMIN"), "{finding}");
    // Every capability the runtime has, and still not privileged.
    let (_, finding) = doctor_privileged(&s, &["--cap-add", "ALL"]);
    assert!(
        finding.starts_with(
            "not privileged: a seccomp filter is on (Seccomp: 2); 0 of the machine's "
        ),
        "{finding}"
    );
    assert!(!finding.contains("bounding set"), "{finding}");
}
