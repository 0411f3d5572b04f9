//! Compares landed contacts with an expected set, field by field. Used by the tests, the
//! demo and anyone checking a lake against an emulator's truth.

use crate::model::schema::ContactRecord;

/// Differences between `landed` and `expected` (both any order), ignoring lineage
/// (`source`, `_run_id`, `_synced_at`) and `raw`. Empty means equal.
pub fn diff(landed: &[ContactRecord], expected: &[ContactRecord]) -> Vec<String> {
    let norm = |r: &ContactRecord| {
        let mut r = r.clone();
        r.source = String::new();
        r._run_id = String::new();
        r._synced_at = 0;
        r.raw = None;
        r
    };
    let mut a: Vec<ContactRecord> = landed.iter().map(norm).collect();
    let mut b: Vec<ContactRecord> = expected.iter().map(norm).collect();
    a.sort_by(|x, y| x.id.cmp(&y.id));
    b.sort_by(|x, y| x.id.cmp(&y.id));
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.id == y.id => {
                if x != y {
                    let xs = serde_json::to_value(x).unwrap();
                    let ys = serde_json::to_value(y).unwrap();
                    for (k, v) in xs.as_object().unwrap() {
                        if ys.get(k) != Some(v) {
                            out.push(format!(
                                "{}: {k}: landed {v} != expected {}",
                                x.id,
                                ys.get(k).cloned().unwrap_or_default()
                            ));
                        }
                    }
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.id < y.id => {
                out.push(format!("{}: landed but not expected", x.id));
                i += 1;
            }
            (Some(x), None) => {
                out.push(format!("{}: landed but not expected", x.id));
                i += 1;
            }
            (_, Some(y)) => {
                out.push(format!("{}: expected but not landed", y.id));
                j += 1;
            }
            (None, None) => break,
        }
    }
    let dupes = landed.len() - {
        let mut ids: Vec<&str> = landed.iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    if dupes > 0 {
        out.push(format!("{dupes} duplicate id(s) landed"));
    }
    out
}
