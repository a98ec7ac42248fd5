//! Checks of a valid policy against the knowledge base: a group that names a class,
//! profile, vendor or operating system the knowledge base does not know
//! (`class == "infusion_pumps"`) is legal but matches nothing, which is almost always a typo.
//! These are warnings, not load errors: a site may write a policy before its knowledge-base
//! folder defines the class.

use super::expr::{Expr, FieldName, Value};
use super::model::Policy;
use super::parse::PolicyError;
use crate::model::KnowledgeBase;

fn walk<'a>(e: &'a Expr, out: &mut Vec<(FieldName, &'a str)>) {
    match e {
        Expr::Or(xs) | Expr::And(xs) => xs.iter().for_each(|x| walk(x, out)),
        Expr::Not(x) => walk(x, out),
        Expr::Flag(_) => {}
        Expr::Cmp { field, values, .. } => {
            for v in values {
                if let Value::Text(t) = v {
                    out.push((*field, t));
                }
            }
        }
    }
}

/// Knowledge-base ids the policy's group expressions name but the knowledge base lacks,
/// one warning per (group, id), with the group's line.
pub fn kb_warnings(policy: &Policy, kb: &KnowledgeBase) -> Vec<PolicyError> {
    let mut out = Vec::new();
    for g in &policy.groups {
        let mut named = Vec::new();
        for e in g.matches.iter().chain(g.exclude_match.iter()) {
            walk(e, &mut named);
        }
        for (field, id) in named {
            // Expression text is lower-cased; knowledge-base ids are lower case by convention.
            let (what, known) = match field {
                FieldName::Class => ("class", kb.classes.keys().any(|k| k.eq_ignore_ascii_case(id))),
                FieldName::Profile => ("profile", kb.profiles.keys().any(|k| k.eq_ignore_ascii_case(id))),
                FieldName::Vendor => ("vendor", kb.vendors.keys().any(|k| k.eq_ignore_ascii_case(id))),
                FieldName::Os => ("os", kb.oses.keys().any(|k| k.eq_ignore_ascii_case(id))),
                _ => continue,
            };
            if !known {
                out.push(PolicyError {
                    line: g.line,
                    message: format!(
                        "group {:?}: {what} {id:?} is not in the knowledge base, so this condition matches no \
                         device; check the spelling against intel/kb or the site's --kb-dir",
                        g.name
                    ),
                });
            }
        }
    }
    out
}
