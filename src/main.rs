fn main() -> std::process::ExitCode {
    mailfault::cli::main()
}
