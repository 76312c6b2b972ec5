//! The command-line reference in the manual (`docs/src/reference/cli.md`) is generated from clap's own
//! definitions, so it cannot drift from what `meter` accepts: this test fails when the committed page
//! differs from what the definitions give. `METER_BLESS=1 cargo test -p meter --test reference`
//! writes the page anew.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::path::PathBuf;

const HEADER: &str = "<!-- Generated from `meter`'s clap definitions by cli/tests/reference.rs; do not edit. \
                      Regenerate: METER_BLESS=1 cargo test -p meter --test reference -->\n\n";

#[test]
fn the_cli_reference_is_what_the_definitions_say() {
    let page = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/src/reference/cli.md");
    let options = clap_markdown::MarkdownOptions::new().show_footer(false).show_table_of_contents(true);
    let generated = format!("{HEADER}{}", clap_markdown::help_markdown_custom::<meter::Cli>(&options));
    if std::env::var_os("METER_BLESS").is_some() {
        std::fs::write(&page, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: run METER_BLESS=1 cargo test -p meter --test reference and commit it",
        page.display()
    );
}
