//! Man pages and shell completions generated from a binary's clap definition, so what the
//! packages install never drifts from the flags the binary accepts. Both binaries expose it
//! as `generate-docs --out-dir DIR`; `scripts/package.sh` runs it before building the
//! Debian packages.

use clap_complete::Shell;
use std::io;
use std::path::{Path, PathBuf};

/// Shells a completion script is written for, and the file each one's loader looks for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Write `DIR/man/man1/*.1` (one page for the command and one per subcommand, named
/// `bin-sub-subsub.1` as `man bin-sub` expects) and `DIR/completions/{bash,zsh,fish}/…`.
/// Returns every file written, sorted.
pub fn generate(cmd: clap::Command, out_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let name = cmd.get_name().to_string();
    let man_dir = out_dir.join("man").join("man1");
    std::fs::create_dir_all(&man_dir)?;
    // Before `build`: clap_mangen leaves out the generated `help` subcommands only then.
    clap_mangen::generate_to(cmd.clone(), &man_dir)?;
    let mut cmd = cmd;
    cmd.build();
    for shell in SHELLS {
        let dir = out_dir.join("completions").join(shell.to_string());
        std::fs::create_dir_all(&dir)?;
        clap_complete::generate_to(shell, &mut cmd, &name, &dir)?;
    }
    let mut written = Vec::new();
    collect(out_dir, &mut written)?;
    written.sort();
    Ok(written)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}
