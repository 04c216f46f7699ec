//! Scans `docker save` output, a tar of layer tars, in one streaming pass: every byte for this
//! run's keys (64 hex characters each, wherever they sit: files, file names, image config,
//! history), and every file in every layer for the exact bytes of a research-only sample file.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use anyhow::{Result, bail};

const KEY_LENGTH: usize = 64;

/// The sample files, by size (a file is compared byte for byte only when its size matches).
#[derive(Default)]
pub struct Samples {
    by_size: HashMap<u64, Vec<(String, Vec<u8>)>>,
    count: usize,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.count
    }

    fn add(&mut self, name: String, bytes: Vec<u8>) {
        // Tiny files (an empty JSON, a one-line text) would match too much to mean anything.
        if bytes.len() < 256 {
            return;
        }
        self.count += 1;
        self.by_size
            .entry(bytes.len() as u64)
            .or_default()
            .push((name, bytes));
    }

    /// Every file under `tests/fixtures/` (the sample concepts and query photo), every image
    /// under a crate's `tests/fixtures/`, and `../shared/data` when it is there.
    pub fn collect(root: &Path) -> Result<Samples> {
        let mut samples = Samples::default();
        // (folder, whether every file counts or only images)
        let mut visit = vec![(root.join("tests/fixtures"), true)];
        for crate_dir in ["engine", "detector-service", "reasoner-service", "eval"] {
            visit.push((root.join(crate_dir).join("tests/fixtures"), false));
        }
        if let Some(parent) = root.parent() {
            visit.push((parent.join("shared/data"), true));
        }
        while let Some((dir, every_file)) = visit.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry?.path();
                if path.is_dir() {
                    visit.push((path, every_file));
                    continue;
                }
                let extension = path
                    .extension()
                    .map(|ext| ext.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                let is_image =
                    ["jpg", "jpeg", "png", "webp", "gif", "bmp"].contains(&extension.as_str());
                if every_file || is_image {
                    samples.add(path.display().to_string(), std::fs::read(&path)?);
                }
            }
        }
        if samples.count == 0 {
            bail!(
                "found no sample files under {}",
                root.join("tests/fixtures").display()
            );
        }
        Ok(samples)
    }
}

#[derive(Default)]
pub struct Scan {
    pub layers: usize,
    pub files: usize,
    pub bytes: u64,
    pub keys_found: Vec<String>,
    pub samples_found: Vec<String>,
}

/// A reader that looks at every byte passing through it for the keys.
struct KeyScanner<R> {
    inner: R,
    keys: HashSet<Vec<u8>>,
    window: Vec<u8>,
    found: HashSet<String>,
    bytes: u64,
}

impl<R: Read> Read for KeyScanner<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.bytes += read as u64;
        for &byte in &buffer[..read] {
            if byte.is_ascii_hexdigit() {
                self.window.push(byte);
                if self.window.len() > KEY_LENGTH {
                    self.window.remove(0);
                }
                if self.window.len() == KEY_LENGTH && self.keys.contains(&self.window) {
                    self.found
                        .insert(String::from_utf8_lossy(&self.window).into_owned());
                }
            } else if !self.window.is_empty() {
                self.window.clear();
            }
        }
        Ok(read)
    }
}

struct Entry {
    name: String,
    size: u64,
    regular: bool,
}

/// A minimal streaming tar reader: ustar, GNU long names and PAX path/size records.
struct TarStream<'a, R: Read> {
    inner: &'a mut R,
}

impl<R: Read> TarStream<'_, R> {
    fn next_entry(&mut self) -> Result<Option<Entry>> {
        let mut long_name: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            let mut header = [0u8; 512];
            if !read_full(self.inner, &mut header)? || header.iter().all(|b| *b == 0) {
                return Ok(None);
            }
            let size = parse_size(&header[124..136])?;
            let kind = header[156];
            match kind {
                b'L' | b'x' | b'g' => {
                    let mut data = vec![0u8; size as usize];
                    self.inner.read_exact(&mut data)?;
                    self.skip_padding(size)?;
                    if kind == b'L' {
                        long_name = Some(
                            String::from_utf8_lossy(&data)
                                .trim_end_matches('\0')
                                .to_string(),
                        );
                    } else if kind == b'x' {
                        for (key, value) in pax_records(&data) {
                            match key.as_str() {
                                "path" => long_name = Some(value),
                                "size" => pax_size = value.parse().ok(),
                                _ => {}
                            }
                        }
                    }
                }
                _ => {
                    let name = long_name.take().unwrap_or_else(|| {
                        let prefix = c_string(&header[345..500]);
                        let name = c_string(&header[0..100]);
                        if prefix.is_empty() {
                            name
                        } else {
                            format!("{prefix}/{name}")
                        }
                    });
                    return Ok(Some(Entry {
                        name,
                        size: pax_size.take().unwrap_or(size),
                        regular: kind == b'0' || kind == 0,
                    }));
                }
            }
        }
    }

    fn skip(&mut self, size: u64) -> Result<()> {
        std::io::copy(&mut self.inner.take(size), &mut std::io::sink())?;
        Ok(())
    }

    fn skip_padding(&mut self, size: u64) -> Result<()> {
        self.skip((512 - size % 512) % 512)
    }
}

fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = reader.read(&mut buffer[filled..])?;
        if read == 0 {
            if filled == 0 {
                return Ok(false);
            }
            bail!("the tar stream ends inside a header");
        }
        filled += read;
    }
    Ok(true)
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn parse_size(field: &[u8]) -> Result<u64> {
    if field[0] & 0x80 != 0 {
        // Base-256 for sizes beyond the octal field.
        return Ok(field[1..]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)));
    }
    let text = c_string(field);
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    Ok(u64::from_str_radix(text, 8)?)
}

/// `"<length> <key>=<value>\n"` records.
fn pax_records(data: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|line| {
            let (_, record) = line.split_once(' ')?;
            let (key, value) = record.split_once('=')?;
            Some((key.to_string(), value.to_string()))
        })
        .collect()
}

pub fn scan(reader: impl Read, keys: &[String], samples: &Samples) -> Result<Scan> {
    let mut scanner = KeyScanner {
        inner: reader,
        keys: keys.iter().map(|key| key.as_bytes().to_vec()).collect(),
        window: Vec::with_capacity(KEY_LENGTH + 1),
        found: HashSet::new(),
        bytes: 0,
    };
    let mut result = Scan::default();
    {
        let mut outer = TarStream {
            inner: &mut scanner,
        };
        while let Some(entry) = outer.next_entry()? {
            let is_layer = entry.regular
                && (entry.name.ends_with("layer.tar") || entry.name.starts_with("blobs/"));
            if !is_layer {
                outer.skip(entry.size)?;
                outer.skip_padding(entry.size)?;
                continue;
            }
            let mut layer = (&mut *outer.inner).take(entry.size);
            let mut magic_checked = false;
            {
                let mut inner = TarStream { inner: &mut layer };
                while let Some(file) = inner.next_entry()? {
                    magic_checked = true;
                    if !file.regular {
                        inner.skip(file.size)?;
                        inner.skip_padding(file.size)?;
                        continue;
                    }
                    result.files += 1;
                    match samples.by_size.get(&file.size) {
                        Some(candidates) => {
                            let mut content = vec![0u8; file.size as usize];
                            inner.inner.read_exact(&mut content)?;
                            for (name, bytes) in candidates {
                                if *bytes == content {
                                    result
                                        .samples_found
                                        .push(format!("{} (the bytes of {name})", file.name));
                                }
                            }
                        }
                        None => inner.skip(file.size)?,
                    }
                    inner.skip_padding(file.size)?;
                }
            }
            if magic_checked {
                result.layers += 1;
            }
            // Whatever follows the inner tar's end marker still belongs to this entry.
            std::io::copy(&mut layer, &mut std::io::sink())?;
            outer.skip_padding(entry.size)?;
        }
    }
    // The rest of the stream (the outer tar's trailing blocks) is scanned too.
    std::io::copy(&mut scanner, &mut std::io::sink())?;
    result.bytes = scanner.bytes;
    result.keys_found = scanner.found.into_iter().collect();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with one file, written by the system's tar, so the reader is checked against a
    /// real writer rather than against itself.
    fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
        tar_of_files(&[(name, content)])
    }

    fn tar_of_files(files: &[(&str, &[u8])]) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "slc-layers-test-{}-{}",
            std::process::id(),
            files[0].0
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let output = std::process::Command::new("tar")
            .arg("-C")
            .arg(&dir)
            .args(["-cf", "-"])
            .args(files.iter().map(|(name, _)| name))
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(output.status.success());
        output.stdout
    }

    #[test]
    fn finds_a_key_and_a_sample_inside_a_nested_layer() {
        let key = "ab".repeat(32);
        let sample: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut layer_content = b"config ".to_vec();
        layer_content.extend_from_slice(key.as_bytes());
        let layer = tar_of_files(&[("secret.env", &layer_content), ("photo.jpg", &sample)]);
        let saved = tar_of("layer.tar", &layer);
        let mut samples = Samples::default();
        samples.add("bo.jpg".into(), sample.clone());
        let scan = scan(&saved[..], &[key.clone(), "cd".repeat(32)], &samples).unwrap();
        assert_eq!(scan.keys_found, vec![key]);
        assert_eq!(scan.layers, 1);
        assert_eq!(scan.files, 2);
        assert_eq!(scan.samples_found.len(), 1, "{:?}", scan.samples_found);
        assert!(scan.samples_found[0].starts_with("photo.jpg"));

        let clean = tar_of("layer.tar", &tar_of("other.bin", &sample[..3999]));
        let scan = scan_clean(&clean, &samples);
        assert!(scan.keys_found.is_empty() && scan.samples_found.is_empty());
    }

    fn scan_clean(bytes: &[u8], samples: &Samples) -> Scan {
        scan(bytes, &["ab".repeat(32)], samples).unwrap()
    }
}
