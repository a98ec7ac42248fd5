//! Segmentation policy: groups, the policy file format, the compiled evaluator, the
//! life-sustaining safety check and recommendations. One test binary for the area.

mod policy {
    pub mod evaluate;
    pub mod groups;
    pub mod parse;
    pub mod props;
    pub mod recommend;
    pub mod safety;
    pub mod support;
}
