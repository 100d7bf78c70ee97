//! Writes the test images as an OCI archive for hosts without registry access, so the README's
//! example runs offline: `capstan-example-images OUT.tar && capstan images import OUT.tar`.

use std::path::PathBuf;
use std::process::ExitCode;

use capstan_testkit::images::{LayoutEntry, ManifestFormat, catalog, write_archive};

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: capstan-example-images OUT.tar");
        return ExitCode::from(2);
    };
    let images = match catalog() {
        Ok(images) => images,
        Err(e) => {
            eprintln!("capstan-example-images: {e}");
            return ExitCode::FAILURE;
        }
    };
    let entries = [
        LayoutEntry {
            ref_name: "capstan.local/web:1",
            image: &images.web,
            format: ManifestFormat::Oci,
        },
        LayoutEntry {
            ref_name: "capstan.local/shell:1",
            image: &images.shell,
            format: ManifestFormat::Oci,
        },
    ];
    match write_archive(&out, &entries) {
        Ok(()) => {
            println!(
                "wrote {} (capstan.local/web:1, capstan.local/shell:1)",
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("capstan-example-images: {e}");
            ExitCode::FAILURE
        }
    }
}
