// mimalloc, not the system allocator: a message makes some fifty small
// allocations (events, reply bytes, envelope strings), and with glibc's
// malloc a message cost a quarter more instructions (docs/performance.md,
// the fourth round of 2026-12-01). Its v2 line keeps an idle session at
// glibc's 2.5 KiB; v3 took 2.9. Set in the binary only: the library leaves
// the choice to whoever links it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mailfault::cli::main()
}
