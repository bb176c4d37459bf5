//! The `regstore` binary: [`regstore_cli::main`].

fn main() {
    regstore_cli::main()
}
