//! Render a policy JSON file with every target into a folder:
//! `cargo run -p wardline-export --example render -- policy.json out/`.

use std::path::PathBuf;
use wardline_export::{all_exporters, ResolvedPolicy};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, out] = args.as_slice() else {
        eprintln!("usage: render <policy.json> <output folder>");
        std::process::exit(2);
    };
    let fail = |what: String| -> ! {
        eprintln!("{what}");
        std::process::exit(1)
    };
    let text = std::fs::read_to_string(input).unwrap_or_else(|e| fail(format!("reading {input}: {e}")));
    let policy: ResolvedPolicy =
        serde_json::from_str(&text).unwrap_or_else(|e| fail(format!("{input} is not a ResolvedPolicy: {e}")));
    for exporter in all_exporters() {
        match exporter.render_all(&policy) {
            Ok(files) => {
                for f in files {
                    let path = PathBuf::from(out).join(exporter.name()).join(&f.path);
                    let written =
                        std::fs::create_dir_all(path.parent().unwrap()).and_then(|_| std::fs::write(&path, &f.bytes));
                    if let Err(e) = written {
                        fail(format!("writing {}: {e}", path.display()));
                    }
                    println!("wrote {}", path.display());
                }
            }
            Err(e) => eprintln!("{}: {e}", exporter.name()),
        }
    }
}
