//! The layer order of the crate's top-level modules, and the test that holds the code to it: a
//! module may use what is below it, never what is above (so there is no import cycle between
//! top-level modules). The order, bottom first, is [`ORDER`]; the crate docs draw it.

/// The top-level modules, bottom first. A file of module `ORDER[i]` may name `crate::ORDER[j]`
/// only for `j <= i`.
pub(crate) const ORDER: &[&str] = &[
    "error",
    "ids",
    "resources",
    "spin",
    "supervise",
    "transport",
    "config",
    "placement",
    "protocol",
    "events",
    "context",
    "objects",
    "registry",
    "invoke",
    "system",
    "node",
    "actors",
    "worker",
    "cluster",
    "api",
    "testing",
    "fuzzing",
    "layers",
];

#[cfg(test)]
mod tests {
    use super::ORDER;
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level module a file belongs to (`None`: the crate root and the binaries).
    fn module_of(src: &Path, file: &Path) -> Option<String> {
        let rel = file.strip_prefix(src).ok()?;
        let first = rel
            .components()
            .next()?
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
        (name != "lib" && name != "bin").then_some(name)
    }

    /// Every `crate::name` in the code of `text` (comments left out), with its line.
    fn references(text: &str) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                let after = &rest[i + "crate::".len()..];
                let before = rest[..i].chars().last();
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // `lumen_macros::…` or `$crate::…` are not this crate's paths.
                if !matches!(before, Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$')
                    && !name.is_empty()
                {
                    out.push((n + 1, name));
                }
                rest = after;
            }
        }
        out
    }

    #[test]
    fn every_module_is_placed_in_the_order() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        for f in &files {
            if let Some(m) = module_of(&src, f) {
                assert!(
                    ORDER.contains(&m.as_str()),
                    "{} belongs to module `{m}`, which has no place in layers::ORDER",
                    f.display()
                );
            }
        }
    }

    #[test]
    fn no_module_uses_one_above_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let rank = |m: &str| ORDER.iter().position(|x| *x == m);
        let mut upward = Vec::new();
        for f in &files {
            let Some(m) = module_of(&src, f) else {
                continue;
            };
            let Some(mine) = rank(&m) else { continue };
            let text = std::fs::read_to_string(f).expect("read source");
            for (line, used) in references(&text) {
                // A name that is no module is a re-export of the crate root, the top layer.
                let above = rank(&used).is_none_or(|theirs| theirs > mine);
                if above {
                    upward.push(format!(
                        "{}:{line}: `{m}` uses `crate::{used}`, which is above it",
                        f.strip_prefix(&src).unwrap_or(f).display()
                    ));
                }
            }
        }
        assert!(
            upward.is_empty(),
            "imports that point up the layers (see src/layers.rs):\n{}",
            upward.join("\n")
        );
    }

    #[test]
    fn the_checker_sees_paths_and_skips_comments() {
        let refs = references(
            "use crate::objects::read;\n// crate::api in a comment\nlet x = crate::ids::NodeId(0); // crate::worker\n$crate::api::x();",
        );
        assert_eq!(
            refs,
            vec![(1, "objects".to_string()), (3, "ids".to_string())]
        );
    }
}
