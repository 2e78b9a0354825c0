//! The HTML report: one lane per stage holding every micro-batch's forward
//! and backward, a device map cell per GPU, escaped text, no external
//! resources, and a readable size at 256 GPUs.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use amp_core::placement::Placement;
use amp_core::schedule::Timeline;
use amp_core::search::RankedPlan;
use amp_export::{html_report, ReportInput, SensitivityRow, SensitivitySection};

/// Attributes of every `<tag ...>` opening inside `html[from..to]`.
fn tags<'a>(html: &'a str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest: &'a str = html;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let end = after.find('>').expect("tag closes");
        out.push(attrs(&after[..end]));
        rest = &after[end..];
    }
    out
}

fn attrs(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut rest = s.trim();
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim().to_string();
        let val_end = rest[eq + 2..].find('"').expect("attribute closes");
        m.insert(key, rest[eq + 2..eq + 2 + val_end].to_string());
        rest = rest[eq + 2 + val_end + 1..].trim_start();
    }
    m
}

/// The text of the `<svg id="...">` element.
fn svg<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no svg {id}"));
    let end = html[start..].find("</svg>").unwrap() + start;
    &html[start..end]
}

/// (stage, micro-batch, kind) of every drawn event of the timeline.
fn events(html: &str) -> Vec<(usize, Option<usize>, String)> {
    tags(svg(html, "timeline-svg"), "rect")
        .into_iter()
        .filter(|a| a.get("class").map(String::as_str) == Some("ev"))
        .map(|a| {
            (
                a["data-stage"].parse().unwrap(),
                a.get("data-mb").map(|m| m.parse().unwrap()),
                a["data-kind"].clone(),
            )
        })
        .collect()
}

fn lanes(html: &str) -> Vec<usize> {
    tags(svg(html, "timeline-svg"), "g")
        .into_iter()
        .filter(|a| a.get("class").map(String::as_str) == Some("lane"))
        .map(|a| a["data-stage"].parse().unwrap())
        .collect()
}

fn check_every_pass_once(html: &str, pp: usize, m: usize) {
    assert_eq!(lanes(html), (0..pp).collect::<Vec<_>>());
    let ev = events(html);
    for kind in ["forward", "backward"] {
        let got: Vec<(usize, usize)> = ev
            .iter()
            .filter(|(_, _, k)| k == kind)
            .map(|(s, mb, _)| (*s, mb.expect("compute events carry their micro-batch")))
            .collect();
        let set: BTreeSet<(usize, usize)> = got.iter().copied().collect();
        assert_eq!(got.len(), set.len(), "a {kind} pass drawn twice");
        let want: BTreeSet<(usize, usize)> =
            (0..pp).flat_map(|s| (0..m).map(move |i| (s, i))).collect();
        assert_eq!(set, want, "{kind} passes");
    }
}

fn report(
    plan: &amp_core::plan::Plan,
    model: &amp_core::model::Model,
    cluster: &amp_core::cluster::Cluster,
    timeline: Option<&Timeline>,
    ranked: &[RankedPlan],
) -> String {
    let est = common::estimate(plan, cluster, timeline.map_or(1.0, |t| t.iteration_s));
    html_report(&ReportInput {
        title: "amp report",
        model,
        cluster,
        ranked,
        chosen: plan,
        estimate: Some(&est),
        timeline,
        max_rows: 50,
        sensitivity: None,
    })
}

#[test]
fn small_plan_has_one_lane_per_stage_and_every_pass() {
    let (p, m, c) = common::homogeneous();
    let t = common::one_f_one_b(4, 4, &[1.0, 1.0, 1.0, 1.2], &[2.0, 2.0, 2.0, 2.4], 0.1);
    let html = report(&p, &m, &c, Some(&t), &[]);
    check_every_pass_once(&html, 4, 4);
    // Sends, all-reduce and optimizer are drawn too.
    let kinds: BTreeSet<String> = events(&html).into_iter().map(|e| e.2).collect();
    for k in ["send_forward", "send_backward", "all_reduce", "optimizer"] {
        assert!(kinds.contains(k), "{k} missing");
    }
    // The device map has one cell per GPU, with the plan's roles.
    let cells = tags(svg(&html, "device-map"), "g");
    let gpus: Vec<_> = cells
        .iter()
        .filter(|a| a.get("class").map(String::as_str) == Some("gpu"))
        .collect();
    assert_eq!(gpus.len(), 16);
    for (j, s) in p.stages.iter().enumerate() {
        for (r, rep) in s.replicas.iter().enumerate() {
            for (tpr, d) in rep.iter().enumerate() {
                let cell = gpus
                    .iter()
                    .find(|a| {
                        a["data-node"] == d.node.to_string() && a["data-gpu"] == d.gpu.to_string()
                    })
                    .unwrap();
                assert_eq!(cell["data-stage"], j.to_string());
                assert_eq!(cell["data-replica"], r.to_string());
                assert_eq!(cell["data-tp"], tpr.to_string());
            }
        }
    }
    // GPU types are labelled, memory has a bar per device.
    assert!(html.contains("T4"));
    let mem = tags(svg(&html, "memory-svg"), "g");
    assert_eq!(mem.len(), 16);
}

#[test]
fn report_is_self_contained() {
    let (p, m, c) = common::uneven();
    let t = common::one_f_one_b(4, 8, &[1.5, 1.0, 1.0, 1.4], &[3.0, 2.0, 2.0, 2.8], 0.2);
    let html = report(&p, &m, &c, Some(&t), &[]);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"));
    assert!(!html.contains(" src="));
    assert!(!html.contains(" href="));
    assert!(!html.contains("@import"));
    assert!(!html.contains("url("));
    // The only URL is the SVG namespace.
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
    check_every_pass_once(&html, 4, 8);
    // Both GPU types of the heterogeneous cluster are named.
    assert!(html.contains("V100-16GB") && html.contains("T4"));
}

#[test]
fn text_is_escaped() {
    let (p, mut m, mut c) = common::homogeneous();
    m.name = "<script>alert('m')</script>".into();
    c.name = "a & b \"quoted\"".into();
    c.nodes[0].gpu_type = "<b>gpu</b>".into();
    let html = report(&p, &m, &c, None, &[]);
    assert!(!html.contains("<script>"));
    assert!(!html.contains("<b>gpu</b>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;m&#39;)&lt;/script&gt;"));
    assert!(html.contains("a &amp; b &quot;quoted&quot;"));
    assert!(html.contains("&lt;b&gt;gpu&lt;/b&gt;"));
    assert!(html.contains("gave no timeline"));
}

#[test]
fn ranked_table_marks_the_chosen_plan_and_counts_the_rest() {
    let (p, m, c) = common::homogeneous();
    let est = common::estimate(&p, &c, 1.0);
    let ranked: Vec<RankedPlan> = (0..60)
        .map(|i| {
            let mut plan = p.clone();
            plan.num_micro_batches = 1 + i;
            RankedPlan {
                tp: 2,
                dp: 2,
                pp: 4,
                micro_batch: plan.micro_batch,
                num_micro_batches: plan.num_micro_batches,
                placement: Placement::artifact_default(&c),
                plan,
                estimate: amp_core::cost::Estimate {
                    iteration_s: 1.0 + i as f64 * 0.01,
                    ..est.clone()
                },
            }
        })
        .collect();
    let input = ReportInput::from_ranked("r", &m, &c, &ranked, 55, None).unwrap();
    let html = html_report(&input);
    let table = &html[html.find("id=\"plans-table\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    // 50 rows plus the chosen one (rank 56), marked.
    assert_eq!(table.matches("<tr").count(), 1 + 51);
    assert_eq!(table.matches("class=\"chosen\"").count(), 1);
    assert!(table.contains("<tr class=\"chosen\"><td>56</td>"));
    assert!(html.contains("9 more plans not shown"));
    assert!(ReportInput::from_ranked("r", &m, &c, &ranked, 60, None).is_none());
}

#[test]
fn multi_replica_timeline_draws_one_replica_per_lane() {
    let (p, m, c) = common::homogeneous();
    let fast = common::one_f_one_b(4, 3, &[1.0; 4], &[2.0; 4], 0.1);
    let slow = common::one_f_one_b(4, 3, &[1.0, 1.0, 1.0, 1.5], &[2.0, 2.0, 2.0, 3.0], 0.1);
    let mut events = Vec::new();
    for (r, t) in [&fast, &slow].into_iter().enumerate() {
        for e in &t.events {
            let mut v = serde_json::to_value(e).unwrap();
            v["replica"] = r.into();
            events.push(serde_json::from_value(v).unwrap());
        }
    }
    let t = Timeline {
        num_stages: 4,
        num_micro_batches: 3,
        events,
        iteration_s: slow.iteration_s,
    };
    let html = report(&p, &m, &c, Some(&t), &[]);
    check_every_pass_once(&html, 4, 3);
    assert!(svg(&html, "timeline-svg").contains("data-replica=\"1\""));
    assert!(html.contains("replica 1 of 2"));
}

#[test]
fn large_plan_stays_readable() {
    let (p, m, c) = common::large();
    assert_eq!(p.devices().count(), 256);
    let t = common::one_f_one_b(8, 32, &[1.0; 8], &[2.0; 8], 0.05);
    let html = report(&p, &m, &c, Some(&t), &[]);
    check_every_pass_once(&html, 8, 32);
    let gpus = tags(svg(&html, "device-map"), "g");
    assert_eq!(
        gpus.iter()
            .filter(|a| a.get("class").map(String::as_str) == Some("gpu"))
            .count(),
        256
    );
    // Memory: one bar per stage, its fullest device.
    assert_eq!(tags(svg(&html, "memory-svg"), "g").len(), 8);
    assert!(html.contains("256 devices: one bar per stage"));
    // Every SVG fits the page width and a sensible height.
    for id in ["device-map", "timeline-svg", "memory-svg"] {
        let a = &tags(svg(&html, id), "svg")[0];
        let w: f64 = a["width"].parse().unwrap();
        let h: f64 = a["height"].parse().unwrap();
        assert!(w <= 1200.0 && h <= 1400.0, "{id}: {w} x {h}");
    }
    assert!(html.len() < 1_500_000, "{} bytes", html.len());
}

#[test]
fn report_is_deterministic() {
    let (p, m, c) = common::uneven();
    let t = common::one_f_one_b(4, 8, &[1.0; 4], &[2.0; 4], 0.1);
    assert_eq!(
        report(&p, &m, &c, Some(&t), &[]),
        report(&p, &m, &c, Some(&t), &[])
    );
}

/// A plan whose replicas run different numbers of micro-batches, and one
/// of whose stages mixes tp degrees, says so: the batch line adds up, and
/// the stage table reads `1+2`.
#[test]
fn uneven_and_mixed_plans_are_described_as_they_are() {
    let (mut p, m, c) = common::homogeneous();
    p.num_micro_batches = 5;
    p.replica_micro_batches = vec![5, 3];
    let last = p.stages.len() - 1;
    let split = p.stages[last].replicas[1].split_off(1);
    p.stages[last].replicas[1] = split;
    p.validate(&m, &c).unwrap();
    let html = report(&p, &m, &c, None, &[]);
    assert!(
        html.contains(
            "global 16 = micro-batch 2 &#215; 8 micro-batches over 2 replicas, 3-5 each (uneven)"
        ),
        "{}",
        &html[..html.len().min(4000)]
    );
    assert!(html.contains("<td>2+1</td>"), "the mixed stage's tp");
}

/// `amp plan --sensitivity`'s section: one row per set of constants, its
/// text escaped, missing figures as dashes; absent when not asked.
#[test]
fn sensitivity_section_lists_every_set_of_constants() {
    let (p, m, c) = common::homogeneous();
    let est = common::estimate(&p, &c, 1.0);
    let rows = [
        SensitivityRow {
            calibration: "neutral".to_string(),
            fitted_on: "nothing".to_string(),
            rank_1_s: Some(1.2999),
            best: "rank 1".to_string(),
            best_s: Some(1.2999),
            regret: Some(1.0),
        },
        SensitivityRow {
            calibration: "<mine>".to_string(),
            fitted_on: "AMP's T4 runs".to_string(),
            rank_1_s: None,
            best: "none fits".to_string(),
            best_s: None,
            regret: None,
        },
    ];
    let notes = ["hedge: pp 8 & dp 2".to_string()];
    let input = |sensitivity| ReportInput {
        title: "amp report",
        model: &m,
        cluster: &c,
        ranked: &[],
        chosen: &p,
        estimate: Some(&est),
        timeline: None,
        max_rows: 50,
        sensitivity,
    };
    let html = html_report(&input(Some(SensitivitySection {
        rows: &rows,
        notes: &notes,
    })));
    let section = &html[html.find("<section id=\"sensitivity\">").unwrap()..];
    let section = &section[..section.find("</section>").unwrap()];
    assert_eq!(section.matches("<tr>").count(), 3, "{section}");
    assert!(
        section.contains("<td class=\"l\">neutral</td>"),
        "{section}"
    );
    assert!(
        section.contains("&lt;mine&gt;") && section.contains("AMP&#39;s T4"),
        "{section}"
    );
    assert!(section.contains("<td>does not fit</td>"), "{section}");
    assert!(
        section.contains("<p class=\"note\">hedge: pp 8 &amp; dp 2</p>"),
        "{section}"
    );
    assert!(!html_report(&input(None)).contains("id=\"sensitivity\""));
}
