//! What the simulated DUT boots: the image in its storage file.

use sha2::{Digest, Sha256};

/// The image a simulated DUT booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootedImage {
    /// The image's name ([`image_name`]).
    pub name: String,
    /// SHA-256 of the whole storage file, lower-case hex.
    pub sha256: String,
}

impl BootedImage {
    /// Reads the image from storage bytes.
    pub(crate) fn from_storage(storage: &[u8]) -> Self {
        BootedImage { name: image_name(storage), sha256: hex::encode(Sha256::digest(storage)) }
    }

    /// The console's boot line: `Booting <name> (sha256 <12 hex>)`.
    pub fn boot_line(&self) -> String {
        format!("Booting {} (sha256 {})", self.name, &self.sha256[..12])
    }
}

/// The name of a simulated image: the value of its first `IMAGE_NAME=` line within the first
/// 4 KiB (printable ASCII, at most 64 characters), or `raw image`.
pub fn image_name(storage: &[u8]) -> String {
    let head = &storage[..storage.len().min(4096)];
    head.split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"IMAGE_NAME="))
        .map(|name| {
            String::from_utf8_lossy(name)
                .trim()
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(64)
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "raw image".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(image_name(b"IMAGE_NAME=ubuntu-24.04\nrest"), "ubuntu-24.04");
        assert_eq!(image_name(b"junk\nIMAGE_NAME= core 24 \r\n"), "core 24");
        assert_eq!(image_name(b"\x00\x01binary"), "raw image");
        assert_eq!(image_name(b"IMAGE_NAME=\n"), "raw image");
        let image = BootedImage::from_storage(b"IMAGE_NAME=x\n");
        assert!(image.boot_line().starts_with("Booting x (sha256 "));
        assert_eq!(image.boot_line().len(), "Booting x (sha256 )".len() + 12);
    }
}
