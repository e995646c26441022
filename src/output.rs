//! Requested output on stdout (`out!`, `outln!`), for every command.
//!
//! Guarantees: when stdout is closed early (`deqc check m.deq | head -1`)
//! the command ends quietly with exit code 0, as command-line tools do,
//! instead of panicking on a broken pipe; any other write error is reported
//! once on stderr and ends the command with exit code 2.

use std::io::Write;

/// Write to stdout; end the process quietly if the reader has gone.
pub fn write_stdout(args: std::fmt::Arguments) {
    let mut stdout = std::io::stdout().lock();
    let result = stdout.write_fmt(args).and_then(|_| stdout.flush());
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(2);
    }
}

/// `print!` that ends quietly on a closed stdout (see the module doc).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `println!` that ends quietly on a closed stdout (see the module doc).
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}
