//! `amp plan --sensitivity`, as it is shown: rank 1 under each other set of
//! shipped constants and the hedge (`amp_core::sensitivity`), in JSON, as
//! text and as the HTML report's rows and notes.

use std::io::Write;

use amp_core::cost::Calibration;
use amp_core::search::RankedPlan;
use amp_core::sensitivity::Sensitivity;
use amp_core::subset_search::Objective;
use amp_export::SensitivityRow;
use anyhow::Result;
use comfy_table::{presets::UTF8_BORDERS_ONLY, ContentArrangement, Table};
use serde::Serialize;

use crate::cmd_plan::placement_summary;
use crate::inputs::Loaded;

/// --sensitivity's hedge.
#[derive(Serialize)]
pub(crate) struct JsonHedge<'a> {
    /// Its rank in `plans`, when it is listed there.
    rank: Option<usize>,
    /// Its time under the constants asked for.
    #[serde(flatten)]
    shape: JsonShape,
    worst_regret: f64,
    regrets: Vec<JsonRegret>,
    /// The plan itself, as `amp eval` and `amp export` read it.
    plan: &'a amp_core::Plan,
    /// The model it was made for, as `amp eval` and `amp export` read it.
    made_for: amp_core::plan::ModelRecord,
}

#[derive(Serialize)]
struct JsonRegret {
    calibration: String,
    /// Null when no plan fits under these constants.
    regret: Option<f64>,
}

/// Rank 1 under one other set of constants (--sensitivity).
#[derive(Serialize)]
pub(crate) struct JsonPickUnder {
    /// Its name, as --calibration takes it.
    calibration: &'static str,
    fitted_on: &'static str,
    constants: Calibration,
    /// Rank 1's time under these constants; null when it does not fit in
    /// memory under them.
    pick_iteration_s: Option<f64>,
    /// The best plan found under them (of the leading plans of every
    /// search); null when none fits.
    fastest: Option<JsonFastest>,
    /// Rank 1's time (or cost, under --objective cost) over the fastest's,
    /// both under these constants; null when either is missing.
    regret: Option<f64>,
}

#[derive(Serialize)]
struct JsonFastest {
    /// Whether it is rank 1.
    is_pick: bool,
    #[serde(flatten)]
    shape: JsonShape,
}

/// A plan in brief, as --sensitivity names one.
#[derive(Serialize)]
struct JsonShape {
    tp: usize,
    dp: usize,
    pp: usize,
    micro_batch: usize,
    stage_boundaries: Vec<usize>,
    predicted_iteration_s: f64,
}

impl JsonShape {
    fn of(p: &RankedPlan) -> JsonShape {
        JsonShape {
            tp: p.tp,
            dp: p.dp,
            pp: p.pp,
            micro_batch: p.micro_batch,
            stage_boundaries: p.plan.boundaries(),
            predicted_iteration_s: p.estimate.iteration_s,
        }
    }
}

/// --sensitivity's result: the other sets of constants (name, what they
/// were fitted on, the constants), in the order of `Sensitivity::under`.
pub(crate) type SensitivityResult = (Vec<(&'static str, &'static str, Calibration)>, Sensitivity);

/// --sensitivity's rows as JSON.
pub(crate) fn sensitivity_json((named, s): &SensitivityResult) -> Vec<JsonPickUnder> {
    named
        .iter()
        .zip(&s.under)
        .map(|((name, fitted_on, constants), u)| JsonPickUnder {
            calibration: name,
            fitted_on,
            constants: *constants,
            pick_iteration_s: u.pick.as_ref().map(|e| e.iteration_s),
            fastest: u.fastest.as_ref().map(|f| JsonFastest {
                is_pick: u.fastest_is_pick,
                shape: JsonShape::of(f),
            }),
            regret: u.regret,
        })
        .collect()
}

/// --sensitivity's hedge as JSON; `listed`: plans in `plans`.
pub(crate) fn hedge_json<'a>(
    (named, s): &'a SensitivityResult,
    primary: &str,
    listed: usize,
    model: &amp_core::model::Model,
) -> Option<JsonHedge<'a>> {
    let h = s.hedge.as_ref()?;
    let names =
        std::iter::once(primary.to_string()).chain(named.iter().map(|(n, _, _)| n.to_string()));
    Some(JsonHedge {
        rank: (h.index < listed).then_some(h.index + 1),
        shape: JsonShape::of(&h.plan),
        worst_regret: h.worst_regret,
        regrets: names
            .zip(&h.regrets)
            .map(|(calibration, regret)| JsonRegret {
                calibration,
                regret: *regret,
            })
            .collect(),
        plan: &h.plan.plan,
        made_for: amp_core::plan::ModelRecord::of(model),
    })
}

/// A plan in a line: its shape, split and placement.
fn plan_line(loaded: &Loaded, p: &RankedPlan) -> String {
    let b: Vec<String> = p.plan.boundaries().iter().map(|x| x.to_string()).collect();
    format!(
        "tp {} pp {} dp {} mbs {}, split {}, {}",
        p.plan.tp_label(),
        p.pp,
        p.dp,
        p.micro_batch,
        b.join(" "),
        placement_summary(loaded, p)
    )
}

/// Plans each search keeps for --sensitivity: the pool its hedge is chosen
/// from (rank 1's search gives its first as many).
pub(crate) const SENSITIVITY_POOL: usize = 10;

/// Regrets within this of 1 count as none: the same plan priced twice.
const NO_REGRET: f64 = 1e-9;

/// What a regret measures, in words: (worse, best) for time, or for
/// dollars under --objective cost.
fn regret_words(objective: Objective) -> (&'static str, &'static str) {
    match objective {
        Objective::Time => ("slower", "fastest"),
        Objective::Cost => ("dearer", "cheapest"),
    }
}

/// --sensitivity's rows, one per other set of constants, for the text and
/// the report.
pub(crate) fn sensitivity_rows(
    loaded: &Loaded,
    (named, s): &SensitivityResult,
) -> Vec<SensitivityRow> {
    named
        .iter()
        .zip(&s.under)
        .map(|((name, fitted_on, _), u)| SensitivityRow {
            calibration: name.to_string(),
            fitted_on: fitted_on.to_string(),
            rank_1_s: u.pick.as_ref().map(|e| e.iteration_s),
            best: match (&u.fastest, u.fastest_is_pick) {
                (Some(_), true) => "rank 1".to_string(),
                (Some(f), false) => plan_line(loaded, f),
                (None, _) => "none fits".to_string(),
            },
            best_s: u.fastest.as_ref().map(|f| f.estimate.iteration_s),
            regret: u.regret,
        })
        .collect()
}

/// What --sensitivity means for rank 1, and the hedge, a sentence each;
/// `listed`: plans in the table above, `rank_1_s`: rank 1's time.
pub(crate) fn sensitivity_notes(
    loaded: &Loaded,
    primary: &str,
    (named, s): &SensitivityResult,
    listed: usize,
    rank_1_s: f64,
    objective: Objective,
) -> Vec<String> {
    let (worse, best) = regret_words(objective);
    let mut notes = Vec::new();
    // The constants under which rank 1 fares worst.
    let worst = named
        .iter()
        .zip(&s.under)
        .map(|((name, _, _), u)| (name, u.regret.unwrap_or(f64::INFINITY)))
        .fold(None, |w: Option<(&&str, f64)>, (n, r)| match w {
            Some((_, wr)) if wr >= r => w,
            _ => Some((n, r)),
        });
    let advice = "if your cluster behaves like the one those constants were fitted on, plan with them, or fit the constants to a few runs of yours (amp fit)";
    match worst {
        Some((_, r)) if r <= 1.0 + NO_REGRET => notes.push(format!(
            "sensitivity: rank 1 is also the {best} plan found under every other set of constants; it does not rest on --calibration {primary}"
        )),
        Some((name, r)) if r.is_finite() => notes.push(format!(
            "sensitivity: under --calibration {name} rank 1 is {:.1}% {worse} than the {best} plan found there; {advice}",
            100.0 * (r - 1.0)
        )),
        Some((name, _)) => notes.push(format!(
            "sensitivity: under --calibration {name} rank 1 does not fit in memory, or no plan does; {advice}"
        )),
        None => {}
    }
    if let (Some(h), Some((_, r))) = (&s.hedge, worst) {
        if r > 1.0 + NO_REGRET {
            let rank_1 = if r.is_finite() {
                format!("rank 1: up to {:.1}%", 100.0 * (r - 1.0))
            } else {
                "rank 1 does not fit under every set".to_string()
            };
            if h.index == 0 {
                notes.push(format!(
                    "hedge: rank 1 is also the plan found whose worst regret over these sets of constants is least ({rank_1})"
                ))
            } else {
                let where_ = if h.index < listed {
                    format!("rank {} above", h.index + 1)
                } else {
                    "its plan in --json sensitivity_hedge".to_string()
                };
                // The pool can hold a plan the search's heuristics (split,
                // node order) missed under the constants asked for too.
                let missed = if objective == Objective::Time
                    && h.plan.estimate.iteration_s < rank_1_s * (1.0 - NO_REGRET)
                {
                    ", faster than rank 1 under them too: found by a search under other constants, where the heuristics of rank 1's search (split, node order) missed it"
                } else {
                    ""
                };
                notes.push(format!(
                    "hedge: {} is at most {:.1}% {worse} than the {best} plan under each set of constants ({rank_1}); {:.4} s/iteration under --calibration {primary}{missed} ({where_})",
                    plan_line(loaded, &h.plan),
                    100.0 * (h.worst_regret - 1.0),
                    h.plan.estimate.iteration_s
                ))
            }
        }
    }
    notes
}

/// --sensitivity's table and notes, as text.
pub(crate) fn print_sensitivity(
    out: &mut dyn Write,
    rows: &[SensitivityRow],
    notes: &[String],
    objective: Objective,
) -> Result<()> {
    let there = format!("{} there", regret_words(objective).1);
    let mut table = Table::new();
    table
        .load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(100)
        .set_header(vec![
            "constants",
            "fitted on",
            "rank 1, s",
            there.as_str(),
            "its s",
            "regret",
        ]);
    let dash = || "-".to_string();
    for r in rows {
        table.add_row(vec![
            r.calibration.clone(),
            r.fitted_on.clone(),
            r.rank_1_s
                .map_or("does not fit".to_string(), |t| format!("{t:.4}")),
            r.best.clone(),
            r.best_s.map_or_else(dash, |t| format!("{t:.4}")),
            r.regret.map_or_else(dash, |x| format!("{x:.3}")),
        ]);
    }
    writeln!(
        out,
        "rank 1 under the other constants amp ships (the search re-run under each; --calibration NAME plans with one):"
    )?;
    writeln!(out, "{table}")?;
    for n in notes {
        writeln!(out, "{n}")?;
    }
    Ok(())
}
