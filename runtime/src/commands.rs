//! `capstan images ...`: image commands that work on the state directory directly, for hosts
//! where no registry is reachable. A running runtime sees their effect on its next listing.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::RegistryConfig;
use crate::images::{ImageError, ImageManager};

fn open(state_dir: &Path) -> Result<ImageManager, ImageError> {
    ImageManager::open(&state_dir.join("images"), RegistryConfig::default())
}

/// Imports the tagged images of an OCI archive and prints `name id` per image.
pub fn import(state_dir: &Path, archive: &Path, out: &mut dyn Write) -> Result<(), ImageError> {
    let manager = open(state_dir)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ImageError::io(
            "start the async runtime for",
            PathBuf::from(archive),
        ))?;
    let imported = runtime.block_on(manager.import_archive(archive))?;
    for (name, id) in imported {
        writeln!(out, "imported {name} {id}").map_err(ImageError::io("write", "stdout"))?;
    }
    Ok(())
}

/// Prints the local images as a table (`IMAGE TAG IMAGE ID SIZE`, like `crictl images`).
pub fn list(state_dir: &Path, out: &mut dyn Write) -> Result<(), ImageError> {
    let manager = open(state_dir)?;
    let mut rows = vec![[
        "IMAGE".to_string(),
        "TAG".into(),
        "IMAGE ID".into(),
        "SIZE".into(),
    ]];
    for image in manager.list() {
        let short_id: String = image
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(13)
            .collect();
        let size = human_size(image.size);
        if image.repo_tags.is_empty() {
            rows.push(["<none>".into(), "<none>".into(), short_id, size]);
            continue;
        }
        for tag in &image.repo_tags {
            let (name, tag) = tag.rsplit_once(':').unwrap_or((tag.as_str(), "<none>"));
            rows.push([
                name.to_string(),
                tag.to_string(),
                short_id.clone(),
                size.clone(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line = format!(
            "{:w0$}   {:w1$}   {:w2$}   {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        writeln!(out, "{}", line.trim_end()).map_err(ImageError::io("write", "stdout"))?;
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.3}{}", UNITS[unit]).replace(".000", "")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_crictl() {
        assert_eq!(super::human_size(999), "999B");
        assert_eq!(super::human_size(1_234_567), "1.235MB");
    }
}
