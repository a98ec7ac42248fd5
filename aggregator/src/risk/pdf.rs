//! PDF reports (issue 11, optional): the HTML report printed by Debian's `chromium` in
//! headless mode (`--print-to-pdf`). Chromium is an optional system package, not a crate:
//! without it the PDF route answers 501 naming the package, and CSV and HTML still work.
//!
//! Chromium runs with a throw-away profile in a private temporary folder, reads the page
//! from a file there (the report is self-contained: no network fetches), and is killed if
//! it has not finished within [`PDF_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long one conversion may take.
pub const PDF_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment variable naming the chromium binary (else `chromium` on `PATH`).
pub const CHROMIUM_ENV: &str = "WARDLINE_CHROMIUM";

/// Why a PDF could not be made.
#[derive(Debug)]
pub enum PdfError {
    /// No chromium binary: the operator can install one.
    NoChromium,
    Failed(String),
}

impl std::fmt::Display for PdfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PdfError::NoChromium => write!(
                f,
                "PDF reports need Debian's chromium package on the node (apt-get install chromium) or \
                 {CHROMIUM_ENV} naming a chromium binary; CSV and HTML reports work without it"
            ),
            PdfError::Failed(why) => write!(f, "chromium could not print the report to PDF: {why}"),
        }
    }
}

/// The chromium binary: `$WARDLINE_CHROMIUM`, else `chromium` on `PATH`.
pub fn chromium() -> Option<PathBuf> {
    chromium_from(std::env::var_os(CHROMIUM_ENV), std::env::var_os("PATH"))
}

/// [`chromium`] from the two variables' values: a named binary must exist (no fallback to
/// `PATH`, so a wrong setting is noticed).
fn chromium_from(named: Option<std::ffi::OsString>, path: Option<std::ffi::OsString>) -> Option<PathBuf> {
    if let Some(p) = named {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&path?).map(|d| d.join("chromium")).find(|p| p.is_file())
}

/// A private folder for one conversion, removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Print `html` (a self-contained page) to PDF bytes.
pub async fn html_to_pdf(html: &str) -> Result<Vec<u8>, PdfError> {
    let binary = chromium().ok_or(PdfError::NoChromium)?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wardline-pdf-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| PdfError::Failed(format!("temporary folder {}: {e}", dir.display())))?;
    let work = WorkDir(dir);
    let page = work.0.join("report.html");
    let out = work.0.join("report.pdf");
    std::fs::write(&page, html).map_err(|e| PdfError::Failed(format!("writing {}: {e}", page.display())))?;
    print(&binary, &work.0, &page, &out).await?;
    std::fs::read(&out).map_err(|e| PdfError::Failed(format!("reading {}: {e}", out.display())))
}

async fn print(binary: &Path, dir: &Path, page: &Path, out: &Path) -> Result<(), PdfError> {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("--headless")
        .arg("--disable-gpu")
        // Root in containers has no usable sandbox; the page is our own report.
        .arg("--no-sandbox")
        .arg("--no-first-run")
        .arg("--disable-extensions")
        .arg("--disable-background-networking")
        .arg("--no-pdf-header-footer")
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--print-to-pdf={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .env("HOME", dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| PdfError::Failed(format!("starting {}: {e}", binary.display())))?;
    let output = tokio::time::timeout(PDF_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| PdfError::Failed(format!("no answer within {} s", PDF_TIMEOUT.as_secs())))?
        .map_err(|e| PdfError::Failed(e.to_string()))?;
    if !output.status.success() || !out.is_file() {
        let err = String::from_utf8_lossy(&output.stderr);
        let last: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(PdfError::Failed(format!("{} ({})", output.status, last.join(" / "))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chromium_is_the_named_binary_or_the_first_on_path_and_its_absence_says_what_to_install() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("chromium");
        std::fs::write(&bin, "").unwrap();
        let path = std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(chromium_from(None, Some(path.clone())), Some(bin.clone()));
        assert_eq!(chromium_from(Some(bin.clone().into()), None), Some(bin));
        assert_eq!(chromium_from(Some("/nonexistent/chromium".into()), Some(path)), None, "no fallback");
        assert_eq!(chromium_from(None, None), None);
        assert!(PdfError::NoChromium.to_string().contains("apt-get install chromium"));
    }
}
