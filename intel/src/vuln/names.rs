//! Vendor and product names, normalized for matching.
//!
//! Advisories, the IEEE registry, the knowledge base and device self-descriptions spell one
//! manufacturer many ways ("Becton, Dickinson and Company (BD)", "BD/CareFusion", "ALARIS
//! MEDICAL SYSTEMS, INC.", KB id `bd`). [`vendor_keys`] reduces any of them to canonical
//! keys: lowercase ASCII words, corporate suffixes dropped, then an alias table
//! ([`VENDOR_ALIASES`]) matched on whole leading words. Unknown vendors keep their
//! normalized name as key, so "Insulet" and "Insulet Corporation" still meet.
//!
//! Product names become [`ProductPattern`]s: the distinctive words of the name, every one
//! of which must appear in the device's model (or all in its OS) for a match. The vendor's own words
//! and generic words ("patient", "monitor", "system", "series"...) are dropped, and
//! parenthesised text (abbreviations, part numbers) is optional. "MX400-550" and
//! "MX400-MX850" are model ranges that accept "MX450"; a bare letter family ("MX") accepts
//! "MX450". Product names with nothing distinctive left never match.

/// Canonical vendor key, then the normalized names (whole leading words) that mean it.
/// KB vendor ids (intel/kb/vendors.toml) normalize to one of these too (`philips_medical`
/// → "philips medical" → philips).
pub const VENDOR_ALIASES: &[(&str, &[&str])] = &[
    ("bd", &["bd", "becton dickinson", "carefusion", "alaris medical", "alaris", "pyxis"]),
    ("baxter", &["baxter"]),
    ("b braun", &["b braun", "bbraun", "braun melsungen"]),
    ("icu medical", &["icu medical", "hospira", "smiths medical"]),
    ("philips", &["philips", "phillips", "respironics"]),
    ("ge", &["ge", "general electric", "datex ohmeda", "datex division", "datex"]),
    ("siemens", &["siemens"]),
    ("drager", &["drager", "draeger", "dragerwerk", "draegerwerk"]),
    ("medtronic", &["medtronic", "covidien", "physio control"]),
    ("abbott", &["abbott", "st jude medical", "st jude"]),
    ("hillrom", &["hillrom", "hill rom", "welch allyn"]),
    ("fujifilm", &["fujifilm", "sonosite"]),
    ("roche", &["roche"]),
    ("zoll", &["zoll"]),
    ("stryker", &["stryker"]),
    ("spacelabs", &["spacelabs"]),
    ("carestream", &["carestream"]),
    ("boston scientific", &["boston scientific"]),
    ("fresenius", &["fresenius"]),
    ("johnson johnson", &["johnson johnson", "ethicon"]),
    ("natus", &["natus"]),
    ("biotronik", &["biotronik"]),
    ("capsule", &["capsule technologies", "capsuletech"]),
    ("qualcomm", &["qualcomm"]),
    ("vyaire", &["vyaire"]),
    ("change healthcare", &["change healthcare", "mckesson"]),
    ("getinge", &["getinge", "maquet"]),
    ("canon medical", &["canon medical", "toshiba medical"]),
];

/// Extra words of a vendor's brands, dropped from its product names ("Welch Allyn Connex
/// Spot Monitor" under Hillrom is the "Connex Spot" product).
const BRAND_WORDS: &[(&str, &[&str])] = &[("hillrom", &["welch", "allyn"]), ("bd", &["carefusion"])];

/// Words that say what kind of company it is, not which one.
const CORPORATE: &[&str] = &[
    "inc",
    "incorporated",
    "corp",
    "corporation",
    "co",
    "company",
    "ltd",
    "limited",
    "llc",
    "ag",
    "gmbh",
    "sa",
    "nv",
    "bv",
    "oy",
    "plc",
    "kg",
    "the",
    "of",
    "international",
    "intl",
    "group",
    "holdings",
];

/// Words of product names that describe a kind of device, not a product.
const GENERIC_PRODUCT_WORDS: &[&str] = &[
    "patient",
    "monitor",
    "monitors",
    "system",
    "systems",
    "series",
    "model",
    "models",
    "number",
    "device",
    "devices",
    "product",
    "products",
    "family",
    "software",
    "version",
    "versions",
    "the",
    "and",
    "with",
    "for",
    "of",
    "on",
    "in",
    "including",
    "only",
    "based",
    "medical",
    "all",
    // Kinds of device and connectivity: Wardline only sees networked devices, and a model
    // string rarely repeats "Wireless Syringe Infusion Pump".
    "pump",
    "pumps",
    "infusion",
    "syringe",
    "wireless",
    "wlan",
    "wifi",
];

/// Lowercase ASCII words: letters folded from common accented forms, everything that is
/// not a letter or digit separates words.
pub fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        let folded = match c {
            'ä' | 'à' | 'á' | 'â' | 'ã' | 'å' | 'Ä' | 'À' | 'Á' | 'Â' | 'Ã' | 'Å' => Some('a'),
            'ö' | 'ò' | 'ó' | 'ô' | 'õ' | 'ø' | 'Ö' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ø' => Some('o'),
            'ü' | 'ù' | 'ú' | 'û' | 'Ü' | 'Ù' | 'Ú' | 'Û' => Some('u'),
            'é' | 'è' | 'ê' | 'ë' | 'É' | 'È' | 'Ê' | 'Ë' => Some('e'),
            'ç' | 'Ç' => Some('c'),
            'ñ' | 'Ñ' => Some('n'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        };
        match folded {
            Some(f) => cur.push(f),
            // "Dräger" misdecoded as "DrÃ¤ger": the stray symbol must not split the word.
            None if c as u32 >= 0x80 && !c.is_whitespace() && !cur.is_empty() => {}
            None => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn vendor_words(s: &str) -> Vec<String> {
    words(s).into_iter().filter(|w| !CORPORATE.contains(&w.as_str())).collect()
}

/// The alias table split into words once, by first word, longest alias first.
fn alias_words() -> &'static std::collections::HashMap<&'static str, Vec<(Vec<&'static str>, &'static str)>> {
    type Table = std::collections::HashMap<&'static str, Vec<(Vec<&'static str>, &'static str)>>;
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t: Table = Table::new();
        for (key, aliases) in VENDOR_ALIASES {
            for a in *aliases {
                let w: Vec<&str> = a.split(' ').collect();
                t.entry(w[0]).or_default().push((w, *key));
            }
        }
        // "alaris medical" before "alaris".
        t.values_mut().for_each(|v| v.sort_by_key(|a| std::cmp::Reverse(a.0.len())));
        t
    })
}

/// The canonical key whose alias is a whole-word prefix of `w` (the longest such alias).
fn alias_of(w: &[String]) -> Option<&'static str> {
    alias_words()
        .get(w.first()?.as_str())?
        .iter()
        .find(|(aw, _)| aw.len() <= w.len() && aw.iter().zip(w).all(|(x, y)| *x == y))
        .map(|(_, k)| *k)
}

/// Canonical keys of a vendor string (usually one). A name naming several companies
/// ("Silex Technology and GE Healthcare", "Hillrom and ELI, Baxter International Inc.")
/// gives one key per company.
pub fn vendor_keys(s: &str) -> Vec<String> {
    let whole = vendor_words(s);
    if whole.is_empty() {
        return Vec::new();
    }
    let whole_alias = alias_of(&whole);
    let lower = s.to_lowercase();
    let one_company = !lower.contains([',', '/', '&', '(', ')', ';']) && !lower.contains(" and ");
    if one_company {
        return vec![whole_alias.map_or_else(|| whole.join(" "), str::to_string)];
    }
    let mut keys: Vec<String> = whole_alias.iter().map(|k| k.to_string()).collect();
    let parts = lower.split([',', '/', '&', '(', ')', ';']).flat_map(|p| p.split(" and "));
    for p in parts {
        let w = vendor_words(p);
        if w.is_empty() || (w.len() == 1 && w[0] == "and") {
            continue;
        }
        let key = match alias_of(&w) {
            Some(k) => k.to_string(),
            // "Becton, Dickinson and Company": the pieces of a known name are not companies.
            None if whole_alias.is_some() => continue,
            None => w.join(" "),
        };
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let joined = whole.join(" ");
    if whole_alias.is_none() && !keys.contains(&joined) {
        keys.push(joined);
    }
    keys
}

/// One required word of a product pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// The device must have this word.
    Word(String),
    /// A letter family ("mx"): the device has "mx" or the family followed by digits ("mx450").
    Family(String),
    /// A model range "mx400-550" / "mx400-mx850": the device has the prefix and a number
    /// within the bounds.
    ModelRange { prefix: String, low: u64, high: u64 },
}

impl Term {
    fn accepts(&self, w: &str) -> bool {
        match self {
            Term::Word(t) => t == w,
            Term::Family(f) => {
                w.strip_prefix(f.as_str()).is_some_and(|r| r.is_empty() || r.bytes().all(|b| b.is_ascii_digit()))
            }
            Term::ModelRange { prefix, low, high } => w
                .strip_prefix(prefix.as_str())
                .filter(|r| !r.is_empty() && r.len() < 12 && r.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|r| r.parse::<u64>().ok())
                .is_some_and(|n| (*low..=*high).contains(&n)),
        }
    }
}

/// What a product name requires of a device's model/OS words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductPattern {
    pub terms: Vec<Term>,
}

impl ProductPattern {
    /// The pattern of `product` as named under `vendor` (whose words are dropped).
    pub fn new(vendor: &str, product: &str) -> ProductPattern {
        let mut drop: Vec<String> = words(vendor);
        for k in vendor_keys(vendor) {
            drop.extend(k.split(' ').map(str::to_string));
            if let Some((_, extra)) = BRAND_WORDS.iter().find(|(b, _)| *b == k) {
                drop.extend(extra.iter().map(|s| s.to_string()));
            }
        }
        let outside = outside_parens(product);
        let mut terms: Vec<Term> = Vec::new();
        for raw in outside.split(|c: char| c.is_whitespace() || matches!(c, ',' | '/' | ':' | ';')) {
            if let Some(r) = model_range(raw) {
                terms.push(r);
                continue;
            }
            for w in words(raw) {
                if drop.contains(&w) || GENERIC_PRODUCT_WORDS.contains(&w.as_str()) {
                    continue;
                }
                let t = if w.len() <= 3 && w.bytes().all(|b| b.is_ascii_alphabetic()) && w.len() >= 2 {
                    Term::Family(w)
                } else {
                    Term::Word(w)
                };
                if !terms.contains(&t) {
                    terms.push(t);
                }
            }
        }
        ProductPattern { terms }
    }

    /// False when nothing distinctive is left ("Version", "Medical Device"): such a product
    /// would match every model of its vendor, so it matches none.
    pub fn is_matchable(&self) -> bool {
        !self.terms.is_empty()
    }

    /// Every term accepted by one of the device's words.
    pub fn matches(&self, device_words: &[String]) -> bool {
        self.is_matchable() && self.terms.iter().all(|t| device_words.iter().any(|w| t.accepts(w)))
    }

    /// A plain word every matching device has, to index the pattern by.
    pub fn anchor(&self) -> Option<&str> {
        self.terms.iter().find_map(|t| match t {
            Term::Word(w) => Some(w.as_str()),
            _ => None,
        })
    }
}

fn outside_parens(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                out.push(' ');
            }
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// "MX400-550", "MX400-MX850", "MP20-MP90".
fn model_range(raw: &str) -> Option<Term> {
    let lower = raw.to_ascii_lowercase();
    let (a, b) = lower.split_once('-')?;
    let split = |s: &str| {
        let letters = s.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (p, n) = s.split_at(letters);
        (!n.is_empty() && n.len() < 12 && n.bytes().all(|c| c.is_ascii_digit()))
            .then(|| (p.to_string(), n.parse::<u64>().ok()))
    };
    let (pa, na) = split(a)?;
    let (pb, nb) = split(b)?;
    if pa.is_empty() || !(pb.is_empty() || pb == pa) {
        return None;
    }
    let (low, high) = (na?, nb?);
    (low < high).then_some(Term::ModelRange { prefix: pa, low, high })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_spellings_meet() {
        let bd = vendor_keys("Becton, Dickinson and Company (BD)");
        assert_eq!(bd, vec!["bd"]);
        for s in ["BD/CareFusion", "ALARIS MEDICAL SYSTEMS, INC.", "Becton, Dickinson  and Company", "bd", "BD"] {
            assert_eq!(vendor_keys(s), bd, "{s}");
        }
        assert_eq!(vendor_keys("Philips Medical Systems - Cardiac and Monitoring Systems (CM"), vec!["philips"]);
        assert_eq!(vendor_keys("Phillips"), vec!["philips"]);
        assert_eq!(vendor_keys("philips_medical"), vec!["philips"]);
        assert_eq!(vendor_keys("General Electric (GE)"), vec!["ge"]);
        assert_eq!(vendor_keys("GE Healthcare (Datex-Ohmeda)"), vec!["ge"]);
        assert_eq!(vendor_keys("DATEX DIVISION OF"), vec!["ge"]);
        assert_eq!(vendor_keys("Dräger"), vendor_keys("Draeger Medical Systems, Inc."));
        assert_eq!(vendor_keys("Insulet"), vendor_keys("Insulet Corporation"));
        assert!(vendor_keys("Silex Technology and GE Healthcare").contains(&"ge".to_string()));
        let multi = vendor_keys("Hillrom and ELI, Baxter International Inc.");
        assert!(multi.contains(&"hillrom".to_string()) && multi.contains(&"baxter".to_string()), "{multi:?}");
        assert_ne!(vendor_keys("Johnson Controls, Inc."), vendor_keys("Johnson & Johnson"));
        assert!(vendor_keys("  ,  Inc. ").is_empty());
    }

    fn dev(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn product_patterns_are_strict() {
        let p = |v: &str, n: &str| ProductPattern::new(v, n);
        let bd = "Becton, Dickinson and Company (BD)";
        assert!(p(bd, "Alaris 8015 PC unit").matches(&dev("Alaris PC unit 8015")));
        assert!(p(bd, "Alaris PC Unit Model 8015").matches(&dev("Alaris PC unit 8015")));
        assert!(!p(bd, "Alaris 8000 PC unit").matches(&dev("Alaris PC unit 8015")));
        assert!(!p(bd, "Alaris Systems Manager").matches(&dev("Alaris PC unit 8015")));
        assert!(p(bd, "BD Pyxis MedStation ES").matches(&dev("Pyxis MedStation ES")));
        assert!(!p(bd, "BD Pyxis MedStation ES Server").matches(&dev("Pyxis MedStation ES")));
        assert!(p("Philips", "IntelliVue Patient Monitors MX (MX400-550)").matches(&dev("IntelliVue MX450")));
        assert!(p("Philips", "IntelliVue patient monitor MX400-MX850").matches(&dev("IntelliVue MX450")));
        assert!(!p("Philips", "IntelliVue patient monitor MX100").matches(&dev("IntelliVue MX450")));
        assert!(!p("Philips", "IntelliVue X3").matches(&dev("IntelliVue MX450")));
        assert!(!p("Philips", "IntelliVue MX40 Patient Worn Monitor (WLAN only)").matches(&dev("IntelliVue MX450")));
        assert!(
            !p("Philips", "IntelliVue Patient Monitors MP Series (includingMP2/X2)").matches(&dev("IntelliVue MX450"))
        );
        assert!(p("GE Healthcare", "Revolution CT").matches(&dev("Revolution CT")));
        assert!(!p("GE Healthcare", "Revolution Discover CT").matches(&dev("Revolution CT")));
        assert!(!p("GE Healthcare", "Revolution XQ/i").matches(&dev("Revolution CT")));
        assert!(p("General Electric (GE)", "GE Aisys").matches(&dev("Aisys CS2")));
        assert!(!p("Philips", "Version").is_matchable());
        assert!(!p("Philips", "Version").matches(&dev("Version")));
    }
}
