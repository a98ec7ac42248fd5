//! Operator overrides: an `[[override]]` for the device's MAC replaces whatever the
//! evidence said, with confidence 1 and the override as the only evidence.

use super::{Attribute, Because, Classification};
use crate::model::{KnowledgeBase, Override};

pub(super) fn apply_override(kb: &KnowledgeBase, c: &mut Classification, ov: &Override) {
    let origin = ov.origin.to_string();
    let why = vec![Because {
        field: "override".into(),
        value: ov.note.clone().unwrap_or_else(|| {
            format!("operator override{}", ov.by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default())
        }),
        rule: format!("override@{origin}"),
        weight: 1.0,
    }];
    let sure = |v: String| Attribute { value: v, confidence: 1.0, evidence: why.clone() };
    let set_class = |c: &mut Classification, id: &str| {
        c.class = sure(id.to_string());
        if let Some(cd) = kb.class(id) {
            c.category = Attribute { value: cd.category, confidence: 1.0, evidence: why.clone() };
            c.criticality = Attribute { value: cd.criticality, confidence: 1.0, evidence: why.clone() };
            c.clinical_function = cd.clinical_function.clone().map(sure);
        }
    };
    if let Some(p) = ov.profile.as_deref().and_then(|id| kb.profile(id)) {
        set_class(c, &p.class);
        c.profile = Some(sure(p.id.clone()));
        c.model = Some(sure(p.model_family.clone()));
        c.vendor = Some(sure(kb.vendor(&p.vendor).map(|v| v.name.clone()).unwrap_or_else(|| p.vendor.clone())));
        c.category = Attribute { value: p.category, confidence: 1.0, evidence: why.clone() };
        c.criticality = Attribute { value: p.criticality, confidence: 1.0, evidence: why.clone() };
        if let Some(f) = &p.clinical_function {
            c.clinical_function = Some(sure(f.clone()));
        }
        if let Some(os) = &p.os {
            c.os = Some(sure(os.clone()));
        }
    }
    if let Some(class) = &ov.class {
        set_class(c, class);
        // A profile of another class no longer describes the device.
        if c.profile.as_ref().and_then(|p| kb.profile(&p.value)).is_some_and(|p| &p.class != class) {
            c.profile = None;
            c.model = None;
        }
    }
    if let Some(v) = &ov.vendor {
        c.vendor = Some(sure(v.clone()));
    }
    if let Some(m) = &ov.model {
        c.model = Some(sure(m.clone()));
    }
    if let Some(cat) = ov.category {
        c.category = Attribute { value: cat, confidence: 1.0, evidence: why.clone() };
    }
    if let Some(crit) = ov.criticality {
        c.criticality = Attribute { value: crit, confidence: 1.0, evidence: why.clone() };
    }
    if let Some(f) = &ov.clinical_function {
        c.clinical_function = Some(sure(f.clone()));
    }
    if let Some(os) = &ov.os {
        c.os = Some(sure(os.clone()));
    }
    c.os_info = c.os.as_ref().and_then(|o| kb.os(&o.value)).map(|e| e.info.clone());
    c.overridden = Some(origin);
}
