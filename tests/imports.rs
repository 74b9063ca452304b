//! No import circle in the plugin (`plugin/src`) or the core (`plugin/core/src`): reads each
//! crate's sources from `lib.rs` down its `mod` declarations, draws the graph of the paths each
//! module names into another (`use crate::...`, `super::...`, `self::...`, and such paths in
//! expressions), and fails on a circle. Test-only code (`#[cfg(test)]` items and modules) is left
//! out. A module naming its own ancestor or descendant is containment, not an edge; any other
//! reference is lifted to the two sibling subtrees it crosses (for `a::x` naming `b::y`, `a -> b`
//! among the children of their common parent), so at every level of the tree the sibling modules
//! form layers. Needs neither root nor a build of the crates it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root (`["flows", "peers"]`; the root is empty).
type ModPath = Vec<String>;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

/// Rust source to tokens: identifiers, `::` and single punctuation characters. Comments,
/// string, byte-string, raw-string and character literals are skipped; lifetimes are dropped.
fn tokenize(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && raw_string_start(&chars, i).is_some()
        {
            let (hashes, body) = raw_string_start(&chars, i).expect("checked above");
            i = body;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if c == 'b' && next == Some('"') {
            i = skip_string(&chars, i + 2);
        } else if c == 'b' && next == Some('\'') {
            i = skip_char_literal(&chars, i + 1).unwrap_or(i + 2);
        } else if c == '\'' {
            // A character literal, else a lifetime or label (dropped with its name).
            match skip_char_literal(&chars, i) {
                Some(end) => i = end,
                None => {
                    i += 1;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                }
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            tokens.push(Token::Ident(word.trim_start_matches("r#").to_string()));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c == ':' && next == Some(':') {
            tokens.push(Token::PathSep);
            i += 2;
        } else {
            tokens.push(Token::Punct(c));
            i += 1;
        }
    }
    tokens
}

/// The index after a string's closing quote; `i` is just after its opening one.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// A raw string starting at `i` (`r"`, `r#"`, `br#"`...): its number of `#` and where its body
/// starts.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i + if chars[i] == 'b' { 2 } else { 1 };
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None; // the end of an identifier, not a prefix
    }
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

/// A character literal starting at the quote at `i`: the index after it, or `None` when the
/// quote starts a lifetime.
fn skip_char_literal(chars: &[char], i: usize) -> Option<usize> {
    match chars.get(i + 1)? {
        '\\' => {
            let mut j = i + 2;
            while j < chars.len() && chars[j] != '\'' {
                j += 1;
            }
            Some(j + 1)
        }
        _ if chars.get(i + 2) == Some(&'\'') => Some(i + 3),
        _ => None,
    }
}

/// One crate's modules: each one's path and the paths it names (unresolved, with the module
/// they are named from).
#[derive(Default)]
struct Crate {
    modules: BTreeSet<ModPath>,
    /// (the module naming, the path as written: `crate`/`super`/`self`/a child's name first)
    references: Vec<(ModPath, Vec<String>)>,
}

impl Crate {
    fn read(root: &Path) -> Crate {
        let mut krate = Crate::default();
        krate.read_file(&root.join("lib.rs"), root, Vec::new());
        krate
    }

    /// Reads a file module: `dir` is where its children's files are.
    fn read_file(&mut self, file: &Path, dir: &Path, module: ModPath) {
        let source = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let tokens = tokenize(&source);
        self.modules.insert(module.clone());
        let mut i = 0;
        self.read_items(&tokens, &mut i, dir, &module, false);
    }

    /// Reads items from `tokens[*i]` to the end of the file or, `in_block`, to the `}` that
    /// closes the current one.
    fn read_items(
        &mut self,
        tokens: &[Token],
        i: &mut usize,
        dir: &Path,
        module: &ModPath,
        in_block: bool,
    ) {
        let mut test_only = false;
        while *i < tokens.len() {
            match &tokens[*i] {
                Token::Punct('}') if in_block => {
                    *i += 1;
                    return;
                }
                Token::Punct('#') => {
                    let (end, is_cfg_test) = attribute(tokens, *i);
                    test_only |= is_cfg_test;
                    *i = end;
                    continue;
                }
                _ => {}
            }
            if test_only {
                *i = skip_item(tokens, *i);
                test_only = false;
                continue;
            }
            let mut j = *i;
            skip_visibility(tokens, &mut j);
            match (tokens.get(j), tokens.get(j + 1), tokens.get(j + 2)) {
                (Some(Token::Ident(kw)), Some(Token::Ident(name)), Some(Token::Punct(';')))
                    if kw == "mod" =>
                {
                    let child: ModPath = module.iter().cloned().chain([name.clone()]).collect();
                    let flat = dir.join(format!("{name}.rs"));
                    let (file, child_dir) = if flat.exists() {
                        (flat, dir.join(name))
                    } else {
                        (dir.join(name).join("mod.rs"), dir.join(name))
                    };
                    self.read_file(&file, &child_dir, child);
                    *i = j + 3;
                }
                (Some(Token::Ident(kw)), Some(Token::Ident(name)), Some(Token::Punct('{')))
                    if kw == "mod" =>
                {
                    let child: ModPath = module.iter().cloned().chain([name.clone()]).collect();
                    self.modules.insert(child.clone());
                    *i = j + 3;
                    self.read_items(tokens, i, &dir.join(name), &child, true);
                }
                (Some(Token::Ident(kw)), _, _) if kw == "use" => {
                    *i = j + 1;
                    let mut paths = Vec::new();
                    use_tree(tokens, i, Vec::new(), &mut paths);
                    self.references
                        .extend(paths.into_iter().map(|path| (module.clone(), path)));
                }
                _ => {
                    // Any other item: its paths, down to its end.
                    let end = skip_item(tokens, *i);
                    self.expression_paths(&tokens[*i..end], module);
                    *i = end;
                }
            }
        }
    }

    /// The `crate::`, `super::` and `self::` paths inside an item's tokens.
    fn expression_paths(&mut self, tokens: &[Token], module: &ModPath) {
        let mut k = 0;
        while k < tokens.len() {
            let starts_path = matches!(&tokens[k], Token::Ident(w) if w == "crate" || w == "super" || w == "self")
                && tokens.get(k + 1) == Some(&Token::PathSep)
                && (k == 0 || tokens[k - 1] != Token::PathSep);
            if !starts_path {
                k += 1;
                continue;
            }
            let mut path = Vec::new();
            while let Some(Token::Ident(segment)) = tokens.get(k) {
                path.push(segment.clone());
                if tokens.get(k + 1) != Some(&Token::PathSep) {
                    break;
                }
                k += 2;
            }
            k += 1;
            self.references.push((module.clone(), path));
        }
    }

    /// A path named from `module`, resolved to the deepest module it goes through; `None` for
    /// another crate's.
    fn resolve(&self, module: &ModPath, path: &[String]) -> Option<ModPath> {
        let mut at: ModPath;
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => {
                at = Vec::new();
                rest = &path[1..];
            }
            Some("super") | Some("self") => {
                at = module.clone();
                while let Some(first) = rest.first() {
                    match first.as_str() {
                        "super" => {
                            at.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                // `use child::...`: a child module of this one; else another crate.
                let child: ModPath = module.iter().cloned().chain([first.to_string()]).collect();
                if !self.modules.contains(&child) {
                    return None;
                }
                at = module.clone();
            }
            None => return None,
        }
        for segment in rest {
            let deeper: ModPath = at.iter().cloned().chain([segment.clone()]).collect();
            if !self.modules.contains(&deeper) {
                break;
            }
            at = deeper;
        }
        Some(at)
    }

    /// For each module, the graph among its children: `a -> b` when something in `a`'s
    /// subtree names something in `b`'s; each edge with one reference that makes it.
    fn layers(&self) -> BTreeMap<ModPath, BTreeMap<(String, String), String>> {
        let mut layers: BTreeMap<ModPath, BTreeMap<(String, String), String>> = BTreeMap::new();
        for (from, path) in &self.references {
            let Some(to) = self.resolve(from, path) else {
                continue;
            };
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            if common == from.len() || common == to.len() {
                continue; // itself, an ancestor or a descendant
            }
            let edge = (from[common].clone(), to[common].clone());
            let witness = format!("{} names {}", display(from), path.join("::"));
            layers
                .entry(from[..common].to_vec())
                .or_default()
                .entry(edge)
                .or_insert(witness);
        }
        layers
    }
}

fn display(module: &ModPath) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// The attribute starting at `tokens[i]` (`#`): the index after it, and whether it is exactly
/// `#[cfg(test)]`.
fn attribute(tokens: &[Token], i: usize) -> (usize, bool) {
    let mut j = i + 1;
    if tokens.get(j) == Some(&Token::Punct('!')) {
        j += 1;
    }
    let start = j;
    let mut depth = 0;
    while j < tokens.len() {
        match tokens[j] {
            Token::Punct('[') => depth += 1,
            Token::Punct(']') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    let inner = &tokens[start..=j.min(tokens.len() - 1)];
    let cfg_test = [
        Token::Punct('['),
        Token::Ident("cfg".into()),
        Token::Punct('('),
        Token::Ident("test".into()),
        Token::Punct(')'),
        Token::Punct(']'),
    ];
    (j + 1, inner == cfg_test)
}

/// `pub`, `pub(crate)`, `pub(super)`, `pub(in path)`.
fn skip_visibility(tokens: &[Token], j: &mut usize) {
    if tokens.get(*j) == Some(&Token::Ident("pub".into())) {
        *j += 1;
        if tokens.get(*j) == Some(&Token::Punct('(')) {
            while *j < tokens.len() && tokens[*j] != Token::Punct(')') {
                *j += 1;
            }
            *j += 1;
        }
    }
}

/// The index after the item starting at `i`: its `;` or its body's `}`, outside any bracket.
fn skip_item(tokens: &[Token], i: usize) -> usize {
    let mut depth = 0i32;
    let mut j = i;
    while j < tokens.len() {
        match tokens[j] {
            Token::Punct('(') | Token::Punct('[') => depth += 1,
            Token::Punct(')') | Token::Punct(']') => depth -= 1,
            Token::Punct(';') if depth == 0 => return j + 1,
            Token::Punct('{') if depth == 0 => {
                let mut braces = 0;
                while j < tokens.len() {
                    match tokens[j] {
                        Token::Punct('{') => braces += 1,
                        Token::Punct('}') => {
                            braces -= 1;
                            if braces == 0 {
                                // `struct S { .. }` ends here; so do `fn`, `impl`, `mod`.
                                return j + 1;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// A `use` tree from `tokens[*i]` (after `use` or a `{`/`,`): its full paths, `self` in braces
/// naming the prefix. Stops after its `;`, or before the `,`/`}` that ends a branch.
fn use_tree(tokens: &[Token], i: &mut usize, prefix: Vec<String>, paths: &mut Vec<Vec<String>>) {
    let mut path = prefix;
    if tokens.get(*i) == Some(&Token::PathSep) {
        *i += 1; // `use ::std::...`
    }
    loop {
        match tokens.get(*i) {
            Some(Token::Ident(word)) if word == "as" => {
                *i += 2;
            }
            Some(Token::Ident(word)) => {
                if word != "self" || path.is_empty() {
                    path.push(word.clone());
                }
                *i += 1;
            }
            Some(Token::PathSep) => *i += 1,
            Some(Token::Punct('*')) => *i += 1,
            Some(Token::Punct('{')) => {
                *i += 1;
                loop {
                    use_tree(tokens, i, path.clone(), paths);
                    match tokens.get(*i) {
                        Some(Token::Punct(',')) => *i += 1,
                        Some(Token::Punct('}')) => {
                            *i += 1;
                            break;
                        }
                        _ => break,
                    }
                    if tokens.get(*i) == Some(&Token::Punct('}')) {
                        *i += 1;
                        break;
                    }
                }
                if tokens.get(*i) == Some(&Token::Punct(';')) {
                    *i += 1;
                }
                return;
            }
            Some(Token::Punct(';')) => {
                *i += 1;
                paths.push(path);
                return;
            }
            _ => {
                // `,` or `}`: the branch ends; its parent goes on from there.
                paths.push(path);
                return;
            }
        }
    }
}

/// The circles in one layer's graph, each as its modules in order (one per strongly connected
/// component of more than one module).
fn circles(edges: &BTreeMap<(String, String), String>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let reaches = |from: &String, to: &String| -> bool {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(at) = stack.pop() {
            for (a, b) in edges.keys() {
                if a == at && seen.insert(b) {
                    if b == to {
                        return true;
                    }
                    stack.push(b);
                }
            }
        }
        false
    };
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for &node in &nodes {
        if placed.contains(node) {
            continue;
        }
        let component: Vec<String> = nodes
            .iter()
            .filter(|&&other| other == node || (reaches(node, other) && reaches(other, node)))
            .map(|s| s.to_string())
            .collect();
        placed.extend(component.iter().cloned());
        if component.len() > 1 {
            found.push(component);
        }
    }
    found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn assert_no_circle(crate_source: &str) {
    let krate = Crate::read(&workspace().join(crate_source));
    let layers = krate.layers();
    // A reader that found nothing would find no circle either.
    assert!(
        krate.modules.len() >= 10 && layers.values().map(BTreeMap::len).sum::<usize>() >= 10,
        "{crate_source}: {} modules and {} edges read: the checker no longer reads the sources",
        krate.modules.len(),
        layers.values().map(BTreeMap::len).sum::<usize>()
    );
    let mut report = Vec::new();
    for (parent, edges) in layers {
        for circle in circles(&edges) {
            let members: BTreeSet<&String> = circle.iter().collect();
            report.push(format!(
                "circle among {}'s modules {}:",
                display(&parent),
                circle.join(", ")
            ));
            for ((a, b), witness) in &edges {
                if members.contains(a) && members.contains(b) {
                    report.push(format!("  {a} -> {b} ({witness})"));
                }
            }
        }
    }
    assert!(report.is_empty(), "{crate_source}:\n{}", report.join("\n"));
}

#[test]
fn the_core_has_no_import_circle() {
    assert_no_circle("plugin/core/src");
}

#[test]
fn the_plugin_has_no_import_circle() {
    assert_no_circle("plugin/src");
}

/// The checker itself: a circle two levels down, through `super::` and a `use` tree, is found;
/// test-only code, containment, strings and comments are not edges.
#[test]
fn the_checker_finds_a_circle_and_only_one() {
    let dir = std::env::temp_dir().join(format!("flowlens-imports-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(
        dir.join("lib.rs"),
        "//! x\nmod a;\nmod b;\nmod c;\n#[cfg(test)]\nmod tests { use crate::c::Z; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a/mod.rs"),
        "mod x;\nmod y;\npub(crate) use x::X;\nfn f() { let _ = crate::b::B; }\n",
    )
    .unwrap();
    std::fs::write(dir.join("a/x.rs"), "use super::{y::{self, Y}, *};\n").unwrap();
    std::fs::write(
        dir.join("a/y.rs"),
        "/* crate::c */ const S: &str = \"crate::c::C\";\nuse super::x::X;\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.rs"), "use crate::{a, c::C};\n").unwrap();
    std::fs::write(dir.join("c.rs"), "#[cfg(test)]\nuse crate::a::X;\n").unwrap();
    let krate = Crate::read(&dir);
    let layers = krate.layers();
    let _ = std::fs::remove_dir_all(&dir);
    let found: Vec<(ModPath, Vec<Vec<String>>)> = layers
        .iter()
        .map(|(parent, edges)| (parent.clone(), circles(edges)))
        .filter(|(_, found)| !found.is_empty())
        .collect();
    assert_eq!(
        found,
        vec![
            (vec![], vec![vec!["a".to_string(), "b".to_string()]]),
            (
                vec!["a".to_string()],
                vec![vec!["x".to_string(), "y".to_string()]]
            ),
        ]
    );
    let root_edges: Vec<&(String, String)> = layers[&Vec::new()].keys().collect();
    assert_eq!(
        root_edges,
        [
            &("a".to_string(), "b".to_string()),
            &("b".to_string(), "a".to_string()),
            &("b".to_string(), "c".to_string()),
        ]
    );
}
