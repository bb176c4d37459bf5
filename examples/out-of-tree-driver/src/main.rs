//! `regstore` with the `flatdir` driver added: every subcommand of the
//! real one (`serve`, `drivers`, `conformance`, `bench`), and
//! `--driver flatdir` / `storage: flatdir:` besides the built-in drivers.

fn main() {
    regstore_flatdir::register();
    regstore_cli::main()
}
