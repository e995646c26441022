//! Front-end speed: time `deqc check` (parse, resolve, elaborate, shape
//! check) of every example, in process. Run with `cargo bench --bench check`
//! (release profile). Target: well under 50 ms per example.

use std::path::Path;
use std::time::{Duration, Instant};

fn main() {
    let mut files: Vec<_> = std::fs::read_dir("examples")
        .expect("run from the crate root")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deq"))
        .collect();
    files.sort();
    println!(
        "{:<28} {:>10} {:>10} {:>10}",
        "example", "median", "min", "max"
    );
    for f in files {
        let mut times: Vec<Duration> = (0..50)
            .map(|_| {
                let t = Instant::now();
                let c = deqc::compile_path(Path::new(&f)).expect("readable");
                assert!(c.program.is_some(), "{} does not check", f.display());
                t.elapsed()
            })
            .collect();
        times.sort();
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:<28} {:>10} {:>10} {:>10}",
            f.display(),
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1])
        );
    }
}
