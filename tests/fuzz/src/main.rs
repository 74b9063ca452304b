//! The AFL++ driver (`cargo afl build --features afl`): `flowlens-fuzz <target>` runs the named
//! target of `flowlens_fuzz::TARGETS` in AFL's persistent mode (see tests/fuzz/run).

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = flowlens_fuzz::target(&name) else {
        let names: Vec<&str> = flowlens_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: flowlens-fuzz <{}>", names.join("|"));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
