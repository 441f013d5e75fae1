//! Glob patterns (`*` any run, `?` one char) for model names, tool names and URIs.
//! Matching is iterative with one backtrack point: no recursion, worst case O(pattern × text).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Any,
    Exact,
    Prefix(String),
    General,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        let kind = if pattern == "*" {
            Kind::Any
        } else if !pattern.contains(['*', '?']) {
            Kind::Exact
        } else if pattern.ends_with('*') && !pattern[..pattern.len() - 1].contains(['*', '?']) {
            Kind::Prefix(pattern[..pattern.len() - 1].to_string())
        } else {
            Kind::General
        };
        Glob { pattern: pattern.to_string(), kind }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn is_exact(&self) -> bool {
        self.kind == Kind::Exact
    }

    pub fn matches(&self, text: &str) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact => self.pattern == text,
            Kind::Prefix(p) => text.starts_with(p.as_str()),
            Kind::General => wildcard_match(self.pattern.as_bytes(), text.as_bytes()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Glob::new(&s))
    }
}

fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = text.get(t) {
        match pattern.get(p) {
            Some(&pc) if pc == b'?' || pc == c => {
                p += 1;
                t += 1;
            }
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pattern.len()
}

impl AsRef<str> for Glob {
    fn as_ref(&self) -> &str {
        &self.pattern
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn glob_forms() {
        assert!(Glob::new("*").matches("anything"));
        assert!(Glob::new("gpt-4o").matches("gpt-4o"));
        assert!(!Glob::new("gpt-4o").matches("gpt-4o-mini"));
        assert!(Glob::new("gpt-4*").matches("gpt-4o-mini"));
        assert!(Glob::new("claude-*-sonnet").matches("claude-3-5-sonnet"));
        assert!(!Glob::new("claude-*-sonnet").matches("claude-3-5-haiku"));
        assert!(Glob::new("db.?_row").matches("db.x_row"));
        assert!(Glob::new("*delete*").matches("database.delete_row"));
        assert!(!Glob::new("a*b*c").matches("aXbY"));
        assert!(Glob::new("file:///data/*").matches("file:///data/x/y"));
    }
}
