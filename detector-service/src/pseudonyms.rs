//! Optional pseudonymization of concept ids on their way to the cloud: `<bo>` becomes `<c1>`
//! in everything sent, and `<c1>` becomes `<bo>` again in everything received.
//!
//! Replacement is one pass over `<...>` tokens with a lookup table, so an id that happens to
//! look like an alias (a user concept named `c2`) cannot be replaced twice.

use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct Pseudonyms {
    hide: HashMap<String, String>,
    reveal: HashMap<String, String>,
}

impl Pseudonyms {
    /// Aliases `<c1>`, `<c2>`, … in the order of `bracketed_ids`.
    pub fn new(bracketed_ids: &[String]) -> Self {
        let mut pseudonyms = Pseudonyms::default();
        for (index, id) in bracketed_ids.iter().enumerate() {
            let alias = format!("<c{}>", index + 1);
            pseudonyms.hide.insert(id.clone(), alias.clone());
            pseudonyms.reveal.insert(alias, id.clone());
        }
        pseudonyms
    }

    /// No-op pseudonyms, for requests that did not ask for them.
    pub fn identity() -> Self {
        Pseudonyms::default()
    }

    pub fn hide(&self, text: &str) -> String {
        replace_tokens(text, &self.hide)
    }

    pub fn reveal(&self, text: &str) -> String {
        replace_tokens(text, &self.reveal)
    }
}

fn replace_tokens(text: &str, table: &HashMap<String, String>) -> String {
    if table.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let candidate = &rest[open..];
        match candidate[1..].find(['>', '<']) {
            Some(offset) if candidate.as_bytes()[offset + 1] == b'>' => {
                let token = &candidate[..offset + 2];
                out.push_str(table.get(token).map(String::as_str).unwrap_or(token));
                rest = &candidate[offset + 2..];
            }
            _ => {
                out.push('<');
                rest = &candidate[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_and_reveals_whole_tokens_only_once() {
        let names = Pseudonyms::new(&["<bo>".into(), "<c1>".into(), "<bob>".into()]);
        let hidden = names.hide("Is <bo> next to <c1> and <bob>? <bo");
        assert_eq!(hidden, "Is <c1> next to <c2> and <c3>? <bo");
        assert_eq!(names.reveal(&hidden), "Is <bo> next to <c1> and <bob>? <bo");
        assert_eq!(names.hide("a <<bo>> b"), "a <<c1>> b");
    }
}
