//! Placeholder for `cargo xtask bench write`; another branch provides the real module.

/// Entry point of `cargo xtask bench write`.
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("bench write is provided by another branch and is not merged here yet")
}
