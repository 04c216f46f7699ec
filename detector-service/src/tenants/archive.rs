//! The export archive: a plain POSIX ustar file (any `tar` reads it), written in memory. A
//! tenant's export is bounded by its stored-bytes quota, so memory is bounded too.

/// Longest entry name ustar holds in its `name` field alone.
const MAX_NAME: usize = 99;

pub struct TarWriter {
    bytes: Vec<u8>,
    mtime: u64,
}

impl TarWriter {
    pub fn new(mtime: u64) -> TarWriter {
        TarWriter {
            bytes: Vec::new(),
            mtime,
        }
    }

    /// Appends one regular file. Names are ours (`manifest.json`, `concepts/<id>/<n>.<ext>`,
    /// ids of at most 64 characters), so one over ustar's limit is a bug.
    pub fn file(&mut self, name: &str, contents: &[u8]) {
        assert!(name.len() <= MAX_NAME, "tar entry name too long: {name}");
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut header[100..108], 0o644);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], contents.len() as u64);
        octal(&mut header[136..148], self.mtime);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        // The checksum is computed with its own field as spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u64 = header.iter().map(|&byte| u64::from(byte)).sum();
        octal(&mut header[148..155], sum);
        header[155] = b' ';
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(contents);
        let padding = (512 - contents.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, padding));
    }

    /// The archive with its two zero blocks of end.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes.extend(std::iter::repeat_n(0u8, 1024));
        self.bytes
    }
}

/// Writes `value` as zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&text.as_bytes()[text.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_tar_lists_and_extracts_what_was_written() {
        let mut tar = TarWriter::new(1_700_000_000);
        tar.file("manifest.json", b"{\"a\":1}");
        tar.file("concepts/bo/0.png", &[7u8; 1000]);
        let bytes = tar.finish();
        assert_eq!(bytes.len() % 512, 0);
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("x.tar");
        std::fs::write(&path, &bytes).unwrap();
        let status = std::process::Command::new("tar")
            .arg("-xf")
            .arg(&path)
            .arg("-C")
            .arg(directory.path())
            .status()
            .unwrap();
        assert!(status.success());
        let manifest = std::fs::read(directory.path().join("manifest.json")).unwrap();
        assert_eq!(manifest, b"{\"a\":1}");
        let image = std::fs::read(directory.path().join("concepts/bo/0.png")).unwrap();
        assert_eq!(image, vec![7u8; 1000]);
    }
}
