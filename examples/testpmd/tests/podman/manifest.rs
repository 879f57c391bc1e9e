//! What the repository's pod files say (read as text: they are ours and
//! simple), and the test overlay of a manifest.

use std::path::PathBuf;

use crate::{pod_file, read};

/// The manifests of pod/ the tests play.
pub(crate) const SHIPPED: [&str; 4] = [
    "pod_testpmd_virt.yaml",
    "pod_testpmd.yaml",
    "mlnx-pod_testpmd_connectx5.yaml",
    "pod_memif.yaml",
];

/// The image the Containerfile's `runtime` stage starts from.
pub(crate) fn containerfile_base() -> String {
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
pub(crate) struct Manifest {
    pub(crate) file: PathBuf,
    pub(crate) text: String,
    pub(crate) pod: String,
    pub(crate) container: String,
    pub(crate) image: String,
    /// The volume mounted at /dev/hugepages.
    pub(crate) hugepage_volume: Option<String>,
    /// The `emptyDir` volumes (kube play makes a named volume for each).
    pub(crate) empty_dirs: Vec<String>,
    /// securityContext.capabilities.add.
    pub(crate) caps_added: Vec<String>,
    pub(crate) privileged: bool,
}

impl Manifest {
    pub(crate) fn read(file: PathBuf) -> Manifest {
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
        let empty_dirs = lines
            .windows(2)
            .filter(|w| w[1].trim().starts_with("emptyDir:"))
            .filter_map(|w| w[0].trim().strip_prefix("- name: "))
            .map(str::to_string)
            .collect();
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
            empty_dirs,
            caps_added,
            privileged,
        }
    }

    /// The testpmd pods this test plays: the virtual deployment's, then the
    /// other three (bare metal, mlx5, memif).
    pub(crate) fn shipped() -> Vec<Manifest> {
        SHIPPED
            .iter()
            .map(|name| Manifest::read(pod_file(name)))
            .collect()
    }

    /// podman's name of the container kube play makes.
    pub(crate) fn container_name(&self) -> String {
        format!("{}-{}", self.pod, self.container)
    }

    /// The image as podman names a local short name.
    pub(crate) fn local_image(&self) -> String {
        if self.image.contains('/') {
            self.image.clone()
        } else {
            format!("localhost/{}", self.image)
        }
    }
}

/// The test overlay of a manifest: `restartPolicy: Never` and
/// `NICPOLL_EAL_ARGS` added to the first container's env; nothing else.
pub(crate) fn overlay(m: &Manifest, eal_args: &str) -> String {
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
