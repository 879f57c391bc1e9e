//! The end-of-run skip report. `cargo test --workspace` runs packages in name
//! order and a package's integration tests in file-name order, so this binary
//! (testpmd is the last package, `zz_` the last name) runs after every other
//! test of the workspace but the doc-tests: it prints how many tests were
//! skipped in this run and why (see `nicpoll-testkit`).

#[test]
fn skip_report() {
    let skipped = nicpoll_testkit::report_skips();
    // Under CI a skip has already failed its own test; this names them again
    // at the end of the log, where a reader looks.
    assert!(
        skipped == 0 || !nicpoll_testkit::under_ci(),
        "{skipped} test(s) skipped under CI"
    );
}
