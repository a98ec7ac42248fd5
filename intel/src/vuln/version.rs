//! Versions and version ranges as advisories write them.
//!
//! A [`Version`] is any dotted/alphanumeric firmware or software version ("9.33.1",
//! "v2.3.1b", "8.1.1 build 11", "B.06.18", "012U000040", "12.2.x.x"). It splits into numeric
//! and alphabetic segments and compares segment by segment with one total order, so sorting
//! and range tests never disagree:
//!
//! - numbers compare numerically (any length: leading zeros dropped, no overflow);
//! - a missing segment counts as `0`, so "1.0" == "1.0.0";
//! - pre-release words (alpha, beta, rc, pre, dev, preview, snapshot) sort below `0`, so
//!   "1.0rc1" < "1.0"; any other word sorts between `0` and `1`, so "2.3.1" < "2.3.1b" <
//!   "2.3.2" and "8.1.1" < "8.1.1 build 11" < "8.1.2";
//! - an `x`/`X`/`*` segment is a wildcard: "12.2.x" stands for every 12.2 version.
//!
//! A [`VersionSpec`] is what a CSAF product_tree leaf says about affected versions: the
//! package-URL `vers:` syntax (`vers:all/*`, `vers:intdot/>=1.0|<2.3`, as newer CISA files
//! use) or CISA's plain-text forms ("<=3.2", ">= 4.4 | <= 4.12", "2.3.6 and below",
//! "All versions", "9.13 | 9.19"). Anything else (dates, model lists, prose) is kept as
//! [`VersionSpec::Unparsed`] and never treated as a range.

use std::cmp::Ordering;
use std::fmt;

/// One segment of a version; ordered through [`rank`], not derived.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    /// Digits with leading zeros removed ("" is zero).
    Num(String),
    /// A lowercase word.
    Word(String),
    /// x, X or *: every value from here on.
    Wild,
}

/// Single letters "a"/"b" are not here: in device firmware they are revision suffixes
/// ("2.4A", "v2.3.1b") that come after the plain version.
const PRE_RELEASE: &[&str] = &["alpha", "beta", "rc", "pre", "dev", "preview", "snapshot"];

fn is_pre_release(w: &str) -> bool {
    PRE_RELEASE.contains(&w)
}

/// Rank of a segment against the others; ties compared by value.
fn rank(seg: Option<&Segment>) -> (u8, &str) {
    match seg {
        Some(Segment::Word(w)) if is_pre_release(w) => (0, w.as_str()),
        None => (1, ""),
        Some(Segment::Num(n)) if n.is_empty() => (1, ""),
        Some(Segment::Word(w)) => (2, w.as_str()),
        Some(Segment::Num(n)) => (3, n.as_str()),
        Some(Segment::Wild) => (4, ""),
    }
}

fn cmp_segment(a: Option<&Segment>, b: Option<&Segment>) -> Ordering {
    let (ra, va) = rank(a);
    let (rb, vb) = rank(b);
    ra.cmp(&rb).then_with(|| if ra == 3 { va.len().cmp(&vb.len()).then_with(|| va.cmp(vb)) } else { va.cmp(vb) })
}

/// A parsed version. Equality and order follow the module rules ("1.0" == "1.0.0").
#[derive(Debug, Clone)]
pub struct Version {
    text: String,
    /// Segments up to (not including) the first wildcard.
    segments: Vec<Segment>,
    wildcard: bool,
}

impl Version {
    /// Parses a version. Rejects text that is not a version: empty, prose ("July 1 2017",
    /// "2nd Edition", "CS2 Avance | Amingo"), model names ("MMT-1710"), anything with
    /// characters other than letters, digits, `.-_+~:` and single spaces between a few
    /// version words.
    pub fn parse(text: &str) -> Option<Version> {
        let t = text.trim();
        if t.is_empty() || t.len() > 64 {
            return None;
        }
        if !t.chars().all(|c| c.is_ascii_alphanumeric() || " .-_+~:*".contains(c)) {
            return None;
        }
        let mut words: Vec<&str> = t.split_whitespace().collect();
        let first_lower = words[0].to_ascii_lowercase();
        if matches!(first_lower.as_str(), "version" | "ver" | "rev" | "release" | "firmware" | "fw") && words.len() > 1
        {
            words.remove(0);
        }
        if words.len() > 5 {
            return None;
        }
        let mut first = words[0];
        if first.len() > 1 && (first.starts_with('v') || first.starts_with('V')) && first.as_bytes()[1].is_ascii_digit()
        {
            first = &first[1..];
        }
        if !first_word_is_version(first, words.get(1).copied()) {
            return None;
        }
        for w in &words[1..] {
            let lw = w.to_ascii_lowercase();
            let qualifier = matches!(
                lw.as_str(),
                "build" | "sp" | "service" | "pack" | "patch" | "update" | "release" | "rev" | "mr" | "hotfix" | "r"
            ) || is_pre_release(&lw);
            if !qualifier && !w.bytes().any(|b| b.is_ascii_digit()) {
                return None;
            }
        }
        let mut segments = Vec::new();
        let mut wildcard = false;
        'outer: for w in std::iter::once(first).chain(words[1..].iter().copied()) {
            for piece in split_segments(w) {
                if piece == "x" || piece == "X" || piece == "*" {
                    wildcard = true;
                    break 'outer;
                }
                if piece.as_bytes()[0].is_ascii_digit() {
                    segments.push(Segment::Num(piece.trim_start_matches('0').to_string()));
                } else {
                    segments.push(Segment::Word(piece.to_ascii_lowercase()));
                }
            }
        }
        if segments.is_empty() && !wildcard {
            return None;
        }
        Some(Version { text: t.to_string(), segments, wildcard })
    }

    fn segment(&self, i: usize) -> Option<&Segment> {
        static WILD: Segment = Segment::Wild;
        match self.segments.get(i) {
            Some(s) => Some(s),
            None if self.wildcard && i == self.segments.len() => Some(&WILD),
            None => None,
        }
    }

    /// The text this version was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True for "12.x", "5.x.x", "*": the version stands for every version with its prefix.
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// Compares `self` (a concrete version) with `bound`, which may be a wildcard: against
    /// "12.2.x" every 12.2 version is `Equal`, 12.1.9 is `Less`, 12.3 is `Greater`.
    pub fn cmp_to_bound(&self, bound: &Version) -> Ordering {
        if bound.wildcard {
            for (i, b) in bound.segments.iter().enumerate() {
                let o = cmp_segment(self.segments.get(i), Some(b));
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        } else {
            self.cmp(bound)
        }
    }
}

/// A version is a letter run or digit run; ".", "-", "_", "+", "~", ":" and spaces separate.
fn split_segments(w: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = w.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() || c.is_ascii_alphabetic() {
            let digit = c.is_ascii_digit();
            let start = i;
            while i < b.len() && b[i].is_ascii_alphanumeric() && b[i].is_ascii_digit() == digit {
                i += 1;
            }
            out.push(&w[start..i]);
        } else if c == b'*' {
            out.push(&w[i..i + 1]);
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

/// The first word of a version starts with a digit ("9.33", "2.4A", "012U000040"), is a
/// wildcard, is at most two letters followed by digits or a dot ("B.06.18", "BT03",
/// "VM5.0", "R4.1L1"), a single letter ("K", "N": revision letters), or at most two letters
/// followed by a numeric word ("HD 16"). Longer words ("MMT-1710", "May 2018", "Amingo")
/// are names or dates, not versions.
fn first_word_is_version(first: &str, next: Option<&str>) -> bool {
    let b = first.as_bytes();
    if b.is_empty() {
        return false;
    }
    if b[0].is_ascii_digit() || first == "*" {
        return true;
    }
    let letters = b.iter().take_while(|c| c.is_ascii_alphabetic()).count();
    if letters == b.len() {
        return letters == 1 || (letters <= 2 && next.is_some_and(|n| n.bytes().all(|c| c.is_ascii_digit())));
    }
    letters <= 2
        && (b[letters].is_ascii_digit() || (b[letters] == b'.' && b.get(letters + 1).is_some_and(u8::is_ascii_digit)))
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    /// Lexicographic over segments, a missing segment counting as 0. A wildcard is one
    /// more segment above every other value and ends the version, so "12.2.x" sorts after
    /// every concrete 12.2 version; the order stays total for sorting range bounds.
    fn cmp(&self, other: &Self) -> Ordering {
        let n =
            (self.segments.len() + usize::from(self.wildcard)).max(other.segments.len() + usize::from(other.wildcard));
        for i in 0..n {
            let o = cmp_segment(self.segment(i), other.segment(i));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A comparison in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One `<comparator><version>` term of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub op: Comparator,
    pub version: Version,
}

/// What an advisory says about the versions of one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    /// Every version ("vers:all/*", "All versions", "*").
    All,
    /// A `vers`-style list of constraints (plain versions are `=` terms).
    Range(Vec<Constraint>),
    /// Text that does not state versions in a comparable way (dates, model lists, prose).
    Unparsed(String),
}

impl VersionSpec {
    /// Parses a CSAF product_version / product_version_range name. Never panics. A trailing
    /// parenthesised note ("<= 1.54 (integrated into GE MobileLink)") is dropped.
    pub fn parse(text: &str) -> VersionSpec {
        let raw = text.trim();
        let unparsed = || VersionSpec::Unparsed(raw.to_string());
        if raw.len() > 512 {
            return unparsed();
        }
        if let Some(rest) = raw.strip_prefix("vers:") {
            return match parse_vers(rest) {
                Some(s) => s,
                None => unparsed(),
            };
        }
        let mut t = strip_notes(raw);
        // "8.x model 35700BAX2": the model belongs to the product; the version is "8.x".
        if let Some(at) = t.to_ascii_lowercase().find(" model ") {
            t.truncate(at);
        }
        let lower = t.to_ascii_lowercase();
        if matches!(lower.as_str(), "*" | "all" | "all versions" | "any" | "any version" | "all/*") {
            return VersionSpec::All;
        }
        // "2.3.6 and below", "9.33.1 and earlier", "04.00.00 or newer".
        for (suffix, op) in [
            (" and below", Comparator::Le),
            (" and earlier", Comparator::Le),
            (" and prior", Comparator::Le),
            (" or earlier", Comparator::Le),
            (" and older", Comparator::Le),
            (" and above", Comparator::Ge),
            (" and later", Comparator::Ge),
            (" or later", Comparator::Ge),
            (" and newer", Comparator::Ge),
            (" or newer", Comparator::Ge),
        ] {
            if let Some(v) = lower.strip_suffix(suffix) {
                let v = &t[..v.len()];
                return match Version::parse(v) {
                    Some(version) => VersionSpec::Range(vec![Constraint { op, version }]),
                    None => unparsed(),
                };
            }
        }
        match parse_constraints(&t) {
            Some(c) if !c.is_empty() => VersionSpec::Range(c),
            _ => unparsed(),
        }
    }

    /// Whether a concrete version is inside. `None` when the spec cannot tell (unparsed).
    /// The algorithm is the `vers` specification's containment test.
    pub fn contains(&self, v: &Version) -> Option<bool> {
        match self {
            VersionSpec::All => Some(true),
            VersionSpec::Unparsed(_) => None,
            VersionSpec::Range(cs) => Some(range_contains(cs, v)),
        }
    }
}

/// Removes parenthesised notes: "9.x (with Wireless Battery Modules ...)" -> "9.x". An
/// unbalanced "(" drops the rest of the text. If nothing is left, the text is kept as is.
fn strip_notes(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut depth = 0usize;
    for c in t.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.is_empty() {
        t.to_string()
    } else {
        out
    }
}

/// `vers:<scheme>/<constraints>` after the "vers:" prefix.
fn parse_vers(rest: &str) -> Option<VersionSpec> {
    let (_scheme, constraints) = rest.split_once('/')?;
    let constraints = percent_decode(constraints.trim());
    if constraints == "*" {
        return Some(VersionSpec::All);
    }
    let cs = parse_constraints(&constraints)?;
    if cs.is_empty() {
        None
    } else {
        Some(VersionSpec::Range(cs))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            if let Some(Ok(v)) = s.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16)) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `|`-separated terms, each an optional comparator and a version. Every term must parse,
/// so prose never half-parses into a range.
fn parse_constraints(t: &str) -> Option<Vec<Constraint>> {
    let mut out = Vec::new();
    for term in t.split('|') {
        let term = term.trim();
        if term.is_empty() {
            continue;
        }
        let (op, rest) = if let Some(r) = term.strip_prefix(">=") {
            (Comparator::Ge, r)
        } else if let Some(r) = term.strip_prefix("<=") {
            (Comparator::Le, r)
        } else if let Some(r) = term.strip_prefix("!=") {
            (Comparator::Ne, r)
        } else if let Some(r) = term.strip_prefix('>') {
            (Comparator::Gt, r)
        } else if let Some(r) = term.strip_prefix('<') {
            (Comparator::Lt, r)
        } else if let Some(r) = term.strip_prefix('=') {
            (Comparator::Eq, r)
        } else {
            (Comparator::Eq, term)
        };
        out.push(Constraint { op, version: Version::parse(rest.trim())? });
    }
    Some(out)
}

fn range_contains(cs: &[Constraint], v: &Version) -> bool {
    for c in cs {
        let eq = v.cmp_to_bound(&c.version) == Ordering::Equal;
        match c.op {
            Comparator::Eq | Comparator::Le | Comparator::Ge if eq => return true,
            Comparator::Ne if eq => return false,
            _ => {}
        }
    }
    let mut rest: Vec<&Constraint> = cs.iter().filter(|c| !matches!(c.op, Comparator::Eq | Comparator::Ne)).collect();
    if rest.is_empty() {
        return false;
    }
    rest.sort_by(|a, b| a.version.cmp(&b.version));
    let below = |c: &Constraint| v.cmp_to_bound(&c.version) == Ordering::Less;
    let above = |c: &Constraint| v.cmp_to_bound(&c.version) == Ordering::Greater;
    let first = rest[0];
    let last = rest[rest.len() - 1];
    if matches!(first.op, Comparator::Lt | Comparator::Le) && below(first) {
        return true;
    }
    if matches!(last.op, Comparator::Gt | Comparator::Ge) && above(last) {
        return true;
    }
    rest.windows(2).any(|w| {
        matches!(w[0].op, Comparator::Gt | Comparator::Ge)
            && matches!(w[1].op, Comparator::Lt | Comparator::Le)
            && above(w[0])
            && below(w[1])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn firmware_versions_order() {
        let ordered =
            ["1.0rc1", "1.0", "1.0a", "1.0.1", "2.3.1", "2.3.1b", "2.3.2", "8.1.1", "8.1.1 build 11", "8.1.2"];
        for w in ordered.windows(2) {
            assert!(v(w[0]) < v(w[1]), "{} < {}", w[0], w[1]);
        }
        assert_eq!(v("1.0"), v("1.0.0"));
        assert_eq!(v("v2.3.1b"), v("2.3.1b"));
        assert!(v("9.33.1") > v("9.33"));
        assert!(v("B.06.17") < v("B.06.18"));
        assert!(v("A.01") < v("C.02"));
        assert!(v("012U000040") > v("012U000039"));
        assert!(v("4107600010.23") > v("999.1"));
        assert!(v("99999999999999999999999.1") > v("9999999999999999999999.9"));
    }

    #[test]
    fn prose_and_models_are_not_versions() {
        for s in ["", "Amingo", "2nd Edition", "May 2018", "july 1 2017", "MMT-1710", "CR-IR 357", "IGS", "Rev J-M"] {
            assert!(Version::parse(s).is_none(), "{s:?} parsed");
        }
        for s in ["K", "N", "HD 16", "BT03", "VM5.0", "R4.1L1", "S4 A.07.107", "1.8.4 Service Pack 01", "12.2.x.x"] {
            assert!(Version::parse(s).is_some(), "{s:?} rejected");
        }
    }

    fn contains(spec: &str, ver: &str) -> Option<bool> {
        VersionSpec::parse(spec).contains(&v(ver))
    }

    #[test]
    fn cisa_plain_text_ranges() {
        assert_eq!(contains("<= 9.33.1", "9.33.1"), Some(true));
        assert_eq!(contains("<= 9.33.1", "9.33.0"), Some(true));
        assert_eq!(contains("<= 9.33.1", "9.33.1.4"), Some(false));
        assert_eq!(contains("<=3.2", "3.2"), Some(true));
        assert_eq!(contains("< 3.2", "3.2"), Some(false));
        assert_eq!(contains(">= 4.4 | <= 4.12", "4.10"), Some(true));
        assert_eq!(contains(">= 4.4 | <= 4.12", "4.13"), Some(false));
        assert_eq!(contains(">= 4.4 | <= 4.12", "4.3"), Some(false));
        assert_eq!(contains("9.13 | 9.19 | 9.33 | 12.1", "9.19"), Some(true));
        assert_eq!(contains("9.13 | 9.19 | 9.33 | 12.1", "9.20"), Some(false));
        assert_eq!(contains("2.3.6 and  below", "2.3.5"), Some(true));
        assert_eq!(contains("2.3.6 and  below", "2.4"), Some(false));
        assert_eq!(contains("<= 12.2.x.x", "12.2.9.1"), Some(true));
        assert_eq!(contains("<= 12.2.x.x", "12.3"), Some(false));
        assert_eq!(contains("< 3.x", "2.9"), Some(true));
        assert_eq!(contains("< 3.x", "3.1"), Some(false));
        assert_eq!(contains("2.X", "2.5.1"), Some(true));
        assert_eq!(contains("2.X", "3.0"), Some(false));
        assert_eq!(contains("<= 1.54 (integrated into GE MobileLink)", "1.50"), Some(true));
        assert_eq!(contains("v9.x (with Wireless Battery Module >= v22D19 | <= v22D28)", "9.2"), Some(true));
        assert_eq!(contains("< 1.8.4 Service Pack 01", "1.8.4"), Some(true));
        assert_eq!(contains("v8.x model 35700BAX2", "8.2"), Some(true));
        assert_eq!(contains("v8.x model 35700BAX2", "9.0"), Some(false));
        assert_eq!(contains("<= U61 |<= L81", "L80"), Some(true));
        assert_eq!(contains("All versions", "7"), Some(true));
        assert_eq!(contains("* (end-of-life 2011)", "7"), Some(true));
        assert_eq!(contains("< august 28", "1.0"), None);
        assert_eq!(contains("CS2  Avance | Amingo | Avance CS2", "1.0"), None);
        assert_eq!(contains("distributed  < april 1, 2018", "1.0"), None);
    }

    #[test]
    fn vers_uris() {
        assert_eq!(VersionSpec::parse("vers:all/*"), VersionSpec::All);
        assert_eq!(contains("vers:intdot/<3.2", "3.1.9"), Some(true));
        assert_eq!(contains("vers:intdot/<3.2", "3.2"), Some(false));
        assert_eq!(contains("vers:generic/>=1.0|<2.0|!=1.5", "1.5"), Some(false));
        assert_eq!(contains("vers:generic/>=1.0|<2.0|!=1.5", "1.6"), Some(true));
        assert_eq!(contains("vers:semver/%3E%3D1.0.0%7C%3C1.2.0", "1.1.0"), Some(true));
        assert_eq!(contains("vers:generic/>=1.0|<=1.4|>=2.0|<2.2", "1.7"), Some(false));
        assert_eq!(contains("vers:generic/>=1.0|<=1.4|>=2.0|<2.2", "2.1"), Some(true));
        assert!(matches!(VersionSpec::parse("vers:generic/"), VersionSpec::Unparsed(_)));
        assert!(matches!(VersionSpec::parse("vers:nonsense"), VersionSpec::Unparsed(_)));
    }
}
