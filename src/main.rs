//! The `deqc` binary: a thin wrapper over `deqc::cli`, with the counting
//! allocator that `deqc bench` reads (allocations and live bytes per step),
//! over mimalloc (`deqc::profile::configure_heap`).

#[global_allocator]
static ALLOCATOR: deqc::profile::CountingAlloc = deqc::profile::CountingAlloc;

fn main() -> std::process::ExitCode {
    deqc::profile::configure_heap();
    deqc::threads::one_pool();
    deqc::cli::main()
}
