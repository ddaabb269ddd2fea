use std::io::{Read, Write};

use super::textfile::{Textfile, TextfileError};
use super::*;

fn sample_families() -> Vec<Family> {
    vec![
        Family::gauge("myvault_x_bytes", "Bytes of x.\nSecond line \\ here.")
            .with(&[("repo", "s3://b/p \"q\"\n\\")], 1536.0)
            .with(&[("repo", "/var/backups/ü")], 0.25),
        Family::counter("myvault_y_total", "Ys.").with(&[], 3.0),
        Family::gauge("myvault_empty", "No samples: left out."),
    ]
}

#[test]
fn render_escapes_help_and_label_values_and_leaves_out_empty_families() {
    let text = render(&sample_families());
    assert_eq!(
        text,
        "# HELP myvault_x_bytes Bytes of x.\\nSecond line \\\\ here.\n\
         # TYPE myvault_x_bytes gauge\n\
         myvault_x_bytes{repo=\"s3://b/p \\\"q\\\"\\n\\\\\"} 1536\n\
         myvault_x_bytes{repo=\"/var/backups/ü\"} 0.25\n\
         # HELP myvault_y_total Ys.\n\
         # TYPE myvault_y_total counter\n\
         myvault_y_total 3\n"
    );
}

#[test]
fn values_are_written_as_prometheus_reads_them() {
    let f = |v| render(&[Family::gauge("m", "h").with(&[], v)]);
    assert!(f(f64::NAN).ends_with("m NaN\n"));
    assert!(f(f64::INFINITY).ends_with("m +Inf\n"));
    assert!(f(-1.5).ends_with("m -1.5\n"));
    assert!(f(1_765_000_000.123_456).ends_with("m 1765000000.123456\n"));
}

#[test]
fn parse_reads_back_what_render_wrote() {
    let families: Vec<Family> = sample_families()
        .into_iter()
        .filter(|f| !f.samples.is_empty())
        .collect();
    let back = parse(&render(&families)).unwrap();
    assert_eq!(back, families);
}

#[test]
fn parse_refuses_text_myvault_did_not_write() {
    assert!(parse("node_load1 0.5\n").is_err(), "sample without TYPE");
    assert!(parse("# TYPE h histogram\nh_bucket{le=\"1\"} 1\n").is_err());
    assert!(parse("# TYPE m gauge\nm{a=\"unterminated} 1\n").is_err());
    assert!(parse("# TYPE m gauge\nm one\n").is_err());
    let e = parse("# TYPE m gauge\nm 1\nother 2\n").unwrap_err();
    assert_eq!(e.line, 3);
}

#[test]
fn merge_replaces_same_labels_and_keeps_the_rest() {
    let old = vec![
        Family::gauge("a", "old help")
            .with(&[("repo", "r1"), ("source", "s")], 1.0)
            .with(&[("repo", "r2"), ("source", "s")], 2.0),
        Family::gauge("b", "kept").with(&[], 7.0),
    ];
    // Same labels in another order are the same series.
    let new = vec![
        Family::gauge("a", "new help").with(&[("source", "s"), ("repo", "r1")], 10.0),
        Family::gauge("c", "added").with(&[], 1.0),
    ];
    let merged = textfile::merge(old, &new);
    let text = render(&merged);
    assert_eq!(
        text,
        "# HELP a new help\n# TYPE a gauge\n\
         a{repo=\"r2\",source=\"s\"} 2\na{source=\"s\",repo=\"r1\"} 10\n\
         # HELP b kept\n# TYPE b gauge\nb 7\n\
         # HELP c added\n# TYPE c gauge\nc 1\n"
    );
}

#[test]
fn textfile_is_replaced_whole_and_keeps_earlier_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("myvault.prom");
    {
        let t = Textfile::open(&path).unwrap();
        t.write(&[Family::gauge("m", "h").with(&[("repo", "a")], 1.0)])
            .unwrap();
    }
    {
        let t = Textfile::open(&path).unwrap();
        t.write(&[Family::gauge("m", "h").with(&[("repo", "b")], 2.0)])
            .unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("m{repo=\"a\"} 1\n") && text.contains("m{repo=\"b\"} 2\n"));
    // Only the file and its lock: no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["myvault.prom", "myvault.prom.lock"]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter must be able to read it");
}

#[test]
fn textfile_refuses_a_file_it_did_not_write_and_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.prom");
    std::fs::write(&path, "node_thing 1\n").unwrap();
    match Textfile::open(&path) {
        Err(TextfileError::Foreign { .. }) => {}
        other => panic!("expected Foreign, got {:?}", other.map(|_| ())),
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "node_thing 1\n");
    let missing = dir.path().join("no/such/dir/m.prom");
    let e = Textfile::open(&missing).err().expect("an error");
    assert!(e.to_string().contains("no/such/dir"), "{e}");
}

fn get(addr: std::net::SocketAddr, request: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn http_serves_metrics_with_the_exposition_content_type_and_404_elsewhere() {
    let render: http::Render = std::sync::Arc::new(|| "# TYPE m gauge\nm 1\n".to_string());
    let addr = http::serve("127.0.0.1:0", render).unwrap();
    let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(
        ok.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{ok}"
    );
    assert!(ok.contains("\r\nContent-Length: 19\r\n"), "{ok}");
    assert!(ok.ends_with("\r\n\r\n# TYPE m gauge\nm 1\n"), "{ok}");
    let with_query = get(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n");
    assert!(with_query.starts_with("HTTP/1.1 200 OK"), "{with_query}");
    let other = get(addr, "GET / HTTP/1.1\r\n\r\n");
    assert!(other.starts_with("HTTP/1.1 404 Not Found\r\n"), "{other}");
    let post = get(addr, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    // A client that connects and says nothing does not stop the next scrape for long.
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    let t = std::time::Instant::now();
    let again = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
    assert!(again.starts_with("HTTP/1.1 200 OK"));
    assert!(t.elapsed() < std::time::Duration::from_secs(8));
}
