//! `.dockerignore`: which files of a checkout stay out of the build context, as the Docker CLI
//! (the client that packs the context for the classic builder) decides it.
//!
//! Each line is a pattern; `#` starts a comment; blank lines are skipped; `!` makes an exception.
//! A pattern is cleaned as a path (`/foo`, `./foo` and `foo/` all mean `foo`). `*` and `?` stop at
//! `/`, `[…]` is a character class, `\` escapes, `**` matches any number of directories (none
//! too). A pattern excludes a path when it matches the path or one of its parent directories, and
//! the last pattern that matches decides. These are the semantics of moby's `patternmatcher`.

use regex::Regex;

/// The patterns of a `.dockerignore` file.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
    /// The cleaned patterns of the exceptions.
    exceptions: Vec<String>,
}

#[derive(Debug)]
struct Rule {
    regex: Regex,
    exception: bool,
}

impl Ignore {
    /// Parses the text of a `.dockerignore` file; the error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut exceptions = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let pattern = clean(pattern);
            if pattern.is_empty() {
                return Err(format!(".dockerignore:{}: {line:?} names no path", i + 1));
            }
            let regex = Regex::new(&translate(&pattern))
                .map_err(|e| format!(".dockerignore:{}: {line:?}: {e}", i + 1))?;
            rules.push(Rule { regex, exception });
            if exception {
                exceptions.push(pattern);
            }
        }
        Ok(Self { rules, exceptions })
    }

    /// Whether any pattern is an exception.
    pub fn has_exceptions(&self) -> bool {
        !self.exceptions.is_empty()
    }

    /// Whether the excluded directory `dir` must still be looked into: an exception's pattern
    /// names something under it (as the Docker CLI decides: by the pattern's text, so
    /// `!**/package.json` brings nothing back from an excluded `node_modules`).
    pub fn may_include_under(&self, dir: &str) -> bool {
        let dir = format!("{dir}/");
        self.exceptions
            .iter()
            .any(|p| format!("{p}/").starts_with(&dir))
    }

    /// Whether `path` (relative to the context root, `/`-separated) stays out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for rule in &self.rules {
            // An exception can only bring back what is excluded, and a pattern only exclude
            // what is not.
            if rule.exception != excluded {
                continue;
            }
            if rule.regex.is_match(path) || parents(path).any(|p| rule.regex.is_match(p)) {
                excluded = !rule.exception;
            }
        }
        excluded
    }
}

/// The parent directories of `path`: `a`, `a/b` for `a/b/c`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(|(i, _)| &path[..i])
}

/// The pattern as a clean relative path: no `.` or empty components, `..` applied, no leading or
/// trailing `/`.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The pattern as an anchored regular expression.
fn translate(pattern: &str) -> String {
    // A leading `**` with no wildcard after it matches by suffix, at any depth: `**.log` is every
    // `.log` file (moby's suffix match), `**/x` is `x` in any directory.
    if let Some(rest) = pattern.strip_prefix("**")
        && !rest.contains(['*', '?', '[', '\\'])
    {
        return match rest.strip_prefix('/') {
            Some(name) => format!("^(.*/)?{}$", regex::escape(name)),
            None => format!("^.*{}$", regex::escape(rest)),
        };
    }
    let mut out = String::from("^");
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        if in_class {
            match c {
                ']' => {
                    in_class = false;
                    out.push(']');
                }
                '\\' => {
                    if let Some(next) = chars.next() {
                        out.push_str(&regex::escape(&next.to_string()));
                    }
                }
                '[' => out.push_str("\\["),
                c => out.push(c),
            }
            continue;
        }
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    out.push_str(".*");
                } else {
                    out.push_str("(.*/)?");
                }
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => {
                in_class = true;
                out.push('[');
            }
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push_str(&regex::escape(&next.to_string()));
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    if in_class {
        // An unterminated class: Go's matcher refuses it, so does the regex; keep it literal.
        return format!("^{}$", regex::escape(pattern));
    }
    out.push('$');
    out
}

#[cfg(test)]
mod tests {
    use super::Ignore;

    fn ignore(text: &str) -> Ignore {
        Ignore::parse(text).expect("valid")
    }

    #[test]
    fn a_pattern_excludes_a_path_or_anything_under_it() {
        let i = ignore("# build output\nnode_modules\n/target/\n./.env\n");
        assert!(i.excludes("node_modules"));
        assert!(i.excludes("node_modules/a/b.js"));
        assert!(i.excludes("target/debug/x"));
        assert!(i.excludes(".env"));
        assert!(!i.excludes("src/node_modules_x"));
        assert!(!i.excludes("src/.env"), "patterns are anchored at the root");
        assert!(!i.excludes("Dockerfile"));
    }

    #[test]
    fn stars_stop_at_slashes_and_double_stars_do_not() {
        let i = ignore("*.log\n*/temp*\n**/*.secret\ndocs/**\n");
        assert!(i.excludes("a.log"));
        assert!(!i.excludes("dir/a.log"));
        assert!(i.excludes("x/temporary"));
        assert!(!i.excludes("x/y/temporary"));
        assert!(i.excludes("k.secret"));
        assert!(i.excludes("deep/er/k.secret"));
        assert!(i.excludes("docs/a/b"));
        assert!(!i.excludes("docs2"));
        let q = ignore("temp?\n[ab]c.txt\n");
        assert!(q.excludes("temp1") && !q.excludes("temp12"));
        assert!(q.excludes("ac.txt") && q.excludes("bc.txt") && !q.excludes("cc.txt"));
    }

    #[test]
    fn the_last_matching_pattern_decides() {
        let i = ignore("*.md\n!README.md\nREADME*.md\n!README-keep.md\n");
        assert!(i.excludes("CHANGES.md"));
        assert!(i.excludes("README.md"), "excluded again by a later line");
        assert!(!i.excludes("README-keep.md"));
        assert!(i.has_exceptions());
        let dirs = ignore("vendor\n!vendor/keep\n");
        assert!(dirs.excludes("vendor/drop/x"));
        assert!(!dirs.excludes("vendor/keep"));
        assert!(!dirs.excludes("vendor/keep/x"));
        assert!(dirs.may_include_under("vendor"));
        assert!(!dirs.may_include_under("vendor/drop"));
        assert!(!dirs.may_include_under("vend"));
        // An exception that does not name the directory's path brings nothing back from it.
        let deep = ignore("node_modules\n!**/package.json\n");
        assert!(!deep.may_include_under("node_modules"));
    }

    #[test]
    fn a_leading_double_star_without_wildcards_matches_by_suffix() {
        let i = ignore("**.log\n**/secret.txt\n");
        assert!(i.excludes("a.log"));
        assert!(i.excludes("deep/er/a.log"));
        assert!(i.excludes("secret.txt"));
        assert!(i.excludes("x/secret.txt"));
        assert!(!i.excludes("x/not-secret.txt.bak"));
    }

    #[test]
    fn regex_characters_are_literal() {
        let i = ignore("a.b\n(x)+\n");
        assert!(i.excludes("a.b") && !i.excludes("axb"));
        assert!(i.excludes("(x)+") && !i.excludes("xx"));
    }

    #[test]
    fn a_pattern_of_no_path_is_refused_naming_its_line() {
        let e = Ignore::parse("ok\n!\n").expect_err("a bare !");
        assert!(e.starts_with(".dockerignore:2:"), "{e}");
    }
}
