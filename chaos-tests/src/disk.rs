//! A small tmpfs mounted over a node's data folder, for the full-disk nemesis: fill it to
//! the last byte, free it again, and unmount it when dropped. Needs root (mount(8)).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    pub dir: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    /// Mount a tmpfs of `mib` MiB at `dir` (created if missing).
    pub fn mount(dir: &Path, mib: u32) -> Result<SmallDisk> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700"), "wardline-chaos"])
            .arg(dir)
            .output()
            .context("running mount (is util-linux installed?)")?;
        if !out.status.success() {
            bail!(
                "cannot mount a {mib} MiB tmpfs at {} (needs root): {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(SmallDisk { dir: dir.to_path_buf(), filler: dir.join("chaos-filler") })
    }

    /// Write zeros until the file system says it is full; returns the bytes written.
    pub fn fill(&mut self) -> Result<u64> {
        let mut f =
            std::fs::File::create(&self.filler).with_context(|| format!("creating {}", self.filler.display()))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e).context("filling the small disk"),
            }
        }
        // The last partial blocks too.
        let small = [0u8; 4096];
        while let Ok(n) = f.write(&small) {
            if n == 0 {
                break;
            }
            written += n as u64;
        }
        Ok(written)
    }

    pub fn free(&mut self) -> Result<()> {
        match std::fs::remove_file(&self.filler) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.filler.display())),
        }
    }

    /// Bytes still free on the disk.
    pub fn available(&self) -> Result<u64> {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes())?;
        // SAFETY: statvfs writes into the zeroed struct we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            bail!("statvfs {}: {}", self.dir.display(), std::io::Error::last_os_error());
        }
        Ok(st.f_bavail as u64 * st.f_frsize as u64)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a process still holding files (a node killed a moment ago) must not keep
        // the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_to_zero_frees_and_unmounts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut d = match SmallDisk::mount(&dir, 4) {
            Ok(d) => d,
            // Only root can mount; CI and the chaos runs are root.
            Err(e) if unsafe { libc::geteuid() } != 0 => return eprintln!("skipped: {e:#}"),
            Err(e) => panic!("{e:#}"),
        };
        let before = d.available().unwrap();
        assert!(before > 3 << 20, "{before}");
        let written = d.fill().unwrap();
        assert!(written >= before - 8192, "wrote {written} of {before}");
        assert_eq!(d.available().unwrap(), 0);
        assert!(std::fs::write(dir.join("x"), b"y").is_err(), "a full disk took a write");
        d.free().unwrap();
        assert!(d.available().unwrap() >= before - 8192);
        drop(d);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(!mounts.contains(&dir.display().to_string()), "still mounted");
    }
}
