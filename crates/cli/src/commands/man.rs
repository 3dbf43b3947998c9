//! `meshtrust man`: man pages from the same clap definitions as `--help` and the shell completions, so the
//! three never disagree. One page for `meshtrust` and one per subcommand (`meshtrust-ca-rotate-root.1`).

use std::path::Path;
use std::process::ExitCode;

use crate::args::ManArgs;
use crate::error::CliError;

pub fn run(args: ManArgs) -> Result<ExitCode, CliError> {
    let command = <crate::args::Cli as clap::CommandFactory>::command();
    match &args.out {
        None => {
            let page = render(&command)?;
            print!("{}", String::from_utf8_lossy(&page));
        }
        Some(dir) => {
            let pages = pages(command)?;
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            for (name, page) in &pages {
                let path = dir.join(format!("{name}.1"));
                std::fs::write(&path, page).map_err(|e| io(&path, e))?;
            }
            eprintln!(
                "wrote {} man pages into {} (try `man -l {}`)",
                pages.len(),
                dir.display(),
                dir.join("meshtrust.1").display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn io(path: &Path, e: std::io::Error) -> CliError {
    CliError::Usage(format!(
        "cannot write man pages into {}: {e}",
        path.display()
    ))
}

fn render(command: &clap::Command) -> Result<Vec<u8>, CliError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .map_err(|e| {
            CliError::Usage(format!(
                "cannot render the man page of {}: {e}",
                command.get_name()
            ))
        })?;
    Ok(out)
}

/// Every page, named `meshtrust`, `meshtrust-<sub>`, `meshtrust-<sub>-<subsub>`.
pub fn pages(command: clap::Command) -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let mut command = command;
    // Global flags propagate into subcommands only once clap builds the tree.
    command.build();
    let mut out = Vec::new();
    collect(&command, command.get_name().to_string(), &mut out)?;
    Ok(out)
}

fn collect(
    command: &clap::Command,
    name: String,
    out: &mut Vec<(String, Vec<u8>)>,
) -> Result<(), CliError> {
    let named = command.clone().display_name(name.clone());
    out.push((name.clone(), render(&named)?));
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        collect(sub, format!("{name}-{}", sub.get_name()), out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subcommand_gets_a_page_with_its_flags() {
        let pages = pages(<crate::args::Cli as clap::CommandFactory>::command()).expect("pages");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "meshtrust",
            "meshtrust-apply",
            "meshtrust-init",
            "meshtrust-ca-rotate-root",
            "meshtrust-man",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let (_, init) = pages
            .iter()
            .find(|(n, _)| n == "meshtrust-init")
            .expect("init page");
        let text = String::from_utf8_lossy(init);
        assert!(text.starts_with(".ie"), "a roff page: {text}");
        assert!(text.contains(".TH meshtrust-init 1"), "{text}");
        assert!(text.contains("kubeconfig"), "{text}");
    }
}
