//! Engine exports and the HTML report.
