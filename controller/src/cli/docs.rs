//! Shell completions and man pages, generated from the clap definitions of [`super::Cli`]
//! (`ingot completions SHELL`, `ingot manpages DIR`; the Debian package ships both).

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::Cli;

/// Writes the completion script of `shell` for `ingot`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "ingot", out);
}

/// Writes `ingot.1` and one page per subcommand (`ingot-serve.1`, `ingot-node-list.1`, ...)
/// into `dir`; returns how many.
pub fn manpages(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let count = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .count();
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bash_completion_names_the_subcommands() {
        let mut out = Vec::new();
        completions(clap_complete::Shell::Bash, &mut out);
        let text = String::from_utf8(out).expect("utf8");
        for word in ["serve", "node", "image", "certs", "secrets"] {
            assert!(text.contains(word), "{word} missing");
        }
    }

    #[test]
    fn man_pages_cover_every_subcommand() {
        let dir = tempfile::tempdir().expect("tempdir");
        let n = manpages(dir.path()).expect("man pages");
        assert!(n >= 8, "only {n} pages");
        let main = std::fs::read_to_string(dir.path().join("ingot.1")).expect("ingot.1");
        assert!(main.contains(".TH ingot 1"), "{main}");
        assert!(dir.path().join("ingot-serve.1").exists());
        assert!(dir.path().join("ingot-node-list.1").exists());
    }
}
