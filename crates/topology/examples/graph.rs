//! Prints a topology file as Graphviz dot, Mermaid or JSON (what `berth lab graph` shows),
//! e.g. to draw the example labs' pictures:
//! `cargo run -p berth-topology --example graph -- FILE [dot|mermaid|json] | dot -Tsvg`.

use std::path::PathBuf;
use std::process::ExitCode;

use berth_topology::{parse_file, render};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(file), format) = (args.next(), args.next()) else {
        eprintln!("usage: graph FILE [dot|mermaid|json]");
        return ExitCode::from(2);
    };
    let parsed = match parse_file(&PathBuf::from(&file)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("graph: {e}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &parsed.warnings {
        eprintln!("graph: {warning}");
    }
    let t = &parsed.topology;
    match format.as_deref().unwrap_or("dot") {
        "dot" => print!("{}", render::dot(t)),
        "mermaid" => print!("{}", render::mermaid(t)),
        "json" => match serde_json::to_string_pretty(&render::json(t)) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("graph: {e}");
                return ExitCode::FAILURE;
            }
        },
        other => {
            eprintln!("graph: unknown format {other:?}: expected dot, mermaid or json");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
