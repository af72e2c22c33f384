//! The command line pinned by snapshots (trycmd): help texts, usage errors and bad inputs, each a
//! `tests/cmd/*.trycmd` file. After a deliberate change: `TRYCMD=overwrite cargo test --test cli`.

#[test]
fn cli_snapshots() {
    trycmd::TestCases::new().case("tests/cmd/*.trycmd");
}
