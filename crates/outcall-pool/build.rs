//! Finds the libphonenumber geocoding and carrier text files that the `phonenumber` crate ships
//! (it does not read them itself) and tells the compiler where they are, so the Chinese files
//! are embedded in the binary. The crate version is pinned, so the folder name is known.

use std::path::PathBuf;

const CRATE_DIR: &str = "phonenumber-0.3.10+9.0.33";

fn main() {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let mut found = None;
    for registry in [home.join("registry/src"), PathBuf::from("vendor")] {
        let Ok(entries) = std::fs::read_dir(&registry) else {
            continue;
        };
        for e in entries.flatten() {
            let candidates = [
                e.path().join(CRATE_DIR).join("assets"),
                e.path().join("assets"),
            ];
            for c in candidates {
                if c.join("geocoding/zh/86.txt").is_file()
                    && c.to_string_lossy().contains(CRATE_DIR)
                {
                    found = Some(c);
                }
            }
        }
    }
    let assets = found.unwrap_or_else(|| {
        panic!("the {CRATE_DIR} sources (with assets/geocoding) are not in the cargo registry")
    });
    println!(
        "cargo:rustc-env=OUTCALL_PHONENUMBER_ASSETS={}",
        assets.display()
    );
    // Every country's English geocoding and carrier file, as `(country code, text)` tables.
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let mut code = String::new();
    for (name, dir) in [("GEO_EN", "geocoding/en"), ("CARRIER_EN", "carrier/en")] {
        let mut files: Vec<_> = std::fs::read_dir(assets.join(dir))
            .expect("libphonenumber asset folder")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        code.push_str(&format!("pub static {name}: &[(&str, &str)] = &[\n"));
        for f in files {
            let cc = f
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            code.push_str(&format!(
                "    ({cc:?}, include_str!({:?})),\n",
                f.display().to_string()
            ));
        }
        code.push_str("];\n");
    }
    std::fs::write(out.join("libphonenumber_en.rs"), code).expect("write the generated tables");
    println!("cargo:rerun-if-changed=build.rs");
}
