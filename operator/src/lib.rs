pub mod apply;
pub mod build;
pub mod crd;
pub mod names;
pub mod validate;
