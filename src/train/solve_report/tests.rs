use super::*;
use crate::solver::{SolveStats, Stop};

const TEXT: &str = "model M(x) {\n    let u = x;\n    equilibrium z = f(z);\n    equilibrium y = g(y, z);\n}\nlayer L {\n    equilibrium h = k(h);\n}\n";

fn sources() -> (SourceMap, Span, Span, Span) {
    let mut s = SourceMap::new();
    let id = s.add("two_eq.deq", None, TEXT);
    let at = |needle: &str| {
        let start = TEXT.find(needle).unwrap();
        Span::new(id, start, start + needle.len())
    };
    let (z, y, h) = (
        at("equilibrium z"),
        at("equilibrium y"),
        at("equilibrium h"),
    );
    (s, z, y, h)
}

fn record(state: &str, span: Span, residual: f64, iterations: usize) -> SolveRecord {
    SolveRecord {
        span: Some(span),
        backward: false,
        gradient_assumes_fixed_point: true,
        diverged: false,
        states: vec![state.to_string()],
        nested: false,
        stats: SolveStats {
            solver: "anderson",
            stop: Stop::Rel,
            tol: 1e-4,
            iterations,
            residual: vec![residual / 2.0, residual],
            abs_residual: vec![residual / 2.0, residual],
            sample_converged: vec![residual <= 1e-4; 2],
            converged_at: vec![None; 2],
            converged: residual <= 1e-4,
            best_iteration: vec![Some(iterations); 2],
            trace: Vec::new(),
            stopped_by_protection: None,
        },
    }
}

/// Ten steps of a model with two equilibria in sequence (z converges, y
/// does not) and one nested in y's body (solved 5 times a step).
fn ten_steps() -> SolveReport {
    let (sources, z, y, h) = sources();
    let mut report = SolveReport::new();
    for _ in 0..10 {
        let mut step = vec![record("z", z, 5e-5, 12), record("y", y, 2e-2, 30)];
        for _ in 0..5 {
            let mut inner = record("h", h, 1e-5, 4);
            inner.nested = true;
            step.push(inner);
        }
        let mut adjoint = record("z", z, 1e-7, 20);
        adjoint.backward = true;
        step.push(adjoint);
        report.add(&step, &sources);
    }
    report
}

#[test]
fn each_equilibrium_is_counted_apart() {
    let report = ten_steps();
    let warnings = report.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "the equilibrium y at two_eq.deq:4:5 did not reach tol 1e-4 in 10 of 10 forward solves"
        ),
        "{}",
        warnings[0]
    );
    let json = report.to_json();
    let keys: Vec<&String> = json.keys().collect();
    assert_eq!(keys, ["h@7/nested", "y@4", "z@3"]);
    assert_eq!(json["z@3"]["fwd_solves"], 10);
    assert_eq!(json["z@3"]["fwd_unconverged"], 0);
    assert_eq!(json["z@3"]["fwd_protected"], 0);
    assert_eq!(json["z@3"]["fwd_iters"], 12.0);
    assert_eq!(json["z@3"]["bwd_solves"], 10);
    assert_eq!(json["z@3"]["bwd_iters"], 20.0);
    assert_eq!(json["y@4"]["fwd_unconverged"], 10);
    assert_eq!(json["y@4"]["bwd_solves"], 0);
    assert!(json["y@4"].get("bwd_iters").is_none());
    assert_eq!(json["h@7/nested"]["nested"], true);
    assert_eq!(json["h@7/nested"]["fwd_solves"], 50);
    assert_eq!(json["h@7/nested"]["line"], 7);
}

#[test]
fn aggregates_cover_top_level_solves_only() {
    let report = ten_steps();
    // (12 + 30) / 2: the nested solves (4 iterations, 50 of them) are not in.
    assert!((report.fwd_iters() - 21.0).abs() < 1e-12);
    assert!((report.fwd_residual() - (5e-5 + 2e-2) / 2.0).abs() < 1e-12);
    assert!((report.bwd_iters() - 20.0).abs() < 1e-12);
    assert_eq!(
        report.compact(),
        "z 12.0/20.0 it 5.0e-5, y 30.0 it 2.0e-2, h* 4.0 it 1.0e-5"
    );
}

#[test]
fn spectral_radii_and_the_epoch_line_are_per_equilibrium() {
    let (sources, z, y, _) = sources();
    let train = ten_steps();
    let mut test = SolveReport::new();
    test.set_spectral_radius(&["z".into()], Some(z), 0.5, &sources);
    test.set_spectral_radius(&["y".into()], Some(y), 1.2, &sources);
    assert_eq!(test.spectral_radius(), Some(1.2));
    assert_eq!(
        train.epoch_summary(Some(&test)),
        "z: fwd 12.0 it, bwd 20.0 it, spectral radius 0.500; y: fwd 30.0 it, spectral radius 1.200; h (nested): fwd 4.0 it"
    );
    assert_eq!(test.to_json()["y@4"]["spectral_radius"], 1.2);
}

#[test]
fn solves_of_an_equilibrium_defined_inside_another_are_nested_wherever_they_run() {
    // h is defined in y's body; the gradient of y also solves h outside
    // any solve (at depth 0): still h's nested entry, not a top-level one.
    let (sources, z, y, h) = sources();
    let mut records = vec![
        record("z", z, 5e-5, 12),
        record("y", y, 2e-2, 30),
        record("h", h, 1e-5, 4),
    ];
    let top_level = [
        (vec!["z".to_string()], Some(z)),
        (vec!["y".to_string()], Some(y)),
    ];
    mark_nested(&mut records, &top_level);
    assert_eq!(
        records.iter().map(|r| r.nested).collect::<Vec<_>>(),
        [false, false, true]
    );
    let mut report = SolveReport::new();
    report.add(&records, &sources);
    let keys: Vec<String> = report.to_json().keys().cloned().collect();
    assert_eq!(keys, ["h@7/nested", "y@4", "z@3"]);
}
