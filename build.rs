//! Build script: records the arti-client version resolved in Cargo.lock, for `rdv --version`
//! (arti-client exposes no version of its own).

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let mut lines = lock.lines();
    let mut version = String::from("unknown");
    while let Some(line) = lines.next() {
        if line.trim() == r#"name = "arti-client""# {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = "))
            {
                version = v.trim_matches('"').to_string();
            }
            break;
        }
    }
    println!("cargo:rustc-env=RDV_ARTI_CLIENT_VERSION={version}");
}
