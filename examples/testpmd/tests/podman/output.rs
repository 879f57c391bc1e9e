//! Reading testpmd's output and its metrics.

use std::process::Command;

use crate::{NETNS, text};

/// The number after `label` in the last line of `logs` that has it.
pub(crate) fn last_count(logs: &str, label: &str) -> u64 {
    logs.lines()
        .rev()
        .find_map(|l| {
            let rest = &l[l.find(label)? + label.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no {label:?} in the logs:\n{logs}"))
}

/// The last block that starts with `header` (to the next blank line).
pub(crate) fn block<'a>(logs: &'a str, header: &str) -> &'a str {
    let start = logs
        .rfind(header)
        .unwrap_or_else(|| panic!("no {header:?} in:\n{logs}"));
    let rest = &logs[start..];
    let end = rest.find("\n\n").unwrap_or(rest.len());
    &rest[..end]
}

/// Sample values of a metric family in Prometheus text.
pub(crate) fn samples(metrics: &str, name: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// GET /metrics on the published port, from the test's namespace (the node's
/// side): bash's /dev/tcp, so nothing of ours speaks HTTP on the client side.
pub(crate) fn scrape(port: u16) -> String {
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
pub(crate) fn promtool_check(metrics: &str) {
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
