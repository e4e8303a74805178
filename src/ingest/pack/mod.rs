//! OpenViking 0.5.2's .ovpack (export, import, backup, restore): the format (`format`),
//! streaming writer (`export`), checked reader and atomic publisher (`import`), and Longship's
//! backup extension for account skills (`skills_ext`).

pub mod dense;
pub mod export;
pub mod format;
pub mod import;
pub mod skills_ext;
