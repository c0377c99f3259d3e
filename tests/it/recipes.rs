//! The README's jq recipes, run as written on a live capture made as the README
//! says (`spf run --path ... --output capture.ndjson`) of real HTTP/1.1 (curl
//! and nginx) and gRPC (tonic, `spf demo`'s server and client) traffic.

use std::process::Command;

use crate::http1::{curl, nginx, www};
use crate::live::{Canary, LiveSpf};
use crate::util::spf;

/// The recipes: the commands of the README's `jq` block, each with its
/// comment, split at blank lines.
fn recipes() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("Some `jq` recipes")
        .expect("the recipes section");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").expect("its code block") + 6..];
    let block = &block[..block.find("```").expect("the block's end")];
    block
        .split("\n\n")
        .filter(|r| !r.trim().is_empty())
        .map(|r| {
            let (comments, commands): (Vec<&str>, Vec<&str>) =
                r.lines().partition(|l| l.starts_with('#'));
            (comments.join(" "), commands.join("\n"))
        })
        .collect()
}

#[test]
fn readme_recipes_work_as_written_on_a_real_capture() {
    let _g = crate::capture::lock();
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, web) = nginx(dir.path());
    www(dir.path(), "small.json", br#"{"ok":true}"#);
    let grpc = dir.path().join("grpc.sock");
    let mut server = crate::http1::Server::spawn(spf().args(["demo", "--serve"]).arg(&grpc), &grpc);
    let capture = dir.path().join("capture.ndjson");
    let filter = format!("{}/*", dir.path().display());
    let args = ["--path", &filter, "--output", capture.to_str().unwrap()];
    let canary = dir.path().join("canary.sock");
    let Some(live) =
        LiveSpf::start_with("readme_recipes", dir.path(), &args, Canary::Socket(&canary))
    else {
        return;
    };
    let web = web.to_str().unwrap();
    curl(&["--unix-socket", web, "http://localhost/small.json"]);
    curl(&["--unix-socket", web, "http://localhost/small.json"]);
    let client = spf()
        .args(["demo", "--client"])
        .arg(&grpc)
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    live.stop();
    server.stop();

    let recipes = recipes();
    assert_eq!(recipes.len(), 6, "{recipes:#?}");
    for (comment, cmd) in &recipes {
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!("set -o pipefail\n{cmd}"))
            .current_dir(dir.path())
            .output()
            .expect("running bash");
        let out = String::from_utf8_lossy(&o.stdout);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{comment}\n{cmd}\nfailed: {err}");
        let expect: &[&str] = if comment.contains("access log") {
            &["curl[", "nginx[", "GET /small.json 200", "/demo.Echo/Say"]
        } else if comment.contains("gRPC method") {
            &["/demo.Echo/Say"]
        } else if comment.contains("slowest") {
            &[" ns "]
        } else if comment.contains("Who sent") {
            &["curl[", "nginx["]
        } else if comment.contains("reassembled") {
            &[]
        } else if comment.contains("Gaps") {
            assert_eq!(out, "", "{comment}: a clean capture has no gaps or errors");
            &[]
        } else {
            panic!("a recipe the test does not know: {comment}");
        };
        for want in expect {
            assert!(out.contains(want), "{comment}\n{cmd}\ngave:\n{out}");
        }
        if comment.contains("reassembled") {
            assert!(
                out.starts_with("GET /small.json") || out.starts_with("PRI * HTTP/2.0"),
                "{comment}: the first caller's first bytes, got: {out}"
            );
        }
    }
}
