//! The state lock: while another process holds it, `certd issue` refuses (exit 2) and names the holder.

use crate::harness::{parse_issue_stdout, Certd, CertdConfig, IssueOutcome, Pebble};

#[tokio::test]
async fn issue_refuses_while_another_process_holds_the_lock() {
    let pebble = Pebble::start().await;
    let certd = Certd::with_config(&CertdConfig::for_pebble(
        &pebble,
        &[&["a.test", "www.a.test"]],
    ));
    let store = certd::store::Store::open(&certd.state_dir()).expect("open state dir");
    let guard = store.lock().expect("take the state lock");

    let run = certd.issue(&[]).await;
    run.expect_code(2);
    let messages = run.stderr_messages().join("\n");
    assert!(
        messages.to_lowercase().contains("lock"),
        "the message must mention the lock\n{run}"
    );
    assert!(
        messages.contains(&format!("pid {}", std::process::id())),
        "the message must name the holder's pid\n{run}"
    );
    assert_eq!(
        pebble.issued_count(),
        0,
        "nothing may be ordered without the lock"
    );
    assert!(!certd.site_dir("a.test").join("cert.pem").exists());

    drop(guard);
    let run = certd.issue(&[]).await;
    run.expect_code(0);
    assert!(
        matches!(
            parse_issue_stdout(&run.stdout).get("a.test"),
            Some(IssueOutcome::Issued { .. })
        ),
        "once the lock is released, issue works\n{run}"
    );
}
