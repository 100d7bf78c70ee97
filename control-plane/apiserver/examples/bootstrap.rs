//! Makes (or loads) the cluster credentials in a directory and prints how long it took:
//! `cargo run -p capstan-apiserver --example bootstrap -- DIR`.

use std::time::Instant;

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: bootstrap DATA_DIR");
        std::process::exit(2);
    };
    let started = Instant::now();
    match capstan_apiserver::pki::ClusterCredentials::load_or_create(
        std::path::Path::new(&dir),
        &capstan_apiserver::pki::PkiOptions::default(),
    ) {
        Ok(credentials) => println!(
            "{} in {:?}; serving SANs: {:?}",
            dir,
            started.elapsed(),
            credentials.serving_sans()
        ),
        Err(e) => {
            eprintln!("bootstrap {dir}: {e}");
            std::process::exit(1);
        }
    }
}
