//! Renders the report in headless Chromium: no console message (the page has
//! no script and loads nothing, so any message is an error), the DOM holds
//! the drawings, and the screenshot is not blank.
//!
//! Skipped when no Chromium is found, unless AMP_REQUIRE_BROWSER=1 (CI sets
//! it through tests/report_browser.sh). AMP_CHROMIUM names the binary.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amp_export::{html_report, ReportInput, SensitivityRow, SensitivitySection};

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("AMP_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    for name in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(name).exists() {
            return Some(PathBuf::from(name));
        }
    }
    None
}

struct Run {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium on `page` with `extra` flags, killing it after
/// two minutes.
fn run_chromium(bin: &Path, dir: &Path, page: &Path, extra: &[String]) -> Run {
    let profile = dir.join(format!("profile-{}", extra.len()));
    let out = dir.join(format!("stdout-{}.txt", extra.len()));
    let err = dir.join(format!("stderr-{}.txt", extra.len()));
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("chromium starts");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let run = Run {
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    assert!(
        status.success(),
        "chromium failed ({status}):\n{}",
        run.stderr
    );
    run
}

fn console_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught") || l.contains("net::ERR"))
        .collect()
}

/// Distinct colours and the share of non-white pixels of a PNG.
fn png_stats(path: &Path) -> (usize, f64, (u32, u32)) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let mut colours = HashSet::new();
    let mut non_white = 0usize;
    let pixels = (info.width * info.height) as usize;
    for px in buf[..pixels * channels].chunks(channels) {
        let rgb = match channels {
            1 | 2 => (px[0], px[0], px[0]),
            _ => (px[0], px[1], px[2]),
        };
        colours.insert(rgb);
        if rgb.0 < 245 || rgb.1 < 245 || rgb.2 < 245 {
            non_white += 1;
        }
    }
    (
        colours.len(),
        non_white as f64 / pixels as f64,
        (info.width, info.height),
    )
}

fn check_page(bin: &Path, dir: &Path, name: &str, html: &str, lanes: usize, ids: &[&str]) {
    let page = dir.join(format!("{name}.html"));
    std::fs::write(&page, html).unwrap();
    let shot = dir.join(format!("{name}.png"));
    let run = run_chromium(
        bin,
        dir,
        &page,
        &[format!("--screenshot={}", shot.display())],
    );
    let console = console_lines(&run.stderr);
    assert!(
        console.is_empty(),
        "{name}: console messages:\n{}",
        console.join("\n")
    );
    let (colours, ink, size) = png_stats(&shot);
    eprintln!(
        "{name}: screenshot {}x{}, {colours} colours, {:.1}% non-white",
        size.0,
        size.1,
        ink * 100.0
    );
    assert!(colours >= 16, "{name}: only {colours} colours: blank page?");
    assert!(
        ink > 0.05,
        "{name}: only {:.2}% of the screenshot is drawn",
        ink * 100.0
    );

    let dom = run_chromium(bin, dir, &page, &["--dump-dom".to_string()]);
    let console = console_lines(&dom.stderr);
    assert!(
        console.is_empty(),
        "{name}: console messages:\n{}",
        console.join("\n")
    );
    for id in ["device-map", "timeline-svg", "memory-svg", "breakdown-svg"]
        .iter()
        .chain(ids)
    {
        assert!(
            dom.stdout.contains(&format!("id=\"{id}\"")),
            "{name}: the browser's DOM has no #{id}"
        );
    }
    assert_eq!(
        dom.stdout.matches("class=\"lane\"").count(),
        lanes,
        "{name}: lanes in the DOM"
    );
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(bin) = chromium() else {
        if std::env::var("AMP_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("AMP_REQUIRE_BROWSER=1 but no chromium found (set AMP_CHROMIUM or install chromium)");
        }
        eprintln!("skipped: no chromium (install it or set AMP_CHROMIUM; AMP_REQUIRE_BROWSER=1 makes this fail)");
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("amp-report-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let (p, m, c) = common::uneven();
    let t = common::one_f_one_b(4, 8, &[1.5, 1.0, 1.0, 1.4], &[3.0, 2.0, 2.0, 2.8], 0.2);
    let e = common::estimate(&p, &c, t.iteration_s);
    // With --sensitivity's section: a table and its notes.
    let rows = [SensitivityRow {
        calibration: "sailor-gh200".to_string(),
        fitted_on: "Sailor's GH200 runs alone".to_string(),
        rank_1_s: Some(2.2868),
        best: "tp 1 pp 8 dp 2 mbs 1, split 0 6 9 12 15 18 21 24 30, pp-dp-tp | T4x8".to_string(),
        best_s: Some(1.4905),
        regret: Some(1.534),
    }];
    let notes = ["sensitivity: under --calibration sailor-gh200 rank 1 is 53.4% slower than the fastest plan found there".to_string()];
    let small = html_report(&ReportInput {
        title: "amp report: GPT-2 on 16 GPUs",
        model: &m,
        cluster: &c,
        ranked: &[],
        chosen: &p,
        estimate: Some(&e),
        timeline: Some(&t),
        max_rows: 50,
        sensitivity: Some(SensitivitySection {
            rows: &rows,
            notes: &notes,
        }),
    });
    check_page(&bin, &dir, "small", &small, 4, &["sensitivity-table"]);

    let (p, m, c) = common::large();
    let t = common::one_f_one_b(8, 32, &[1.0; 8], &[2.0; 8], 0.05);
    let e = common::estimate(&p, &c, t.iteration_s);
    let large = html_report(&ReportInput {
        title: "amp report: 256 GPUs",
        model: &m,
        cluster: &c,
        ranked: &[],
        chosen: &p,
        estimate: Some(&e),
        timeline: Some(&t),
        max_rows: 50,
        sensitivity: None,
    });
    check_page(&bin, &dir, "large", &large, 8, &[]);
    if std::env::var("AMP_KEEP_REPORT").is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
}
