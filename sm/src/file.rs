//! The file SR: one directory, one sparse raw image per VDI named
//! `<vdi-uuid>.img`. A guest sees the image through blkback on a loop
//! device (the toolstack attaches it), so the bytes a guest writes are the
//! file's bytes.

use crate::{Result, SmError, SrSpace};
use std::path::{Path, PathBuf};

/// A directory of raw VDI images.
#[derive(Debug, Clone)]
pub struct FileSr {
    dir: PathBuf,
}

/// A uuid's shape (8-4-4-4-12 hex digits): the only names that become
/// files, so that no VDI name can point outside the SR's directory.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl FileSr {
    /// The SR in `dir`, created if missing.
    pub fn open(dir: &Path) -> Result<FileSr> {
        std::fs::create_dir_all(dir).map_err(|source| SmError::Io {
            what: "create SR directory",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(FileSr {
            dir: dir.to_path_buf(),
        })
    }

    /// The SR's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The image file of VDI `uuid`.
    pub fn image(&self, uuid: &str) -> Result<PathBuf> {
        if !is_uuid(uuid) {
            return Err(SmError::BadVdiName(uuid.to_string()));
        }
        Ok(self.dir.join(format!("{uuid}.img")))
    }

    /// Creates VDI `uuid`'s image, `size` bytes, sparse (nothing is
    /// allocated until written; reads of unwritten blocks are zeros).
    /// Refuses a size the filesystem could not hold even empty of others.
    pub fn create(&self, uuid: &str, size: u64) -> Result<PathBuf> {
        let path = self.image(uuid)?;
        let space = self.space()?;
        if size > space.physical_size {
            return Err(SmError::NoSpace {
                wanted: size,
                free: space.physical_size - space.physical_utilisation.min(space.physical_size),
            });
        }
        let io = |what| {
            let path = path.clone();
            move |source| SmError::Io { what, path, source }
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("create image"))?;
        if let Err(e) = f.set_len(size).map_err(io("size image")) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(path)
    }

    /// Removes VDI `uuid`'s image.
    pub fn destroy(&self, uuid: &str) -> Result<()> {
        let path = self.image(uuid)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SmError::NoSuchVdi(uuid.to_string()))
            }
            Err(source) => Err(SmError::Io {
                what: "remove image",
                path,
                source,
            }),
        }
    }

    /// The bytes VDI `uuid`'s image takes on disk (its written blocks).
    pub fn utilisation(&self, uuid: &str) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = self.image(uuid)?;
        match std::fs::metadata(&path) {
            Ok(m) => Ok(m.blocks() * 512),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SmError::NoSuchVdi(uuid.to_string()))
            }
            Err(source) => Err(SmError::Io {
                what: "stat image",
                path,
                source,
            }),
        }
    }

    /// The filesystem's size and use (statvfs through `df`'s numbers: the
    /// standard library has no statvfs, and this crate links no libc).
    pub fn space(&self) -> Result<SrSpace> {
        let out = std::process::Command::new("df")
            .args(["-P", "-B1", "--"])
            .arg(&self.dir)
            .output()
            .map_err(|source| SmError::Io {
                what: "run df on",
                path: self.dir.clone(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_df(&text).ok_or_else(|| SmError::Io {
            what: "read df's output for",
            path: self.dir.clone(),
            source: std::io::Error::other(format!(
                "{}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )),
        })
    }
}

/// Size and used bytes from `df -P -B1`'s second line.
fn parse_df(text: &str) -> Option<SrSpace> {
    let mut f = text.lines().nth(1)?.split_whitespace().skip(1);
    let size = f.next()?.parse().ok()?;
    let used = f.next()?.parse().ok()?;
    Some(SrSpace {
        physical_size: size,
        physical_utilisation: used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0f3c2b1a-9d8e-4c7b-a6f5-e4d3c2b1a090";

    #[test]
    fn images_are_sparse_files_named_by_uuid_and_go_away() {
        let d = tempfile::tempdir().unwrap();
        let sr = FileSr::open(&d.path().join("sr")).unwrap();
        let p = sr.create(U, 1 << 30).unwrap();
        assert_eq!(p, d.path().join("sr").join(format!("{U}.img")));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 30);
        assert!(sr.utilisation(U).unwrap() < 1 << 20, "sparse");
        assert!(matches!(sr.create(U, 1), Err(SmError::Io { .. })), "exists");
        sr.destroy(U).unwrap();
        assert!(!p.exists());
        assert!(matches!(sr.destroy(U), Err(SmError::NoSuchVdi(_))));
    }

    #[test]
    fn names_that_are_not_uuids_never_become_paths() {
        let d = tempfile::tempdir().unwrap();
        let sr = FileSr::open(d.path()).unwrap();
        for bad in [
            "../etc/passwd",
            "",
            "x",
            "0f3c2b1a-9d8e-4c7b-a6f5-e4d3c2b1a09/",
        ] {
            assert!(
                matches!(sr.image(bad), Err(SmError::BadVdiName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_size_beyond_the_filesystem_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let sr = FileSr::open(d.path()).unwrap();
        let s = sr.space().unwrap();
        assert!(s.physical_size > 0);
        assert!(matches!(
            sr.create(U, s.physical_size + 1),
            Err(SmError::NoSpace { .. })
        ));
        assert!(!sr.image(U).unwrap().exists(), "nothing left");
    }

    #[test]
    fn df_output_parses() {
        let t = "Filesystem     1-blocks      Used Available Capacity Mounted on\n\
                 /dev/vda1 1000000 250000 750000 25% /\n";
        assert_eq!(
            parse_df(t),
            Some(SrSpace {
                physical_size: 1000000,
                physical_utilisation: 250000
            })
        );
        assert_eq!(parse_df("junk"), None);
    }
}
