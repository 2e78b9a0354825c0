//! A self-contained HTML report of a search and its chosen plan: the ranked
//! plans, the device map, one iteration's pipeline timeline, memory per
//! device and where the time goes.
//!
//! One file: inline CSS and SVG, no script, no external resource. Scales
//! from a few GPUs to hundreds: the device map shrinks to a grid of small
//! cells, the timeline has one lane per stage (not per device) and memory
//! shows each stage's fullest device once there are many devices.

use std::fmt::Write as _;

use amp_core::cluster::{Cluster, Device};
use amp_core::cost::{Breakdown, DeviceMemory, Estimate};
use amp_core::model::Model;
use amp_core::plan::Plan;
use amp_core::schedule::{busiest_stage, ending_stage, EventKind, Timeline};
use amp_core::search::RankedPlan;

/// What the report shows.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    pub title: &'a str,
    pub model: &'a Model,
    pub cluster: &'a Cluster,
    /// Plans of a search, fastest first; may be empty (a plan from a file).
    pub ranked: &'a [RankedPlan],
    /// The plan the device map, timeline and memory sections show.
    pub chosen: &'a Plan,
    /// The chosen plan's estimate, when it was priced.
    pub estimate: Option<&'a Estimate>,
    /// One simulated iteration of the chosen plan, when the cost model
    /// produced one.
    pub timeline: Option<&'a Timeline>,
    /// Rows of the ranked table to show (0: all); the rest are counted.
    pub max_rows: usize,
    /// How rank 1 fares under other sets of constants (`amp plan
    /// --sensitivity`), when asked.
    pub sensitivity: Option<SensitivitySection<'a>>,
}

/// The report's section on other sets of constants: one row per set, and
/// what they mean for the pick, a sentence each.
#[derive(Debug, Clone, Copy)]
pub struct SensitivitySection<'a> {
    pub rows: &'a [SensitivityRow],
    pub notes: &'a [String],
}

/// Rank 1 under one other set of constants.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityRow {
    /// The set's name, as `--calibration` takes it.
    pub calibration: String,
    /// The measured runs it was fitted on.
    pub fitted_on: String,
    /// Rank 1's time under it; `None` when rank 1 does not fit.
    pub rank_1_s: Option<f64>,
    /// The best plan found under it, in words.
    pub best: String,
    /// That plan's time under it; `None` when no plan fits.
    pub best_s: Option<f64>,
    /// Rank 1's regret under it.
    pub regret: Option<f64>,
}

impl<'a> ReportInput<'a> {
    /// The report of a search result with `ranked[chosen]` as the chosen
    /// plan (the fastest when `chosen` is 0).
    pub fn from_ranked(
        title: &'a str,
        model: &'a Model,
        cluster: &'a Cluster,
        ranked: &'a [RankedPlan],
        chosen: usize,
        timeline: Option<&'a Timeline>,
    ) -> Option<ReportInput<'a>> {
        let c = ranked.get(chosen)?;
        Some(ReportInput {
            title,
            model,
            cluster,
            ranked,
            chosen: &c.plan,
            estimate: Some(&c.estimate),
            timeline,
            max_rows: 50,
            sensitivity: None,
        })
    }
}

/// Escapes text for HTML/SVG content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const GIB: f64 = (1u64 << 30) as f64;

fn fmt_s(s: f64) -> String {
    if !s.is_finite() {
        "n/a".to_string()
    } else if s.abs() < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.3} s")
    }
}

fn fmt_gib(b: f64) -> String {
    format!("{:.2} GiB", b / GIB)
}

/// Fill colour of stage `j` of `n`: hues spread by the golden angle so
/// that neighbours differ however many stages there are.
pub fn stage_color(j: usize) -> String {
    let hue = (j as f64 * 137.508 + 210.0) % 360.0;
    format!("hsl({hue:.0},62%,58%)")
}

fn kind_name(k: EventKind) -> &'static str {
    match k {
        EventKind::Forward => "forward",
        EventKind::Backward => "backward",
        EventKind::SendForward => "send_forward",
        EventKind::SendBackward => "send_backward",
        EventKind::AllReduce => "all_reduce",
        EventKind::Optimizer => "optimizer",
    }
}

fn kind_color(k: EventKind) -> &'static str {
    match k {
        EventKind::Forward => "#4e79a7",
        EventKind::Backward => "#59a14f",
        EventKind::SendForward => "#a0a0a0",
        EventKind::SendBackward => "#7f6a55",
        EventKind::AllReduce => "#f28e2b",
        EventKind::Optimizer => "#b07aa1",
    }
}

const ALL_KINDS: [EventKind; 6] = [
    EventKind::Forward,
    EventKind::Backward,
    EventKind::SendForward,
    EventKind::SendBackward,
    EventKind::AllReduce,
    EventKind::Optimizer,
];

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px;color:#1d1d1f;background:#fff;max-width:1240px}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.15em;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#555;margin:0 0 12px}
table{border-collapse:collapse;font-size:13px}th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f4f4f6;position:sticky;top:0}td.l,th.l{text-align:left}
tr.chosen td{background:#fff4d6;font-weight:600}
.scroll{max-height:460px;overflow:auto;border:1px solid #ddd}
.note{color:#666;font-size:13px}
.warn{color:#b00020;font-weight:600}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:14px}dl.facts dt{color:#555}dl.facts dd{margin:0}
svg text{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
.legend{font-size:12px;margin:6px 0}.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-2px;border:1px solid #0003}
";

/// The whole report page.
pub fn html_report(input: &ReportInput) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(h, "<title>{}</title>", escape(input.title));
    let _ = writeln!(h, "<style>{CSS}</style>\n</head>\n<body>");
    let _ = writeln!(h, "<h1>{}</h1>", escape(input.title));
    summary(&mut h, input);
    ranked_table(&mut h, input);
    if let Some(section) = input.sensitivity {
        sensitivity(&mut h, section);
    }
    h.push_str("<section id=\"devices\">\n<h2>Device map</h2>\n");
    device_map(&mut h, input);
    h.push_str(
        "</section>\n<section id=\"timeline\">\n<h2>Pipeline timeline of one iteration</h2>\n",
    );
    match input.timeline {
        Some(t) => timeline_svg(&mut h, t),
        None => {
            h.push_str("<p class=\"note\">The cost model gave no timeline for this plan.</p>\n")
        }
    }
    h.push_str("</section>\n<section id=\"memory\">\n<h2>Memory per device</h2>\n");
    match input.estimate.filter(|e| !e.memory.is_empty()) {
        Some(e) => memory_svg(&mut h, &e.memory, input.chosen),
        None => h.push_str(
            "<p class=\"note\">The cost model gave no memory estimate for this plan.</p>\n",
        ),
    }
    h.push_str("</section>\n<section id=\"breakdown\">\n<h2>Where the time goes</h2>\n");
    match input.estimate {
        Some(e) => breakdown(&mut h, e),
        None => h.push_str("<p class=\"note\">The plan was not priced.</p>\n"),
    }
    if let Some(t) = input.timeline {
        stage_work(&mut h, input, t);
    }
    h.push_str("</section>\n</body>\n</html>\n");
    h
}

fn gpu_types_of(cluster: &Cluster, devices: impl Iterator<Item = Device>) -> String {
    cluster.gpu_types_of(devices).join(", ")
}

fn summary(h: &mut String, input: &ReportInput) {
    let c = input.cluster;
    let p = input.chosen;
    let mut types: Vec<(String, usize, usize)> = Vec::new();
    for n in &c.nodes {
        match types.iter_mut().find(|(t, _, _)| *t == n.gpu_type) {
            Some(e) => {
                e.1 += 1;
                e.2 += n.gpus;
            }
            None => types.push((n.gpu_type.clone(), 1, n.gpus)),
        }
    }
    let cluster_text: Vec<String> = types
        .iter()
        .map(|(t, nodes, gpus)| format!("{nodes} node(s) with {gpus} {t}"))
        .collect();
    let _ = writeln!(
        h,
        "<p class=\"sub\">Model <b>{}</b> ({} layers) on cluster <b>{}</b>: {} GPUs, {}.</p>",
        escape(&input.model.name),
        input.model.num_layers(),
        escape(&c.name),
        c.num_devices(),
        escape(&cluster_text.join("; "))
    );
    h.push_str("<section id=\"summary\">\n<h2>Chosen plan</h2>\n<dl class=\"facts\">\n");
    let _ = writeln!(
        h,
        "<dt>Parallelism</dt><dd>pipeline {} &#215; data {} &#215; tensor {}</dd>",
        p.pp(),
        p.dp(),
        escape(&p.tp_label())
    );
    if p.is_uneven() {
        let _ = writeln!(
            h,
            "<dt>Batch</dt><dd>global {} = micro-batch {} &#215; {} micro-batches over {} replicas, {} each (uneven)</dd>",
            p.global_batch(),
            p.micro_batch,
            p.total_micro_batches(),
            p.dp(),
            p.micro_batches_label()
        );
    } else {
        let _ = writeln!(
            h,
            "<dt>Batch</dt><dd>global {} = micro-batch {} &#215; {} micro-batches &#215; {} replicas</dd>",
            p.global_batch(),
            p.micro_batch,
            p.num_micro_batches,
            p.dp()
        );
    }
    let b: Vec<String> = p.boundaries().iter().map(|x| x.to_string()).collect();
    let _ = writeln!(
        h,
        "<dt>Stage boundaries</dt><dd>{}</dd>",
        escape(&b.join(", "))
    );
    if let Some(e) = input.estimate {
        let _ = writeln!(
            h,
            "<dt>Predicted iteration</dt><dd><b>{}</b></dd>",
            fmt_s(e.iteration_s)
        );
        if let Some((m, over)) = e.first_overflow() {
            let _ = writeln!(
                h,
                "<dt>Memory</dt><dd class=\"warn\">node {} GPU {} exceeds its memory by {}</dd>",
                m.device.node,
                m.device.gpu,
                fmt_gib(over)
            );
        }
    }
    h.push_str("</dl>\n<table>\n<tr><th>stage</th><th class=\"l\">layers</th><th>tp</th><th>replicas</th><th class=\"l\">GPU types</th><th class=\"l\">nodes</th></tr>\n");
    for (j, s) in p.stages.iter().enumerate() {
        let mut nodes: Vec<usize> = s.devices().map(|d| d.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let first = input
            .model
            .layers
            .get(s.first_layer)
            .map_or("?", |l| l.name.as_str());
        let last = input
            .model
            .layers
            .get(s.end_layer.saturating_sub(1))
            .map_or("?", |l| l.name.as_str());
        let _ = writeln!(
            h,
            "<tr><td><i style=\"display:inline-block;width:10px;height:10px;background:{}\"></i> {j}</td><td class=\"l\">{}&#8211;{} ({} &#8230; {})</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            stage_color(j),
            s.first_layer,
            s.end_layer.saturating_sub(1),
            escape(first),
            escape(last),
            s.tp_label(),
            s.dp(),
            escape(&gpu_types_of(input.cluster, s.devices())),
            escape(&compress_ranges(&nodes))
        );
    }
    h.push_str("</table>\n</section>\n");
}

/// "0-3, 5, 7-8" for a sorted list.
fn compress_ranges(v: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

fn ranked_table(h: &mut String, input: &ReportInput) {
    h.push_str("<section id=\"plans\">\n<h2>Ranked plans</h2>\n");
    if input.ranked.is_empty() {
        h.push_str(
            "<p class=\"note\">No search results: the report shows one plan.</p>\n</section>\n",
        );
        return;
    }
    let shown = if input.max_rows == 0 {
        input.ranked.len()
    } else {
        input.max_rows.min(input.ranked.len())
    };
    h.push_str("<div class=\"scroll\"><table id=\"plans-table\">\n<tr><th>rank</th><th>tp</th><th>pp</th><th>dp</th><th>micro-batch</th><th>micro-batches</th><th class=\"l\">stage boundaries</th><th class=\"l\">placement</th><th>predicted</th><th>peak memory</th></tr>\n");
    let mut chosen_shown = false;
    let mut rows = 0;
    for (i, r) in input.ranked.iter().enumerate() {
        let is_chosen = r.plan == *input.chosen;
        if i >= shown && (chosen_shown || !is_chosen) {
            continue;
        }
        chosen_shown |= is_chosen;
        rows += 1;
        let peak = r
            .estimate
            .memory
            .iter()
            .map(|m| m.peak_bytes)
            .fold(f64::NAN, f64::max);
        let b: Vec<String> = r.plan.boundaries().iter().map(|x| x.to_string()).collect();
        let _ = writeln!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
            if is_chosen { " class=\"chosen\"" } else { "" },
            i + 1,
            r.tp,
            r.pp,
            r.dp,
            r.micro_batch,
            r.plan.micro_batches_label(),
            escape(&b.join(", ")),
            escape(&r.placement.summary()),
            fmt_s(r.estimate.iteration_s),
            if peak.is_finite() { fmt_gib(peak) } else { "&#8211;".to_string() }
        );
    }
    h.push_str("</table></div>\n");
    if rows < input.ranked.len() {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} more plans not shown.</p>",
            input.ranked.len() - rows
        );
    }
    h.push_str("</section>\n");
}

fn sensitivity(h: &mut String, section: SensitivitySection) {
    h.push_str("<section id=\"sensitivity\">\n<h2>Rank 1 under other constants</h2>\n");
    h.push_str("<div class=\"scroll\"><table id=\"sensitivity-table\">\n<tr><th class=\"l\">constants</th><th class=\"l\">fitted on</th><th>rank 1</th><th class=\"l\">best plan there</th><th>its time</th><th>regret</th></tr>\n");
    let dash = || "&#8211;".to_string();
    for r in section.rows {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.calibration),
            escape(&r.fitted_on),
            r.rank_1_s.map_or("does not fit".to_string(), fmt_s),
            escape(&r.best),
            r.best_s.map_or_else(dash, fmt_s),
            r.regret.map_or_else(dash, |x| format!("{x:.3}"))
        );
    }
    h.push_str("</table></div>\n");
    for n in section.notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(n));
    }
    h.push_str("</section>\n");
}

/// Who runs on a device: (stage, replica, tp rank).
fn device_roles(plan: &Plan) -> std::collections::HashMap<Device, (usize, usize, usize)> {
    let mut m = std::collections::HashMap::new();
    for (j, s) in plan.stages.iter().enumerate() {
        for (r, rep) in s.replicas.iter().enumerate() {
            for (t, &d) in rep.iter().enumerate() {
                m.insert(d, (j, r, t));
            }
        }
    }
    m
}

fn device_map(h: &mut String, input: &ReportInput) {
    let c = input.cluster;
    let roles = device_roles(input.chosen);
    let max_gpus = c.nodes.iter().map(|n| n.gpus).max().unwrap_or(1).max(1);
    let n_nodes = c.nodes.len().max(1);
    // Detailed rows for small clusters, a grid of node blocks otherwise.
    let detailed = n_nodes <= 16 && max_gpus <= 16;
    let width = 1180.0;
    let mut types: Vec<&str> = c.nodes.iter().map(|n| n.gpu_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    let type_shade = |t: &str| -> &'static str {
        const SHADES: [&str; 6] = ["#333", "#888", "#c0392b", "#2e86c1", "#7d3c98", "#117a65"];
        SHADES[types.iter().position(|x| *x == t).unwrap_or(0) % SHADES.len()]
    };
    let mut body = String::new();
    let height = if detailed {
        let label_w = 230.0;
        let cell_w = ((width - label_w) / max_gpus as f64).min(110.0);
        let cell_h = 38.0;
        for (i, n) in c.nodes.iter().enumerate() {
            let y = 8.0 + i as f64 * (cell_h + 6.0);
            let _ = writeln!(
                body,
                "<text x=\"4\" y=\"{:.1}\" font-size=\"13\">node {i} &#183; {}</text><rect x=\"{:.1}\" y=\"{y:.1}\" width=\"5\" height=\"{cell_h}\" fill=\"{}\"><title>GPU type {}</title></rect>",
                y + cell_h / 2.0 + 4.0,
                escape(&format!("{} x {}", n.gpus, n.gpu_type)),
                label_w - 10.0,
                type_shade(&n.gpu_type),
                escape(&n.gpu_type)
            );
            for g in 0..n.gpus {
                let x = label_w + g as f64 * cell_w;
                let d = Device { node: i, gpu: g };
                cell(
                    &mut body,
                    d,
                    roles.get(&d).copied(),
                    x,
                    y,
                    cell_w - 3.0,
                    cell_h,
                    true,
                    &n.gpu_type,
                );
            }
        }
        16.0 + n_nodes as f64 * (cell_h + 6.0)
    } else {
        let cell_px = (760.0 / ((n_nodes * max_gpus) as f64).sqrt()).clamp(6.0, 22.0);
        let block_w = max_gpus as f64 * cell_px + 10.0;
        let per_row = ((width / block_w).floor() as usize).max(1);
        let block_h = cell_px + 20.0;
        for (i, n) in c.nodes.iter().enumerate() {
            let bx = (i % per_row) as f64 * block_w;
            let by = (i / per_row) as f64 * block_h;
            let _ = writeln!(
                body,
                "<text x=\"{bx:.1}\" y=\"{:.1}\" font-size=\"9\" fill=\"#555\">{i}</text><rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"3\" fill=\"{}\"><title>node {i}: {}</title></rect>",
                by + 9.0,
                by + cell_px + 13.0,
                n.gpus as f64 * cell_px - 1.0,
                type_shade(&n.gpu_type),
                escape(&format!("{} x {}", n.gpus, n.gpu_type))
            );
            for g in 0..n.gpus {
                let d = Device { node: i, gpu: g };
                let x = bx + g as f64 * cell_px;
                cell(
                    &mut body,
                    d,
                    roles.get(&d).copied(),
                    x,
                    by + 11.0,
                    cell_px - 1.0,
                    cell_px - 1.0,
                    false,
                    &n.gpu_type,
                );
            }
        }
        (n_nodes.div_ceil(per_row)) as f64 * block_h + 6.0
    };
    let _ = writeln!(
        h,
        "<svg id=\"device-map\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"device map\">\n{body}</svg>"
    );
    // Legends: stages (with layers) and GPU types.
    h.push_str("<div class=\"legend\">");
    let pp = input.chosen.pp();
    let limit = 64;
    for (j, s) in input.chosen.stages.iter().enumerate().take(limit) {
        let _ = write!(
            h,
            "<span><i style=\"background:{}\"></i>stage {j}: layers {}&#8211;{}</span>",
            stage_color(j),
            s.first_layer,
            s.end_layer.saturating_sub(1)
        );
    }
    if pp > limit {
        let _ = write!(h, "<span>&#8230; {} more stages</span>", pp - limit);
    }
    h.push_str("<span><i style=\"background:#e4e4e4\"></i>unused</span></div>\n<div class=\"legend\">GPU types: ");
    for t in &types {
        let _ = write!(
            h,
            "<span><i style=\"background:{}\"></i>{}</span>",
            type_shade(t),
            escape(t)
        );
    }
    h.push_str("</div>\n");
    if detailed {
        h.push_str("<p class=\"note\">Each cell is one GPU, coloured by pipeline stage; S = stage, R = data-parallel replica, T = tensor-parallel rank.</p>\n");
    } else {
        h.push_str("<p class=\"note\">Each small cell is one GPU (hover for stage, replica and tensor-parallel rank), grouped by node; the bar under a node shows its GPU type.</p>\n");
    }
}

#[allow(clippy::too_many_arguments)]
fn cell(
    body: &mut String,
    d: Device,
    role: Option<(usize, usize, usize)>,
    x: f64,
    y: f64,
    w: f64,
    hgt: f64,
    labels: bool,
    gpu_type: &str,
) {
    let (fill, attrs, tip, label) = match role {
        Some((j, r, t)) => (
            stage_color(j),
            format!(" data-stage=\"{j}\" data-replica=\"{r}\" data-tp=\"{t}\""),
            format!(
                "node {} GPU {} ({gpu_type}): stage {j}, replica {r}, tp rank {t}",
                d.node, d.gpu
            ),
            format!("S{j} R{r} T{t}"),
        ),
        None => (
            "#e4e4e4".to_string(),
            String::new(),
            format!("node {} GPU {} ({gpu_type}): unused", d.node, d.gpu),
            "unused".to_string(),
        ),
    };
    let _ = write!(
        body,
        "<g class=\"gpu\" data-node=\"{}\" data-gpu=\"{}\"{attrs}><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{hgt:.1}\" rx=\"3\" fill=\"{fill}\" stroke=\"#0004\"/><title>{}</title>",
        d.node,
        d.gpu,
        escape(&tip)
    );
    if labels && w >= 44.0 {
        let _ = write!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\" fill=\"#222\">GPU {}</text>",
            x + w / 2.0,
            y + hgt / 2.0 - 1.0,
            escape(&label),
            x + w / 2.0,
            y + hgt / 2.0 + 11.0,
            d.gpu
        );
    }
    body.push_str("</g>\n");
}

/// A tick label: seconds, or milliseconds when the axis is under a
/// second, with as many decimals as the step needs.
fn fmt_tick(v: f64, step: f64, total: f64) -> String {
    let (scale, unit) = if total < 1.0 { (1e3, "ms") } else { (1.0, "s") };
    let step = step * scale;
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil().max(0.0) as usize
    };
    format!("{:.*} {unit}", decimals, v * scale)
}

/// A tick step of 1, 2 or 5 times a power of ten giving about `n` ticks.
fn tick_step(span: f64, n: f64) -> f64 {
    let raw = span / n;
    let p = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}

fn timeline_svg(h: &mut String, t: &Timeline) {
    let stages = t
        .num_stages
        .max(t.events.iter().map(|e| e.stage + 1).max().unwrap_or(0));
    let end = t
        .events
        .iter()
        .map(|e| e.end_s)
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max);
    let total = if t.iteration_s.is_finite() && t.iteration_s > 0.0 {
        t.iteration_s.max(end)
    } else {
        end
    };
    if stages == 0 || t.events.is_empty() || total <= 0.0 {
        h.push_str("<p class=\"note\">The timeline is empty.</p>\n");
        return;
    }
    // One lane per stage: replicas run the same pipeline, so the lanes show
    // the replica whose compute ends last (the one the iteration waits for).
    let replicas = t.events.iter().map(|e| e.replica + 1).max().unwrap_or(1);
    let shown_replica = t
        .events
        .iter()
        .filter(|e| {
            matches!(e.kind, EventKind::Forward | EventKind::Backward) && e.end_s.is_finite()
        })
        .max_by(|a, b| a.end_s.total_cmp(&b.end_s).then(b.replica.cmp(&a.replica)))
        .map_or(0, |e| e.replica);
    let width = 1180.0;
    let left = 78.0;
    let right = 12.0;
    let plot_w = width - left - right;
    let lane_h = (620.0 / stages as f64).clamp(12.0, 44.0);
    let top = 6.0;
    let axis_h = 26.0;
    let height = top + stages as f64 * lane_h + axis_h;
    let x_of = |s: f64| left + (s / total).clamp(0.0, 1.0) * plot_w;
    let mut body = String::new();
    // Lanes, one per stage.
    for j in 0..stages {
        let y = top + j as f64 * lane_h;
        let _ = writeln!(
            body,
            "<g class=\"lane\" data-stage=\"{j}\"><rect x=\"{left:.1}\" y=\"{y:.1}\" width=\"{plot_w:.1}\" height=\"{:.1}\" fill=\"{}\"/><rect x=\"0\" y=\"{:.1}\" width=\"6\" height=\"{:.1}\" fill=\"{}\"/><text x=\"10\" y=\"{:.1}\" font-size=\"{:.0}\">stage {j}</text></g>",
            lane_h - 1.0,
            if j % 2 == 0 { "#f7f7f9" } else { "#efeff3" },
            y + 1.0,
            lane_h - 3.0,
            stage_color(j),
            y + lane_h / 2.0 + 4.0,
            (lane_h * 0.45).clamp(9.0, 13.0)
        );
    }
    // Events: compute (and optimizer) in the upper 70% of a lane,
    // communication in the lower 30%.
    for e in &t.events {
        if e.stage >= stages || !(e.start_s.is_finite() && e.end_s.is_finite()) {
            continue;
        }
        let per_replica = !matches!(e.kind, EventKind::AllReduce | EventKind::Optimizer);
        if per_replica && e.replica != shown_replica {
            continue;
        }
        let lane_y = top + e.stage as f64 * lane_h;
        let comm = matches!(
            e.kind,
            EventKind::SendForward | EventKind::SendBackward | EventKind::AllReduce
        );
        let (y, hh) = if comm {
            (lane_y + lane_h * 0.70, lane_h * 0.26)
        } else {
            (lane_y + lane_h * 0.08, lane_h * 0.60)
        };
        let x0 = x_of(e.start_s.min(e.end_s));
        let w = (x_of(e.end_s.max(e.start_s)) - x0).max(0.6);
        let mb_attr = e
            .micro_batch
            .map(|m| format!(" data-mb=\"{m}\""))
            .unwrap_or_default();
        let tip = format!(
            "stage {} {}{}: {} to {}",
            e.stage,
            kind_name(e.kind).replace('_', " "),
            e.micro_batch
                .map(|m| format!(", micro-batch {m}"))
                .unwrap_or_default(),
            fmt_s(e.start_s),
            fmt_s(e.end_s)
        );
        let _ = write!(
            body,
            "<rect class=\"ev\" data-stage=\"{}\"{mb_attr} data-kind=\"{}\" x=\"{x0:.2}\" y=\"{y:.2}\" width=\"{w:.2}\" height=\"{hh:.2}\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"0.5\"><title>{}</title></rect>",
            e.stage,
            kind_name(e.kind),
            kind_color(e.kind),
            escape(&tip)
        );
        if let (Some(m), false) = (e.micro_batch, comm) {
            let label = m.to_string();
            if w >= 7.0 * label.len() as f64 + 4.0 && hh >= 10.0 {
                let _ = write!(
                    body,
                    "<text x=\"{:.2}\" y=\"{:.2}\" font-size=\"{:.0}\" fill=\"#fff\" text-anchor=\"middle\" pointer-events=\"none\">{label}</text>",
                    x0 + w / 2.0,
                    y + hh / 2.0 + 4.0,
                    (hh * 0.7).clamp(8.0, 12.0)
                );
            }
        }
        body.push('\n');
    }
    // Time axis.
    let axis_y = top + stages as f64 * lane_h + 2.0;
    let _ = writeln!(
        body,
        "<line x1=\"{left:.1}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\" stroke=\"#555\"/>",
        left + plot_w
    );
    let step = tick_step(total, 10.0);
    let mut tick = 0.0;
    let mut n = 0;
    while tick <= total * 1.0001 && n < 40 {
        let x = x_of(tick);
        let _ = writeln!(
            body,
            "<line x1=\"{x:.1}\" y1=\"{axis_y:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#555\"/><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            axis_y + 4.0,
            axis_y + 16.0,
            fmt_tick(tick, step, total)
        );
        n += 1;
        tick = n as f64 * step;
    }
    let _ = writeln!(
        h,
        "<svg id=\"timeline-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"pipeline timeline\" data-stages=\"{stages}\" data-micro-batches=\"{}\" data-replica=\"{shown_replica}\">\n{body}</svg>",
        t.num_micro_batches
    );
    h.push_str("<div class=\"legend\">");
    for k in ALL_KINDS {
        let _ = write!(
            h,
            "<span><i style=\"background:{}\"></i>{}</span>",
            kind_color(k),
            kind_name(k).replace('_', " ")
        );
    }
    let which = if replicas > 1 {
        format!(
            "data-parallel replica {shown_replica} of {replicas} (the last to finish its backward passes)"
        )
    } else {
        "the only data-parallel replica".to_string()
    };
    let _ = writeln!(
        h,
        "</div>\n<p class=\"note\">One lane per stage, showing {which}; numbers are micro-batches; sends and all-reduces run in the thin lower band. Iteration: {}.</p>",
        fmt_s(total)
    );
}

const MEM_PARTS: [(&str, &str); 5] = [
    ("weights", "#4e79a7"),
    ("gradients", "#76b7b2"),
    ("optimizer", "#edc948"),
    ("activations", "#e15759"),
    ("other", "#bab0ac"),
];

fn mem_parts(m: &DeviceMemory) -> [f64; 5] {
    [
        m.weights_bytes,
        m.gradients_bytes,
        m.optimizer_bytes,
        m.activations_bytes,
        m.other_bytes,
    ]
}

fn memory_svg(h: &mut String, memory: &[DeviceMemory], plan: &Plan) {
    // Many devices: each stage's fullest device stands for the stage.
    let per_stage = memory.len() > 32;
    let mut rows: Vec<(String, &DeviceMemory)> = Vec::new();
    if per_stage {
        for j in 0..plan.pp() {
            let in_stage: Vec<&DeviceMemory> = memory.iter().filter(|m| m.stage == j).collect();
            if let Some(m) = in_stage
                .iter()
                .copied()
                .max_by(|a, b| a.peak_bytes.total_cmp(&b.peak_bytes))
            {
                rows.push((
                    format!(
                        "stage {j} (fullest of {}: n{} g{})",
                        in_stage.len(),
                        m.device.node,
                        m.device.gpu
                    ),
                    m,
                ));
            }
        }
    } else {
        let mut sorted: Vec<&DeviceMemory> = memory.iter().collect();
        sorted.sort_by_key(|m| (m.device.node, m.device.gpu));
        for m in sorted {
            rows.push((
                format!(
                    "node {} GPU {} (stage {})",
                    m.device.node, m.device.gpu, m.stage
                ),
                m,
            ));
        }
    }
    let scale_max = rows
        .iter()
        .map(|(_, m)| {
            let sum: f64 = mem_parts(m).iter().sum();
            m.peak_bytes.max(sum).max(m.capacity_bytes.unwrap_or(0.0))
        })
        .filter(|x| x.is_finite())
        .fold(0.0f64, f64::max);
    if scale_max <= 0.0 {
        h.push_str("<p class=\"note\">All memory figures are zero.</p>\n");
        return;
    }
    let width = 1180.0;
    let label_w = 250.0;
    let text_w = 210.0;
    let plot_w = width - label_w - text_w;
    let bar_h = 16.0;
    let gap = 5.0;
    let height = rows.len() as f64 * (bar_h + gap) + 8.0;
    let mut body = String::new();
    for (i, (label, m)) in rows.iter().enumerate() {
        let y = 4.0 + i as f64 * (bar_h + gap);
        let _ = write!(
            body,
            "<g class=\"mem\" data-node=\"{}\" data-gpu=\"{}\" data-stage=\"{}\"><text x=\"0\" y=\"{:.1}\" font-size=\"12\">{}</text>",
            m.device.node,
            m.device.gpu,
            m.stage,
            y + bar_h - 4.0,
            escape(label)
        );
        let mut x = label_w;
        for (v, (name, color)) in mem_parts(m).iter().zip(MEM_PARTS) {
            if !(v.is_finite() && *v > 0.0) {
                continue;
            }
            let w = v / scale_max * plot_w;
            let _ = write!(
                body,
                "<rect x=\"{x:.2}\" y=\"{y:.1}\" width=\"{w:.2}\" height=\"{bar_h}\" fill=\"{color}\"><title>{}</title></rect>",
                escape(&format!("{name}: {}", fmt_gib(*v)))
            );
            x += w;
        }
        let over = m.overflow_bytes();
        if let Some(cap) = m.capacity_bytes.filter(|c| c.is_finite() && *c > 0.0) {
            let cx = label_w + cap / scale_max * plot_w;
            let _ = write!(
                body,
                "<line x1=\"{cx:.2}\" y1=\"{:.1}\" x2=\"{cx:.2}\" y2=\"{:.1}\" stroke=\"#b00020\" stroke-width=\"2\"><title>capacity {}</title></line>",
                y - 2.0,
                y + bar_h + 2.0,
                fmt_gib(cap)
            );
        }
        let text = match (m.capacity_bytes, over) {
            (_, Some(o)) => format!("peak {} (over by {})", fmt_gib(m.peak_bytes), fmt_gib(o)),
            (Some(cap), None) => format!("peak {} of {}", fmt_gib(m.peak_bytes), fmt_gib(cap)),
            (None, None) => format!("peak {}", fmt_gib(m.peak_bytes)),
        };
        let _ = writeln!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\"{}>{}</text></g>",
            label_w + plot_w + 8.0,
            y + bar_h - 4.0,
            if over.is_some() {
                " fill=\"#b00020\""
            } else {
                ""
            },
            escape(&text)
        );
    }
    let _ = writeln!(
        h,
        "<svg id=\"memory-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"memory per device\">\n{body}</svg>"
    );
    h.push_str("<div class=\"legend\">");
    for (name, color) in MEM_PARTS {
        let _ = write!(h, "<span><i style=\"background:{color}\"></i>{name}</span>");
    }
    h.push_str("<span><i style=\"background:#b00020\"></i>capacity</span></div>\n");
    if per_stage {
        let _ = writeln!(
            h,
            "<p class=\"note\">{} devices: one bar per stage, its fullest device.</p>",
            memory.len()
        );
    }
}

fn breakdown(h: &mut String, e: &Estimate) {
    let b: &Breakdown = &e.breakdown;
    let parts = [
        ("compute", b.compute_s, "#4e79a7"),
        ("pipeline bubble", b.bubble_s, "#d3d3d3"),
        ("pipeline sends", b.pipeline_send_s, "#a0a0a0"),
        ("tensor-parallel comm", b.tp_comm_s, "#76b7b2"),
        ("data-parallel all-reduce", b.dp_allreduce_s, "#f28e2b"),
        ("optimizer", b.optimizer_s, "#b07aa1"),
    ];
    let sum: f64 = parts
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite() && *v > 0.0)
        .sum();
    let width = 1180.0;
    let bar_h = 30.0;
    let mut body = String::new();
    if sum > 0.0 {
        let mut x = 0.0;
        for (name, v, color) in parts {
            if !(v.is_finite() && v > 0.0) {
                continue;
            }
            let w = v / sum * width;
            let _ = write!(
                body,
                "<rect class=\"part\" data-part=\"{}\" x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" height=\"{bar_h}\" fill=\"{color}\"><title>{}</title></rect>",
                escape(name),
                escape(&format!("{name}: {}", fmt_s(v)))
            );
            x += w;
        }
        let _ = writeln!(
            h,
            "<svg id=\"breakdown-svg\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{bar_h:.0}\" viewBox=\"0 0 {width:.0} {bar_h:.0}\" role=\"img\" aria-label=\"time breakdown\">{body}</svg>"
        );
    }
    h.push_str("<table id=\"breakdown-table\">\n<tr><th class=\"l\">part</th><th>time</th><th>share</th></tr>\n");
    for (name, v, color) in parts {
        let share = if sum > 0.0 && v.is_finite() {
            v / sum * 100.0
        } else {
            0.0
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\"><i style=\"display:inline-block;width:10px;height:10px;background:{color}\"></i> {}</td><td>{}</td><td>{share:.1}%</td></tr>",
            escape(name),
            fmt_s(v)
        );
    }
    let _ = writeln!(
        h,
        "<tr><td class=\"l\"><b>iteration</b></td><td><b>{}</b></td><td></td></tr>\n</table>",
        fmt_s(e.iteration_s)
    );
    if sum > 0.0 && (sum - e.iteration_s).abs() > 1e-6 * e.iteration_s.abs().max(1e-9) {
        let _ = writeln!(
            h,
            "<p class=\"note\">The parts add up to {}; the cost model's iteration time is {}.</p>",
            fmt_s(sum),
            fmt_s(e.iteration_s)
        );
    }
}

/// Which stage the breakdown describes, and each stage's passes: in a 1F1B
/// pipeline the first stage ends the iteration, so its "bubble" is its wait
/// for the others, and the busiest stage says where the time is spent.
fn stage_work(h: &mut String, input: &ReportInput, t: &Timeline) {
    let pp = input.chosen.pp();
    let work = t.stage_work();
    let (Some(ending), Some(busiest)) = (ending_stage(&work), busiest_stage(&work)) else {
        return;
    };
    if pp < 2 || work.len() != pp || ending >= pp || busiest >= pp {
        return;
    }
    let types = |j: usize| gpu_types_of(input.cluster, input.chosen.rank_stages()[j].devices());
    let _ = writeln!(
        h,
        "<p class=\"note\" id=\"breakdown-stage\">The parts above are stage {ending}'s ({}), whose last step ends the iteration: its bubble is its wait for the other stages. The busiest stage is stage {busiest} ({}), its forward and backward passes {} of the iteration's {}.</p>",
        escape(&types(ending)),
        escape(&types(busiest)),
        fmt_s(work[busiest].passes_s),
        fmt_s(t.iteration_s)
    );
    let bar_w = 300.0;
    h.push_str("<table id=\"stage-work\">\n<tr><th class=\"l\">stage</th><th class=\"l\">GPU types</th><th>forward + backward</th><th>share of the iteration</th><th class=\"l\"></th></tr>\n");
    for w in &work {
        let share = if t.iteration_s > 0.0 {
            w.passes_s / t.iteration_s
        } else {
            0.0
        };
        let mark = match (w.stage == ending, w.stage == busiest) {
            (true, true) => " (ends the iteration; busiest)",
            (true, false) => " (ends the iteration)",
            (false, true) => " (busiest)",
            (false, false) => "",
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}{mark}</td><td class=\"l\">{}</td><td>{}</td><td>{:.1}%</td><td class=\"l\"><svg width=\"{bar_w:.0}\" height=\"10\"><rect x=\"0\" y=\"0\" width=\"{:.1}\" height=\"10\" fill=\"#4e79a7\"></rect></svg></td></tr>",
            w.stage,
            escape(&types(w.stage)),
            fmt_s(w.passes_s),
            share * 100.0,
            share.clamp(0.0, 1.0) * bar_w
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn ticks_are_round() {
        assert!((tick_step(1.0, 10.0) - 0.1).abs() < 1e-12);
        assert!((tick_step(0.37, 10.0) - 0.05).abs() < 1e-12);
        assert_eq!(fmt_tick(20.0, 20.0, 120.0), "20 s");
        assert_eq!(fmt_tick(0.05, 0.05, 0.37), "50 ms");
        assert_eq!(fmt_tick(0.25, 0.05, 2.0), "0.25 s");
        assert_eq!(compress_ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
    }
}
