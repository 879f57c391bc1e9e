//! The guest's root file system: an uncompressed cpio archive (the kernel's
//! "newc" format, Documentation/driver-api/early-userspace/buffer-format.rst).
//! Uncompressed because the kernel unpacks it under TCG: decompressing costs more
//! than loading the larger file.
//!
//! Dynamically linked programs bring what `ldd` lists on this host (the loader
//! and each library) at the same absolute paths, so a plain `cargo build` binary
//! runs as it does here.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

#[derive(Debug)]
enum Entry {
    Dir,
    File { source: Source, mode: u32 },
    Symlink(String),
}

#[derive(Debug)]
enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

/// The files of an initramfs, by their absolute path in the guest.
#[derive(Debug, Default)]
pub(crate) struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

fn guest_path(p: &str) -> String {
    format!("/{}", p.trim_matches('/'))
}

impl Initramfs {
    /// A folder and its parents.
    pub(crate) fn dir(&mut self, path: &str) {
        let path = guest_path(path);
        let mut at = String::new();
        for part in path.split('/').filter(|s| !s.is_empty()) {
            at.push('/');
            at.push_str(part);
            self.entries.entry(at.clone()).or_insert(Entry::Dir);
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((dir, _)) = path.rsplit_once('/')
            && !dir.is_empty()
        {
            self.dir(dir);
        }
    }

    /// The host file `src` (symbolic links followed) at `path`; a path already
    /// taken keeps its first file.
    pub(crate) fn host_file(&mut self, path: &str, src: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(src)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", src.display())))?;
        if !meta.is_file() {
            return Err(Error::new(format!("{} is not a file", src.display())));
        }
        let path = guest_path(path);
        self.parent(&path);
        self.entries.entry(path).or_insert(Entry::File {
            source: Source::Host(src.to_path_buf()),
            mode: meta.permissions().mode() & 0o7777,
        });
        Ok(())
    }

    /// `bytes` as the file `path` with permission bits `mode`.
    pub(crate) fn bytes(&mut self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) {
        let path = guest_path(path);
        self.parent(&path);
        self.entries.insert(
            path,
            Entry::File {
                source: Source::Bytes(bytes.into()),
                mode,
            },
        );
    }

    /// A symbolic link at `path` to `target`.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) {
        let path = guest_path(path);
        self.parent(&path);
        self.entries
            .insert(path, Entry::Symlink(target.to_string()));
    }

    /// Every file and link under the host folder `src`, at `dest` and below.
    pub(crate) fn tree(&mut self, dest: &str, src: &Path) -> Result<()> {
        let entries = std::fs::read_dir(src)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", src.display())))?;
        self.dir(dest);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let at = format!("{}/{name}", guest_path(dest).trim_end_matches('/'));
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p)
                .map_err(|e| Error::new(format!("cannot read {}: {e}", p.display())))?;
            if meta.is_symlink() {
                let t = std::fs::read_link(&p)
                    .map_err(|e| Error::new(format!("cannot read {}: {e}", p.display())))?;
                self.symlink(&at, &t.to_string_lossy());
            } else if meta.is_dir() {
                self.tree(&at, &p)?;
            } else {
                self.host_file(&at, &p)?;
            }
        }
        Ok(())
    }

    /// The host file `src` at `path`, and when it is a dynamically linked ELF
    /// file, the loader and libraries `ldd` lists for it at their own paths.
    pub(crate) fn program(&mut self, path: &str, src: &Path) -> Result<()> {
        self.host_file(path, src)?;
        for lib in libraries(src)? {
            self.host_file(&lib.to_string_lossy(), &lib)?;
        }
        Ok(())
    }

    /// Whether `path` is in the archive.
    #[cfg(test)]
    pub(crate) fn has(&self, path: &str) -> bool {
        self.entries.contains_key(&guest_path(path))
    }

    /// Write the archive to `out`.
    pub(crate) fn write(&self, out: &Path) -> Result<()> {
        let err = |e: std::io::Error| Error::new(format!("cannot write {}: {e}", out.display()));
        let f = File::create(out).map_err(err)?;
        let mut w = BufWriter::new(f);
        // Sorted by path: every folder comes before what it holds.
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let name = &path[1..];
            match entry {
                Entry::Dir => header(&mut w, ino, 0o040_755, 2, 0, name).map_err(err)?,
                Entry::Symlink(t) => {
                    header(&mut w, ino, 0o120_777, 1, t.len(), name).map_err(err)?;
                    data(&mut w, t.as_bytes()).map_err(err)?;
                }
                Entry::File { source, mode } => {
                    let bytes = match source {
                        Source::Bytes(b) => std::borrow::Cow::Borrowed(b.as_slice()),
                        Source::Host(p) => {
                            std::borrow::Cow::Owned(std::fs::read(p).map_err(|e| {
                                Error::new(format!("cannot read {}: {e}", p.display()))
                            })?)
                        }
                    };
                    header(&mut w, ino, 0o100_000 | mode, 1, bytes.len(), name).map_err(err)?;
                    data(&mut w, &bytes).map_err(err)?;
                }
            }
        }
        header(&mut w, 0, 0, 1, 0, "TRAILER!!!").map_err(err)?;
        w.flush().map_err(err)?;
        Ok(())
    }
}

/// One newc header and the entry's name, padded to four bytes.
fn header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    name: &str,
) -> std::io::Result<()> {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        u32::try_from(size).map_err(|_| std::io::Error::other(format!("{name} is over 4 GiB")))?,
        0, // dev major
        0, // dev minor
        0, // rdev major
        0, // rdev minor
        name.len() as u32 + 1,
        0, // check
    ];
    let mut h = String::from("070701");
    for f in fields {
        h.push_str(&format!("{f:08x}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w, 110 + name.len() + 1)
}

fn data(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes)?;
    pad(w, bytes.len())
}

fn pad(w: &mut impl Write, len: usize) -> std::io::Result<()> {
    w.write_all(&[0; 3][..(4 - len % 4) % 4])
}

/// Whether the file at `path` is an ELF file.
pub(crate) fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path).is_ok_and(|mut f| f.read_exact(&mut magic).is_ok()) && &magic == b"\x7fELF"
}

/// The loader and libraries a dynamically linked ELF file needs on this host,
/// from `ldd`; nothing for static binaries and scripts.
pub(crate) fn libraries(path: &Path) -> Result<Vec<PathBuf>> {
    if !is_elf(path) {
        return Ok(Vec::new());
    }
    let out = Command::new("ldd").arg(path).output().map_err(|e| {
        Error::new(format!(
            "cannot run ldd on {}: {e}; ldd comes with libc-bin",
            path.display()
        ))
    })?;
    // ldd fails on static binaries ("not a dynamic executable"): nothing to add.
    if !out.status.success() {
        return Ok(Vec::new());
    }
    parse_ldd(&String::from_utf8_lossy(&out.stdout)).map_err(|lib| {
        Error::new(format!(
            "{}: ldd finds no {lib} on this host",
            path.display()
        ))
    })
}

/// The libraries `ldd` output says it could not find.
pub(crate) fn parse_missing_libraries(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let (lib, rest) = l.split_once("=>")?;
            rest.trim()
                .starts_with("not found")
                .then(|| lib.trim().to_string())
        })
        .collect()
}

/// The paths in `ldd` output, or the first library it could not find.
pub(crate) fn parse_ldd(text: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
        // "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)",
        // "libfoo.so.1 => not found".
        let target = match line.split_once("=>") {
            Some((lib, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(lib.trim().to_string());
                }
                rest
            }
            None => line,
        };
        if let Some(p) = target
            .split_whitespace()
            .next()
            .filter(|p| p.starts_with('/'))
        {
            out.push(PathBuf::from(p));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read a newc archive back: (name, mode, data) per entry.
    fn read_newc(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let field = |h: &[u8], i: usize| {
            u32::from_str_radix(std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                .unwrap()
        };
        loop {
            assert_eq!(&b[..6], b"070701");
            let (mode, size, namesize) = (field(b, 1), field(b, 6) as usize, field(b, 11) as usize);
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let data_at = (110 + namesize).div_ceil(4) * 4;
            let data = b[data_at..data_at + size].to_vec();
            b = &b[(data_at + size).div_ceil(4) * 4..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn the_archive_is_newc_with_folders_before_their_files() {
        let d = tempfile::tempdir().unwrap();
        let host = d.path().join("prog");
        std::fs::write(&host, b"#!/bin/sh\necho hi\n").unwrap();
        let mut fs = Initramfs::default();
        fs.program("/lab/prog", &host).unwrap();
        fs.bytes("/init", b"#!/bin/sh\n".to_vec(), 0o755);
        fs.symlink("/bin/sh", "busybox");
        fs.dir("/dev/hugepages");
        let out = d.path().join("initrd");
        fs.write(&out).unwrap();
        let entries = read_newc(&std::fs::read(&out).unwrap());
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/hugepages",
                "init",
                "lab",
                "lab/prog"
            ]
        );
        let by = |n: &str| entries.iter().find(|e| e.0 == n).unwrap();
        assert_eq!(by("bin/sh").1, 0o120_777);
        assert_eq!(by("bin/sh").2, b"busybox");
        assert_eq!(by("init").1, 0o100_755);
        assert_eq!(by("lab/prog").2, b"#!/bin/sh\necho hi\n");
        assert_eq!(by("dev").1, 0o040_755);
    }

    #[test]
    fn ldd_output_gives_the_loader_and_libraries_and_names_a_missing_one() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            parse_ldd("\tlibrte_eal.so.25 => not found\n").unwrap_err(),
            "librte_eal.so.25"
        );
        assert_eq!(
            parse_missing_libraries(
                "\tlibrte_eal.so.25 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n"
            ),
            ["librte_eal.so.25"]
        );
    }

    #[test]
    fn a_dynamic_host_binary_brings_its_libraries() {
        // /bin/sh (dash or bash) is dynamically linked on Debian and Ubuntu.
        let sh = Path::new("/bin/sh").canonicalize().unwrap();
        let mut fs = Initramfs::default();
        fs.program("/lab/sh", &sh).unwrap();
        let libs = libraries(&sh).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        for l in &libs {
            assert!(fs.has(&l.to_string_lossy()), "{l:?}");
        }
    }
}
