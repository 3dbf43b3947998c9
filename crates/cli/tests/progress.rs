//! `apply`'s progress: plain per-change lines when piped (scripts read them), a spinner on stderr on a terminal
//! (run under `script`, util-linux's pseudo-terminal), and nothing but JSON on stdout with `--output json`.

mod support;

use std::process::Command;

use support::Mesh;

#[test]
fn apply_reports_progress_plainly_when_piped_and_with_a_spinner_on_a_terminal() {
    let mesh = Mesh::start(2, "");

    // Piped: one plain line per change, then the summary; nothing on stderr.
    let out = mesh.meshtrust(&["apply", "--openbao-only"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let done: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  done "))
        .collect();
    assert!(done.len() >= 3, "{stdout}");
    assert!(stdout.contains("Apply complete:"), "{stdout}");
    assert!(
        !stdout.contains('\u{1b}'),
        "no terminal codes when piped: {stdout:?}"
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // On a terminal: the spinner's line names what apply is doing, and the reader token's expiry reads as
    // a date and a distance.
    let command = format!(
        "{} apply --mesh {}",
        env!("CARGO_BIN_EXE_meshtrust"),
        mesh.file.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("BAO_ADDR", &mesh.env.bao.addr)
        .env("BAO_TOKEN", &mesh.env.bao.root_token)
        .output()
        .expect("run under script");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("applied · "),
        "a spinner with the count: {tty:?}"
    );
    // Once planned, the bar shows the count out of the plan's total ("3/12 applied").
    let counted = tty.split("applied · ").any(|before| {
        let tail: String = before
            .trim_end()
            .chars()
            .rev()
            .take_while(|c| !c.is_whitespace())
            .collect();
        let count: String = tail.chars().rev().collect();
        count.split_once('/').is_some_and(|(done, total)| {
            done.parse::<u32>().is_ok() && total.parse::<u32>().is_ok_and(|t| t > 0)
        })
    });
    assert!(counted, "a count out of the plan's total: {tty:?}");
    assert!(tty.contains("  done "), "{tty}");
    let token = tty
        .lines()
        .find(|l| l.contains("the reader token expires"))
        .unwrap_or_else(|| panic!("no reader token line in {tty}"));
    assert!(token.contains("Z (in "), "RFC 3339 and relative: {token}");
    assert!(!token.contains("Unix time"), "{token}");

    // JSON: stdout is one JSON document (other tests check it with changes applied).
    let out = mesh.meshtrust(&["apply", "--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("JSON only on stdout");
    assert!(value["applied"].is_array());
}
