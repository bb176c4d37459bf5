//! `regstore drivers`: every registered driver and middleware with its
//! parameters.

use std::io::Write;

use regstore_core::ParamSpec;

fn print_params(out: &mut impl Write, params: &[ParamSpec]) -> std::io::Result<()> {
    if params.is_empty() {
        return writeln!(out, "    (no parameters)");
    }
    let defaults: Vec<String> = params
        .iter()
        .map(|p| match (p.default, p.required) {
            (Some(""), _) => "default \"\"".to_owned(),
            (Some(d), _) => format!("default {d}"),
            (None, true) => "required".to_owned(),
            (None, false) => "optional".to_owned(),
        })
        .collect();
    let width = params.iter().map(|p| p.name.len()).max().unwrap_or(0);
    let dwidth = defaults.iter().map(String::len).max().unwrap_or(0);
    for (p, default) in params.iter().zip(&defaults) {
        writeln!(
            out,
            "    {:width$}  {:8}  {default:dwidth$}  {}",
            p.name,
            p.kind.to_string(),
            p.doc
        )?;
    }
    Ok(())
}

/// Writes the table `regstore drivers` prints.
///
/// # Errors
/// Write errors.
pub fn print_drivers(out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Storage drivers (storage: <name>: in config, --driver <name>):"
    )?;
    for f in regstore_core::registry::drivers() {
        writeln!(out, "\n  {} — {}", f.name, f.description)?;
        print_params(out, f.params)?;
    }
    writeln!(
        out,
        "\nStorage middleware (middleware: storage: - name: <name>):"
    )?;
    let middlewares = regstore_core::registry::middlewares();
    if middlewares.is_empty() {
        writeln!(out, "\n  (none in this build)")?;
    }
    for f in middlewares {
        writeln!(out, "\n  {} — {}", f.name, f.description)?;
        print_params(out, f.params)?;
    }
    Ok(())
}
