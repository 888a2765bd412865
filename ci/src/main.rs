//! `faultline`: the command-line entry point.

fn main() {
    println!("faultline {}", env!("CARGO_PKG_VERSION"));
}
