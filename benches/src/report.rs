//! The measured tables, printed and optionally written into a Markdown file between
//! `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` markers, leaving everything around them (the
//! prose, the sections nobody measured this run) as it was.

use std::path::Path;

#[derive(Debug, Default)]
pub struct Sections {
    measured: Vec<(String, String)>,
}

impl Sections {
    pub fn add(&mut self, name: &str, markdown: String) {
        println!("<!-- {name} -->\n{markdown}");
        self.measured.push((name.to_owned(), markdown));
    }

    /// Writes every measured section into `file`, if given. A section without its markers in the file
    /// is an error, so a renamed heading cannot silently stop a table from being updated.
    pub fn finish(self, file: Option<&Path>) -> anyhow::Result<()> {
        let Some(file) = file else {
            return Ok(());
        };
        let mut text = std::fs::read_to_string(file)?;
        for (name, markdown) in &self.measured {
            text = replace_between(&text, name, markdown).ok_or_else(|| {
                anyhow::anyhow!("{}: no <!-- bench:{name} --> markers", file.display())
            })?;
        }
        std::fs::write(file, text)?;
        eprintln!(
            "wrote {} section(s) into {}",
            self.measured.len(),
            file.display()
        );
        Ok(())
    }
}

fn replace_between(text: &str, name: &str, markdown: &str) -> Option<String> {
    let open = format!("<!-- bench:{name} -->");
    let close = format!("<!-- /bench:{name} -->");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    let body = markdown.trim_end_matches('\n');
    Some(format!("{}\n{body}\n{}", &text[..start], &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::replace_between;

    #[test]
    fn only_the_named_section_changes() {
        let text = "a\n<!-- bench:x -->\nold\n<!-- /bench:x -->\nb\n<!-- bench:y -->\nkeep\n<!-- /bench:y -->\n";
        let replaced = replace_between(text, "x", "new\nrows\n").unwrap();
        assert_eq!(
            replaced,
            "a\n<!-- bench:x -->\nnew\nrows\n<!-- /bench:x -->\nb\n<!-- bench:y -->\nkeep\n<!-- /bench:y -->\n"
        );
        assert!(replace_between(text, "z", "new").is_none());
    }
}
